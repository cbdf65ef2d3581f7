"""The store's public API, call by call, as the README and the docstrings describe it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from siblings import crash

import eventstore
from eventstore import (
    Message,
    OffsetOutOfRangeError,
    Record,
    RecordMetadata,
    StoreClosedError,
    StoreLockedError,
    TopicConfig,
    TopicNotFoundError,
    partition_for_key,
)

OpenStore = Callable[..., eventstore.Store]
REPO = Path(eventstore.__file__).resolve().parent.parent


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def all_records(store: eventstore.Store, topic: str, partition: int) -> list[Record]:
    start, end = store.offsets(topic, partition)
    out: list[Record] = []
    offset = start
    while offset < end:
        got = store.read(topic, partition, offset, max_records=1000)
        assert got, "a read below the end returned nothing"
        out += got
        offset = got[-1].offset + 1
    return out


def log_bytes_on_disk(store: eventstore.Store) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(Path(store.path) / "topics"):
        total += sum(os.path.getsize(os.path.join(dirpath, n)) for n in names if n.endswith(".log"))
    return total


# --- the README example ------------------------------------------------------------


def test_readme_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    before = now_ms()
    with eventstore.open("./es-data") as store:
        assert store.durability == "fsync"
        store.create_topic("orders", partitions=3)
        meta = store.append("orders", b'{"id": 1}', key=b"order-1", headers=[("source", b"web")])
        assert isinstance(meta, RecordMetadata)
        assert meta.topic == "orders"
        assert meta.partition == partition_for_key(b"order-1", 3)
        assert meta.offset == 0
        assert before <= meta.timestamp_ms <= now_ms()
        metas = store.append_batch("orders", [b"v1", (b"k2", b"v2"),
                                              eventstore.Message(value=b"v3", key=b"k3")])
        assert len(metas) == 3
        assert metas[1].partition == partition_for_key(b"k2", 3)
        assert metas[2].partition == partition_for_key(b"k3", 3)
        for m, (key, value) in zip(metas, [(None, b"v1"), (b"k2", b"v2"), (b"k3", b"v3")], strict=True):
            [r] = store.read("orders", m.partition, m.offset, max_records=1)
            assert (r.key, r.value, r.timestamp_ms) == (key, value, m.timestamp_ms)
        records = store.read("orders", meta.partition, 0, max_records=500)
        for r in records:
            print(r.offset, r.key, r.value, r.headers)
        assert records[0].key == b"order-1" and records[0].value == b'{"id": 1}'
        assert [tuple(h) for h in records[0].headers] == [("source", b"web")]
        assert (records[0].topic, records[0].partition) == ("orders", meta.partition)
        start, end = store.offsets("orders", 0)
        assert start == 0
        assert end == sum(1 for m in [meta, *metas] if m.partition == 0)
        first = store.offset_for_time("orders", 0, meta.timestamp_ms)
        in_p0 = all_records(store, "orders", 0)
        expected = next((r.offset for r in in_p0 if r.timestamp_ms >= meta.timestamp_ms), None)
        assert first == expected
        assert [t.name for t in store.topics()] == ["orders"]
        assert store.topic("orders").partitions == 3
        cfg = store.alter_topic("orders", retention_ms=86_400_000)
        assert cfg.retention_ms == 86_400_000 and store.topic("orders") == cfg
        assert store.enforce_retention() == 0
        store.flush()
        assert store.statistics().records == 4
        assert store.check().ok
    assert store.closed
    assert "order-1" in capsys.readouterr().out
    with eventstore.open(tmp_path / "es-data") as again:
        assert again.statistics().records == 4


# --- append, append_batch, metadata ---------------------------------------------------------


def test_append_returns_contiguous_offsets(store: eventstore.Store) -> None:
    store.create_topic("t")
    assert store.offsets("t", 0) == (0, 0)
    for i in range(20):
        assert store.append("t", b"%d" % i).offset == i
    assert store.offsets("t", 0) == (0, 20)
    assert [r.value for r in store.read("t", 0, 0)] == [b"%d" % i for i in range(20)]


def test_append_batch_metadata_is_in_input_order(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=3)
    items: list[Any] = []
    for i in range(30):
        kind = i % 4
        if kind == 0:
            items.append(b"bare-%d" % i)
        elif kind == 1:
            items.append((b"key-%d" % i, b"pair-%d" % i))
        elif kind == 2:
            items.append(Message(value=b"msg-%d" % i, partition=i % 3, timestamp_ms=1000 + i))
        else:
            items.append(Message(value=b"keyed-%d" % i, key=b"key-%d" % i, headers=[("i", b"%d" % i)]))
    metas = store.append_batch("t", items)
    assert len(metas) == len(items)
    per_partition: dict[int, list[int]] = {}
    for i, (item, meta) in enumerate(zip(items, metas, strict=True)):
        [r] = store.read("t", meta.partition, meta.offset, max_records=1)
        value = item if isinstance(item, bytes) else item[1] if isinstance(item, tuple) else item.value
        assert r.value == value, i
        assert r.timestamp_ms == meta.timestamp_ms
        if isinstance(item, Message) and item.timestamp_ms is not None:
            assert meta.timestamp_ms == item.timestamp_ms
        per_partition.setdefault(meta.partition, []).append(meta.offset)
    for p, offsets in per_partition.items():
        assert offsets == list(range(len(offsets))), p  # in input order, no gaps
        assert store.offsets("t", p) == (0, len(offsets))


def test_batch_metadata_is_a_sequence(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", b"first")
    metas = store.append_batch("t", [b"a", b"b", b"c"])
    as_list = list(metas)
    assert [m.offset for m in as_list] == [1, 2, 3]
    assert metas[0] == as_list[0] and metas[-1] == as_list[2]
    assert metas[1:] == as_list[1:]
    assert metas == as_list
    assert len(metas) == 3
    with pytest.raises(IndexError):
        metas[3]


def test_append_batch_accepts_any_iterable(store: eventstore.Store) -> None:
    store.create_topic("t")
    metas = store.append_batch("t", (b"%d" % i for i in range(5)))
    assert [m.offset for m in metas] == [0, 1, 2, 3, 4]
    metas = store.append_batch("t", (b"x", b"y"), partition=0)
    assert [m.offset for m in metas] == [5, 6]


def test_explicit_timestamps_round_trip(store: eventstore.Store) -> None:
    store.create_topic("t")
    m1 = store.append("t", b"a", timestamp_ms=0)
    m2 = store.append("t", b"b", timestamp_ms=2**62)
    m3 = store.append_batch("t", [Message(value=b"c", timestamp_ms=5), Message(value=b"d"), b"e"])
    assert (m1.timestamp_ms, m2.timestamp_ms, m3[0].timestamp_ms) == (0, 2**62, 5)
    read = store.read("t", 0, 0)
    assert [r.timestamp_ms for r in read[:3]] == [0, 2**62, 5]
    assert read[3].timestamp_ms == m3[1].timestamp_ms and read[4].timestamp_ms == m3[2].timestamp_ms


def test_default_timestamp_is_now(store: eventstore.Store) -> None:
    store.create_topic("t")
    before = now_ms()
    meta = store.append("t", b"a")
    metas = store.append_batch("t", [b"b", (b"k", b"c")])
    after = now_ms()
    for m in [meta, *metas]:
        assert before <= m.timestamp_ms <= after


def test_tombstones_empty_values_and_missing_keys(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", None, key=b"gone")
    store.append("t", b"")
    store.append("t", b"v", key=b"")
    store.append_batch("t", [None, (b"k", None), (None, b"w"), Message(value=None, key=b"m")])
    got = [(r.key, r.value) for r in store.read("t", 0, 0)]
    assert got == [
        (b"gone", None), (None, b""), (b"", b"v"), (None, None), (b"k", None), (None, b"w"), (b"m", None),
    ]


def test_records_carry_topic_partition_and_headers(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=2)
    store.append("t", b"v", partition=1, headers=[("a", b"1"), ("a", b"2"), ("", b"")])
    [r] = store.read("t", 1, 0)
    assert (r.topic, r.partition, r.offset) == ("t", 1, 0)
    assert [tuple(h) for h in r.headers] == [("a", b"1"), ("a", b"2"), ("", b"")]
    store.append("t", b"v", partition=1)
    assert list(store.read("t", 1, 1)[0].headers) == []


def test_records_have_kafka_python_consumer_record_timestamps(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", b"v", timestamp_ms=1_700_000_000_123)
    [r] = store.read("t", 0, 0)
    # ConsumerRecord's names: timestamp is timestamp_ms, timestamp_type 0 is CreateTime
    assert (r.timestamp, r.timestamp_type) == (1_700_000_000_123, 0)
    assert eventstore.Record.TIMESTAMP_CREATE_TIME == 0
    # the stored layout is the first five; the trailing three are filled per batch, not stored
    assert [f.name for f in msgspec.structs.fields(r)] == [
        "offset", "timestamp_ms", "key", "value", "headers", "topic", "partition", "timestamp_type"]


# --- reading --------------------------------------------------------------------------------------


def test_read_max_records(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append_batch("t", [b"%d" % i for i in range(10)])
    store.append_batch("t", [b"%d" % i for i in range(10, 20)])
    for start in (0, 3, 9, 10, 15):
        for n in (1, 2, 7, 10, 11, 100):
            got = store.read("t", 0, start, max_records=n)
            assert [r.offset for r in got] == list(range(start, min(20, start + n)))
    assert len(store.read("t", 0, 0)) == 20  # the default max_records (500) covers it


def test_read_at_end_returns_nothing_and_past_end_raises(store: eventstore.Store) -> None:
    store.create_topic("t")
    assert store.read("t", 0, 0) == []
    with pytest.raises(OffsetOutOfRangeError):
        store.read("t", 0, 1)
    store.append_batch("t", [b"a", b"b"])
    assert store.read("t", 0, 2) == []
    with pytest.raises(OffsetOutOfRangeError) as info:
        store.read("t", 0, 3)
    e = info.value
    assert (e.topic, e.partition, e.offset, e.log_start_offset, e.end_offset) == ("t", 0, 3, 0, 2)
    assert "0..2" in str(e)
    with pytest.raises(OffsetOutOfRangeError):
        store.read("t", 0, -1)
    with pytest.raises(OffsetOutOfRangeError):
        store.read("t", 0, 10**15)


def _equal_batches(store: eventstore.Store, topic: str, batches: int, per_batch: int) -> int:
    """Append equal-sized batches; returns the size in bytes of one batch."""
    for _ in range(batches):
        store.append_batch(topic, [Message(value=bytes(100), timestamp_ms=1_700_000_000_000)] * per_batch)
    size = log_bytes_on_disk(store)
    assert size % batches == 0
    return size // batches


def test_read_max_bytes_returns_whole_batches(store: eventstore.Store) -> None:
    store.create_topic("t")
    size = _equal_batches(store, "t", 4, 10)
    assert [r.offset for r in store.read("t", 0, 0, max_bytes=1)] == list(range(10))  # first batch whole
    assert [r.offset for r in store.read("t", 0, 0, max_bytes=size)] == list(range(10))
    assert [r.offset for r in store.read("t", 0, 0, max_bytes=2 * size - 1)] == list(range(10))
    assert [r.offset for r in store.read("t", 0, 0, max_bytes=2 * size)] == list(range(20))
    assert [r.offset for r in store.read("t", 0, 0, max_bytes=10 * size)] == list(range(40))
    # from the middle of a batch: the rest of that batch, whole
    assert [r.offset for r in store.read("t", 0, 13, max_bytes=1)] == list(range(13, 20))
    assert [r.offset for r in store.read("t", 0, 13, max_bytes=2 * size)] == list(range(13, 30))
    # max_records still applies inside a batch
    assert [r.offset for r in store.read("t", 0, 0, max_records=4, max_bytes=1)] == [0, 1, 2, 3]


def test_read_max_bytes_across_segments_whole_batches(store: eventstore.Store) -> None:
    store.create_topic("probe")
    size = _equal_batches(store, "probe", 1, 10)
    store.delete_topic("probe")
    store.create_topic("t", segment_bytes=max(1024, size + 10))  # one batch per segment
    _equal_batches(store, "t", 4, 10)
    assert store.statistics().partition_stats[0].segments == 4
    assert [r.offset for r in store.read("t", 0, 0, max_bytes=2 * size)] == list(range(20))
    assert [r.offset for r in store.read("t", 0, 5, max_bytes=4 * size)] == list(range(5, 40))


def test_read_max_bytes_is_respected_across_a_segment_boundary(store: eventstore.Store) -> None:
    """What is left of the budget after one segment also bounds the next: only the read's
    first batch is returned whole, not the first batch of every segment it crosses."""
    store.create_topic("probe")
    size = _equal_batches(store, "probe", 1, 10)
    store.delete_topic("probe")
    store.create_topic("t", segment_bytes=max(1024, size + 10))
    _equal_batches(store, "t", 3, 10)
    got = store.read("t", 0, 0, max_bytes=size + size // 2)
    assert [r.offset for r in got] == list(range(10))


Expected = list[tuple[bytes | None, bytes | None, int]]  # (key, value, timestamp) by offset


def _random_log(store: eventstore.Store, topic: str, n: int, seed: int) -> Expected:
    rng = random.Random(seed)
    expected: Expected = []
    while len(expected) < n:
        count = rng.choice([1, 1, 2, 3, 7])
        items = []
        for _ in range(count):
            value = rng.randbytes(rng.randrange(0, 300)) if rng.random() > 0.05 else None
            key = rng.randbytes(rng.randrange(1, 8)) if rng.random() > 0.5 else None
            ts = rng.randrange(1_000, 10_000)
            items.append(Message(value=value, key=key, timestamp_ms=ts, partition=0))
            expected.append((key, value, ts))
        if count == 1 and rng.random() < 0.5:
            m = items[0]
            store.append(topic, m.value, key=m.key, timestamp_ms=m.timestamp_ms, partition=0)
        else:
            store.append_batch(topic, items)
    return expected


def _check_every_offset(store: eventstore.Store, expected: Expected) -> None:
    for offset in range(len(expected)):
        for n in (1, 3, 50):
            got = store.read("t", 0, offset, max_records=n)
            want = expected[offset : offset + n]
            assert [(r.key, r.value, r.timestamp_ms) for r in got] == want, (offset, n)
            assert [r.offset for r in got] == list(range(offset, offset + len(want)))


def test_reads_across_segment_rolls_from_every_offset(open_store: OpenStore) -> None:
    store = open_store()
    store.create_topic("t", segment_bytes=4096)
    expected = _random_log(store, "t", 400, seed=1)
    assert store.statistics().partition_stats[0].segments > 10
    assert store.offsets("t", 0) == (0, len(expected))
    _check_every_offset(store, expected)
    store.close()
    store = open_store()  # closed segments' indexes now come from disk
    _check_every_offset(store, expected)


def test_reads_with_index_entries_inside_segments(open_store: OpenStore) -> None:
    store = open_store()
    store.create_topic("t", segment_bytes=64 * 1024)  # several index entries per segment
    expected = _random_log(store, "t", 1200, seed=2)
    assert store.statistics().partition_stats[0].segments >= 2
    _check_every_offset(store, expected)
    store.close()
    store = open_store()
    _check_every_offset(store, expected)


# --- offset_for_time ------------------------------------------------------------------------------


def test_offset_for_time_simple(store: eventstore.Store) -> None:
    store.create_topic("t")
    assert store.offset_for_time("t", 0, 0) is None
    for ts in (10, 20, 20, 30):
        store.append("t", b"v", timestamp_ms=ts)
    cases = {0: 0, 10: 0, 11: 1, 20: 1, 21: 3, 30: 3, 31: None, 2**62: None}
    for t, want in cases.items():
        assert store.offset_for_time("t", 0, t) == want, t


def _brute_offset_for_time(timestamps: list[int], start: int, t: int) -> int | None:
    return next((start + i for i, ts in enumerate(timestamps[start:]) if ts >= t), None)


@pytest.mark.parametrize("segment_bytes", [4096, 64 * 1024])
def test_offset_for_time_non_monotonic_across_segments(open_store: OpenStore, segment_bytes: int) -> None:
    store = open_store()
    store.create_topic("t", segment_bytes=segment_bytes)
    expected = _random_log(store, "t", 1500, seed=segment_bytes)
    timestamps = [ts for _k, _v, ts in expected]
    probes = sorted({0, 1, max(timestamps) + 1, *timestamps, *(t + 1 for t in timestamps[::7])})
    for reopened in (False, True):
        for t in probes:
            assert store.offset_for_time("t", 0, t) == _brute_offset_for_time(timestamps, 0, t), (t, reopened)
        store.close()
        store = open_store()


def test_offset_for_time_with_a_late_large_timestamp(store: eventstore.Store) -> None:
    """An out-of-order record: the answer is the first in offset order, not the closest in time."""
    store.create_topic("t", segment_bytes=1024)
    timestamps = [100, 500, 200, 300, 50, 400, 600, 10]
    for ts in timestamps:
        store.append("t", bytes(300), timestamp_ms=ts)
    for t in range(0, 700, 25):
        assert store.offset_for_time("t", 0, t) == _brute_offset_for_time(timestamps, 0, t), t


# --- topics ------------------------------------------------------------------------------------------


def test_topics_and_topic(store: eventstore.Store) -> None:
    assert store.topics() == []
    b = store.create_topic("b", partitions=2, retention_bytes=10**9)
    a = store.create_topic("a", retention_ms=1000, segment_bytes=4096, segment_ms=60_000, max_record_bytes=77)
    assert isinstance(a, TopicConfig)
    assert store.topics() == [a, b]
    assert store.topic("a") == a
    assert (a.name, a.partitions, a.retention_ms, a.retention_bytes) == ("a", 1, 1000, None)
    assert (a.segment_bytes, a.segment_ms, a.max_record_bytes) == (4096, 60_000, 77)
    assert (b.partitions, b.retention_bytes, b.retention_ms) == (2, 10**9, None)
    assert abs(a.created_ms - now_ms()) < 60_000


def test_alter_topic_and_reopen(open_store: OpenStore) -> None:
    store = open_store()
    store.create_topic("t", partitions=2)
    store.append("t", b"p0", partition=0)
    cfg = store.alter_topic("t", partitions=4, retention_ms=5000, segment_bytes=2048, max_record_bytes=500)
    assert (cfg.partitions, cfg.retention_ms, cfg.segment_bytes, cfg.max_record_bytes) == (4, 5000, 2048, 500)
    assert store.topic("t") == cfg
    assert store.append("t", b"p3", partition=3).offset == 0
    assert store.offsets("t", 3) == (0, 1)
    for _ in range(10):  # the new segment_bytes applies to existing partitions
        store.append("t", bytes(400), partition=0)
    assert store.statistics().partition_stats[0].segments >= 3
    key = next(b"k%d" % i for i in range(100) if partition_for_key(b"k%d" % i, 4) >= 2)
    assert store.append("t", b"v", key=key).partition == partition_for_key(key, 4)
    assert store.alter_topic("t", retention_ms=None).retention_ms is None
    cfg = store.topic("t")
    store.close()
    store = open_store()
    assert store.topic("t") == cfg
    assert [r.value for r in store.read("t", 3, 0)] == [b"p3"]
    assert store.read("t", 0, 0)[0].value == b"p0"


def test_delete_topic_then_recreate(open_store: OpenStore) -> None:
    store = open_store()
    store.create_topic("t", partitions=3)
    store.create_topic("other")
    for i in range(30):
        store.append("t", b"old-%d" % i)
    store.append("other", b"keep")
    store.delete_topic("t")
    with pytest.raises(TopicNotFoundError):
        store.topic("t")
    with pytest.raises(TopicNotFoundError):
        store.append("t", b"v")
    assert [t.name for t in store.topics()] == ["other"]
    assert sorted(os.listdir(Path(store.path) / "topics")) == ["other"]
    store.create_topic("t", partitions=1)
    assert store.offsets("t", 0) == (0, 0)
    assert store.read("t", 0, 0) == []
    assert store.append("t", b"new").offset == 0
    store.close()
    store = open_store()
    assert store.topic("t").partitions == 1
    assert [r.value for r in store.read("t", 0, 0)] == [b"new"]
    assert [r.value for r in store.read("other", 0, 0)] == [b"keep"]


def test_reopen_keeps_everything(open_store: OpenStore) -> None:
    store = open_store()
    store.create_topic("a", partitions=3, segment_bytes=2048, retention_bytes=10**9)
    store.create_topic("b", segment_ms=3_600_000, max_record_bytes=4096)
    rng = random.Random(5)
    for i in range(300):
        key = b"k%d" % rng.randrange(20) if i % 3 else None
        headers = [("n", b"%d" % i)] if i % 5 == 0 else None
        store.append("a", rng.randbytes(rng.randrange(200)) if i % 7 else None, key=key, headers=headers)
    store.append_batch("b", [Message(value=b"x", timestamp_ms=7, headers=[("h", b"")]), (b"k", b"y")])
    topics = store.topics()
    contents = {(t.name, p): all_records(store, t.name, p) for t in topics for p in range(t.partitions)}
    offsets = {tp: store.offsets(*tp) for tp in contents}
    stats = store.statistics()
    store.close()
    store = open_store()
    assert store.topics() == topics
    assert {tp: store.offsets(*tp) for tp in contents} == offsets
    assert {tp: all_records(store, *tp) for tp in contents} == contents
    again = store.statistics()
    assert (again.records, again.size_bytes, again.partition_stats) == (
        stats.records, stats.size_bytes, stats.partition_stats
    )
    assert store.recovery_events == []


def test_topic_names_with_a_leading_dot_survive_reopen(open_store: OpenStore) -> None:
    """Kafka's rule allows a leading dot; such a topic is not a transient directory to sweep."""
    store = open_store()
    for name in (".hidden", "._-", ".a.creating", ".a.deleting-1"):
        store.create_topic(name)
        store.append(name, b"precious " + name.encode())
    store.delete_topic("._-")
    store.close()
    store = open_store()
    assert [t.name for t in store.topics()] == [".a.creating", ".a.deleting-1", ".hidden"]
    for name in (".hidden", ".a.creating", ".a.deleting-1"):
        assert [r.value for r in store.read(name, 0, 0)] == [b"precious " + name.encode()]
    assert store.recovery_events == []


# --- statistics, flush, check --------------------------------------------------------------------------


def test_statistics(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    store.create_topic("b", partitions=2, segment_bytes=1024)
    store.create_topic("a")
    for _ in range(5):
        store.append("a", b"12345", timestamp_ms=1000)
    store.append_batch("a", [Message(value=b"v", timestamp_ms=3000)] * 10)
    for i in range(20):
        store.append("b", bytes(200), partition=i % 2, timestamp_ms=2000 + i)
    s = store.statistics()
    assert (s.path, s.durability, s.topics, s.partitions) == (store.path, "none", 2, 3)
    assert s.records == 35
    assert s.appended_batches == 26
    assert s.appended_records == 35
    assert s.size_bytes == log_bytes_on_disk(store)
    assert [(p.topic, p.partition) for p in s.partition_stats] == [("a", 0), ("b", 0), ("b", 1)]
    a0, b0, b1 = s.partition_stats
    assert (a0.log_start_offset, a0.end_offset, a0.segments, a0.max_timestamp_ms) == (0, 15, 1, 3000)
    assert (b0.end_offset, b1.end_offset) == (10, 10)
    assert b0.segments > 1 and b1.segments > 1
    assert b1.max_timestamp_ms == 2019
    assert sum(p.size_bytes for p in s.partition_stats) == s.size_bytes
    store.create_topic("empty")
    [empty] = [p for p in store.statistics().partition_stats if p.topic == "empty"]
    assert (empty.end_offset, empty.segments, empty.max_timestamp_ms) == (0, 1, None)


def test_statistics_max_timestamp_covers_every_segment(store: eventstore.Store) -> None:
    """The partition's max timestamp, not the active segment's (timestamps need not grow)."""
    store.create_topic("t", segment_bytes=1024)
    store.append("t", bytes(700), timestamp_ms=10**12)
    store.append("t", bytes(700), timestamp_ms=5)
    [p] = store.statistics().partition_stats
    assert p.segments == 2
    assert p.max_timestamp_ms == 10**12


def test_flush_checkpoints_everything(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    store.create_topic("t", partitions=2)
    for i in range(50):
        store.append("t", b"%d" % i, partition=i % 2)
    fsyncs = store.statistics().fsyncs
    store.flush()
    assert store.statistics().fsyncs >= fsyncs + 2
    crash(store)
    store = open_store(durability="none")
    assert store.recovery_events == []  # the checkpoint covered every byte: nothing to scan
    assert [store.offsets("t", p) for p in (0, 1)] == [(0, 25), (0, 25)]


def test_without_flush_a_crash_recovers_the_tail(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    store.create_topic("t")
    for i in range(50):
        store.append("t", b"%d" % i)
    crash(store)
    store = open_store(durability="none")
    assert [e.case for e in store.recovery_events] == ["R2"]
    assert [r.value for r in store.read("t", 0, 0)] == [b"%d" % i for i in range(50)]


def test_check_reports_what_it_read(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=2, segment_bytes=1024)
    for i in range(40):
        store.append("t", bytes(100), partition=i % 2)
    store.append_batch("t", [b"a", b"b", b"c"], partition=0)
    report = store.check()
    assert report.ok and report.problems == []
    assert report.partitions == 2
    assert report.records == 43
    assert report.batches == 41
    assert report.segments == sum(p.segments for p in store.statistics().partition_stats)
    assert report.bytes == log_bytes_on_disk(store)
    steps: list[int] = []
    assert store.check(on_progress=steps.append).ok
    assert len(steps) == 2 and sum(steps) == store.statistics().size_bytes


def test_check_names_the_file_and_position_of_a_problem(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append_batch("t", [b"a", b"b"])
    store.append_batch("t", [b"c"])
    seg = store.log.partition("t", 0).segments()[0]
    second = seg.last_batch(seg.size)[0]
    with open(seg.log_path, "r+b") as f:  # one bit of the second batch's checksum field
        f.seek(seg.size - 1)
        last = f.read(1)[0]
        f.seek(seg.size - 1)
        f.write(bytes([last ^ 1]))
    report = store.check()
    assert report.problems == [eventstore.CheckProblem(seg.log_path, second, "checksum mismatch")]
    assert str(report.problems[0]) == f"{seg.log_path} at position {second}: checksum mismatch"
    with open(seg.log_path, "r+b") as f:  # put it back: the teardown check must pass
        f.seek(seg.size - 1)
        f.write(bytes([last]))


# --- closing ---------------------------------------------------------------------------------------


def test_close_is_idempotent_and_releases_the_lock(open_store: OpenStore) -> None:
    store = open_store()
    store.create_topic("t")
    store.append("t", b"v")
    assert not store.closed
    store.close()
    assert store.closed
    store.close()
    assert "closed" in repr(store)
    again = open_store()
    assert again.read("t", 0, 0)[0].value == b"v"


CLOSED_CALLS: dict[str, Callable[[eventstore.Store], object]] = {
    "append": lambda s: s.append("t", b"v"),
    "append_batch": lambda s: s.append_batch("t", [b"v"]),
    "read": lambda s: s.read("t", 0, 0),
    "offsets": lambda s: s.offsets("t", 0),
    "offset_for_time": lambda s: s.offset_for_time("t", 0, 0),
    "wait_for": lambda s: s.wait_for("t", 0, 0, 0.01),
    "create_topic": lambda s: s.create_topic("u"),
    "alter_topic": lambda s: s.alter_topic("t", retention_ms=5),
    "delete_topic": lambda s: s.delete_topic("t"),
    "flush": lambda s: s.flush(),
    "statistics": lambda s: s.statistics(),
    "check": lambda s: s.check(),
    "enforce_retention": lambda s: s.enforce_retention(),
    "retention": lambda s: s.retention(dry_run=True),
    "topics": lambda s: s.topics(),
    "topic": lambda s: s.topic("t"),
}


@pytest.mark.parametrize("call", list(CLOSED_CALLS))
def test_using_a_closed_store_raises(open_store: OpenStore, call: str) -> None:
    store = open_store()
    store.create_topic("t")
    store.close()
    with pytest.raises(StoreClosedError) as info:
        CLOSED_CALLS[call](store)
    assert info.value.path == store.path
    assert "closed" in str(info.value)


def test_open_makes_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dirs"
    with pytest.raises(eventstore.StoreNotFoundError):
        eventstore.open(path, create=False)
    assert not (tmp_path / "no").exists()
    with eventstore.open(path) as store:  # documented: a missing directory is made, parents too
        assert store.topics() == []
    with eventstore.open(path, create=False) as store:
        assert store.path == str(path)
    empty = tmp_path / "empty"
    empty.mkdir()  # a directory that holds no store is not one
    with pytest.raises(eventstore.StoreNotFoundError):
        eventstore.open(empty, create=False)
    assert list(empty.iterdir()) == []


def test_context_manager_closes(store_path: Path) -> None:
    with eventstore.open(store_path) as store:
        store.create_topic("t")
        store.append("t", b"v")
    assert store.closed
    with pytest.raises(RuntimeError), eventstore.open(store_path) as store:
        raise RuntimeError("boom")
    assert store.closed
    with eventstore.open(str(store_path)) as store:
        assert store.offsets("t", 0) == (0, 1)


# --- the directory lock ----------------------------------------------------------------------------------


def test_second_open_in_the_same_process_is_refused(open_store: OpenStore, store_path: Path) -> None:
    first = open_store()
    first.create_topic("t")
    with pytest.raises(StoreLockedError) as info:
        eventstore.open(store_path)
    assert info.value.pid == os.getpid()
    assert str(os.getpid()) in str(info.value)
    assert info.value.path == str(store_path)
    # the refused opener disturbed nothing: the owner keeps working, the lock file keeps its pid
    first.append("t", b"still mine")
    assert (store_path / "LOCK").read_text().strip() == str(os.getpid())
    first.close()
    second = open_store()
    assert second.read("t", 0, 0)[0].value == b"still mine"


HOLDER = """
import sys, eventstore
store = eventstore.open(sys.argv[1])
store.create_topic("t", exist_ok=True)
store.append("t", b"from child")
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


def _holder(store_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def test_open_held_by_another_process_names_its_pid(open_store: OpenStore, store_path: Path) -> None:
    child = _holder(store_path)
    try:
        with pytest.raises(StoreLockedError) as info:
            eventstore.open(store_path)
        assert info.value.pid == child.pid
        assert str(child.pid) in str(info.value)
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    store = open_store()
    assert store.read("t", 0, 0)[0].value == b"from child"


def test_lock_of_a_killed_process_is_free(open_store: OpenStore, store_path: Path) -> None:
    child = _holder(store_path)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    store = open_store()
    assert store.read("t", 0, 0)[0].value == b"from child"


# --- durability modes ------------------------------------------------------------------------------------


def test_durability_none_never_syncs_on_append(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    assert store.durability == "none"
    store.create_topic("t")
    fsyncs = store.statistics().fsyncs
    for i in range(50):
        meta = store.append("t", b"%d" % i)
        assert store.offsets("t", 0)[1] == meta.offset + 1  # visible at once
    store.append_batch("t", [b"a", b"b"])
    assert store.statistics().fsyncs == fsyncs
    assert len(store.read("t", 0, 0)) == 52


def test_durability_fsync_syncs_every_single_threaded_append(open_store: OpenStore) -> None:
    store = open_store(durability="fsync")
    store.create_topic("t")
    fsyncs = store.statistics().fsyncs
    for i in range(10):
        meta = store.append("t", b"%d" % i)
        assert store.offsets("t", 0)[1] == meta.offset + 1
    assert store.statistics().fsyncs >= fsyncs + 10


def test_durability_interval_syncs_in_the_background(open_store: OpenStore) -> None:
    store = open_store(durability="interval", fsync_interval_ms=50)
    assert store.durability == "interval"
    store.create_topic("t")
    fsyncs = store.statistics().fsyncs
    for i in range(20):
        meta = store.append("t", b"%d" % i)
        assert store.read("t", 0, meta.offset)[0].value == b"%d" % i  # visible right away
    deadline = time.monotonic() + 10
    while store.statistics().fsyncs == fsyncs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.statistics().fsyncs > fsyncs
    # an idle store does not keep syncing
    time.sleep(0.2)
    idle = store.statistics().fsyncs
    time.sleep(0.3)
    assert store.statistics().fsyncs == idle


def test_wait_for(store: eventstore.Store) -> None:
    store.create_topic("t")
    assert store.wait_for("t", 0, 0, 0.01) is False
    store.append("t", b"a")
    assert store.wait_for("t", 0, 0, 0.01) is True
    assert store.wait_for("t", 0, 1, 0.05) is False
    threading.Timer(0.05, lambda: store.append("t", b"b")).start()
    started = time.monotonic()
    assert store.wait_for("t", 0, 1, 10) is True
    assert time.monotonic() - started < 5


# --- segment_ms ------------------------------------------------------------------------------------------


def test_segment_ms_rolls_an_old_active_segment(store: eventstore.Store) -> None:
    store.create_topic("t", segment_ms=100)
    store.append_batch("t", [b"a"])
    store.append_batch("t", [b"b"])
    assert store.statistics().partition_stats[0].segments == 1
    time.sleep(0.15)
    store.append_batch("t", [b"c"])  # the active segment is older than segment_ms
    assert store.statistics().partition_stats[0].segments == 2
    time.sleep(0.15)
    appends = 0
    while store.statistics().partition_stats[0].segments == 2 and appends < 100:
        store.append("t", b"%d" % appends)
        appends += 1
    assert appends <= 65  # single appends check the segment's age at least every 64 appends
    assert store.statistics().partition_stats[0].segments == 3
    assert [r.value for r in store.read("t", 0, 0, max_records=3)] == [b"a", b"b", b"c"]


def test_segment_ms_counts_from_the_first_append(store: eventstore.Store) -> None:
    store.create_topic("t", segment_ms=100)
    time.sleep(0.15)  # idle: no append yet
    store.append_batch("t", [b"a"])
    store.append_batch("t", [b"b"])
    assert store.statistics().partition_stats[0].segments == 1
