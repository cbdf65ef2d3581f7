"""Recovery checkpoints in the catalog's ``checkpoints`` database (docs/format.md, section 6).

Key: ``keys.partition_key(topic, partition)``. Value: the MessagePack array
``[segment_base, position, next_offset, max_timestamp, index_entries,
timeindex_entries, producers]``, sealed (``sealed.py``); ``producers`` (the
idempotent producers' snapshot, an array) is absent from checkpoints written
before it existed and reads as empty. A checkpoint is derived data: one that
fails its checksum or does not decode reads as missing, and recovery then
scans the last segment from its start.
The fields' meaning is the storage layer's (``storage.recovery.Checkpoint``);
this module only stores them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec

from . import keys, sealed
from .env import Catalog

#: segment_base, position, next_offset, max_timestamp, index_entries, timeindex_entries, producers
Fields = tuple[int, int, int, int, int, int, tuple[Any, ...]]


class _Stored(msgspec.Struct, array_like=True):
    segment_base: int
    position: int
    next_offset: int
    max_timestamp: int
    index_entries: int
    timeindex_entries: int
    producers: tuple[Any, ...] = ()


_encode = msgspec.msgpack.encode
_decoder = msgspec.msgpack.Decoder(_Stored)


def get(catalog: Catalog, topic: str, partition: int) -> Fields | None:
    """The partition's checkpoint, or None if there is none or it does not decode."""
    key = keys.partition_key(topic, partition)
    raw = catalog.get(keys.DB_CHECKPOINTS, key)
    payload = None if raw is None else sealed.opened(key, raw, catalog.legacy)
    if payload is None:
        return None
    try:
        stored = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return (stored.segment_base, stored.position, stored.next_offset, stored.max_timestamp,
            stored.index_entries, stored.timeindex_entries, _frozen(stored.producers))


def _frozen(value: Any) -> Any:
    """Arrays as tuples all the way down, as the storage layer builds its snapshots."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def put(catalog: Catalog, topic: str, partition: int, fields: Fields) -> None:
    key = keys.partition_key(topic, partition)
    catalog.put(keys.DB_CHECKPOINTS, key, sealed.seal(key, _encode(fields)))


def delete_topic(catalog: Catalog, topic: str) -> None:
    """Forget the checkpoints of every partition of ``topic``."""
    catalog.delete_prefix(keys.DB_CHECKPOINTS, keys.topic_prefix(topic))


def delete_except(catalog: Catalog, topics: Collection[str]) -> int:
    """Forget the checkpoints of every name that is not one of ``topics``; returns how many."""
    names = {keys.parse_partition_key(k)[0] for k, _ in catalog.items(keys.DB_CHECKPOINTS)}
    return sum(catalog.delete_prefix(keys.DB_CHECKPOINTS, keys.topic_prefix(name))
               for name in sorted(names - set(topics)))
