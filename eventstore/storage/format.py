"""Batch byte format, version 1 (the normative text is docs/format.md, section 2).

Prefix, shared with Kafka's RecordBatch (big-endian)::

    0   base_offset             int64
    8   batch_length            int32   bytes after this field; batch size = 12 + batch_length
    12  partition_leader_epoch  int32
    16  magic                   int8    0x45 native v1; 2 Kafka v2 (reserved)

Native body::

    17  attributes              int16   0
    19  last_offset_delta       int32   record_count - 1
    23  base_timestamp          int64
    31  max_timestamp           int64
    39  record_count            int32
    43  records                 msgpack [[offset, timestamp_ms, key, value, headers], ...]
    end-8 checksum              uint64  xxh3-64 of [0, end - 8)

This module does no I/O: it turns records into bytes and bytes (any buffer)
into records, and says why bytes are invalid.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec
import xxhash

from ..records import Record

PREFIX = struct.Struct(">qiib")
PREFIX_SIZE = 17
LENGTH_OFFSET = 12  # batch size = LENGTH_OFFSET + batch_length
NATIVE_HEADER = struct.Struct(">qiibhiqqi")
NATIVE_HEADER_SIZE = 43
CHECKSUM_SIZE = 8
MAGIC_NATIVE = 0x45
MAGIC_KAFKA_V2 = 2
MIN_BATCH_SIZE = NATIVE_HEADER_SIZE + 1 + CHECKSUM_SIZE  # the smallest records array is 1 byte
MIN_BATCH_LENGTH = MIN_BATCH_SIZE - LENGTH_OFFSET  # 40
MAX_BATCH_LENGTH = 0x7FFFFFFF - LENGTH_OFFSET
MAX_TIMESTAMP_POSITION = 31
RECORD_COUNT_POSITION = 39

assert PREFIX.size == PREFIX_SIZE
assert NATIVE_HEADER.size == NATIVE_HEADER_SIZE

_BODY_FIELDS = struct.Struct(">hiqqi")  # attributes .. record_count, at position 17
_MAX_TS = struct.Struct(">q")
_CHECKSUM = struct.Struct(">Q")
_COUNT = struct.Struct(">i")
assert PREFIX_SIZE + _BODY_FIELDS.size == NATIVE_HEADER_SIZE

_encoder = msgspec.msgpack.Encoder()
_encode = _encoder.encode
_pack_header = NATIVE_HEADER.pack
_pack_checksum = _CHECKSUM.pack
_SMALL_BATCH_RECORDS = 64
_LENGTH_EXTRA = NATIVE_HEADER_SIZE - LENGTH_OFFSET + CHECKSUM_SIZE  # batch_length minus records
_xxh3 = xxhash.xxh3_64_intdigest

# A record as encoded: (offset, timestamp_ms, key, value, headers)
WireRecord = tuple[int, int, bytes | None, bytes | None, Any]


class BatchInfo(msgspec.Struct, frozen=True, array_like=True):
    """What the log layer knows of a batch from its header alone."""

    base_offset: int
    size: int
    magic: int
    record_count: int
    max_timestamp: int

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.record_count


def encode_batch(
    base_offset: int, records: Sequence[WireRecord], base_timestamp: int, max_timestamp: int
) -> bytes | bytearray:
    """Encode ``records`` (offsets already assigned) as one native batch."""
    count = len(records)
    if count < _SMALL_BATCH_RECORDS:
        # Small batches: two short concatenations beat filling a buffer in place.
        payload = _encode(records)
        body = _pack_header(
            base_offset, len(payload) + _LENGTH_EXTRA, 0, MAGIC_NATIVE,
            0, count - 1, base_timestamp, max_timestamp, count,
        ) + payload
        return body + _pack_checksum(_xxh3(body))
    buf = bytearray(NATIVE_HEADER_SIZE)
    _encoder.encode_into(records, buf, NATIVE_HEADER_SIZE)
    NATIVE_HEADER.pack_into(
        buf, 0, base_offset, len(buf) + CHECKSUM_SIZE - LENGTH_OFFSET, 0, MAGIC_NATIVE,
        0, count - 1, base_timestamp, max_timestamp, count,
    )
    buf += _pack_checksum(_xxh3(buf))
    return buf


def checksum(batch: Any) -> int:
    """xxh3-64 of a whole batch but its last 8 bytes (the checksum field)."""
    view = memoryview(batch)
    return int(_xxh3(view[: len(view) - CHECKSUM_SIZE]))


def read_prefix(buf: Any, position: int) -> tuple[int, int, int]:
    """(base_offset, batch size, magic) of the batch at ``position``; no validation."""
    base_offset, length, _epoch, magic = PREFIX.unpack_from(buf, position)
    return base_offset, length + LENGTH_OFFSET, magic


def validate_batch(buf: Any, position: int, available: int, expected_base: int | None) -> (
    BatchInfo | str
):
    """Validate the batch at ``position`` in ``buf`` (``available`` bytes usable from it).

    Returns its ``BatchInfo`` or a string saying why it is invalid. A string
    starting with ``"short:"`` means the bytes end inside the batch (a torn tail
    candidate); any other string means the bytes are wrong.
    """
    if available < PREFIX_SIZE:
        return f"short: {available} bytes, less than a batch prefix"
    base_offset, length, _epoch, magic = PREFIX.unpack_from(buf, position)
    if length < MIN_BATCH_LENGTH or length > MAX_BATCH_LENGTH:
        return f"invalid batch length {length}"
    size = length + LENGTH_OFFSET
    if magic != MAGIC_NATIVE:
        if magic == MAGIC_KAFKA_V2:
            return "unsupported magic 2 (Kafka RecordBatch v2 is not readable by format v1)"
        return f"unknown magic {magic}"
    if size > available:
        return f"short: batch of {size} bytes but only {available} available"
    attributes, last_delta, _base_ts, max_ts, count = _BODY_FIELDS.unpack_from(
        buf, position + PREFIX_SIZE
    )
    end = position + size - CHECKSUM_SIZE
    if _xxh3(memoryview(buf)[position:end]) != _CHECKSUM.unpack_from(buf, end)[0]:
        return "checksum mismatch"
    if attributes != 0:
        return f"unsupported attributes {attributes:#x}"
    if count < 1 or last_delta != count - 1:
        return f"record count {count} does not match last offset delta {last_delta}"
    if expected_base is not None and base_offset != expected_base:
        return f"base offset {base_offset}, expected {expected_base}"
    return BatchInfo(base_offset, size, magic, count, max_ts)


def batch_max_timestamp(buf: Any, position: int) -> int:
    """The max_timestamp field of the native batch at ``position``."""
    return int(_MAX_TS.unpack_from(buf, position + MAX_TIMESTAMP_POSITION)[0])


def batch_record_count(buf: Any, position: int) -> int:
    return int(_COUNT.unpack_from(buf, position + RECORD_COUNT_POSITION)[0])


def decoder_for(topic: str, partition: int) -> msgspec.msgpack.Decoder[list[Record]]:
    """A decoder that yields ``Record`` values with ``topic`` and ``partition`` filled in.

    The stored arrays omit the two trailing fields; a subclass of ``Record``
    whose defaults are this partition's names lets msgspec fill them in C.
    """
    cls = msgspec.defstruct(
        "Record",
        [("topic", str, topic), ("partition", int, partition)],
        bases=(Record,),
        array_like=True,
        frozen=True,
        kw_only=True,
        gc=False,
        module=Record.__module__,
    )
    return msgspec.msgpack.Decoder(list[cls])  # type: ignore[valid-type]


_generic_decoder: msgspec.msgpack.Decoder[list[Record]] = msgspec.msgpack.Decoder(list[Record])


def decode_records(
    buf: Any, position: int, size: int, decoder: msgspec.msgpack.Decoder[list[Record]] | None = None
) -> list[Record]:
    """Decode the records of the (already validated) native batch at ``position``."""
    view = memoryview(buf)[position + NATIVE_HEADER_SIZE : position + size - CHECKSUM_SIZE]
    return (decoder or _generic_decoder).decode(view)
