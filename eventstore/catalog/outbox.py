"""Committed transactions not yet relayed: the catalog's ``outbox`` database and the
transaction id counter ``meta/txn_seq`` (docs/format.md, sections 6 and 13).

Key: the transaction id, uint64 big-endian (the same bytes are the value of
each relayed record's ``es.txn`` header). Value: the MessagePack array
``[txn_id, committed_ms, outputs]``, each output
``[topic, partition, start_offset, records, incarnation]`` (``start_offset``:
the partition's end offset when the transaction committed; ``incarnation``:
the topic's ``created_ms``, -1 in entries written before it was recorded),
each record ``[timestamp_ms, key, value, headers]``. Entries and ``txn_seq`` are
sealed (``sealed.py``); one that fails its checksum is a ``CorruptionError``
naming it (a transaction not yet relayed is primary data).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec

from ..errors import CorruptionError
from . import datafile, keys, sealed
from .env import Catalog

_ID = struct.Struct(">Q")

# A record as the outbox keeps it: (timestamp_ms, key, value, headers)
OutboxRecord = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]


class Output(msgspec.Struct, array_like=True):
    """One partition's records of a committed transaction."""

    topic: str
    partition: int
    start_offset: int  # the partition's end offset when the transaction committed
    records: list[OutboxRecord]
    incarnation: int = -1  # the topic's created_ms; -1: written before it was recorded


class Entry(msgspec.Struct, array_like=True):
    """A committed transaction whose outputs are not yet all relayed."""

    txn_id: int
    committed_ms: int
    outputs: list[Output]


_encode = msgspec.msgpack.encode
_decode_entry = msgspec.msgpack.Decoder(Entry).decode


def id_bytes(txn_id: int) -> bytes:
    """A transaction id as its key, and as the value of its records' ``es.txn`` header."""
    return _ID.pack(txn_id)


def next_id(txn: Any, catalog: Catalog) -> int:
    """Take the next transaction id, inside an open write transaction."""
    meta = catalog.dbs[keys.DB_META]
    raw = txn.get(keys.META_TXN_SEQ, db=meta)
    seq = sealed.primary(catalog.path, "the transaction id sequence", keys.META_TXN_SEQ, raw) \
        if raw else b""
    if seq and len(seq) != _ID.size:
        raise CorruptionError(os.path.join(catalog.path, datafile.DATA_FILE), 0,
                              f"the transaction id sequence holds {len(seq)} bytes, not {_ID.size}")
    txn_id = (_ID.unpack(seq)[0] if seq else 0) + 1
    txn.put(keys.META_TXN_SEQ, sealed.seal(keys.META_TXN_SEQ, _ID.pack(txn_id)), db=meta)
    return int(txn_id)


def put(txn: Any, catalog: Catalog, entry: Entry) -> None:
    """Record a committed transaction's outputs, inside an open write transaction."""
    key = _ID.pack(entry.txn_id)
    txn.put(key, sealed.seal(key, _encode(entry)), db=catalog.dbs[keys.DB_OUTBOX])


def delete(catalog: Catalog, txn_id: int) -> None:
    """Forget a transaction whose outputs are all relayed."""
    catalog.delete(keys.DB_OUTBOX, _ID.pack(txn_id))


def pending(catalog: Catalog) -> list[Entry]:
    """Every entry still in the outbox, in transaction-id order."""
    out = []
    for key, value in catalog.items(keys.DB_OUTBOX):  # bounded by the outbox
        what = f"the outbox entry of transaction {_ID.unpack(key)[0] if len(key) == _ID.size else key!r}"
        payload = sealed.primary(catalog.path, what, key, value, catalog.legacy)
        try:
            out.append(_decode_entry(payload))
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise CorruptionError(os.path.join(catalog.path, datafile.DATA_FILE), 0,
                                  f"{what} does not decode: {e}") from e
    return out
