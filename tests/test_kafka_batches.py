"""Kafka RecordBatch v2 in segments (docs/format.md, sections 2.2 and 17): ``Log.append_kafka``
checks rules K1-K5 before anything is written, rewrites only the base offset (and the leader
epoch), and every reader takes both kinds of batch.

Batches come from kafka-python's own encoder where it can (uncompressed, gzip) and, for the
codecs it needs extra libraries for, from ``kafka_batch`` below: the codec's uncompressed
batch with its records block compressed by cramjam, as a producer does.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cramjam
import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatchBuilder
from siblings import crash

import eventstore
from eventstore import CorruptionError, RecordTooLargeError, StreamsTopicError
from eventstore.batches import check_kafka_records
from eventstore.errors import InvalidRecordError, UnsupportedRecordVersionError
from eventstore.wire import batch as kb
from eventstore.wire.errors import CorruptRecordError, kafka_error_for

TS = 1_700_000_000_000
Row = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]  # key, value, headers
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def kafka_python_batch(rows: Sequence[Row], codec: int = 0, *, ts: int = TS, producer: tuple[int, int, int]
                       = (-1, -1, -1), transactional: bool = False) -> bytes:
    """A batch as kafka-python's producer encodes it (codecs none and gzip)."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=transactional,
                                        producer_id=producer[0], producer_epoch=producer[1],
                                        base_sequence=producer[2], batch_size=1 << 24)
    for i, (key, value, headers) in enumerate(rows):
        builder.append(i, timestamp=ts + i, key=key, value=value, headers=headers)
    return bytes(builder.build())


def kafka_batch(rows: Sequence[Row], codec: int = 0, *, ts: int = TS,
                producer: tuple[int, int, int] = (-1, -1, -1), base_offset: int = 0) -> bytes:
    """A batch compressed by any codec: the records block of an uncompressed batch compressed
    whole, the length, attributes and CRC-32C set again, as a producer's encoder does."""
    plain = kb.encode_batch([(base_offset + i, ts + i, k, v, tuple(h)) for i, (k, v, h) in enumerate(rows)],
                            producer_id=producer[0], producer_epoch=producer[1], base_sequence=producer[2],
                            partition_leader_epoch=-1)
    return recompress(plain, codec)


def recompress(plain: bytes, codec: int) -> bytes:
    if codec == 0:
        return plain
    body = bytes(plain[61:])
    packed = {1: lambda b: cramjam.gzip.compress(b), 2: lambda b: cramjam.snappy.compress_raw(b),
              3: lambda b: cramjam.lz4.compress(b), 4: lambda b: cramjam.zstd.compress(b)}[codec](body)
    out = bytearray(plain[:61]) + bytes(packed)
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, codec)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def claim_five(batch: bytearray) -> None:
    """Make a batch of 4 records claim 5 (last_offset_delta and record_count agree: K4 holds)."""
    struct.pack_into(">i", batch, 23, 4)
    struct.pack_into(">i", batch, 57, 5)


def fix_crc(batch: bytearray) -> bytearray:
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    return batch


def rows_of(records: Sequence[eventstore.Record]) -> list[tuple[Any, ...]]:
    return [(r.offset, r.timestamp_ms, r.key, r.value, list(r.headers)) for r in records]


ROWS: list[Row] = [
    (b"order-1", b'{"total": 42}', [("content-type", b"application/json"), ("trace", b"\x00\xff")]),
    (None, b"no key", []),
    (b"tombstone", None, [("dup", b"1"), ("dup", None), ("dup", b"")]),
    (b"", b"", [("\u00e9t\u00e9", b"unicode name")]),
]


def expected(rows: Sequence[Row], base: int, ts: int = TS) -> list[tuple[Any, ...]]:
    return [(base + i, ts + i, k, v, list(h)) for i, (k, v, h) in enumerate(rows)]


@pytest.fixture
def topic_store(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("k", 2)
    return store


# --- appends and reads -------------------------------------------------------------------------


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_reads_back_headers_byte_for_byte(topic_store: eventstore.Store, codec: str) -> None:
    store = topic_store
    batch = kafka_batch(ROWS, CODECS[codec])
    result = store.log.append_kafka("k", 1, batch)
    assert (result.base_offset, result.record_count, result.duplicate) == (0, 4, False)
    assert (result.log_append_time_ms, result.log_start_offset) == (-1, 0)
    assert rows_of(store.read("k", 1, 0)) == expected(ROWS, 0)
    assert store.offsets("k", 1) == (0, 4) and store.offsets("k", 0) == (0, 0)


@pytest.mark.parametrize("codec", [0, 1])
def test_kafka_python_batches_are_stored_verbatim_but_for_base_offset_and_leader_epoch(
        topic_store: eventstore.Store, codec: int) -> None:
    store = topic_store
    store.append("k", b"native first", partition=0)
    batch = kafka_python_batch(ROWS, codec)
    assert store.log.append_kafka("k", 0, batch).base_offset == 1
    stored, end = store.log.read_batches("k", 0, 1, 1 << 20)
    assert end == 1 + len(ROWS)
    assert stored[16:] == batch[16:]  # magic, CRC and everything it covers: as produced
    assert struct.unpack_from(">qi", stored) == (1, len(batch) - 12)
    assert stored[12:16] == b"\x00\x00\x00\x00"
    assert kb.check_batch(stored).crc == kb.check_batch(batch).crc
    assert rows_of(store.read("k", 0, 1)) == expected(ROWS, 1)


def test_mixed_native_and_kafka_batches_share_offsets_indexes_and_time(store: eventstore.Store) -> None:
    store.create_topic("m", 1, segment_bytes=64 * 1024)
    want: list[tuple[Any, ...]] = []
    for i in range(60):  # ~2 KiB per call: index entries (every 4 KiB) and rolls (64 KiB)
        ts = TS + 1000 * i
        if i % 3:
            rows: list[Row] = [(b"%d" % i, random.Random(i * 3 + j).randbytes(700), [("i", b"%d" % i)])
                               for j in range(3)]  # random: compression keeps the size
            result = store.log.append_kafka("m", 0, kafka_batch(rows, i % 5, ts=ts))
            want += expected(rows, result.base_offset, ts)
        else:
            message = eventstore.Message(key=b"n", value=bytes(2000), timestamp_ms=ts)
            metas = store.append_batch("m", [message], partition=0)
            want.append((metas[0].offset, ts, b"n", bytes(2000), []))
    assert [w[0] for w in want] == list(range(len(want)))
    assert rows_of(store.read("m", 0, 0, max_records=10_000)) == want
    assert len(store.log.partition("m", 0).segments()) > 1
    for offset, ts, *_ in want[::7]:
        assert store.offset_for_time("m", 0, ts) == next(w[0] for w in want if w[1] >= ts)
        assert rows_of(store.read("m", 0, offset, max_records=3))[0] == want[offset]
    report = store.check()
    assert report.ok, report.problems
    assert report.records == len(want)
    with eventstore.open_reader(store.path) as reader:
        assert rows_of(reader.read("m", 0, 0, max_records=10_000)) == want
        assert reader.offset_for_time("m", 0, want[-1][1]) == want[-1][0]


def test_a_reopened_store_and_consumer_read_kafka_batches(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        store.create_topic("k", 1)
        store.log.append_kafka("k", 0, kafka_batch(ROWS, 4))
        store.append("k", b"after", partition=0, timestamp_ms=TS + 10)
    with eventstore.open(path) as store:
        assert rows_of(store.read("k", 0, 0)) == [*expected(ROWS, 0), (4, TS + 10, None, b"after", [])]
        with store.consumer("k", group_id="g", auto_offset_reset="earliest") as consumer:
            got: list[eventstore.Record] = []
            for _ in range(20):  # bounded polls
                for records in consumer.poll(timeout_ms=100).values():
                    got += records
                if len(got) >= 5:
                    break
        assert [(r.offset, r.key, r.value, list(r.headers)) for r in got][:4] == [
            (o, k, v, h) for o, _, k, v, h in expected(ROWS, 0)]


def test_retention_deletes_segments_holding_kafka_batches(store: eventstore.Store) -> None:
    store.create_topic("r", 1, segment_bytes=4096, retention_bytes=8192)
    for i in range(40):
        store.log.append_kafka("r", 0, kafka_batch([(b"k", bytes(900), [])], ts=TS + i))
    start, end = store.offsets("r", 0)
    assert end == 40 and start > 0
    assert [r.offset for r in store.read("r", 0, start, max_records=100)] == list(range(start, 40))


# --- rules K1-K5: refused before anything is written ---------------------------------------------


def _refusals() -> dict[str, tuple[bytes, type[Exception], str]]:
    good = kafka_batch(ROWS, 0)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x01
    wrong_count = bytearray(good)
    claim_five(wrong_count)  # 5 records claimed, 4 present (K5)
    transactional = bytearray(good)
    struct.pack_into(">h", transactional, 21, 0x10)
    control = bytearray(good)
    struct.pack_into(">h", control, 21, 0x20)
    unknown_bits = bytearray(good)
    struct.pack_into(">h", unknown_bits, 21, 0x80)
    no_epoch = bytearray(kafka_batch(ROWS, producer=(5, -1, 0)))
    trailing_record_bytes = bytearray(good) + b"\x00"
    struct.pack_into(">i", trailing_record_bytes, 8, len(trailing_record_bytes) - 12)
    bad_gzip = bytearray(kafka_batch(ROWS, 1))
    bad_gzip[70:80] = bytes(10)
    magic1 = bytearray(good)
    magic1[16] = 1
    return {
        "truncated": (good[:-3], CorruptRecordError, "CORRUPT_MESSAGE"),
        "two batches": (good + good, CorruptRecordError, "CORRUPT_MESSAGE"),
        "under a header": (good[:40], CorruptRecordError, "CORRUPT_MESSAGE"),
        "crc": (bytes(bad_crc), CorruptRecordError, "CORRUPT_MESSAGE"),
        "record count": (bytes(fix_crc(wrong_count)), CorruptRecordError, "CORRUPT_MESSAGE"),
        "bytes after the records": (bytes(fix_crc(trailing_record_bytes)), CorruptRecordError,
                                    "CORRUPT_MESSAGE"),
        "unknown attribute": (bytes(fix_crc(unknown_bits)), CorruptRecordError, "CORRUPT_MESSAGE"),
        "gzip garbage": (bytes(fix_crc(bad_gzip)), CorruptRecordError, "CORRUPT_MESSAGE"),
        "transactional": (bytes(fix_crc(transactional)), InvalidRecordError, "INVALID_RECORD"),
        "control": (bytes(fix_crc(control)), InvalidRecordError, "INVALID_RECORD"),
        "producer without epoch": (bytes(no_epoch), InvalidRecordError, "INVALID_RECORD"),
        "magic 1": (bytes(magic1), UnsupportedRecordVersionError, "UNSUPPORTED_VERSION"),
        "too large": (kafka_batch([(None, bytes(2000), [])]), RecordTooLargeError, "MESSAGE_TOO_LARGE"),
    }


@pytest.mark.parametrize("case", sorted(_refusals()))
def test_a_refused_batch_writes_nothing(store: eventstore.Store, case: str) -> None:
    batch, error, code = _refusals()[case]
    store.create_topic("k", 1, max_record_bytes=1024)
    store.append("k", b"before", partition=0)
    with pytest.raises(error) as raised:
        store.log.append_kafka("k", 0, batch)
    assert kafka_error_for(raised.value).name == code
    assert store.offsets("k", 0) == (0, 1)
    stored = store.log.read_batches("k", 0, 0, 1 << 20)[0]
    assert store.log.partition("k", 0).segments()[-1].size == len(stored)
    store.log.append_kafka("k", 0, kafka_batch(ROWS[:1]))  # the partition takes the next one
    assert store.offsets("k", 0) == (0, 2)


def test_streams_topics_refuse_kafka_batches(store: eventstore.Store) -> None:
    store.create_topic("s", 1, streams=True)
    with pytest.raises(StreamsTopicError) as raised:
        store.log.append_kafka("s", 0, kafka_batch(ROWS))
    assert kafka_error_for(raised.value).name == "INVALID_RECORD"
    assert store.offsets("s", 0) == (0, 0)


def test_native_append_encoded_still_refuses_kafka_batches(store: eventstore.Store) -> None:
    store.create_topic("k", 1)
    with pytest.raises(eventstore.InvalidArgumentError, match="append_kafka"):
        store.log.append_encoded("k", 0, kafka_batch(ROWS))
    assert store.offsets("k", 0) == (0, 0)


# --- damage in a segment (docs/format.md, 17.4) --------------------------------------------------


def _two_kafka_batches(path: Path) -> Path:
    with eventstore.open(path, durability="none") as store:
        store.create_topic("k", 1)
        store.log.append_kafka("k", 0, kafka_batch(ROWS, 0))
        store.log.append_kafka("k", 0, kafka_batch(ROWS, 3))
    return path / "topics" / "k" / "0" / ("0" * 20 + ".log")


def test_a_torn_kafka_batch_at_the_tail_is_cut_on_open(tmp_path: Path) -> None:
    log = _two_kafka_batches(tmp_path / "s")
    first = struct.unpack_from(">i", log.read_bytes(), 8)[0] + 12
    with open(log, "r+b") as f:
        f.truncate(log.stat().st_size - 5)
    shutil.rmtree(tmp_path / "s" / "catalog")  # no checkpoint: recovery scans the segment
    with eventstore.open(tmp_path / "s") as store:
        assert [e.case for e in store.recovery_events] == ["R3"]
        assert store.recovery_events[0].position == first
        assert store.offsets("k", 0) == (0, 4)
        assert rows_of(store.read("k", 0, 0)) == expected(ROWS, 0)
        assert store.log.append_kafka("k", 0, kafka_batch(ROWS, 2)).base_offset == 4


def test_a_crc_mismatch_at_the_tail_is_cut_and_one_before_valid_data_is_corruption(tmp_path: Path) -> None:
    log = _two_kafka_batches(tmp_path / "s")
    data = bytearray(log.read_bytes())
    first = struct.unpack_from(">i", data, 8)[0] + 12
    tail = bytearray(data)
    tail[-1] ^= 0xFF  # the last batch's records: its CRC-32C no longer matches
    log.write_bytes(bytes(tail))
    shutil.rmtree(tmp_path / "s" / "catalog")
    with eventstore.open(tmp_path / "s") as store:
        assert [(e.case, e.position) for e in store.recovery_events] == [("R4", first)]
        assert store.offsets("k", 0) == (0, 4)
    middle = bytearray(data)
    middle[first - 1] ^= 0xFF  # the first batch's last byte, a valid batch after it
    log.write_bytes(bytes(middle))
    for leftover in log.parent.glob("*.broken"):
        leftover.unlink()
    shutil.rmtree(tmp_path / "s" / "catalog")
    with pytest.raises(CorruptionError, match="CRC-32C") as raised:
        eventstore.open(tmp_path / "s")
    assert raised.value.position == 0


def test_damage_before_the_checkpoint_fails_reads_and_check_not_open(tmp_path: Path) -> None:
    log = _two_kafka_batches(tmp_path / "s")
    data = bytearray(log.read_bytes())
    data[70] ^= 0x01  # inside the first batch's records
    log.write_bytes(bytes(data))
    with eventstore.open(tmp_path / "s") as store:
        with pytest.raises(CorruptionError, match="CRC-32C"):
            store.read("k", 0, 0)
        with pytest.raises(CorruptionError):
            store.log.read_batches("k", 0, 0, 1 << 20)
        report = store.check()
        assert [p.position for p in report.problems] == [0]


def test_check_finds_a_batch_that_fails_rule_k5(tmp_path: Path) -> None:
    """A batch whose CRC-32C and header hold but whose records do not decode (written past the
    store): recovery keeps it (K5 is not repeated there), check() and reads name it."""
    path = tmp_path / "s"
    with eventstore.open(path, durability="none") as store:
        store.create_topic("k", 1)
        store.log.append_kafka("k", 0, kafka_batch(ROWS, 0))
    log = path / "topics" / "k" / "0" / ("0" * 20 + ".log")
    data = bytearray(log.read_bytes())
    claim_five(data)
    log.write_bytes(bytes(fix_crc(data)))
    shutil.rmtree(path / "catalog")
    with eventstore.open(path) as store:
        assert store.offsets("k", 0) == (0, 5)
        report = store.check()
        assert len(report.problems) == 1 and report.problems[0].position == 0
        with pytest.raises(CorruptionError, match="undecodable"):
            store.read("k", 0, 0)
        store.delete_topic("k")


def test_a_kafka_batch_survives_a_crash_without_a_checkpoint(tmp_path: Path) -> None:
    store = eventstore.open(tmp_path / "s", durability="none")
    store.create_topic("k", 1)
    store.log.flush()
    for codec in range(5):
        store.log.append_kafka("k", 0, kafka_batch(ROWS, codec))
    crash(store)
    with eventstore.open(tmp_path / "s") as again:
        assert [e.case for e in again.recovery_events] == ["R2"]
        assert rows_of(again.read("k", 0, 0, max_records=100)) == [
            row for b in range(5) for row in expected(ROWS, 4 * b)]


def test_es_dump_shows_kafka_batches(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from eventstore.cli.app import app

    log = _two_kafka_batches(tmp_path / "s")
    result = CliRunner().invoke(app, ["dump", str(log), "--records", "--json"])
    assert result.exit_code == 0, result.output
    dumped = json.loads(result.stdout)
    assert [b["magic"] for b in dumped["batches"]] == [2, 2]
    assert [b["compression"] for b in dumped["batches"]] == ["none", "lz4"]
    assert [b["checksum"] for b in dumped["batches"]] == ["ok", "ok"]
    assert dumped["batches"][1]["records"][2]["headers"] == [["dup", "1"], ["dup", None], ["dup", ""]]
    assert os.path.exists(log)


# --- rule K5 on the append path agrees with the codec's decoder ----------------------------------


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=200)),
                               st.one_of(st.none(), st.binary(max_size=300)),
                               st.lists(st.tuples(st.text(max_size=5),
                                                  st.one_of(st.none(), st.binary(max_size=5))), max_size=3)),
                     min_size=1, max_size=5),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
       delta=st.integers(0, 300))
def test_the_append_path_k5_check_accepts_exactly_what_the_decoder_decodes(
        rows: list[Row], flips: list[tuple[int, int]], delta: int) -> None:
    """``check_kafka_records`` (the lean walk on every Produce) and ``wire.batch.decode_records``
    (every read) accept and refuse the same bytes, whatever is changed in the records."""
    plain = bytearray(kb.encode_batch([(i, TS + i * delta, k, v, tuple(h))
                                       for i, (k, v, h) in enumerate(rows)]))
    for at, value in flips:
        plain[61 + at % (len(plain) - 61)] = value
    header = kb.check_batch(bytes(fix_crc(plain)))
    try:
        kb.decode_records(plain, verify=False)
        decoded = True
    except CorruptRecordError:
        decoded = False
    try:
        check_kafka_records(plain, header)
        checked = True
    except CorruptRecordError:
        checked = False
    assert checked == decoded
