"""Committed consumer-group offsets ("cursors") in the catalog's ``cursors`` database.

A cursor is ``[offset, metadata, committed_ms, incarnation]``: the next offset the
group will read from a partition, as Kafka's committed offset, and the
``created_ms`` of the topic it was committed on. Cursors are not derived from
the log: they are the groups' own durable state, committed with an LMDB
transaction that is fsynced before ``commit`` returns. Values are sealed
(``sealed.py``); one that fails its checksum is a ``CorruptionError`` naming its
group, topic and partition, never an offset served.

A cursor of another incarnation than the topic's (the topic was deleted and
made again while its cursors could not be dropped) is never read back: the
functions that read take the store's topic configurations and leave out
cursors of topics that are gone or of another incarnation. A cursor written
before incarnations were recorded (``-1``) belongs to the topic of its name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from ..errors import CorruptionError
from ..records import OffsetAndMetadata, TopicConfig, TopicPartition
from . import datafile, keys, sealed
from .env import Catalog


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    offset: int
    metadata: str
    committed_ms: int
    incarnation: int = -1  # the topic's created_ms; -1: written before it was recorded


Topics = Mapping[str, TopicConfig]  # the store's topic configurations, by name

_encode = msgspec.msgpack.encode
_decoder = msgspec.msgpack.Decoder(_Cursor)


def put_cursors(txn: Any, catalog: Catalog, group: str,
                offsets: Mapping[TopicPartition, OffsetAndMetadata], now_ms: int,
                topics: Topics) -> None:
    """Write ``offsets`` for ``group`` inside an open write transaction (the one caller is the
    groups' fenced ``commit_offsets``); each records its topic's incarnation."""
    db = catalog.dbs[keys.DB_CURSORS]
    for tp, om in offsets.items():  # bounded by the caller's partitions
        cfg = topics.get(tp.topic)
        value = _encode(_Cursor(om.offset, om.metadata, now_ms, -1 if cfg is None else cfg.created_ms))
        key = keys.cursor_key(group, tp.topic, tp.partition)
        txn.put(key, sealed.seal(key, value), db=db)


def _decode(catalog: Catalog, key: bytes, raw: bytes) -> _Cursor:
    """A stored cursor; one that fails its checksum or does not decode is a
    ``CorruptionError`` naming it (committed offsets are primary data)."""
    group, topic, partition = keys.parse_cursor_key(key)
    what = f"the committed offset of group {group!r} on {topic}/{partition}"
    payload = sealed.primary(catalog.path, what, key, raw, catalog.legacy)
    try:
        return _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise CorruptionError(os.path.join(catalog.path, datafile.DATA_FILE), 0,
                              f"{what} does not decode: {e}") from e


def _current(cur: _Cursor, topic: str, topics: Topics | None) -> bool:
    """Whether a cursor belongs to the topic of its name as it is now (``topics`` None: any)."""
    if topics is None:
        return True
    cfg = topics.get(topic)
    return cfg is not None and cur.incarnation in (-1, cfg.created_ms)


def read_group(catalog: Catalog, group: str,
               topics: Topics | None = None) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's cursors; with ``topics``, only those of these topics as they are now."""
    out = {}
    for key, value in catalog.items(keys.DB_CURSORS, keys.group_prefix(group)):
        _, topic, partition = keys.parse_cursor_key(key)
        cur = _decode(catalog, key, value)
        if _current(cur, topic, topics):
            out[TopicPartition(topic, partition)] = OffsetAndMetadata(cur.offset, cur.metadata)
    return out


def get(catalog: Catalog, group: str, tp: TopicPartition,
        topics: Topics | None = None) -> OffsetAndMetadata | None:
    key = keys.cursor_key(group, tp.topic, tp.partition)
    raw = catalog.get(keys.DB_CURSORS, key)
    if raw is None:
        return None
    cur = _decode(catalog, key, raw)
    return OffsetAndMetadata(cur.offset, cur.metadata) if _current(cur, tp.topic, topics) else None


def groups(catalog: Catalog) -> list[str]:
    names: set[str] = set()
    for key, _ in catalog.items(keys.DB_CURSORS):
        names.add(keys.parse_cursor_key(key)[0])
    return sorted(names)


def delete_group(catalog: Catalog, group: str) -> int:
    return catalog.delete_prefix(keys.DB_CURSORS, keys.group_prefix(group))


def delete_partitions(catalog: Catalog, group: str, partitions: Iterable[TopicPartition]) -> None:
    """Drop the group's cursors of ``partitions`` (Kafka's OffsetDelete), in one transaction."""
    doomed = [keys.cursor_key(group, tp.topic, tp.partition) for tp in partitions]

    def drop(txn: Any) -> None:
        for k in doomed:  # bounded by the caller's partitions
            txn.delete(k, db=catalog.dbs[keys.DB_CURSORS])

    if doomed:
        catalog.write(drop)


def delete_topic(catalog: Catalog, topic: str) -> None:
    """Drop every group's cursors on ``topic`` (when the topic is deleted)."""
    _drop(catalog, lambda name: name == topic)


def drop_gone(catalog: Catalog, topics: Topics) -> int:
    """Drop every cursor of a topic not in ``topics`` (on open); returns how many."""
    return _drop(catalog, lambda name: name not in topics)


def _drop(catalog: Catalog, doomed_topic: Callable[[str], bool]) -> int:
    doomed = [k for k, _ in catalog.items(keys.DB_CURSORS) if doomed_topic(keys.parse_cursor_key(k)[1])]

    def drop(txn: Any) -> None:
        for k in doomed:  # bounded by the cursors
            txn.delete(k, db=catalog.dbs[keys.DB_CURSORS])

    if doomed:
        catalog.write(drop)
    return len(doomed)


Cursor = tuple[str, str, int, int, str, int, int]
"""A stored cursor in full: ``(group, topic, partition, offset, metadata, committed_ms,
incarnation)``, as a replication leader sends it (docs/replication.md, section 5)."""


def all_cursors(catalog: Catalog) -> list[Cursor]:
    """Every stored cursor in full, in key order (of topics gone or made again too: the
    follower that copies them reads them back as the leader does)."""
    out = []
    for key, value in catalog.items(keys.DB_CURSORS):  # bounded by the cursors
        group, topic, partition = keys.parse_cursor_key(key)
        cur = _decode(catalog, key, value)
        out.append((group, topic, partition, cur.offset, cur.metadata, cur.committed_ms, cur.incarnation))
    return out


def apply_copied(catalog: Catalog, put: Iterable[Cursor], drop: Iterable[tuple[str, str, int]]) -> None:
    """Write cursors exactly as another store holds them (``put``) and delete others
    (``drop``: ``(group, topic, partition)``), in one transaction: a follower copying its
    leader's committed offsets. Nothing is fenced: the leader fenced them."""
    puts = [(keys.cursor_key(g, t, p), _encode(_Cursor(offset, metadata, committed_ms, incarnation)))
            for g, t, p, offset, metadata, committed_ms, incarnation in put]
    doomed = [keys.cursor_key(g, t, p) for g, t, p in drop]

    def write(txn: Any) -> None:
        db = catalog.dbs[keys.DB_CURSORS]
        for key in doomed:  # bounded by the caller's cursors
            txn.delete(key, db=db)
        for key, value in puts:  # bounded by the caller's cursors
            txn.put(key, sealed.seal(key, value), db=db)

    if puts or doomed:
        catalog.write(write)
