"""Checksummed LMDB values: every value of the catalog (format 2) and of the stream index.

A **sealed** value is its payload followed by an 8-byte trailer, the
xxh3-64 of the payload seeded with the xxh3-64 of the value's key, little-endian
(docs/format.md, section 6.1). The key is in the checksum, so a value that a
damaged page shows under another key fails too. Each value layout seals and
opens its values in its own module (``catalog/checkpoints.py``, ``cursors.py``,
``outbox.py``, ``projections.py``, ``topics.py``; the stream index's accessors in
``sourcing/index.py``); what a mismatch means is theirs to say: derived data
is read as missing and rebuilt, primary data is a ``CorruptionError`` naming
the key (``primary``).

A value of a format 1 catalog has no trailer; a writer converts the catalog
at open (``env.Catalog``), and a read-only view of one not yet converted reads
its values as they are (``legacy``).
"""

from __future__ import annotations

import os
import struct

import xxhash

from ..errors import CorruptionError
from . import datafile

__all__ = ["TRAILER_BYTES", "opened", "primary", "seal"]

TRAILER_BYTES = 8
_TRAILER = struct.Struct("<Q")
_hash = xxhash.xxh3_64_intdigest


def seal(key: bytes, payload: bytes) -> bytes:
    """``payload`` with its trailer, to be stored under ``key``."""
    return payload + _TRAILER.pack(_hash(payload, _hash(key)))


def opened(key: bytes, value: bytes | memoryview, legacy: bool = False) -> bytes | memoryview | None:
    """The payload of a sealed ``value`` read under ``key`` (a slice of it, a memoryview if it
    is one), or None if it fails its checksum. ``legacy``: an unsealed value of a format 1
    catalog, returned as it is."""
    if legacy:
        return value
    if len(value) < TRAILER_BYTES:
        return None
    payload = value[:-TRAILER_BYTES]
    if _TRAILER.unpack_from(value, len(value) - TRAILER_BYTES)[0] != _hash(payload, _hash(key)):
        return None
    return payload


def primary(catalog_path: str, what: str, key: bytes, value: bytes | memoryview,
            legacy: bool = False) -> bytes | memoryview:
    """The payload of a value of primary data, or ``CorruptionError`` naming ``what`` (the
    database and the key, in words) for one that fails its checksum."""
    payload = opened(key, value, legacy)
    if payload is None:
        raise CorruptionError(os.path.join(catalog_path, datafile.DATA_FILE), 0,
                              f"{what} fails its checksum (key {bytes(key)!r}); it is not served")
    return payload
