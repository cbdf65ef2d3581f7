"""Model-based test: the store against an in-memory model, under random operations.

The model is, per (topic, partition), the list of every record appended (key, value,
headers, timestamp) indexed by offset, and the log start offset. Operations: single and
batch appends (bare values, pairs, ``Message`` objects with keys, explicit partitions and
timestamps), reads at random offsets and limits, ``offset_for_time``, a clean reopen, a
simulated process crash, retention by size (on roll and on demand), rejected input, a full
disk, and ``check()``. Segments are small (1 KiB) so rolls and retention happen often.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from siblings import close_checked, crash

import eventstore
from eventstore import (
    Message,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageFullError,
    partition_for_key,
)
from eventstore.storage import disk

SEGMENT_BYTES = 1024
RETENTION_BYTES = 2000
MAX_RECORD = 600
TOPICS: dict[str, dict[str, Any]] = {
    "plain": {"partitions": 3, "segment_bytes": SEGMENT_BYTES, "max_record_bytes": MAX_RECORD},
    "kept": {"partitions": 2, "segment_bytes": SEGMENT_BYTES, "max_record_bytes": MAX_RECORD,
             "retention_bytes": RETENTION_BYTES},
}

Rec = tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...], int]  # key, value, headers, ts

topics = st.sampled_from(["kept", "kept", "plain"])  # retention needs volume
values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.tuples(st.binary(min_size=1, max_size=8), st.integers(100, 500)).map(lambda t: (t[0] * 500)[: t[1]]),
)
keys = st.none() | st.binary(max_size=8)
header_lists = st.none() | st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=10)), max_size=3)
timestamps = st.none() | st.integers(0, 10_000)
partition_choices = st.none() | st.integers(0, 5)  # taken modulo the topic's partition count
items = st.one_of(
    st.tuples(st.just("bare"), values),
    st.tuples(st.just("pair"), keys, values),
    st.tuples(st.just("msg"), values, keys, header_lists, partition_choices, timestamps),
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def as_rec(r: eventstore.Record) -> tuple[int, Rec]:
    return r.offset, (r.key, r.value, tuple(tuple(h) for h in r.headers), r.timestamp_ms)  # type: ignore[misc]


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="es-model-")
        self.path = os.path.join(self.tmp, "store")
        self.store: eventstore.Store | None = None
        self.durability = "none"
        self.log: dict[tuple[str, int], list[Rec]] = {}
        self.start: dict[tuple[str, int], int] = {}

    # --- helpers -----------------------------------------------------------------------

    @property
    def s(self) -> eventstore.Store:
        assert self.store is not None
        return self.store

    def partitions(self, topic: str) -> int:
        return int(TOPICS[topic]["partitions"])

    def pick(self, topic: str, choice: int | None) -> int | None:
        return None if choice is None else choice % self.partitions(topic)

    def disk_segments(self, topic: str, p: int) -> list[tuple[int, int]]:
        d = os.path.join(self.path, "topics", topic, str(p))
        return sorted(
            (int(n[:-4]), os.path.getsize(os.path.join(d, n))) for n in os.listdir(d) if n.endswith(".log")
        )

    def retention_moved(self, topic: str) -> None:
        """After an append, retention may have run on a roll: take the new log start from the
        store, then hold it to the rule and to the model."""
        for p in range(self.partitions(topic)):
            tp = (topic, p)
            new_start = self.s.offsets(topic, p)[0]
            assert self.start[tp] <= new_start <= len(self.log[tp])
            if topic != "kept":
                assert new_start == self.start[tp] == 0
            assert new_start == self.disk_segments(topic, p)[0][0]
            if new_start > self.start[tp]:
                event("retention on roll moved a log start")
            self.start[tp] = new_start

    # --- setup -------------------------------------------------------------------------

    @initialize(durability=st.sampled_from(["none", "fsync"]))
    def open_store(self, durability: str) -> None:
        self.durability = durability
        self.store = eventstore.open(self.path, durability=durability)  # type: ignore[arg-type]
        for name, cfg in TOPICS.items():
            self.s.create_topic(name, **cfg)
            for p in range(cfg["partitions"]):
                self.log[(name, p)] = []
                self.start[(name, p)] = 0

    def teardown(self) -> None:
        close_checked(self.store, self.tmp)

    # --- appends ----------------------------------------------------------------------------

    @rule(topic=topics, value=values, key=keys, headers=header_lists, choice=partition_choices, ts=timestamps)
    def append(self, topic: str, value: bytes | None, key: bytes | None,
               headers: list[tuple[str, bytes]] | None, choice: int | None, ts: int | None) -> None:
        part = self.pick(topic, choice)
        before = now_ms()
        meta = self.s.append(topic, value, key=key, headers=headers, partition=part, timestamp_ms=ts)
        after = now_ms()
        if part is not None:
            assert meta.partition == part
        elif key is not None:
            assert meta.partition == partition_for_key(key, self.partitions(topic))
        assert 0 <= meta.partition < self.partitions(topic)
        if ts is None:
            assert before <= meta.timestamp_ms <= after
        else:
            assert meta.timestamp_ms == ts
        tp = (topic, meta.partition)
        assert meta.offset == len(self.log[tp])
        self.log[tp].append((key, value, tuple(headers or ()), meta.timestamp_ms))
        self.retention_moved(topic)

    @rule(topic=topics, specs=st.lists(items, min_size=1, max_size=16), choice=partition_choices)
    def append_batch(self, topic: str, specs: list[tuple[Any, ...]], choice: int | None) -> None:
        fixed = self.pick(topic, choice)
        batch: list[Any] = []
        expected: list[tuple[int | None, Rec]] = []  # (partition if known, record; ts -1 = default)
        for spec in specs:
            if spec[0] == "bare":
                batch.append(spec[1])
                key, value, headers, part, ts = None, spec[1], (), None, None
            elif spec[0] == "pair":
                batch.append((spec[1], spec[2]))
                key, value, headers, part, ts = spec[1], spec[2], (), None, None
            else:
                _, value, key, hdrs, pchoice, ts = spec
                part = self.pick(topic, pchoice)
                batch.append(Message(value=value, key=key, headers=hdrs, partition=part, timestamp_ms=ts))
                headers = tuple(hdrs or ())
            if part is None:
                part = fixed
            if part is None and key is not None:
                part = partition_for_key(key, self.partitions(topic))
            expected.append((part, (key, value, headers, -1 if ts is None else ts)))
        before = now_ms()
        metas = list(self.s.append_batch(topic, batch, partition=fixed))
        after = now_ms()
        assert len(metas) == len(batch)
        sticky = {m.partition for (part, _), m in zip(expected, metas, strict=True) if part is None}
        assert len(sticky) <= 1  # keyless, unpinned items of one call share one partition
        pairs = list(zip(expected, metas, strict=True))
        defaults = {m.timestamp_ms for (_, rec), m in pairs if rec[3] == -1}
        assert len(defaults) <= 1 and all(before <= t <= after for t in defaults)
        for (part, rec), meta in zip(expected, metas, strict=True):
            if part is not None:
                assert meta.partition == part
            tp = (topic, meta.partition)
            assert meta.offset == len(self.log[tp])  # contiguous, in input order
            ts = meta.timestamp_ms if rec[3] == -1 else rec[3]
            assert meta.timestamp_ms == ts
            self.log[tp].append((rec[0], rec[1], rec[2], ts))
        self.retention_moved(topic)

    @rule(topic=topics, size=st.integers(MAX_RECORD + 1, MAX_RECORD + 50), position=st.integers(0, 5),
          choice=partition_choices)
    def rejected_batch(self, topic: str, size: int, position: int, choice: int | None) -> None:
        batch: list[Any] = [Message(value=b"ok", key=b"k%d" % i) for i in range(6)]
        batch[position] = Message(value=bytes(size), partition=self.pick(topic, choice))
        try:
            self.s.append_batch(topic, batch)
        except RecordTooLargeError as e:
            assert e.index == position
        else:
            raise AssertionError("a record above max_record_bytes was accepted")

    @rule(topic=topics, value=values, choice=partition_choices)
    def disk_full(self, topic: str, value: bytes | None, choice: int | None) -> None:
        def full(*_args: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        real = disk.pwrite
        disk.pwrite = full  # type: ignore[assignment]
        try:
            with contextlib.suppress(StorageFullError):
                self.s.append(topic, value, partition=self.pick(topic, choice) or 0)
                raise AssertionError("an append succeeded on a full disk")
        finally:
            disk.pwrite = real
        self.retention_moved(topic)  # a failed append may still have rolled

    # --- reads ----------------------------------------------------------------------------------

    @rule(topic=topics, choice=st.integers(0, 5), where=st.floats(0, 1), max_records=st.integers(1, 40),
          max_bytes=st.none() | st.integers(1, 3000))
    def read(self, topic: str, choice: int, where: float, max_records: int, max_bytes: int | None) -> None:
        p = choice % self.partitions(topic)
        tp = (topic, p)
        start, end = self.start[tp], len(self.log[tp])
        offset = min(end, start + int(where * (end - start + 1)))
        got = [as_rec(r) for r in self.s.read(topic, p, offset, max_records=max_records, max_bytes=max_bytes)]
        want = list(enumerate(self.log[tp]))[offset : offset + max_records]
        if max_bytes is None:
            assert got == want
        else:  # a prefix of whole batches, at least one record if any is left
            assert got == want[: len(got)]
            assert (len(got) > 0) == (offset < end)
        for r in self.s.read(topic, p, offset, max_records=1):
            assert (r.topic, r.partition) == tp

    @rule(topic=topics, choice=st.integers(0, 5), past=st.integers(1, 1000), below=st.booleans())
    def read_out_of_range(self, topic: str, choice: int, past: int, below: bool) -> None:
        p = choice % self.partitions(topic)
        tp = (topic, p)
        offset = self.start[tp] - past if below else len(self.log[tp]) + past
        try:
            self.s.read(topic, p, offset)
        except OffsetOutOfRangeError as e:
            assert (e.log_start_offset, e.end_offset) == (self.start[tp], len(self.log[tp]))
        else:
            raise AssertionError(f"read at {offset} outside {self.start[tp]}..{len(self.log[tp])}")

    @rule(topic=topics, choice=st.integers(0, 5), raw=st.none() | st.integers(0, 10_001) | st.just(2**62),
          where=st.floats(0, 1), delta=st.integers(-1, 1))
    def offset_for_time(self, topic: str, choice: int, raw: int | None, where: float, delta: int) -> None:
        p = choice % self.partitions(topic)
        tp = (topic, p)
        start = self.start[tp]
        end = len(self.log[tp])
        if raw is None and end > start:  # a timestamp of the log, or one next to it
            t = max(0, self.log[tp][start + int(where * (end - start - 1))][3] + delta)
        else:
            t = raw or 0
        want = next((start + i for i, rec in enumerate(self.log[tp][start:]) if rec[3] >= t), None)
        assert self.s.offset_for_time(topic, p, t) == want

    # --- lifecycle ---------------------------------------------------------------------------------

    @rule()
    def reopen(self) -> None:
        self.s.close()
        self.store = eventstore.open(self.path, durability=self.durability)  # type: ignore[arg-type]
        assert self.store.recovery_events == []  # a clean close leaves nothing to recover

    @rule()
    def crash_and_reopen(self) -> None:
        crash(self.s)
        self.store = eventstore.open(self.path, durability=self.durability)  # type: ignore[arg-type]
        cases = {e.case for e in self.store.recovery_events}
        assert cases <= {"R2"}  # only a tail past the checkpoint to re-index
        event(f"crash recovery: {sorted(cases)}")

    @rule()
    def enforce_retention(self) -> None:
        before = {tp: self.disk_segments(*tp) for tp in self.log}
        expected: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for tp, segments in before.items():
            keep = list(segments)
            if TOPICS[tp[0]].get("retention_bytes") is not None:
                total = sum(size for _, size in keep)
                while len(keep) > 1 and total - keep[0][1] >= RETENTION_BYTES:
                    total -= keep.pop(0)[1]
            expected[tp] = keep
        deleted = self.s.enforce_retention()
        event(f"enforce_retention deleted {min(deleted, 3)}+ segments")
        assert deleted == sum(len(before[tp]) - len(expected[tp]) for tp in before)
        for tp, keep in expected.items():
            assert self.disk_segments(*tp) == keep
            self.start[tp] = keep[0][0]

    @rule()
    def check(self) -> None:
        report = self.s.check()
        event(f"check saw {min(report.segments, 10)}+ segments")
        assert report.ok, report.problems
        assert report.records == sum(len(log) - self.start[tp] for tp, log in self.log.items())
        assert self.s.statistics().records == report.records

    @precondition(lambda self: self.store is not None)
    @invariant()
    def offsets_match_the_model(self) -> None:
        for (topic, p), log in self.log.items():
            assert self.s.offsets(topic, p) == (self.start[(topic, p)], len(log))
        for p in range(self.partitions("kept")):
            closed = self.disk_segments("kept", p)[:-1]
            # retention on roll stopped as soon as one more deletion would go below the limit
            assert not closed or sum(size for _, size in closed) - closed[0][1] < RETENTION_BYTES


StoreMachine.TestCase.settings = settings(
    stateful_step_count=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStoreModel = StoreMachine.TestCase
