"""What appends hand the log, checked before anything is written: ``append_batch``'s items
grouped by partition, as columns (and the metadata it returns), and an encoded batch.

Grouping validates every item before anything is written. A list of bare
values takes a path checked in C; other items are normalised one by one
(validation needs each item once) and appended to their partition's columns.
An encoded batch (``Log.append_encoded``) and a Kafka RecordBatch v2
(``Log.append_kafka``) are checked as untrusted bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any, overload

import msgspec

from .errors import (
    InvalidArgumentError,
    InvalidRecordError,
    RecordTooLargeError,
    UnsupportedRecordVersionError,
)
from .partitioner import partition_for_key
from .records import LOG_APPEND_TIME, Record, RecordMetadata, TopicConfig
from .storage import format as fmt
from .validation import NO_HEADERS, check_size, normalize_item, record_size
from .wire import batch as kafka
from .wire.compression import NONE, decompress
from .wire.errors import CorruptRecordError

__all__ = ["BatchMetadata", "Group", "check_encoded_batch", "check_kafka_batch", "check_kafka_records",
           "group_items"]


class Group:
    """The records of one ``append_batch`` call bound for one partition, as columns."""

    __slots__ = ("base_ts", "headers", "indexes", "keys", "max_ts", "partition", "timestamps",
                 "ts_list", "values")

    def __init__(self, partition: int, indexes: list[int] | None, timestamps: Iterable[int],
                 keys: Iterable[bytes | None], values: list[bytes | None], headers: Iterable[Any],
                 base_ts: int, max_ts: int, ts_list: list[int] | None) -> None:
        self.partition = partition
        self.indexes = indexes if indexes is not None else range(len(values))
        self.timestamps, self.keys, self.values, self.headers = timestamps, keys, values, headers
        self.base_ts, self.max_ts = base_ts, max_ts
        self.ts_list: list[int] | int = ts_list if ts_list is not None else base_ts

    def add(self, index: int, ts: int, key: bytes | None, value: bytes | None, headers: Any) -> None:
        assert isinstance(self.indexes, list) and isinstance(self.ts_list, list)
        if not self.values:
            self.base_ts = self.max_ts = ts
        self.indexes.append(index)
        self.ts_list.append(ts)
        self.keys.append(key)  # type: ignore[attr-defined]
        self.values.append(value)
        self.headers.append(headers)  # type: ignore[attr-defined]
        if ts > self.max_ts:
            self.max_ts = ts
        self.timestamps = self.ts_list


def group_items(cfg: TopicConfig, items: list[Any], fixed: int | None, now: int,
                round_robin: Iterator[int]) -> list[Group]:
    """Validate every item and group them by partition (nothing is written here)."""
    n = len(items)
    if set(map(type, items)) == {bytes}:  # fast path: bare values, checked in C
        biggest = max(map(len, items))
        if biggest > cfg.max_record_bytes:
            check_size(cfg, biggest, next(i for i, v in enumerate(items) if len(v) == biggest))
        p = fixed if fixed is not None else next(round_robin) % cfg.partitions
        return [Group(p, None, repeat(now, n), repeat(None, n), items, repeat(NO_HEADERS, n),
                      now, now, None)]
    sticky = next(round_robin) % cfg.partitions if fixed is None else fixed
    append_time = cfg.timestamp_type == LOG_APPEND_TIME  # every record gets ``now``
    groups: dict[int, Group] = {}
    for i, item in enumerate(items):  # validation needs each item once
        key, value, headers, part, ts = normalize_item(cfg, item, i)
        if part is None:
            part = fixed if fixed is not None else (
                partition_for_key(key, cfg.partitions) if key is not None else sticky
            )
        g = groups.get(part)
        if g is None:
            g = groups[part] = Group(part, [], [], [], [], [], now, now, [])
        g.add(i, now if ts is None or append_time else ts, key, value, headers)
    return list(groups.values())


class BatchMetadata(Sequence[RecordMetadata]):
    """What ``append_batch`` returns for one partition: metadata made on access."""

    __slots__ = ("_base", "_count", "_partition", "_timestamps", "_topic")

    def __init__(self, topic: str, partition: int, base: int, count: int,
                 timestamps: list[int] | int) -> None:
        self._topic, self._partition, self._base = topic, partition, base
        self._count, self._timestamps = count, timestamps

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> RecordMetadata: ...
    @overload
    def __getitem__(self, i: slice) -> list[RecordMetadata]: ...
    def __getitem__(self, i: int | slice) -> RecordMetadata | list[RecordMetadata]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("batch metadata index out of range")
        ts = self._timestamps if isinstance(self._timestamps, int) else self._timestamps[i]
        return RecordMetadata(self._topic, self._partition, self._base + i, ts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


def check_encoded_batch(cfg: TopicConfig, batch: object) -> tuple[bytes, fmt.BatchInfo, list[Record]]:
    """``batch`` as bytes, its header and its records, once every check passed."""
    if not isinstance(batch, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"batch must be bytes, got {type(batch).__name__}")
    data = bytes(batch)
    info = fmt.validate_batch(data, 0, len(data), None)
    if isinstance(info, str):
        reason = info.removeprefix("short: ")
        raise InvalidArgumentError(f"not a valid batch for topic {cfg.name!r}: {reason}")
    if info.magic != fmt.MAGIC_NATIVE:
        raise InvalidArgumentError(f"not a native batch (magic {info.magic}) for topic {cfg.name!r}: "
                                   "a Kafka RecordBatch v2 goes through append_kafka")
    if info.size != len(data):
        raise InvalidArgumentError(
            f"a batch of {info.size} bytes followed by {len(data) - info.size} more: one batch at a time"
        )
    try:
        records = fmt.decode_records(data, 0, info.size)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise InvalidArgumentError(f"the batch's records do not decode: {e}") from None
    offsets = [r.offset for r in records]
    if offsets != list(range(info.base_offset, info.next_offset)):
        raise InvalidArgumentError("the batch's record offsets do not follow its base offset and count")
    timestamps = [r.timestamp_ms for r in records]
    if min(timestamps) < 0 or max(timestamps) != info.max_timestamp:
        raise InvalidArgumentError("the batch's record timestamps disagree with its max timestamp")
    for i, r in enumerate(records):  # each record's size, as every write path checks it
        size = record_size(r.key, r.value, r.headers)
        if size > cfg.max_record_bytes:
            check_size(cfg, size, i)
    return data, info, records


def check_kafka_batch(cfg: TopicConfig, batch: object) -> tuple[bytearray, kafka.BatchHeader]:
    """A produced Kafka RecordBatch v2 checked by rules K1-K5 (docs/format.md, 17.2): a
    writable copy of its bytes and its header. Nothing of it is kept but the bytes: the
    records are decoded once (K5), as Kafka's broker validates a batch, and dropped.

    Raises ``UnsupportedRecordVersionError`` (magic 0 or 1), ``RecordTooLargeError``
    (over ``max_record_bytes``), ``CorruptRecordError`` (framing, CRC-32C, header,
    records), ``InvalidRecordError`` (transactional or control batches, producer fields
    that do not go together).
    """
    if not isinstance(batch, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"batch must be bytes, got {type(batch).__name__}")
    data = bytearray(batch)
    size = len(data)
    if size > fmt.PREFIX_SIZE and data[16] != kafka.MAGIC:
        raise UnsupportedRecordVersionError(cfg.name, data[16])
    if size > cfg.max_record_bytes:
        raise RecordTooLargeError(cfg.name, size, cfg.max_record_bytes)
    header = kafka.check_batch(data)  # K1 framing, K3, K4
    if header.size != size:
        raise CorruptRecordError(f"{size - header.size} bytes follow the batch: one batch per partition",
                                 header.size)
    if header.is_transactional or header.is_control:
        kind = "control" if header.is_control else "transactional"
        raise InvalidRecordError(cfg.name, f"a {kind} batch (Kafka transactions are not supported)")
    if header.producer_id >= 0 and (header.producer_epoch < 0 or header.base_sequence < 0):
        raise InvalidRecordError(cfg.name, f"producer id {header.producer_id} with epoch "
                                 f"{header.producer_epoch} and base sequence {header.base_sequence}")
    check_kafka_records(data, header)  # K5
    return data, header


def check_kafka_records(batch: bytes | bytearray, header: kafka.BatchHeader) -> None:
    """Rule K5 on a batch whose header passed K1-K4: the records, decompressed, are exactly
    ``record_count`` records, each framed by its length, ``offset_delta`` its index,
    timestamps within ``max_timestamp``, header keys UTF-8, nothing left over.

    The same rules ``wire.batch.decode_records`` reads by, without building a record:
    this runs on every produced batch (the hot path of Produce), so each record costs a
    few byte reads; a one-byte varint (most lengths and deltas) is read inline.
    Raises ``CorruptRecordError``.
    """
    data: bytes | bytearray
    if header.compression != NONE:
        data = decompress(header.compression, memoryview(batch)[kafka.BATCH_HEADER_BYTES:header.size])
        start, end = 0, len(data)
    else:  # walked where it is, no copy
        data, start, end = batch, kafka.BATCH_HEADER_BYTES, header.size
    count = header.record_count
    if count > (end - start) // 7:  # a record takes at least 7 bytes
        raise CorruptRecordError(f"{count} records cannot fit in {end - start} bytes")
    max_delta = None if header.log_append_time else header.max_timestamp - header.base_timestamp
    try:
        at = _walk_records(data, start, end, count, max_delta)
    except IndexError:
        raise CorruptRecordError("records are truncated") from None
    if at != end:
        raise CorruptRecordError(f"{end - at} bytes after the last record", at)


def _walk_records(data: bytes | bytearray, at: int, size_limit: int, count: int,
                  max_delta: int | None) -> int:
    """The end of ``count`` records from ``at`` in ``data``, which they must not pass
    ``size_limit`` (IndexError past the end of ``data``).

    Producers write runs of records of one shape: the same length, key and value sizes,
    no headers, one-byte or two-byte timestamp deltas, offset deltas counting up (a
    client's batch of fixed-size values is one or a few such runs). One record is read
    exactly (``_walk_exact``), then ``_same_shape`` checks how many records after it
    have its shape, field by field over all of them at once (strided slices compared in
    C): those are exactly the records ``_walk_exact`` would accept with that layout.
    The first record that differs is read exactly again; after a short run, a stretch
    of records is read exactly before a run is tried again, so records of many shapes
    cost little more than the exact walk alone."""
    latest = _NO_LIMIT if max_delta is None else max_delta
    index = 0
    while index < count:  # bounded: each pass takes at least one record
        stop = _walk_exact(data, at, size_limit, index, index + 1, latest)
        run, at_after = _same_shape(data, at, stop, size_limit, index, count, latest)
        index += 1 + run
        at = at_after
        if run < _SHORT_RUN and index < count:
            last = min(count, index + _EXACT_STRETCH)
            at = _walk_exact(data, at, size_limit, index, last, latest)
            index = last
    return at


_SHORT_RUN = 8  # a run shorter than this: the next records are read exactly for a stretch
_EXACT_STRETCH = 32


def _varint_width(data: bytes | bytearray, at: int, stop: int) -> int:
    """Bytes of the varint at ``at`` (0 when it does not end before ``stop``)."""
    for width in range(1, 4):  # bounded: the shapes checked have varints of at most 3 bytes
        if at + width > stop:
            return 0
        if data[at + width - 1] < 0x80:
            return width
    return 0


def _same_shape(data: bytes | bytearray, at: int, stop: int, size_limit: int, index: int,
                count: int, latest: int) -> tuple[int, int]:
    """How many records from ``stop`` on (the one at ``at``, ``index``, ending at ``stop``,
    already checked exactly) have its shape, and where they end.

    A shape: length varint bytes, attributes, a timestamp delta of 1 or 2 bytes, the
    offset delta in its shortest form (1 to 3 bytes), key and value size varints
    (bytes), no headers. Records of one shape all have the same size (``stride``), so
    each field of the ``n`` records ahead is the slice ``data[field::stride]``: a field
    whose bytes must repeat is compared with that slice, the offset deltas with the
    shortest encodings of ``2 * i`` (``_offset_delta_columns``), the timestamp deltas
    by byte tables. The run ends at the first record where any field differs."""
    lw = _varint_width(data, at, stop)
    ts = at + lw + 1  # after the length and the attributes byte
    tw = _varint_width(data, ts, stop) if lw else 0
    od = ts + tw
    ow = _varint_width(data, od, stop) if 0 < tw <= 2 else 0
    key = od + ow
    kw = _varint_width(data, key, stop) if ow else 0
    if not kw:
        return 0, stop
    key_size, value = _varint(data, key)
    value += max(key_size, 0)
    vw = _varint_width(data, value, stop)
    if not vw:
        return 0, stop
    value_size, end = _varint(data, value)
    end += max(value_size, 0)
    first = index + 1
    if end + 1 != stop or data[end] != 0 or first < _OFFSET_DELTA_FROM[ow]:
        return 0, stop
    stride = stop - at
    n = min(count - first, (size_limit - stop) // stride, _OFFSET_DELTA_TO[ow] - first)
    if n <= 0:
        return 0, stop
    span = n * stride
    base = stop - at  # a field at position f of the record at ``at`` is at f + base in the next one

    def column(f: int) -> bytes | bytearray:
        return data[f + base:f + base + span:stride]

    for f in (*range(at, at + lw), *range(key, key + kw), *range(value, value + vw), end):
        n = _repeats(column(f)[:n], data[f])
        if not n:
            return 0, stop
    n = _timestamps_within(column(ts)[:n], column(ts + 1)[:n] if tw == 2 else None, latest)
    for j, expected in enumerate(_offset_delta_columns(ow)):  # bounded: 3 bytes at most
        if not n:
            break
        n = _common_prefix(column(od + j)[:n], expected[first:first + n])
    return n, stop + n * stride


def _repeats(column: bytes | bytearray, byte: int) -> int:
    """How many bytes at the start of ``column`` are ``byte``."""
    return len(column) - len(column.lstrip(_SINGLE[byte]))


_SINGLE = [bytes((b,)) for b in range(256)]


def _common_prefix(a: bytes | bytearray, b: bytes | bytearray) -> int:
    """How many bytes ``a`` and ``b`` (of one length) agree on from the start."""
    if a == b:
        return len(a)
    diff = int.from_bytes(a, "little") ^ int.from_bytes(b, "little")
    return ((diff & -diff).bit_length() - 1) >> 3


def _timestamps_within(low: bytes | bytearray, high: bytes | bytearray | None, latest: int) -> int:
    """How many timestamp deltas from the start are well-formed varints of the run's width
    (1 byte: ``low``; 2 bytes: ``low`` then ``high``) and surely not after ``latest``
    (a two-byte delta close to ``latest`` ends the run: the exact walk decides it)."""
    if high is None:
        bad = _one_byte_deltas_after(max(min(latest, 64), -65))
        return len(low) - len(low.translate(bad).lstrip(b"\0"))
    # the first byte continues the varint; the second ends it and keeps the value below latest
    n = len(low) - len(low.translate(_ENDS_VARINT).lstrip(b"\0"))
    high = high[:n].translate(_two_byte_highs_after(max(min(latest, 1 << 13), -1)))
    return n - len(high.lstrip(b"\0"))


@functools.cache
def _one_byte_deltas_after(latest: int) -> bytes:
    """A byte table: 1 where a one-byte varint does not end there or says a delta after ``latest``."""
    return bytes(int(b >= 0x80 or (b >> 1) ^ -(b & 1) > latest) for b in range(256))


@functools.cache
def _two_byte_highs_after(latest: int) -> bytes:
    """A byte table for the second byte of a two-byte varint: 1 where it does not end the
    varint, or where a delta with that high byte could be after ``latest``."""
    return bytes(int(b >= 0x80 or ((b << 7) | 0x7F) >> 1 > latest) for b in range(256))


_ENDS_VARINT = bytes(int(b < 0x80) for b in range(256))
_OFFSET_DELTA_FROM = (0, 0, 64, 1 << 13)  # by width: the first index whose shortest form it is
_OFFSET_DELTA_TO = (0, 64, 1 << 13, 1 << 16)  # ... and the end (runs stop past 65,536 records)


@functools.cache
def _offset_delta_columns(width: int) -> tuple[bytes, ...]:
    """For each byte of an offset delta of ``width`` bytes: that byte of the shortest varint
    of ``2 * i`` (the zigzag of ``i``) at position ``i``, for ``i`` below the width's end.

    Byte ``j`` holds the 7 bits ``(2 * i) >> 7j``, with the continuation bit but in the
    last byte: a cycle of 64 values for the first byte, of 128 values each repeated
    ``2 ** (7j - 1)`` times after it; built by repeating bytes, not per index."""
    size = _OFFSET_DELTA_TO[width]
    columns = []
    for j in range(width):  # bounded: 3 bytes at most
        more = 0x80 if j < width - 1 else 0
        if j == 0:
            cycle = bytes(2 * k | more for k in range(64))
        else:
            repeat = 1 << (7 * j - 1)
            cycle = b"".join(_SINGLE[k | more] * repeat for k in range(min(128, -(-size // repeat))))
        columns.append((cycle * -(-size // len(cycle)))[:size])
    return tuple(columns)


def _walk_exact(data: bytes | bytearray, at: int, size_limit: int, first: int, last: int,
                latest: int) -> int:
    """The end of records ``first`` to ``last`` (excluded) from ``at`` in ``data``, which
    they must not pass ``size_limit`` (IndexError past the end of ``data``): each record
    read field by field, the reference the run check of ``_walk_records`` must agree with.

    Varints of one and two bytes (nearly every length and delta) are read inline, each
    field written out; longer ones by ``_varint``. A length is read without its sign (an
    odd zigzag value, negative, is refused by itself) and the offset delta compared as
    its zigzag value, ``2 * index``."""
    for index in range(first, last):  # bounded: count <= bytes / 7
        byte = data[at]
        if byte < 0x80:
            at += 1
        elif data[at + 1] < 0x80:
            byte = (byte & 0x7F) | (data[at + 1] << 7)
            at += 2
        else:
            length, at = _varint(data, at)
            byte = length << 1 if length >= 0 else 1
        length = byte >> 1
        stop = at + length
        if byte & 1 or length < 6 or stop > size_limit:
            raise CorruptRecordError(f"record {index} length {(byte >> 1) ^ -(byte & 1)}", at)
        at += 1  # attributes
        byte = data[at]
        if byte < 0x80:
            delta = (byte >> 1) ^ -(byte & 1)
            at += 1
        else:
            delta, at = _varint(data, at)
        if delta > latest:
            raise CorruptRecordError(f"record {index} timestamp is after max_timestamp", at)
        byte = data[at]
        if byte < 0x80:
            at += 1
        elif data[at + 1] < 0x80:
            byte = (byte & 0x7F) | (data[at + 1] << 7)
            at += 2
        else:
            offset_delta, at = _varint(data, at)
            byte = offset_delta << 1 if offset_delta >= 0 else 1
        if byte != index << 1:
            raise CorruptRecordError(f"record {index} has offset_delta {(byte >> 1) ^ -(byte & 1)}", at)
        byte = data[at]
        if byte < 0x80:
            key_size = (byte >> 1) ^ -(byte & 1)
            at += 1
        elif data[at + 1] < 0x80:
            raw = (byte & 0x7F) | (data[at + 1] << 7)
            key_size = (raw >> 1) ^ -(raw & 1)
            at += 2
        else:
            key_size, at = _varint(data, at)
        if key_size > 0:
            at += key_size
        elif key_size < -1:
            raise CorruptRecordError(f"record {index} has a key of length {key_size}", at)
        byte = data[at]
        if byte < 0x80:
            value_size = (byte >> 1) ^ -(byte & 1)
            at += 1
        elif data[at + 1] < 0x80:
            raw = (byte & 0x7F) | (data[at + 1] << 7)
            value_size = (raw >> 1) ^ -(raw & 1)
            at += 2
        else:
            value_size, at = _varint(data, at)
        if value_size > 0:
            at += value_size
        elif value_size < -1:
            raise CorruptRecordError(f"record {index} has a value of length {value_size}", at)
        if data[at] == 0:  # no headers, the common case
            at += 1
        else:
            at = _walk_headers(data, at, stop, index)
        if at != stop:
            raise CorruptRecordError(f"record {index} does not fill its {length} bytes", stop - length)
    return at


_NO_LIMIT = 1 << 64  # LogAppendTime: records' own timestamps are not read


def _walk_headers(data: bytes | bytearray, at: int, stop: int, index: int) -> int:
    count, at = _varint(data, at)
    if count < 0 or count > (stop - at) // 2:  # a header takes at least 2 bytes
        raise CorruptRecordError(f"record {index} header count {count}", at)
    for _ in range(count):  # bounded by the record's bytes, checked above
        size, at = _varint(data, at)
        if size < 0 or at + size > stop:
            raise CorruptRecordError(f"record {index} has a header key of length {size}", at)
        try:
            str(data[at:at + size], "utf-8")
        except UnicodeDecodeError:
            raise CorruptRecordError(f"record {index} header key is not UTF-8", at) from None
        at += size
        size, at = _varint(data, at)
        if size > 0:
            at += size
        elif size < -1:
            raise CorruptRecordError(f"record {index} has a header value of length {size}", at)
    return at


def _varint(data: bytes | bytearray, at: int) -> tuple[int, int]:
    """A zigzag varint of up to 10 bytes at ``at``; IndexError past the end."""
    raw = 0
    shift = 0
    while shift < 70:  # bounded: ten bytes
        byte = data[at]
        at += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (raw >> 1) ^ -(raw & 1), at
        shift += 7
    raise CorruptRecordError("varint longer than 10 bytes", at)
