"""Kafka producer ids: the counter ``meta/producer_id_seq`` (docs/format.md, section 19).

The value is the last id handed out, uint64 big-endian, sealed (``sealed.py``). It is
primary data: an id handed out twice would let two producers' sequences mix, so a value
that fails its checksum is a ``CorruptionError``, never a restart from 0.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from ..errors import CorruptionError
from . import datafile, keys, sealed
from .env import Catalog

__all__ = ["allocate", "last_allocated"]

_ID = struct.Struct(">Q")
#: Kafka producer ids are int64; the store hands them out from 0 up.
_MAX_ID = (1 << 63) - 1


def allocate(catalog: Catalog, count: int = 1) -> int:
    """Take ``count`` new producer ids in one committed write transaction; returns the first
    (the others follow it). Durable once this returns (LMDB commits synchronously)."""

    def take(txn: Any) -> int:
        meta = catalog.dbs[keys.DB_META]
        raw = txn.get(keys.META_PRODUCER_ID_SEQ, db=meta)
        last = _last(catalog, raw) if raw else -1
        first = last + 1
        if first + count - 1 > _MAX_ID:
            raise CorruptionError(os.path.join(catalog.path, datafile.DATA_FILE), 0,
                                  "the producer id sequence is exhausted")
        txn.put(keys.META_PRODUCER_ID_SEQ,
                sealed.seal(keys.META_PRODUCER_ID_SEQ, _ID.pack(first + count - 1)), db=meta)
        return first

    return catalog.write(take)


def last_allocated(catalog: Catalog) -> int | None:
    """The last producer id handed out, or None before the first (what a backup keeps)."""
    raw = catalog.get(keys.DB_META, keys.META_PRODUCER_ID_SEQ)
    return _last(catalog, raw) if raw else None


def _last(catalog: Catalog, raw: bytes) -> int:
    payload = sealed.primary(catalog.path, "the producer id sequence", keys.META_PRODUCER_ID_SEQ, raw,
                             catalog.legacy)
    if len(payload) != _ID.size:
        raise CorruptionError(os.path.join(catalog.path, datafile.DATA_FILE), 0,
                              f"the producer id sequence holds {len(payload)} bytes, not {_ID.size}")
    return int(_ID.unpack(payload)[0])
