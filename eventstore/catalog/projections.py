"""Projections' checkpoints and state in the catalog's ``streams`` database (docs/format.md, 6).

Keys and values::

    proj 0x00 <name> 0x00 "c"          checkpoint: MessagePack [source, position, events handled]
    proj 0x00 <name> 0x00 "s" <key>    the projection's own keys and values (bytes); a counter
                                       kept with ``add`` is a signed 64-bit int, big-endian

A projection's checkpoint and the state changes of the batch it ends are
written in one catalog write transaction (``sourcing/projections.py``). Every
value is sealed (``sealed.py``); one that fails its checksum is a
``CorruptionError`` naming the projection and the key, never served.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec

from ..errors import CorruptionError, InvalidArgumentError
from . import datafile, keys, sealed
from .env import Catalog

__all__ = ["KEY_BYTES_MAX", "KEY_PREFIX", "ProjectionCheckpoint", "ProjectionKeys", "decode_counter",
           "encode_counter"]

KEY_PREFIX = b"proj\x00"
KEY_BYTES_MAX = 511  # LMDB's default maximum key size
_COUNTER = struct.Struct(">q")


class ProjectionCheckpoint(msgspec.Struct, array_like=True, frozen=True):
    """What a projection has handled: its source, the last position, how many events."""

    source: str  # "$all" or "$ce-<category>"
    position: int
    events: int


_encode = msgspec.msgpack.encode
_decode_checkpoint = msgspec.msgpack.Decoder(ProjectionCheckpoint).decode


class ProjectionKeys:
    """The keys of one projection's entries, and its database in the catalog."""

    __slots__ = ("checkpoint", "db", "legacy", "name", "path", "prefix", "state")

    def __init__(self, catalog: Catalog, name: str) -> None:
        self.db = catalog.dbs[keys.DB_STREAMS]
        self.path, self.legacy, self.name = catalog.path, catalog.legacy, name
        self.prefix = KEY_PREFIX + name.encode() + b"\x00"
        self.checkpoint = self.prefix + b"c"
        self.state = self.prefix + b"s"

    def state_key(self, key: bytes) -> bytes:
        """The catalog key of the projection's own ``key``, checked."""
        if not isinstance(key, bytes) or not key:
            raise InvalidArgumentError(f"a projection's keys are non-empty bytes, got {key!r}")
        full = self.state + key
        if len(full) > KEY_BYTES_MAX:
            raise InvalidArgumentError(
                f"projection key too long: {len(key)} bytes, at most {KEY_BYTES_MAX - len(self.state)}"
            )
        return full

    # --- inside a transaction ------------------------------------------------------------

    def read_checkpoint(self, txn: Any) -> ProjectionCheckpoint | None:
        raw = txn.get(self.checkpoint, db=self.db)
        if raw is None:
            return None
        what = f"the checkpoint of projection {self.name!r}"
        payload = sealed.primary(self.path, what, self.checkpoint, raw, self.legacy)
        try:
            return _decode_checkpoint(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise CorruptionError(os.path.join(self.path, datafile.DATA_FILE), 0,
                                  f"{what} does not decode: {e}") from e

    def write_checkpoint(self, txn: Any, checkpoint: ProjectionCheckpoint) -> None:
        txn.put(self.checkpoint, sealed.seal(self.checkpoint, _encode(checkpoint)), db=self.db)

    def _value(self, full_key: bytes, raw: bytes) -> bytes:
        what = f"the value of projection {self.name!r} under {full_key[len(self.state):]!r}"
        return bytes(sealed.primary(self.path, what, full_key, raw, self.legacy))

    def get(self, txn: Any, key: bytes) -> bytes | None:
        full = self.state_key(key)
        value = txn.get(full, db=self.db)
        return None if value is None else self._value(full, value)

    def put(self, txn: Any, key: bytes, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise InvalidArgumentError(f"a projection's values are bytes, got {type(value).__name__}")
        full = self.state_key(key)
        txn.put(full, sealed.seal(full, value), db=self.db)

    def delete(self, txn: Any, key: bytes) -> bool:
        return bool(txn.delete(self.state_key(key), db=self.db))

    def items(self, txn: Any, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """The projection's (key, value) pairs whose key starts with ``prefix``, in key order."""
        start = self.state + prefix
        cursor = txn.cursor(db=self.db)
        out: list[tuple[bytes, bytes]] = []
        if not cursor.set_range(start):
            return out
        for key, value in cursor:  # bounded by the projection's keys
            if not bytes(key).startswith(start):
                break
            out.append((bytes(key)[len(self.state):], self._value(bytes(key), value)))
        return out

    # --- on the catalog ------------------------------------------------------------------

    def committed_checkpoint(self, catalog: Catalog) -> ProjectionCheckpoint | None:
        return catalog.read(self.read_checkpoint)

    def committed(self, catalog: Catalog, key: bytes) -> bytes | None:
        return catalog.read(lambda txn: self.get(txn, key))

    def committed_items(self, catalog: Catalog, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        return catalog.read(lambda txn: self.items(txn, prefix))

    def forget(self, catalog: Catalog) -> int:
        """Delete the checkpoint and every key of the state; returns how many entries went."""
        return catalog.delete_prefix(keys.DB_STREAMS, self.prefix)


def encode_counter(key: bytes, value: int) -> bytes:
    try:
        return _COUNTER.pack(value)
    except struct.error:
        raise InvalidArgumentError(
            f"counter {key!r} would leave the signed 64-bit range: {value}") from None


def decode_counter(raw: bytes) -> int:
    """The value of a counter kept with ``ProjectionState.add``."""
    return int(_COUNTER.unpack(raw)[0])


def counter_of(key: bytes, raw: bytes | None) -> int:
    """The counter under ``key`` given its stored bytes (0 if missing); bytes that are no
    counter raise ``InvalidArgumentError``."""
    if raw is None:
        return 0
    if len(raw) != _COUNTER.size:
        raise InvalidArgumentError(
            f"key {key!r} holds {len(raw)} bytes put there, not a counter kept with add()")
    return decode_counter(raw)
