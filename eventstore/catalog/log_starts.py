"""Log start offsets set by DeleteRecords: ``meta/log_start`` keys (docs/format.md, sections 6, 10).

Key: ``b"log_start" 0x00`` then ``keys.partition_key(topic, partition)``. Value: the
offset, uint64 big-endian, sealed (``sealed.py``). Primary data: records below it are
deleted as far as any reader knows, so a value that fails its checksum is a
``CorruptionError``, never a silent return of deleted records.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection

from ..errors import CorruptionError
from . import datafile, keys, sealed
from .env import Catalog

__all__ = ["delete_except", "delete_topic", "get", "put"]

PREFIX = b"log_start\x00"
_OFFSET = struct.Struct(">Q")


def _key(topic: str, partition: int) -> bytes:
    return PREFIX + keys.partition_key(topic, partition)


def get(catalog: Catalog, topic: str, partition: int) -> int | None:
    """The partition's recorded log start, or None when DeleteRecords never moved it."""
    key = _key(topic, partition)
    raw = catalog.get(keys.DB_META, key)
    if raw is None:
        return None
    payload = sealed.primary(catalog.path, f"the log start of {topic}/{partition}", key, raw, catalog.legacy)
    if len(payload) != _OFFSET.size:
        raise CorruptionError(os.path.join(catalog.path, datafile.DATA_FILE), 0,
                              f"the log start of {topic}/{partition} holds {len(payload)} bytes")
    return int(_OFFSET.unpack(payload)[0])


def put(catalog: Catalog, topic: str, partition: int, offset: int) -> None:
    """Record the partition's log start; durable once this returns (LMDB commits synchronously)."""
    key = _key(topic, partition)
    catalog.put(keys.DB_META, key, sealed.seal(key, _OFFSET.pack(offset)))


def delete_topic(catalog: Catalog, topic: str) -> None:
    """Forget the log starts of every partition of ``topic``."""
    catalog.delete_prefix(keys.DB_META, PREFIX + keys.topic_prefix(topic))


def delete_except(catalog: Catalog, topics: Collection[str]) -> int:
    """Forget the log starts of every topic that is not one of ``topics``; returns how many."""
    names = {keys.parse_partition_key(k[len(PREFIX):])[0] for k, _ in catalog.items(keys.DB_META, PREFIX)}
    return sum(catalog.delete_prefix(keys.DB_META, PREFIX + keys.topic_prefix(name))
               for name in sorted(names - set(topics)))
