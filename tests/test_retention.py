"""Retention (docs/format.md, section 10): whole closed segments, oldest first, never the active one.

The expected outcome is computed here from the segment files on disk and the records' own
timestamps, with the rule as the spec states it, and compared with what the store did.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import eventstore
from eventstore import Message, OffsetOutOfRangeError
from eventstore.storage.segment import Segment

OpenStore = Callable[..., eventstore.Store]
DAY_MS = 86_400_000


def part_dir(store: eventstore.Store, topic: str, p: int) -> Path:
    return Path(store.path) / "topics" / topic / str(p)


def segments_on_disk(store: eventstore.Store, topic: str, p: int) -> list[tuple[int, int]]:
    """(base offset, size) of every ``.log`` file of the partition, oldest first."""
    out = []
    for name in os.listdir(part_dir(store, topic, p)):
        if name.endswith(".log"):
            out.append((int(name[:-4]), os.path.getsize(part_dir(store, topic, p) / name)))
    return sorted(out)


def segment_files(store: eventstore.Store, topic: str, p: int) -> set[str]:
    return {n for n in os.listdir(part_dir(store, topic, p)) if not n.endswith(".broken")}


def max_ts_by_segment(store: eventstore.Store, topic: str, p: int) -> dict[int, int]:
    bases = [b for b, _ in segments_on_disk(store, topic, p)]
    start, end = store.offsets(topic, p)
    out: dict[int, int] = {}
    offset = start
    while offset < end:
        for r in store.read(topic, p, offset, max_records=1000):
            base = max(b for b in bases if b <= r.offset)
            out[base] = max(out.get(base, -1), r.timestamp_ms)
            offset = r.offset + 1
    return out


def spec_keep(
    segments: list[tuple[int, int]], max_ts: dict[int, int], *,
    retention_bytes: int | None = None, retention_ms: int | None = None, now_ms: int = 0,
) -> list[tuple[int, int]]:
    """docs/format.md section 10, applied to a list of (base, size)."""
    keep = list(segments)
    total = sum(size for _, size in keep)
    while len(keep) > 1:
        base, size = keep[0]
        by_time = retention_ms is not None and max_ts[base] < now_ms - retention_ms
        by_size = retention_bytes is not None and total - size >= retention_bytes
        if not (by_time or by_size):
            break
        keep.pop(0)
        total -= size
    return keep


def fill(store: eventstore.Store, topic: str, n: int, *, partition: int = 0, size: int = 200,
         ts: Callable[[int], int] | None = None) -> list[bytes]:
    values = []
    for i in range(n):
        value = (b"%06d-" % i) + bytes(size + (i * 37) % 120)
        store.append(topic, value, partition=partition, timestamp_ms=None if ts is None else ts(i))
        values.append(value)
    return values


def assert_log_start(store: eventstore.Store, topic: str, p: int, start: int, values: list[bytes]) -> None:
    """The partition starts at ``start``; below it raises, from it every value reads back."""
    assert store.offsets(topic, p) == (start, len(values))
    if start > 0:
        with pytest.raises(OffsetOutOfRangeError) as info:
            store.read(topic, p, start - 1)
        assert info.value.log_start_offset == start
        with pytest.raises(OffsetOutOfRangeError):
            store.read(topic, p, 0)
    got = []
    offset = start
    while offset < len(values):
        batch = store.read(topic, p, offset, max_records=1000)
        got += [r.value for r in batch]
        offset = batch[-1].offset + 1
    assert got == values[start:]


# --- default ------------------------------------------------------------------------------------


def test_default_keeps_everything_forever(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    cfg = store.create_topic("t", segment_bytes=4096)
    assert (cfg.retention_ms, cfg.retention_bytes) == (None, None)
    values = fill(store, "t", 300, ts=lambda i: i)  # timestamps near the epoch
    before = segments_on_disk(store, "t", 0)
    assert len(before) > 10
    assert store.enforce_retention(now_ms=2**62) == 0
    assert store.enforce_retention() == 0
    assert segments_on_disk(store, "t", 0) == before
    store.close()
    store = open_store(durability="none")
    assert_log_start(store, "t", 0, 0, values)


# --- retention_bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 4096, 10_000, 25_000, "total-1", "total", "total+1", 10**12])
def test_retention_bytes_deletes_oldest_closed_segments(open_store: OpenStore, limit: Any) -> None:
    store = open_store(durability="none")
    store.create_topic("t", segment_bytes=4096)
    values = fill(store, "t", 250)
    before = segments_on_disk(store, "t", 0)
    total = sum(size for _, size in before)
    if isinstance(limit, str):
        limit = total + int(limit[5:] or 0)
    expected = spec_keep(before, {}, retention_bytes=limit)
    store.alter_topic("t", retention_bytes=limit)
    deleted = store.enforce_retention()
    assert deleted == len(before) - len(expected)
    assert segments_on_disk(store, "t", 0) == expected
    assert expected[-1] == before[-1]  # the active segment is never deleted
    start = expected[0][0]
    assert_log_start(store, "t", 0, start, values)
    gone = {f"{base:020d}{suffix}" for base, _ in before[: len(before) - len(expected)]
            for suffix in (".log", ".index", ".timeindex")}
    assert not gone & segment_files(store, "t", 0)
    [stats] = store.statistics().partition_stats
    assert (stats.log_start_offset, stats.segments) == (start, len(expected))
    assert stats.size_bytes == sum(size for _, size in expected)
    assert store.enforce_retention() == 0  # idempotent
    store.close()
    store = open_store(durability="none")  # the new log start survives a reopen
    assert segments_on_disk(store, "t", 0) == expected
    assert_log_start(store, "t", 0, start, values)
    assert store.append("t", b"more").offset == len(values)


def test_retention_bytes_enforced_on_roll(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    store.create_topic("t", segment_bytes=4096, retention_bytes=12_000)
    values = fill(store, "t", 600)
    segments = segments_on_disk(store, "t", 0)
    closed = segments[:-1]
    assert segments[0][0] > 0
    # at the last roll the rule ran with an empty active segment: it stopped when one more
    # deletion would have left less than retention_bytes in the closed segments
    assert sum(size for _, size in closed) - closed[0][1] < 12_000
    assert sum(size for _, size in closed) >= 12_000 or len(closed) == 0
    assert_log_start(store, "t", 0, segments[0][0], values)
    assert {int(n[:20]) for n in segment_files(store, "t", 0)} == {b for b, _ in segments}


def test_retention_is_per_partition(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    store.create_topic("t", partitions=3, segment_bytes=4096, retention_bytes=8192)
    big = fill(store, "t", 400, partition=1)
    small = fill(store, "t", 10, partition=2)
    store.enforce_retention()
    assert store.offsets("t", 0) == (0, 0)
    assert store.offsets("t", 1)[0] > 0
    assert store.offsets("t", 2) == (0, 10)
    assert_log_start(store, "t", 1, store.offsets("t", 1)[0], big)
    assert_log_start(store, "t", 2, 0, small)


# --- retention_ms --------------------------------------------------------------------------------------


def _by_segment_timestamps(
    store: eventstore.Store, segment_ts: list[int], per_segment: int = 8
) -> list[bytes]:
    """One segment per entry of ``segment_ts`` (each of its records gets that timestamp),
    then one record in a new active segment."""
    values = []
    for k, ts in enumerate([*segment_ts, segment_ts[-1]]):
        count = per_segment if k < len(segment_ts) else 1
        batch = [Message(value=b"%d-%d" % (k, j) + bytes(400), timestamp_ms=ts) for j in range(count)]
        store.append_batch("t", batch)
        values += [m.value for m in batch]  # type: ignore[misc]
    return values


@pytest.mark.parametrize(
    ("segment_ts", "now_ms"),
    [
        ([1000, 2000, 3000, 4000], 2000 + DAY_MS),  # deletes the first (ts 1000 < 2000)
        ([1000, 2000, 3000, 4000], 3001 + DAY_MS),  # the first three
        ([1000, 2000, 3000, 4000], 999 + DAY_MS),  # none
        ([1000, 9000, 2000, 3000], 5000 + DAY_MS),  # oldest first: stops at the new one
        ([1000, 2000, 3000, 4000], 2**62),  # every closed segment, never the active one
    ],
)
def test_retention_ms_deletes_segments_older_than_now_minus_retention(
    open_store: OpenStore, segment_ts: list[int], now_ms: int
) -> None:
    store = open_store(durability="none")
    store.create_topic("t", segment_bytes=8 * 450 + 100)
    values = _by_segment_timestamps(store, segment_ts)
    before = segments_on_disk(store, "t", 0)
    assert len(before) == len(segment_ts) + 1
    max_ts = max_ts_by_segment(store, "t", 0)
    assert [max_ts[b] for b, _ in before[:-1]] == segment_ts
    expected = spec_keep(before, max_ts, retention_ms=DAY_MS, now_ms=now_ms)
    store.alter_topic("t", retention_ms=DAY_MS)
    assert store.enforce_retention(now_ms=now_ms) == len(before) - len(expected)
    assert segments_on_disk(store, "t", 0) == expected
    assert_log_start(store, "t", 0, expected[0][0], values)
    store.close()
    store = open_store(durability="none")
    assert_log_start(store, "t", 0, expected[0][0], values)


def test_retention_ms_uses_the_segment_max_timestamp(store: eventstore.Store) -> None:
    store.create_topic("t", segment_bytes=4096)
    # first segment: mostly ancient records, but one recent one
    store.append_batch("t", [Message(value=bytes(300), timestamp_ms=10) for _ in range(5)])
    store.append("t", bytes(300), timestamp_ms=50_000)
    store.append("t", bytes(3500), timestamp_ms=10)  # rolls
    assert len(segments_on_disk(store, "t", 0)) == 2
    store.alter_topic("t", retention_ms=1000)
    assert store.enforce_retention(now_ms=50_500) == 0
    assert store.enforce_retention(now_ms=51_001) == 1
    assert store.offsets("t", 0) == (6, 7)


def test_retention_ms_enforced_on_roll_and_with_the_clock(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    store.create_topic("t", segment_bytes=4096, retention_ms=DAY_MS)
    values = fill(store, "t", 200, ts=lambda i: 1_000 + i)  # 1970: far past retention
    segments = segments_on_disk(store, "t", 0)
    assert len(segments) <= 2  # each roll deleted every older closed segment
    assert_log_start(store, "t", 0, segments[0][0], values)
    store.enforce_retention()  # now = the real clock
    assert len(segments_on_disk(store, "t", 0)) == 1


def test_only_the_active_segment_left(store: eventstore.Store) -> None:
    store.create_topic("t", segment_bytes=4096)
    values = fill(store, "t", 100, ts=lambda i: 5)
    store.alter_topic("t", retention_ms=1, retention_bytes=1)
    store.enforce_retention(now_ms=2**62)
    [(base, _)] = segments_on_disk(store, "t", 0)
    assert base > 0
    assert_log_start(store, "t", 0, base, values)
    assert store.offset_for_time("t", 0, 0) == base
    store.alter_topic("t", retention_ms=None, retention_bytes=None)
    values += fill(store, "t", 30)
    assert store.offsets("t", 0) == (base, 130)


def test_disabling_retention_stops_deletion(store: eventstore.Store) -> None:
    store.create_topic("t", segment_bytes=4096, retention_bytes=8192)
    fill(store, "t", 200)
    start = store.offsets("t", 0)[0]
    assert start > 0
    store.alter_topic("t", retention_bytes=None)
    fill(store, "t", 200)
    assert store.enforce_retention(now_ms=2**62) == 0
    assert store.offsets("t", 0) == (start, 400)


def test_offset_for_time_after_retention(store: eventstore.Store) -> None:
    store.create_topic("t", segment_bytes=4096)
    fill(store, "t", 200, ts=lambda i: 1000 + i)
    store.alter_topic("t", retention_bytes=8192)
    store.enforce_retention()
    start, end = store.offsets("t", 0)
    assert start > 0
    assert store.offset_for_time("t", 0, 0) == start
    assert store.offset_for_time("t", 0, 1000 + start + 3) == start + 3
    assert store.offset_for_time("t", 0, 1000 + end) is None


# --- readers racing retention ----------------------------------------------------------------------------


def _two_segments_and_a_mapped_first_one(store: eventstore.Store) -> None:
    store.create_topic("t", segment_bytes=1024)
    for i in range(6):
        store.append("t", b"%d" % i + bytes(400), timestamp_ms=1)
    assert len(segments_on_disk(store, "t", 0)) >= 2
    assert len(store.read("t", 0, 0)) == 6  # maps the first segment
    store.alter_topic("t", retention_ms=1)


def _read_or_out_of_range(store: eventstore.Store) -> None:
    try:
        records = store.read("t", 0, 0)
    except OffsetOutOfRangeError as e:
        assert e.log_start_offset > 0
        return
    assert [r.value[:1] for r in records] == [b"%d" % i for i in range(len(records))]  # type: ignore[index]


def test_segment_deleted_before_a_reader_maps_it(
    store: eventstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention runs between a reader taking the segment list and reading the segment."""
    _two_segments_and_a_mapped_first_one(store)
    original = Segment.read
    fired = []

    def read(self: Segment, *args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(store.enforce_retention(now_ms=2**62))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Segment, "read", read)
    _read_or_out_of_range(store)
    assert fired and fired[0] >= 1


def test_segment_deleted_while_a_reader_uses_its_map(
    store: eventstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention runs while a reader holds the segment's map (seen with real threads: a reader
    looping on the log start while appends roll and delete segments got a bare ValueError)."""
    _two_segments_and_a_mapped_first_one(store)
    original = Segment.locate
    fired = []

    def locate(self: Segment, *args: Any, **kwargs: Any) -> Any:
        if not fired:  # the reader holds the map returned by view(); retention runs now
            fired.append(store.enforce_retention(now_ms=2**62))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Segment, "locate", locate)
    _read_or_out_of_range(store)


@pytest.mark.parametrize("call", ["offset_for_time", "check"])
def test_retention_racing_offset_for_time_and_check(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    store = open_store(durability="none")
    store.create_topic("t", segment_bytes=1024)
    for i in range(10):
        store.append("t", b"%d" % i + bytes(300), timestamp_ms=5 + i)
    store.alter_topic("t", retention_ms=1)
    store.close()
    store = open_store(durability="none")  # nothing mapped yet
    store.statistics()  # every index loaded
    original = Segment.view
    fired: list[int] = []

    def view(self: Segment, end: int) -> Any:
        if not fired:  # retention (on a roll or on demand, in another thread) runs right now
            fired.append(store.enforce_retention(now_ms=2**62))
        return original(self, end)

    monkeypatch.setattr(Segment, "view", view)
    if call == "offset_for_time":
        assert store.offset_for_time("t", 0, 0) == store.offsets("t", 0)[0]
    else:
        assert store.check().ok
    assert fired and fired[0] >= 1


# --- store.retention(): per-partition report, dry run, topic filter ------------------------------


@pytest.mark.parametrize("limit", [4096, 10_000, 25_000])
def test_retention_reports_and_dry_run_matches(open_store: OpenStore, limit: int) -> None:
    store = open_store(durability="none")
    store.create_topic("t", partitions=2, segment_bytes=4096)
    store.create_topic("other", segment_bytes=4096, retention_bytes=1)
    values = {p: fill(store, "t", 150 + 60 * p, partition=p) for p in (0, 1)}
    fill(store, "other", 10)  # one segment: nothing of it can go
    before = {p: segments_on_disk(store, "t", p) for p in (0, 1)}
    store.alter_topic("t", retention_bytes=limit)
    expected = []
    for p in (0, 1):
        keep = spec_keep(before[p], {}, retention_bytes=limit)
        gone = before[p][: len(before[p]) - len(keep)]
        if gone:
            expected.append(eventstore.RetentionResult(
                topic="t", partition=p, segments=len(gone), records=keep[0][0],
                bytes=sum(size for _, size in gone), log_start_offset=keep[0][0]))
    assert expected, "the limits were chosen so that something goes"
    seen: list[eventstore.RetentionResult] = []
    assert store.retention(dry_run=True, on_progress=seen.append) == expected
    assert [(r.topic, r.partition) for r in seen] == [("other", 0), ("t", 0), ("t", 1)]
    assert {p: segments_on_disk(store, "t", p) for p in (0, 1)} == before  # the dry run removed nothing
    assert store.retention(["other"]) == []
    assert store.retention(["t"]) == expected
    for r in expected:
        assert_log_start(store, "t", r.partition, r.log_start_offset, values[r.partition])
    assert store.retention() == []


def test_retention_rejects_bad_arguments(store: eventstore.Store) -> None:
    store.create_topic("t")
    with pytest.raises(eventstore.TopicNotFoundError):
        store.retention(["t", "nope"])
    with pytest.raises(eventstore.InvalidArgumentError):
        store.retention("t")
    with pytest.raises(eventstore.InvalidArgumentError):
        store.retention(now_ms="now")  # type: ignore[arg-type]
