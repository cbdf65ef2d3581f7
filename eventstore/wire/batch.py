"""Kafka RecordBatch v2 (magic 2): header, CRC-32C, base-offset rewrite, records.

The layout, as docs/format.md (section 17) gives it; integers big-endian:

==========  ====  ========================  ==========================================
position    size  field                     meaning
==========  ====  ========================  ==========================================
0           8     base_offset int64         offset of the first record (the only field
                                            the server writes)
8           4     batch_length int32        bytes after this field (batch = 12 + it)
12          4     partition_leader_epoch    as the producer sent it; not read
16          1     magic int8                2
17          4     crc uint32                CRC-32C of bytes 21 .. end
21          2     attributes int16          bits 0-2 codec, 3 LogAppendTime,
                                            4 transactional, 5 control, 6 delete horizon
23          4     last_offset_delta int32   record_count - 1
27          8     base_timestamp int64      ms
35          8     max_timestamp int64       ms
43          8     producer_id int64         -1 unless idempotent
51          2     producer_epoch int16
53          4     base_sequence int32
57          4     record_count int32        >= 1
61          n     records                   compressed as one block by the codec
==========  ====  ========================  ==========================================

A record: ``length`` varint (bytes after it), ``attributes`` int8, ``timestamp_delta``
varlong, ``offset_delta`` varint, ``key_length`` varint and key (-1 null), ``value_length``
varint and value (-1 null), ``header_count`` varint, then per header ``key_length``
varint and UTF-8 key, ``value_length`` varint and value (-1 null). Varints are zigzag.

Everything here is a pure function on bytes. Reading a batch raises
:class:`CorruptRecordError` and nothing else, whatever the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from crc32c import crc32c

from .compression import DECOMPRESSED_BYTES_MAX, NONE, ZSTD, decompress
from .errors import CorruptRecordError
from .primitives import write_varint

__all__ = [
    "BATCH_HEADER_BYTES",
    "BatchHeader",
    "Row",
    "check_batch",
    "crc_of",
    "decode_records",
    "encode_batch",
    "parse_header",
    "set_base_offset",
    "set_log_append_time",
    "with_base_offset",
]

MAGIC: Final = 2
BATCH_HEADER_BYTES: Final = 61
LENGTH_BEFORE_BYTES: Final = 12  # base_offset + batch_length: not counted by batch_length
CRC_POSITION: Final = 17
CRC_FROM: Final = 21  # the CRC covers attributes .. end
ATTRIBUTES_POSITION: Final = 21
MAX_TIMESTAMP_POSITION: Final = 35

CODEC_MASK: Final = 0x07
LOG_APPEND_TIME: Final = 0x08
TRANSACTIONAL: Final = 0x10
CONTROL: Final = 0x20
DELETE_HORIZON: Final = 0x40
KNOWN_ATTRIBUTES: Final = CODEC_MASK | LOG_APPEND_TIME | TRANSACTIONAL | CONTROL | DELETE_HORIZON

#   base_offset, batch_length, partition_leader_epoch, magic, crc, attributes,
#   last_offset_delta, base_timestamp, max_timestamp, producer_id, producer_epoch,
#   base_sequence, record_count
_header = struct.Struct(">qiibIhiqqqhii")
assert _header.size == BATCH_HEADER_BYTES
_base_offset = struct.Struct(">q")
_crc = struct.Struct(">I")
_attributes = struct.Struct(">h")
_timestamp = struct.Struct(">q")

Buffer = bytes | bytearray | memoryview
# a decoded record: (offset, timestamp_ms, key, value, headers), the field order of eventstore.Record
Header = tuple[str, bytes | None]
Row = tuple[int, int, bytes | None, bytes | None, tuple[Header, ...]]


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The 61-byte header of a batch (positions in the module docstring)."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes of the whole batch."""
        return LENGTH_BEFORE_BYTES + self.batch_length

    @property
    def compression(self) -> int:
        return self.attributes & CODEC_MASK

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & LOG_APPEND_TIME)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL)


def parse_header(buf: Buffer, position: int = 0) -> BatchHeader:
    """The header of the batch at ``position``; the whole batch must be in ``buf``.

    Checks the framing only (magic 2, ``batch_length`` at least the header, the batch
    within ``buf``); :func:`check_batch` checks the rest.
    """
    available = len(buf) - position
    if position < 0 or available < BATCH_HEADER_BYTES:
        raise CorruptRecordError(f"{max(available, 0)} bytes, a batch header needs {BATCH_HEADER_BYTES}",
                                 position)
    header = BatchHeader(*_header.unpack_from(buf, position))
    if header.magic != MAGIC:
        raise CorruptRecordError(f"magic {header.magic}, expected {MAGIC}", position + 16)
    if header.size < BATCH_HEADER_BYTES:
        raise CorruptRecordError(f"batch_length {header.batch_length} is shorter than the header",
                                 position + 8)
    if header.size > available:
        raise CorruptRecordError(f"batch of {header.size} bytes runs past the {available} bytes given",
                                 position + 8)
    return header


def crc_of(buf: Buffer, position: int, size: int) -> int:
    """CRC-32C of the batch at ``position`` (``size`` bytes) over the bytes it covers."""
    return int(crc32c(memoryview(buf)[position + CRC_FROM:position + size]))


def check_batch(buf: Buffer, position: int = 0) -> BatchHeader:
    """Framing, CRC-32C and header fields of the batch at ``position`` (rules K1-K4).

    Records are not decoded (:func:`decode_records` does that, rule K5).
    """
    header = parse_header(buf, position)
    actual = crc_of(buf, position, header.size)
    if actual != header.crc:
        raise CorruptRecordError(f"CRC-32C is {actual:#010x}, the batch says {header.crc:#010x}",
                                 position + CRC_POSITION)
    problem = _header_problem(header)
    if problem is not None:
        raise CorruptRecordError(problem, position)
    return header


def _header_problem(header: BatchHeader) -> str | None:
    if header.record_count < 1:
        return f"record_count {header.record_count}"
    if header.last_offset_delta != header.record_count - 1:
        return f"last_offset_delta {header.last_offset_delta} with {header.record_count} records"
    if header.compression > ZSTD:
        return f"unknown compression codec {header.compression}"
    if header.attributes & ~KNOWN_ATTRIBUTES or header.attributes < 0:
        return f"unknown attribute bits {header.attributes:#06x}"
    if not header.log_append_time and header.base_timestamp > header.max_timestamp:
        return f"base_timestamp {header.base_timestamp} is after max_timestamp {header.max_timestamp}"
    return None


def set_base_offset(buf: bytearray | memoryview, base_offset: int, position: int = 0) -> None:
    """Write ``base_offset`` into the batch at ``position`` (outside the CRC: nothing else changes)."""
    _base_offset.pack_into(buf, position, base_offset)


def with_base_offset(batch: Buffer, base_offset: int) -> bytes:
    """A copy of ``batch`` with ``base_offset`` written in (see :func:`set_base_offset`)."""
    out = bytearray(batch)
    _base_offset.pack_into(out, 0, base_offset)
    return bytes(out)


def set_log_append_time(buf: bytearray | memoryview, timestamp_ms: int, position: int = 0) -> None:
    """Mark the batch LogAppendTime at ``timestamp_ms``: attribute bit 3, max_timestamp, a new CRC."""
    header = parse_header(buf, position)
    _attributes.pack_into(buf, position + ATTRIBUTES_POSITION, header.attributes | LOG_APPEND_TIME)
    _timestamp.pack_into(buf, position + MAX_TIMESTAMP_POSITION, timestamp_ms)
    _crc.pack_into(buf, position + CRC_POSITION, crc_of(buf, position, header.size))


def decode_records(buf: Buffer, position: int = 0, *, verify: bool = True,
                   max_decompressed_bytes: int = DECOMPRESSED_BYTES_MAX) -> list[Row]:
    """The records of the batch at ``position`` as rows (offset, timestamp_ms, key, value, headers).

    ``verify`` checks the CRC-32C and header first (:func:`check_batch`); a reader
    that already did may skip it. Offsets are ``base_offset + offset_delta``;
    timestamps ``base_timestamp + timestamp_delta``, or the batch's max_timestamp
    for LogAppendTime. Null keys, values and header values are ``None``; headers
    keep their order and repeated names.
    """
    header = check_batch(buf, position) if verify else parse_header(buf, position)
    if not verify and _header_problem(header) is not None:
        raise CorruptRecordError(str(_header_problem(header)), position)
    body = memoryview(buf)[position + BATCH_HEADER_BYTES:position + header.size]
    if header.compression != NONE:
        body = memoryview(decompress(header.compression, body, max_decompressed_bytes))
    data = bytes(body)
    count = header.record_count
    if count > len(data) // 7:  # a record takes at least 7 bytes
        raise CorruptRecordError(f"{count} records cannot fit in {len(data)} bytes")
    fixed_time = header.max_timestamp if header.log_append_time else None
    rows: list[Row] = []
    append = rows.append
    at = 0
    try:
        for index in range(count):  # bounded: count <= bytes / 7
            row, at = _record(data, at, index, header, fixed_time)
            append(row)
    except IndexError:
        raise CorruptRecordError("records are truncated", at) from None
    if at != len(data):
        raise CorruptRecordError(f"{len(data) - at} bytes after the last record", at)
    return rows


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """A zigzag varint/varlong of up to 10 bytes at ``at``; IndexError past the end."""
    raw = 0
    shift = 0
    while shift < 70:
        byte = data[at]
        at += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (raw >> 1) ^ -(raw & 1), at
        shift += 7
    raise CorruptRecordError("varint longer than 10 bytes", at)


def _record(data: bytes, at: int, index: int, header: BatchHeader, fixed_time: int | None) -> tuple[Row, int]:
    # length, attributes, timestamp delta, offset delta; one-byte varints read inline
    byte = data[at]
    length, at = ((byte >> 1) ^ -(byte & 1), at + 1) if byte < 0x80 else _varint(data, at)
    start = at
    if length < 6 or length > len(data) - start:
        raise CorruptRecordError(f"record {index} length {length}", start)
    timestamp_delta, at = _varint(data, at + 1)
    byte = data[at]
    offset_delta, at = ((byte >> 1) ^ -(byte & 1), at + 1) if byte < 0x80 else _varint(data, at)
    if offset_delta != index:
        raise CorruptRecordError(f"record {index} has offset_delta {offset_delta}", start)
    key, at = _nullable_bytes(data, at, "key")
    value, at = _nullable_bytes(data, at, "value")
    byte = data[at]
    if byte == 0:  # no headers, the common case
        headers: tuple[Header, ...] = ()
        at += 1
    else:
        headers, at = _headers(data, at, index)
    if at != start + length:
        raise CorruptRecordError(f"record {index} does not fill its {length} bytes", start)
    timestamp = fixed_time
    if timestamp is None:
        timestamp = header.base_timestamp + timestamp_delta
        if timestamp > header.max_timestamp:
            raise CorruptRecordError(
                f"record {index} timestamp {timestamp} is after max_timestamp {header.max_timestamp}", start)
    return (header.base_offset + index, timestamp, key, value, headers), at


def _nullable_bytes(data: bytes, at: int, what: str) -> tuple[bytes | None, int]:
    byte = data[at]
    length, at = ((byte >> 1) ^ -(byte & 1), at + 1) if byte < 0x80 else _varint(data, at)
    if length < 0:
        if length != -1:
            raise CorruptRecordError(f"{what} length {length}", at)
        return None, at
    if length > len(data) - at:
        raise CorruptRecordError(f"{what} of {length} bytes runs past the records", at)
    return data[at:at + length], at + length


def _headers(data: bytes, at: int, index: int) -> tuple[tuple[Header, ...], int]:
    count, at = _varint(data, at)
    if count < 0 or count > (len(data) - at) // 2:  # a header takes at least 2 bytes
        raise CorruptRecordError(f"record {index} header count {count}", at)
    headers: list[Header] = []
    for _ in range(count):  # bounded by the bytes left, checked above
        name, at = _nullable_bytes(data, at, "header key")
        if name is None:
            raise CorruptRecordError(f"record {index} has a header with a null key", at)
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptRecordError(f"record {index} header key is not UTF-8", at) from None
        value, at = _nullable_bytes(data, at, "header value")
        headers.append((text, value))
    return tuple(headers), at


def encode_batch(rows: Sequence[Row] | Iterable[Row], *, producer_id: int = -1, producer_epoch: int = -1,
                 base_sequence: int = -1, partition_leader_epoch: int = 0) -> bytes:
    """An uncompressed CreateTime v2 batch of ``rows`` (offset, timestamp_ms, key, value, headers).

    Offsets must be consecutive from the first row's (native batches are); this is
    how Fetch serves a native batch to Kafka clients (docs/format.md, 17.6).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("a batch holds at least one record")
    base_offset = rows[0][0]
    base_timestamp = rows[0][1]
    max_timestamp = max(row[1] for row in rows)
    body = bytearray()
    record = bytearray()
    for index, (offset, timestamp, key, value, headers) in enumerate(rows):
        if offset != base_offset + index:
            raise ValueError(f"offsets must be consecutive: {offset} after {base_offset + index - 1}")
        record.clear()
        record.append(0)  # attributes
        write_varint(record, timestamp - base_timestamp)
        write_varint(record, index)
        _write_bytes(record, key)
        _write_bytes(record, value)
        write_varint(record, len(headers))
        for name, header_value in headers:
            _write_bytes(record, name.encode("utf-8"))
            _write_bytes(record, header_value)
        write_varint(body, len(record))
        body += record
    out = bytearray(_header.pack(
        base_offset, BATCH_HEADER_BYTES - LENGTH_BEFORE_BYTES + len(body), partition_leader_epoch, MAGIC,
        0, 0, len(rows) - 1, base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence,
        len(rows)))
    out += body
    _crc.pack_into(out, CRC_POSITION, crc_of(out, 0, len(out)))
    return bytes(out)


def _write_bytes(out: bytearray, value: bytes | None) -> None:
    if value is None:
        write_varint(out, -1)
        return
    write_varint(out, len(value))
    out += value
