"""Kafka RecordBatch v2: batches from real clients' builders in every codec, decoded field
for field; our encoding read by a real client; the base-offset rewrite; golden bytes;
and fuzzing: bad bytes give CorruptRecordError and nothing else."""

from __future__ import annotations

import contextlib
import gzip
import struct
from typing import Any

import cramjam
import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.errors import EventStoreError
from eventstore.wire import CorruptRecordError
from eventstore.wire.batch import (
    BATCH_HEADER_BYTES,
    Row,
    check_batch,
    decode_records,
    encode_batch,
    parse_header,
    set_base_offset,
    set_log_append_time,
    with_base_offset,
)
from eventstore.wire.compression import GZIP, LZ4, NONE, SNAPPY, ZSTD, decompress

CODECS = [NONE, GZIP, SNAPPY, LZ4, ZSTD]
T0 = 1_700_000_000_000


Sample = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def sample_records(n: int = 40) -> list[Sample]:
    """(timestamp, key, value, headers): null keys, tombstones, repeated and null headers."""
    out = []
    for i in range(n):
        key = None if i % 3 == 0 else f"key-{i}".encode()
        value = None if i % 7 == 3 else bytes([i % 256]) * (i * 13 % 300)
        headers: list[tuple[str, bytes | None]] = []
        if i % 2:
            headers = [("trace", b"t%d" % i), ("trace", None), ("é-ü", b""), ("trace", b"again")]
        out.append((T0 + (i * 37) % 1000 - 200, key, value, headers))
    return out


def aiokafka_batch(codec: int, records: list[Any], base_offset: int = 0, **producer: int) -> bytes:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=0, producer_id=producer.get("producer_id", -1),
        producer_epoch=producer.get("producer_epoch", -1), base_sequence=producer.get("base_sequence", -1),
        batch_size=1 << 30)
    for i, (timestamp, key, value, headers) in enumerate(records):
        assert builder.append(i, timestamp=timestamp, key=key, value=value, headers=headers) is not None
    data = bytearray(builder.build())
    set_base_offset(data, base_offset)
    return bytes(data)


def expected_rows(records: list[Any], base_offset: int = 0) -> list[Row]:
    return [(base_offset + i, ts, key, value, tuple(headers))
            for i, (ts, key, value, headers) in enumerate(records)]


@pytest.mark.parametrize("codec", CODECS)
def test_a_batch_built_by_aiokafka_decodes_field_for_field(codec: int) -> None:
    records = sample_records()
    data = aiokafka_batch(codec, records, base_offset=1000, producer_id=7, producer_epoch=2, base_sequence=40)
    header = check_batch(data)
    assert header.compression == codec and header.record_count == len(records)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 2, 40)
    assert header.size == len(data)
    assert decode_records(data) == expected_rows(records, base_offset=1000)


@pytest.mark.parametrize("codec", [NONE, GZIP])
def test_a_batch_built_by_kafka_python_decodes_field_for_field(codec: int) -> None:
    from kafka.record.default_records import DefaultRecordBatchBuilder

    records = sample_records(25)
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for i, (timestamp, key, value, headers) in enumerate(records):
        builder.append(i, timestamp=timestamp, key=key, value=value, headers=headers)
    assert decode_records(bytes(builder.build())) == expected_rows(records)


def raw_snappy_batch(records: list[Any]) -> bytes:
    """A snappy batch in the raw block format (librdkafka's), re-framed by hand."""
    plain = bytearray(aiokafka_batch(NONE, records))
    body = bytes(cramjam.snappy.compress_raw(bytes(plain[BATCH_HEADER_BYTES:])))
    out = plain[:BATCH_HEADER_BYTES] + body
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, SNAPPY)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def test_raw_snappy_without_xerial_framing_decodes_too() -> None:
    records = sample_records()
    data = raw_snappy_batch(records)
    assert not data[BATCH_HEADER_BYTES:].startswith(b"\x82SNAPPY")
    assert decode_records(data) == expected_rows(records)


def test_xerial_snappy_with_several_blocks() -> None:
    from aiokafka.codec import snappy_encode

    payload = bytes(range(256)) * 1000  # 256,000 bytes: eight 32 KiB blocks
    framed = snappy_encode(payload, xerial_compatible=True, xerial_blocksize=32 * 1024)
    assert framed.startswith(b"\x82SNAPPY\x00")
    assert decompress(SNAPPY, framed) == payload


# --- our encoding, read by a real client -----------------------------------------


def test_encode_batch_is_read_back_by_aiokafka_and_by_us() -> None:
    from aiokafka.record.default_records import DefaultRecordBatch

    rows = expected_rows(sample_records(), base_offset=555)
    data = encode_batch(rows)
    assert decode_records(data) == rows
    batch = DefaultRecordBatch(bytearray(data))
    assert batch.validate_crc()
    assert batch.base_offset == 555 and batch.compression_type == 0
    theirs = [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in batch]
    assert theirs == rows


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**40), st.lists(st.tuples(
    st.integers(-(2**40), 2**41), st.none() | st.binary(max_size=40), st.none() | st.binary(max_size=200),
    st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=4).map(tuple),
), min_size=1, max_size=30))
def test_encode_then_decode_gives_the_rows_back(base_offset: int, columns: list[Any]) -> None:
    rows = [(base_offset + i, ts, key, value, headers) for i, (ts, key, value, headers) in enumerate(columns)]
    assert decode_records(encode_batch(rows)) == rows


def test_encode_batch_refuses_gaps_and_empty_batches() -> None:
    with pytest.raises(ValueError):
        encode_batch([])
    with pytest.raises(ValueError):
        encode_batch([(0, T0, None, b"a", ()), (2, T0, None, b"b", ())])


# --- golden bytes, by hand from the layout ---------------------------------------


def test_golden_batch_of_one_record() -> None:
    # one record: key "k", value "v", one header ("h", "x"), timestamp delta 0
    record = bytes([0, 0, 0, 2]) + b"k" + bytes([2]) + b"v" + bytes([2, 2]) + b"h" + bytes([2]) + b"x"
    record = bytes([len(record) * 2]) + record  # zigzag length
    after_crc = struct.pack(">hiqqqhii", 0, 0, T0, T0, -1, -1, -1, 1) + record
    batch = (struct.pack(">qiib", 42, 4 + 1 + 4 + len(after_crc), 0, 2)
             + struct.pack(">I", crc32c(after_crc)) + after_crc)
    assert decode_records(batch) == [(42, T0, b"k", b"v", (("h", b"x"),))]
    assert encode_batch([(42, T0, b"k", b"v", (("h", b"x"),))]) == batch
    header = parse_header(batch)
    assert (header.base_offset, header.record_count, header.max_timestamp) == (42, 1, T0)


# --- what the server changes ------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_rewriting_the_base_offset_keeps_the_crc_and_moves_every_offset(codec: int) -> None:
    records = sample_records(10)
    data = bytearray(aiokafka_batch(codec, records))
    before = bytes(data[8:])
    set_base_offset(data, 2**40 + 3)
    assert bytes(data[8:]) == before  # only the first eight bytes changed
    assert decode_records(data) == expected_rows(records, base_offset=2**40 + 3)


def test_with_base_offset_returns_a_new_batch_and_leaves_the_old_one() -> None:
    data = aiokafka_batch(ZSTD, sample_records(5))
    moved = with_base_offset(data, 77)
    assert [r[0] for r in decode_records(moved)] == [77, 78, 79, 80, 81]
    assert [r[0] for r in decode_records(data)] == [0, 1, 2, 3, 4]


def test_lying_counts_and_lengths_cost_no_memory_beyond_the_batch() -> None:
    import tracemalloc

    data = bytearray(aiokafka_batch(NONE, sample_records(40)))
    lies = []
    for position, fmt, value in [(57, ">i", 2**31 - 1), (61, ">b", 0x7E)]:
        lie = bytearray(data)
        struct.pack_into(fmt, lie, position, value)
        if position == 57:
            struct.pack_into(">i", lie, 23, value - 1)
        struct.pack_into(">I", lie, 17, crc32c(bytes(lie[21:])))
        lies.append(bytes(lie))
    tracemalloc.start()
    try:
        for lie in lies:
            with pytest.raises(CorruptRecordError):
                decode_records(lie)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data) + 64 * 1024


def test_set_base_offset_at_a_position_inside_a_larger_buffer() -> None:
    first = aiokafka_batch(NONE, sample_records(3))
    second = aiokafka_batch(GZIP, sample_records(4))
    buf = bytearray(first + second)
    set_base_offset(buf, 3, position=len(first))
    assert [r[0] for r in decode_records(buf, len(first))] == [3, 4, 5, 6]


def test_log_append_time_rewrites_attributes_max_timestamp_and_crc() -> None:
    from aiokafka.record.default_records import DefaultRecordBatch

    records = sample_records(6)
    data = bytearray(aiokafka_batch(LZ4, records))
    set_log_append_time(data, T0 + 99_999)
    header = check_batch(data)
    assert header.log_append_time and header.max_timestamp == T0 + 99_999 and header.compression == LZ4
    assert {row[1] for row in decode_records(data)} == {T0 + 99_999}
    theirs = DefaultRecordBatch(bytearray(data))
    assert theirs.validate_crc() and theirs.timestamp_type == 1


# --- refusals ---------------------------------------------------------------------


def test_a_flipped_bit_anywhere_under_the_crc_is_caught() -> None:
    data = aiokafka_batch(NONE, sample_records(5))
    for position in range(17, len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        with pytest.raises(CorruptRecordError):
            decode_records(damaged)


@pytest.mark.parametrize(("position", "fmt", "value", "message"), [
    (16, ">b", 1, "magic"),
    (8, ">i", 10, "shorter than the header"),
    (8, ">i", 10**6, "runs past"),
    (57, ">i", 6, "last_offset_delta"),
    (23, ">i", 3, "last_offset_delta"),
    (57, ">i", 0, "record_count"),
    (21, ">h", 5, "codec"),
    (21, ">h", 0x100, "attribute"),
    (27, ">q", T0 + 10**6, "after max_timestamp"),
])
def test_header_fields_that_break_the_rules(position: int, fmt: str, value: int, message: str) -> None:
    data = bytearray(aiokafka_batch(NONE, sample_records(5)))
    struct.pack_into(fmt, data, position, value)
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    with pytest.raises(CorruptRecordError, match=message):
        decode_records(data)


def test_a_decompression_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(bytes(50 * 1024 * 1024))
    with pytest.raises(CorruptRecordError, match="within"):
        decompress(GZIP, bomb, max_bytes=1024 * 1024)
    raw = bytes(cramjam.snappy.compress_raw(bytes(4 * 1024 * 1024)))
    with pytest.raises(CorruptRecordError, match="more than"):
        decompress(SNAPPY, raw, max_bytes=1024 * 1024)
    assert decompress(GZIP, gzip.compress(b"small"), max_bytes=5) == b"small"


def test_errors_are_eventstore_errors() -> None:
    assert issubclass(CorruptRecordError, EventStoreError)


# --- fuzzing ----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_corrupt_record_errors_only(data: bytes) -> None:
    for verify in (True, False):
        with contextlib.suppress(CorruptRecordError):
            decode_records(data, verify=verify)


def batches() -> st.SearchStrategy[bytes]:
    return st.sampled_from([aiokafka_batch(codec, sample_records(6)) for codec in CODECS]
                           + [raw_snappy_batch(sample_records(6))])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       st.integers(0, 10**6), st.booleans())
def test_damaged_batches_give_corrupt_record_errors_only(
    data: bytes, flips: list[tuple[int, int]], cut: int, fix_crc: bool
) -> None:
    damaged = bytearray(data)
    for position, value in flips:
        damaged[position % len(damaged)] = value
    damaged = damaged[:max(0, len(damaged) - cut % 50)] if cut % 3 == 0 else damaged
    if fix_crc and len(damaged) > 21:  # let the damage reach the record parser and the codecs
        struct.pack_into(">I", damaged, 17, crc32c(bytes(damaged[21:])))
    with contextlib.suppress(CorruptRecordError):
        rows = decode_records(damaged, max_decompressed_bytes=1 << 20)
        assert len(rows) == parse_header(damaged).record_count


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([GZIP, SNAPPY, LZ4, ZSTD, 5, 7]), st.binary(max_size=200))
def test_random_compressed_data_gives_corrupt_record_errors_only(codec: int, data: bytes) -> None:
    for prefix in (b"", b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"):
        with contextlib.suppress(CorruptRecordError):
            decompress(codec, prefix + data, max_bytes=1 << 20)


@pytest.mark.parametrize("count", [2**31 - 1, 10**6, 41])
def test_a_record_count_that_lies_is_refused_without_reading_that_many(count: int) -> None:
    data = bytearray(aiokafka_batch(NONE, sample_records(40)))
    struct.pack_into(">i", data, 57, count)
    struct.pack_into(">i", data, 23, count - 1)
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    with pytest.raises(CorruptRecordError, match=r"cannot fit|truncated"):
        decode_records(data)
