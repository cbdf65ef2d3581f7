"""Batch byte format, version 1 (the normative text is docs/format.md, section 2).

Prefix, shared with Kafka's RecordBatch (big-endian)::

    0   base_offset             int64
    8   batch_length            int32   bytes after this field; batch size = 12 + batch_length
    12  partition_leader_epoch  int32
    16  magic                   int8    0x45 native v1; 2 Kafka RecordBatch v2

Native body::

    17  attributes              int16   0, or 8: LogAppendTime (bit 3, as in Kafka)
    19  last_offset_delta       int32   record_count - 1
    23  base_timestamp          int64
    31  max_timestamp           int64
    39  record_count            int32
    43  records                 msgpack [[offset, timestamp_ms, key, value, headers], ...]
    end-8 checksum              uint64  xxh3-64 of [0, end - 8)

Kafka body (magic 2, docs/format.md section 17; the codec is ``wire.batch``)::

    17  crc                     uint32  CRC-32C of [21, end)
    21  attributes              int16
    23  last_offset_delta       int32   record_count - 1
    27  base_timestamp          int64
    35  max_timestamp           int64
    43  producer_id, producer_epoch, base_sequence, record_count, records ...

This module does no I/O: it turns records into bytes and bytes (any buffer)
into records, and says why bytes are invalid. Every function that reads a
batch's count, max timestamp or records looks at the magic first, so the
layers above never need to know which kind a batch is.
"""

from __future__ import annotations

import functools
import struct
import typing
from collections.abc import Sequence
from typing import Any

import msgspec
import xxhash

from ..records import Record
from ..wire import batch as kafka
from ..wire.compression import ZSTD
from ..wire.errors import CorruptRecordError

PREFIX = struct.Struct(">qiib")
PREFIX_SIZE = 17
LENGTH_OFFSET = 12  # batch size = LENGTH_OFFSET + batch_length
NATIVE_HEADER = struct.Struct(">qiibhiqqi")
NATIVE_HEADER_SIZE = 43
CHECKSUM_SIZE = 8
MAGIC_NATIVE = 0x45
MAGIC_KAFKA_V2 = 2
#: A native batch's attributes: 0, or this bit (Kafka's) when its records' timestamps are
#: the time it was appended (a LogAppendTime topic, docs/format.md section 5).
LOG_APPEND_TIME = kafka.LOG_APPEND_TIME
_LOW_ATTRIBUTES_POSITION = 18  # the low byte of a native batch's int16 attributes
MIN_BATCH_SIZE = NATIVE_HEADER_SIZE + 1 + CHECKSUM_SIZE  # the smallest records array is 1 byte
MIN_BATCH_LENGTH = MIN_BATCH_SIZE - LENGTH_OFFSET  # 40
MAX_BATCH_LENGTH = 0x7FFFFFFF - LENGTH_OFFSET
MAX_TIMESTAMP_POSITION = 31
RECORD_COUNT_POSITION = 39
KAFKA_HEADER_SIZE = kafka.BATCH_HEADER_BYTES  # 61
KAFKA_MIN_BATCH_LENGTH = KAFKA_HEADER_SIZE - LENGTH_OFFSET  # 49: a header, no records
KAFKA_MAX_TIMESTAMP_POSITION = 35
KAFKA_LAST_DELTA_POSITION = 23
#: Bytes of a batch's start that tell its record count, whichever its kind (the native
#: count ends at 43, the Kafka last offset delta at 27).
COUNT_BYTES = NATIVE_HEADER_SIZE

assert PREFIX.size == PREFIX_SIZE
assert NATIVE_HEADER.size == NATIVE_HEADER_SIZE

_BODY_FIELDS = struct.Struct(">hiqqi")  # attributes .. record_count, at position 17
_MAX_TS = struct.Struct(">q")
_CHECKSUM = struct.Struct(">Q")
_COUNT = struct.Struct(">i")
_EPOCH = struct.Struct(">i")
EPOCH_POSITION = 12
assert PREFIX_SIZE + _BODY_FIELDS.size == NATIVE_HEADER_SIZE
# crc, attributes, last_offset_delta, base_timestamp, max_timestamp: Kafka positions 17..43
_KAFKA_FIELDS = struct.Struct(">Ihiqq")
_KAFKA_COUNT = struct.Struct(">i")  # record_count at 57
_KAFKA_ATTRIBUTES_REFUSED = ~(kafka.CODEC_MASK | kafka.LOG_APPEND_TIME | kafka.DELETE_HORIZON) & 0xFFFF

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
    base_offset: int, records: Sequence[WireRecord], base_timestamp: int, max_timestamp: int,
    attributes: int = 0, epoch: int = 0,
) -> bytes | bytearray:
    """Encode ``records`` (offsets already assigned) as one native batch; ``attributes``
    0, or ``LOG_APPEND_TIME`` when their timestamps are the time it is appended;
    ``epoch`` the leader epoch that writes it (its checksum covers it)."""
    count = len(records)
    if count < _SMALL_BATCH_RECORDS:
        # Small batches: two short concatenations beat filling a buffer in place.
        payload = _encode(records)
        body = _pack_header(
            base_offset, len(payload) + _LENGTH_EXTRA, epoch, MAGIC_NATIVE,
            attributes, count - 1, base_timestamp, max_timestamp, count,
        ) + payload
        return body + _pack_checksum(_xxh3(body))
    buf = bytearray(NATIVE_HEADER_SIZE)
    _encoder.encode_into(records, buf, NATIVE_HEADER_SIZE)
    NATIVE_HEADER.pack_into(
        buf, 0, base_offset, len(buf) + CHECKSUM_SIZE - LENGTH_OFFSET, epoch, MAGIC_NATIVE,
        attributes, count - 1, base_timestamp, max_timestamp, count,
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


def read_epoch(buf: Any, position: int) -> int:
    """The ``partition_leader_epoch`` of the batch at ``position`` (either kind)."""
    return int(_EPOCH.unpack_from(buf, position + EPOCH_POSITION)[0])


def validate_batch(buf: Any, position: int, available: int, expected_base: int | None) -> (
    BatchInfo | str
):
    """Validate the batch at ``position`` in ``buf`` (``available`` bytes usable from it).

    Returns its ``BatchInfo`` or a string saying why it is invalid. A string
    starting with ``"short:"`` means the bytes end inside the batch (a torn tail
    candidate); any other string means the bytes are wrong. Both kinds are
    checked as docs/format.md says: native batches by section 2.1, Kafka
    batches by section 17.4 (CRC-32C and header; records are not decoded).
    """
    if available < PREFIX_SIZE:
        return f"short: {available} bytes, less than a batch prefix"
    base_offset, length, _epoch, magic = PREFIX.unpack_from(buf, position)
    if magic == MAGIC_KAFKA_V2:
        return _validate_kafka(buf, position, available, expected_base, base_offset, length)
    if length < MIN_BATCH_LENGTH or length > MAX_BATCH_LENGTH:
        return f"invalid batch length {length}"
    size = length + LENGTH_OFFSET
    if magic != MAGIC_NATIVE:
        return f"unknown magic {magic}"
    if size > available:
        return f"short: batch of {size} bytes but only {available} available"
    attributes, last_delta, _base_ts, max_ts, count = _BODY_FIELDS.unpack_from(
        buf, position + PREFIX_SIZE
    )
    end = position + size - CHECKSUM_SIZE
    if _xxh3(memoryview(buf)[position:end]) != _CHECKSUM.unpack_from(buf, end)[0]:
        return "checksum mismatch"
    if attributes != 0 and attributes != LOG_APPEND_TIME:
        return f"unsupported attributes {attributes:#x}"
    if count < 1 or last_delta != count - 1:
        return f"record count {count} does not match last offset delta {last_delta}"
    if expected_base is not None and base_offset != expected_base:
        return f"base offset {base_offset}, expected {expected_base}"
    return BatchInfo(base_offset, size, magic, count, max_ts)


def _validate_kafka(buf: Any, position: int, available: int, expected_base: int | None,
                    base_offset: int, length: int) -> BatchInfo | str:
    """A stored Kafka batch (docs/format.md, 17.4): framing, CRC-32C, header (K3, K4)."""
    if length < KAFKA_MIN_BATCH_LENGTH or length > MAX_BATCH_LENGTH:
        return f"invalid Kafka batch length {length}"
    size = length + LENGTH_OFFSET
    if size > available:
        return f"short: batch of {size} bytes but only {available} available"
    crc, attributes, last_delta, base_ts, max_ts = _KAFKA_FIELDS.unpack_from(buf, position + PREFIX_SIZE)
    if kafka.crc_of(buf, position, size) != crc:
        return "CRC-32C mismatch"
    (count,) = _KAFKA_COUNT.unpack_from(buf, position + 57)
    problem = kafka_header_problem(attributes, last_delta, count, base_ts, max_ts)
    if problem is not None:
        return problem
    if expected_base is not None and base_offset != expected_base:
        return f"base offset {base_offset}, expected {expected_base}"
    return BatchInfo(base_offset, size, MAGIC_KAFKA_V2, count, max_ts)


def kafka_header_problem(attributes: int, last_delta: int, count: int, base_ts: int,
                         max_ts: int) -> str | None:
    """Why a Kafka batch's header breaks rule K4 (docs/format.md, 17.2), or None.

    Transactional and control batches are refused here too: the store writes
    neither, so one in a segment is damage."""
    if count < 1 or last_delta != count - 1:
        return f"record count {count} does not match last offset delta {last_delta}"
    if attributes < 0 or attributes & _KAFKA_ATTRIBUTES_REFUSED:
        return f"unsupported attributes {attributes:#x}"
    if attributes & kafka.CODEC_MASK > ZSTD:
        return f"unknown compression codec {attributes & kafka.CODEC_MASK}"
    if not attributes & kafka.LOG_APPEND_TIME and base_ts > max_ts:
        return f"base_timestamp {base_ts} is after max_timestamp {max_ts}"
    return None


def batch_max_timestamp(buf: Any, position: int) -> int:
    """The max_timestamp field of the batch at ``position`` (either kind)."""
    if buf[position + 16] == MAGIC_KAFKA_V2:
        return int(_MAX_TS.unpack_from(buf, position + KAFKA_MAX_TIMESTAMP_POSITION)[0])
    return int(_MAX_TS.unpack_from(buf, position + MAX_TIMESTAMP_POSITION)[0])


def batch_record_count(buf: Any, position: int) -> int:
    """The record count of the batch at ``position`` (either kind), from its header alone;
    ``COUNT_BYTES`` of it must be readable."""
    if buf[position + 16] == MAGIC_KAFKA_V2:
        return int(_COUNT.unpack_from(buf, position + KAFKA_LAST_DELTA_POSITION)[0]) + 1
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
    """Decode the records of the (already validated) batch at ``position``, either kind.

    Raises ``msgspec.DecodeError`` / ``ValidationError`` for a native batch whose
    records do not decode, ``CorruptRecordError`` for a Kafka batch that fails
    rule K5 (docs/format.md, 17.2); callers name the file and position.
    """
    decoder = decoder or _generic_decoder
    # the low byte of attributes (an int16: at 17 in a native batch, at 21 in a Kafka one)
    if buf[position + 16] == MAGIC_KAFKA_V2:
        if buf[position + kafka.ATTRIBUTES_POSITION + 1] & LOG_APPEND_TIME:
            decoder = _log_append_time_decoder(typing.get_args(decoder.type)[0])
        rows = kafka.decode_records(memoryview(buf)[position:position + size], verify=False)
        return msgspec.convert(rows, decoder.type)  # type: ignore[no-any-return]
    if buf[position + _LOW_ATTRIBUTES_POSITION] & LOG_APPEND_TIME:
        decoder = _log_append_time_decoder(typing.get_args(decoder.type)[0])
    view = memoryview(buf)[position + NATIVE_HEADER_SIZE : position + size - CHECKSUM_SIZE]
    return decoder.decode(view)


@functools.lru_cache(maxsize=256)
def _log_append_time_decoder(cls: type[Record]) -> msgspec.msgpack.Decoder[list[Record]]:
    """``cls``'s decoder with ``timestamp_type`` 1: for the records of a batch marked
    LogAppendTime (made once per partition's record class, kept for the next batches)."""
    marked = msgspec.defstruct(
        "Record",
        [("timestamp_type", int, Record.TIMESTAMP_LOG_APPEND_TIME)],
        bases=(cls,),
        array_like=True,
        frozen=True,
        kw_only=True,
        gc=False,
        module=Record.__module__,
    )
    return msgspec.msgpack.Decoder(list[marked])  # type: ignore[valid-type]


#: What ``decode_records`` raises for records that do not decode (either kind).
UNDECODABLE = (msgspec.DecodeError, msgspec.ValidationError, CorruptRecordError)
