"""Committed consumer-group offsets ("cursors") in the catalog's ``cursors`` database.

A cursor is ``[offset, metadata, committed_ms]``: the next offset the group will
read from a partition, as Kafka's committed offset. Cursors are not derived
from the log: they are the groups' own durable state, committed with an LMDB
transaction that is fsynced before ``commit`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..records import OffsetAndMetadata, TopicPartition
from . import keys
from .env import Catalog


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    offset: int
    metadata: str
    committed_ms: int


_encode = msgspec.msgpack.encode
_decoder = msgspec.msgpack.Decoder(_Cursor)


def put_cursors(txn: Any, catalog: Catalog, group: str,
                offsets: Mapping[TopicPartition, OffsetAndMetadata], now_ms: int) -> None:
    """Write ``offsets`` for ``group`` inside an open write transaction (the one caller is the
    groups' fenced ``commit_offsets``)."""
    db = catalog.dbs[keys.DB_CURSORS]
    for tp, om in offsets.items():  # bounded by the caller's partitions
        value = _encode(_Cursor(om.offset, om.metadata, now_ms))
        txn.put(keys.cursor_key(group, tp.topic, tp.partition), value, db=db)


def read_group(catalog: Catalog, group: str) -> dict[TopicPartition, OffsetAndMetadata]:
    out = {}
    for key, value in catalog.items(keys.DB_CURSORS, keys.group_prefix(group)):
        _, topic, partition = keys.parse_cursor_key(key)
        cur = _decoder.decode(value)
        out[TopicPartition(topic, partition)] = OffsetAndMetadata(cur.offset, cur.metadata)
    return out


def get(catalog: Catalog, group: str, tp: TopicPartition) -> OffsetAndMetadata | None:
    raw = catalog.get(keys.DB_CURSORS, keys.cursor_key(group, tp.topic, tp.partition))
    if raw is None:
        return None
    cur = _decoder.decode(raw)
    return OffsetAndMetadata(cur.offset, cur.metadata)


def groups(catalog: Catalog) -> list[str]:
    names: set[str] = set()
    for key, _ in catalog.items(keys.DB_CURSORS):
        names.add(keys.parse_cursor_key(key)[0])
    return sorted(names)


def delete_group(catalog: Catalog, group: str) -> int:
    return catalog.delete_prefix(keys.DB_CURSORS, keys.group_prefix(group))


def delete_topic(catalog: Catalog, topic: str) -> None:
    """Drop every group's cursors on ``topic`` (when the topic is deleted)."""
    doomed = [k for k, _ in catalog.items(keys.DB_CURSORS) if keys.parse_cursor_key(k)[1] == topic]

    def drop(txn: Any) -> None:
        for k in doomed:
            txn.delete(k, db=catalog.dbs[keys.DB_CURSORS])

    catalog.write(drop)
