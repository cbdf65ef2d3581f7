"""The read-only view of a store: ``eventstore.open_reader`` (docs/format.md, section 14).

A reader takes no lock and writes nothing; it sees closed segments whole, the
active segment up to its last whole valid batch (a torn or garbage tail is not
shown and never cut), new segments after rolls, retention, and topics created
or deleted by the writer. These tests check it against the writer:

* a seeded model check (same process, durability ``none`` and ``fsync``):
  random appends, rolls, retention and writer reopens, the reader's offsets,
  reads and time lookups compared with the writer's and with a plain model;
* the reader leaves every byte, size and mtime of the store as it found it,
  with a torn tail and damaged index files present;
* torn / garbage tails, batches bigger than the view's 4 MiB scan chunk;
* other processes: a writer tailed live (rolls, retention, group offsets read
  while it still holds the store), writers SIGKILLed mid-append and mid-write;
* the errors of the API.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from siblings import load

import eventstore
from eventstore import Message, TopicPartition
from eventstore.errors import (
    CorruptionError,
    InvalidArgumentError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    StoreClosedError,
    StoreNotFoundError,
    TopicNotFoundError,
)
from eventstore.storage import format as fmt
from eventstore.storage import view as view_module

_WRITER = Path(__file__).with_name("crash_writer.py")
_CHILD_TIMEOUT_S = 20.0


cw = load("crash_writer")


# --- helpers -----------------------------------------------------------------


def rec(r: Any) -> tuple[Any, ...]:
    """A record as plain values (records of different decoders are different struct types)."""
    return (r.offset, r.timestamp_ms, r.key, r.value, tuple(tuple(h) for h in r.headers))


def recs(records: list[Any]) -> list[tuple[Any, ...]]:
    return [rec(r) for r in records]


def read_all(src: Any, topic: str, partition: int) -> list[Any]:
    """Every record from the log start to the end offset (a Store or a StoreReader)."""
    start, end = src.offsets(topic, partition)
    out: list[Any] = []
    offset = start
    while offset < end:  # bounded: every read returns ≥ 1 record or the assert fails
        batch = src.read(topic, partition, offset, max_records=1000)
        assert batch, f"empty read at {offset} below the end {end}"
        out.extend(batch)
        offset = batch[-1].offset + 1
    return out


def snapshot(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """(size, mtime_ns, sha256) of every file and the name of every directory under ``root``."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = ("dir",)
        for f in filenames:
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            if rel in exclude:
                continue
            st = os.stat(path)
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            out[rel] = (st.st_size, st.st_mtime_ns, digest)
    return out


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not (added or removed or changed), f"reader changed the store: added {added}, " \
        f"removed {removed}, changed {changed}"


def partition_dir(path: Path, topic: str, partition: int) -> Path:
    return path / "topics" / topic / str(partition)


def logs_of(pdir: Path) -> list[Path]:
    return cw.segment_files(pdir, ".log")


def valid_batch(base: int, values: list[bytes], ts: int = 1_700_000_000_000) -> bytes:
    """A native batch (docs/format.md 2.1) of ``values`` starting at offset ``base``."""
    records = [(base + i, ts, None, v, []) for i, v in enumerate(values)]
    return bytes(fmt.encode_batch(base, records, ts, ts))


def first_at_or_after(records: list[tuple[Any, ...]], t: int) -> int | None:
    """The model of offset_for_time: the first retained record whose timestamp is ≥ t."""
    return next((r[0] for r in records if r[1] >= t), None)


@pytest.fixture
def reader_of() -> Iterator[Any]:
    """Open readers; every one is closed at teardown."""
    opened: list[eventstore.StoreReader] = []

    def _open(path: Path, **kwargs: Any) -> eventstore.StoreReader:
        r = eventstore.open_reader(path, **kwargs)
        opened.append(r)
        return r

    yield _open
    for r in opened:
        r.close()


# --- child processes -------------------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Iterator[None]:
    yield
    while _children:
        proc = _children.pop()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=_CHILD_TIMEOUT_S)


class Child:
    """A Python child process whose stdout/stderr go to files (never blocking on a pipe)."""

    def __init__(self, workdir: Path, name: str, argv: list[str]) -> None:
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err)
        _children.append(self.proc)

    def output(self) -> str:
        return self.out_path.read_text()

    def describe(self) -> str:
        return f"child exit {self.proc.returncode}; stderr:\n{self.err_path.read_text()[-3000:]}"

    def wait_line(self, prefix: str, timeout: float = _CHILD_TIMEOUT_S) -> list[str]:
        """The fields of the first complete output line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:  # bounded by the deadline
            for line in self.output().split("\n")[:-1]:
                if line.startswith(prefix):
                    return line.split()[1:]
            if self.proc.poll() is not None and not any(
                    line.startswith(prefix) for line in self.output().split("\n")[:-1]):
                pytest.fail(f"child ended before printing {prefix!r}: " + self.describe())
            if time.monotonic() > deadline:
                pytest.fail(f"child did not print {prefix!r} in time: " + self.describe())
            time.sleep(0.005)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=_CHILD_TIMEOUT_S)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=_CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("child did not end in time: " + self.describe())


# =============================================================================
# 1. Model check: reader == writer == model, after every step
# =============================================================================

_MODEL_TOPIC = "m"
_MODEL_PARTITIONS = 2


def _random_value(rng: random.Random) -> bytes | None:
    r = rng.random()
    if r < 0.05:
        return None
    if r < 0.75:
        return rng.randbytes(rng.randint(0, 200))
    if r < 0.97:
        return rng.randbytes(rng.randint(200, 2500))
    return rng.randbytes(rng.randint(2500, 9000))


def _random_message(rng: random.Random, partition: int, clock: list[int]) -> Message:
    clock[0] += rng.choice([0, 0, 1, 1, 2, 5, 40])
    ts = clock[0] if rng.random() < 0.85 else clock[0] - rng.randint(1, 500)  # some go backwards
    key = None if rng.random() < 0.4 else rng.randbytes(rng.randint(0, 20))
    headers = None if rng.random() < 0.7 else [(f"h{i}", rng.randbytes(rng.randint(0, 8)))
                                                for i in range(rng.randint(1, 3))]
    return Message(value=_random_value(rng), key=key, headers=headers, partition=partition,
                   timestamp_ms=ts)


class _Model:
    """The writer, the readers and a plain list of the records each partition should hold."""

    def __init__(self, path: Path, durability: str, rng: random.Random) -> None:
        self.path = path
        self.durability = durability
        self.rng = rng
        self.store = eventstore.open(path, durability=durability)
        self.store.create_topic(_MODEL_TOPIC, _MODEL_PARTITIONS,
                                segment_bytes=rng.choice([1024, 2048, 6000, 16384]),
                                max_record_bytes=64 * 1024)
        self.records: dict[int, list[tuple[Any, ...]]] = {p: [] for p in range(_MODEL_PARTITIONS)}
        self.history: dict[int, list[tuple[Any, ...]]] = {p: [] for p in range(_MODEL_PARTITIONS)}
        self.readers = [eventstore.open_reader(path)]
        self.clock = [1_700_000_000_000]
        self.stats = {"retained": 0, "reopens": 0, "reads": 0}

    def close(self) -> None:
        for r in self.readers:
            r.close()
        if not self.store.closed:
            report = self.store.check()
            assert report.ok, report.problems
            self.store.close()

    # --- steps ---------------------------------------------------------------

    def step(self) -> None:
        rng = self.rng
        op = rng.random()
        if op < 0.40:
            p = rng.randrange(_MODEL_PARTITIONS)
            m = _random_message(rng, p, self.clock)
            meta = self.store.append(_MODEL_TOPIC, m.value, key=m.key, headers=m.headers,
                                     partition=p, timestamp_ms=m.timestamp_ms)
            self._appended(p, [meta.offset], [m])
        elif op < 0.78:
            p = rng.randrange(_MODEL_PARTITIONS)
            msgs = [_random_message(rng, p, self.clock) for _ in range(rng.randint(1, 25))]
            metas = self.store.append_batch(_MODEL_TOPIC, msgs)
            self._appended(p, [m.offset for m in metas], msgs)
        elif op < 0.86:
            limit = rng.choice([None, 2048, 4096, 12000, 40000])
            self.store.alter_topic(_MODEL_TOPIC, retention_bytes=limit)
            self.stats["retained"] += self.store.enforce_retention()
        elif op < 0.91:
            self.store.close()
            self.store = eventstore.open(self.path, durability=self.durability)
            self.stats["reopens"] += 1
        elif op < 0.95:
            if len(self.readers) > 1 and rng.random() < 0.5:
                self.readers.pop(rng.randrange(len(self.readers))).close()
            self.readers.append(eventstore.open_reader(self.path))
        # else: nothing written; the checks run again on the same state

    def _appended(self, p: int, offsets: list[int], msgs: list[Message]) -> None:
        expected_next = (self.records[p][-1][0] + 1) if self.records[p] else \
            self.store.offsets(_MODEL_TOPIC, p)[0]
        assert offsets == list(range(expected_next, expected_next + len(msgs)))
        for off, m in zip(offsets, msgs, strict=True):
            headers = tuple((k, v) for k, v in (m.headers or ()))
            self.records[p].append((off, m.timestamp_ms, m.key, m.value, headers))
            self.history[p].append(self.records[p][-1])
            assert len(self.history[p]) == off + 1

    # --- checks --------------------------------------------------------------

    def check(self) -> None:
        rng = self.rng
        for p in range(_MODEL_PARTITIONS):
            start, end = self.store.offsets(_MODEL_TOPIC, p)
            model = self.records[p]
            cut = 0
            while cut < len(model) and model[cut][0] < start:  # bounded by the model
                cut += 1
            del model[:cut]
            assert end == (model[-1][0] + 1 if model else start)
            assert not model or model[0][0] == start
            for reader in self.readers:
                if rng.random() < 0.5:  # a read first: the view may be older than the writer
                    self._check_read(reader, p, start, end, model, fresh=False)
                assert reader.offsets(_MODEL_TOPIC, p) == (start, end)
                self._check_read(reader, p, start, end, model)
                if rng.random() < 0.3:
                    self._check_time(reader, p, model)
            if rng.random() < 0.1:
                assert recs(read_all(self.readers[-1], _MODEL_TOPIC, p)) == model
        if rng.random() < 0.2:
            self._check_statistics()

    def _check_statistics(self) -> None:
        """Offsets, sizes, segment counts and max timestamps as the writer has them."""
        def fields(ps: Any) -> tuple[Any, ...]:
            return (ps.topic, ps.partition, ps.log_start_offset, ps.end_offset, ps.size_bytes,
                    ps.segments, ps.max_timestamp_ms)

        want = [fields(ps) for ps in self.store.statistics().partition_stats
                if ps.topic == _MODEL_TOPIC]
        reader = self.rng.choice(self.readers)
        assert [fields(ps) for ps in reader.partition_statistics(_MODEL_TOPIC)] == want
        assert [fields(ps) for ps in reader.partition_statistics()] == want

    def _check_read(self, reader: Any, p: int, start: int, end: int,
                    model: list[tuple[Any, ...]], fresh: bool = True) -> None:
        """``reader.read`` against ``store.read`` and the model. Not ``fresh``: no offsets()
        call since the last writes, so a read below the view's known end uses the view as it
        is (section 14) and may stop short of the writer's end, but it returns a non-empty
        prefix of the writer's answer; at or past the known end it refreshes."""
        rng = self.rng
        self.stats["reads"] += 1
        r = rng.random()
        if r < 0.05 and start > 0:
            offset = rng.randint(0, start - 1)
        elif r < 0.1:
            offset = end + rng.randint(1, 3)
        elif r < 0.2:
            offset = end
        else:
            offset = rng.randint(start, end)
        max_records = rng.choice([1, 2, 7, 50, 500])
        max_bytes = None if rng.random() < 0.6 else rng.randint(1, 20000)
        try:
            expected = self.store.read(_MODEL_TOPIC, p, offset, max_records=max_records,
                                       max_bytes=max_bytes)
        except OffsetOutOfRangeError:
            assert not start <= offset <= end
            if fresh or offset > end:
                with pytest.raises(OffsetOutOfRangeError):
                    reader.read(_MODEL_TOPIC, p, offset, max_records, max_bytes)
                return
            # below the writer's log start, inside a segment the view still holds: it may
            # still serve the (immutable) records of that segment, or say it is gone
            with contextlib.suppress(OffsetOutOfRangeError):
                got = reader.read(_MODEL_TOPIC, p, offset, max_records, max_bytes)
                assert got and recs(got) == self.history[p][offset: offset + len(got)]
            return
        got = reader.read(_MODEL_TOPIC, p, offset, max_records, max_bytes)
        where = f"read({p}, {offset}, {max_records}, {max_bytes})"
        if fresh:
            assert recs(got) == recs(expected), where
        else:
            assert recs(got) == recs(expected)[: len(got)], where
        # and against the plain model: a non-empty prefix from offset (unless at the end)
        assert recs(got) == model[offset - start: offset - start + len(got)]
        assert (len(got) > 0) == (offset < end)
        assert len(got) <= max_records

    def _check_time(self, reader: Any, p: int, model: list[tuple[Any, ...]]) -> None:
        lo = model[0][1] - 600 if model else self.clock[0]
        t = self.rng.randint(lo, self.clock[0] + 5)
        want = first_at_or_after(model, t)
        assert self.store.offset_for_time(_MODEL_TOPIC, p, t) == want
        assert reader.offset_for_time(_MODEL_TOPIC, p, t) == want, f"offset_for_time({p}, {t})"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("durability", ["none", "fsync", "interval"])
def test_model_reader_follows_writer(store_path: Path, durability: str, seed: int) -> None:
    rng = random.Random(f"{durability}-{seed}")
    m = _Model(store_path, durability, rng)
    try:
        m.check()
        for _ in range(200):  # bounded
            m.step()
            m.check()
        segments = sum(len(logs_of(partition_dir(store_path, _MODEL_TOPIC, p)))
                       for p in range(_MODEL_PARTITIONS))
        assert segments > _MODEL_PARTITIONS or m.stats["retained"], "the sequence never rolled"
    finally:
        m.close()


def test_reader_sees_rolls_retention_and_new_topics_live(store_path: Path, reader_of: Any) -> None:
    """Hand-picked sequence: the reader's view is made before the writer rolls, removes
    segments, alters and creates topics; every call sees the writer's state."""
    store = eventstore.open(store_path, durability="none")
    try:
        store.create_topic("a", 2, segment_bytes=1024)
        reader = reader_of(store_path)
        assert [c.name for c in reader.topics()] == ["a"]
        assert reader.offsets("a", 0) == (0, 0)
        assert reader.read("a", 0, 0) == []
        values = [b"v%04d" % i + b"." * (i % 90) for i in range(300)]
        for i, v in enumerate(values):
            store.append("a", v, partition=0)
            if i % 37 == 0:
                assert reader.offsets("a", 0) == store.offsets("a", 0)
        assert len(logs_of(partition_dir(store_path, "a", 0))) > 5
        assert [r.value for r in read_all(reader, "a", 0)] == values
        store.alter_topic("a", retention_bytes=3000)
        assert store.enforce_retention() > 0
        start, end = store.offsets("a", 0)
        assert start > 0
        assert reader.offsets("a", 0) == (start, end)
        with pytest.raises(OffsetOutOfRangeError):
            reader.read("a", 0, 0)
        assert [r.value for r in read_all(reader, "a", 0)] == values[start:]
        assert reader.topic("a") == store.topic("a")
        assert reader.topic("a").retention_bytes == 3000
        # partitions added by the writer, and a topic created after the reader's first look
        store.alter_topic("a", partitions=3)
        store.append("a", b"p2", partition=2)
        assert reader.offsets("a", 2) == (0, 1)
        assert [r.value for r in reader.read("a", 2, 0)] == [b"p2"]
        store.create_topic("b", 1)
        store.append("b", b"b0")
        assert [c.name for c in reader.topics()] == ["a", "b"]
        assert reader.topics() == store.topics()
        assert reader.partition_statistics() == store.statistics().partition_stats
        assert [r.value for r in reader.read("b", 0, 0)] == [b"b0"]
    finally:
        store.close()


def test_transient_and_foreign_directories_are_not_topics(store_path: Path, reader_of: Any) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("real", 1)
        store.append("real", b"x")
    real = store_path / "topics" / "real"
    transient = store_path / "topics" / "+creating-0123abcd"
    transient.mkdir()
    (transient / "topic.json").write_bytes((real / "topic.json").read_bytes())
    (transient / "0").mkdir()
    (store_path / "topics" / "not-a-topic").mkdir()
    reader = reader_of(store_path)
    assert [c.name for c in reader.topics()] == ["real"]
    with pytest.raises(TopicNotFoundError):
        reader.offsets("not-a-topic", 0)


# =============================================================================
# 2. The reader writes nothing
# =============================================================================


def _build_closed_store(path: Path) -> tuple[list[tuple[Any, ...]], int]:
    """A closed store: topic "s" with many closed segments (each with several index
    entries) and an active one. Returns the records and the number of segments."""
    rng = random.Random(11)
    with eventstore.open(path, durability="none") as store:
        store.create_topic("s", 1, segment_bytes=16384)
        ts = 1_700_000_000_000
        for _ in range(260):
            n = rng.randint(1, 3)
            msgs = []
            for _ in range(n):
                ts += rng.randint(0, 3)
                msgs.append(Message(value=rng.randbytes(rng.randint(50, 400)), partition=0,
                                    timestamp_ms=ts, key=b"k" if rng.random() < 0.5 else None))
            store.append_batch("s", msgs)
        records = recs(read_all(store, "s", 0))
        store.create_topic("g", 1)
        store.append("g", b"x")
        store.reset_group_offsets("grp", {TopicPartition("s", 0): 10})
    return records, len(logs_of(partition_dir(path, "s", 0)))


def _damage_indexes(pdir: Path) -> None:
    """Damage the index files of closed segments in every way of R8 (and then some)."""
    logs = logs_of(pdir)
    assert len(logs) >= 7
    idx = [p.with_suffix(".index") for p in logs]
    tidx = [p.with_suffix(".timeindex") for p in logs]
    assert all(p.stat().st_size >= 16 for p in idx[:6]), "closed segments need index entries"
    # not a whole number of entries
    with open(idx[0], "ab") as f:
        f.write(b"\x01\x02\x03")
    # an entry pointing past the end of the log
    data = bytearray(idx[1].read_bytes())
    struct.pack_into("<I", data, len(data) - 4, logs[1].stat().st_size + 1000)
    idx[1].write_bytes(bytes(data))
    # an entry pointing inside a batch (a position that holds no batch start)
    data = bytearray(idx[2].read_bytes())
    pos = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, 4, pos + 5)
    idx[2].write_bytes(bytes(data))
    # a torn time index entry
    with open(tidx[3], "ab") as f:
        f.write(b"\xff" * 5)
    # no index files at all
    idx[4].unlink()
    tidx[4].unlink()
    # time index entries out of order
    data = bytearray(tidx[5].read_bytes())
    struct.pack_into("<q", data, 0, 2**62)
    tidx[5].write_bytes(bytes(data))


def _exercise(reader: Any, records: list[tuple[Any, ...]], topic: str = "s") -> None:
    """Every record-level call of the reader, results checked against ``records``."""
    rng = random.Random(5)
    assert [c.name for c in reader.topics()] == ["g", "s"]
    assert reader.topic(topic).name == topic
    start, end = reader.offsets(topic, 0)
    assert (start, end) == (records[0][0], records[-1][0] + 1)
    assert recs(read_all(reader, topic, 0)) == records
    for _ in range(60):
        offset = rng.randint(start, end)
        mr = rng.choice([1, 3, 40])
        mb = rng.choice([None, 1, 700, 5000])
        got = recs(reader.read(topic, 0, offset, mr, mb))
        assert got == records[offset - start: offset - start + len(got)]
        assert (len(got) > 0) == (offset < end)
    lo, hi = records[0][1], records[-1][1]
    for t in [lo - 1, lo, hi, hi + 1, *rng.sample(range(lo, hi + 1), 40)]:
        assert reader.offset_for_time(topic, 0, t) == first_at_or_after(records, t), t
    assert reader.wait_for(topic, 0, end - 1, 0) is True
    assert reader.wait_for(topic, 0, end, 0.05) is False
    with pytest.raises(OffsetOutOfRangeError):
        reader.read(topic, 0, end + 1)


def test_reader_writes_nothing(store_path: Path) -> None:
    records, _ = _build_closed_store(store_path)
    pdir = partition_dir(store_path, "s", 0)
    _damage_indexes(pdir)
    active = logs_of(pdir)[-1]
    with open(active, "ab") as f:  # a torn tail: the first half of the next batch
        batch = valid_batch(records[-1][0] + 1, [b"never" * 40])
        f.write(batch[: len(batch) // 2])
    before = snapshot(store_path)
    time.sleep(0.01)  # so that a rewrite would show in mtime_ns even on coarse clocks
    for _ in range(2):  # a second reader finds the same state
        with eventstore.open_reader(store_path) as reader:
            _exercise(reader, records)
    assert_unchanged(before, snapshot(store_path))


def test_group_reads_touch_only_the_lmdb_lock_file(store_path: Path) -> None:
    """The catalog is opened read-only: only LMDB's reader table (lock.mdb) may change."""
    records, _ = _build_closed_store(store_path)
    before = snapshot(store_path, exclude=("catalog/lock.mdb",))
    with eventstore.open_reader(store_path) as reader:
        assert reader.list_groups() == ["grp"]
        assert reader.group_offsets("grp") == {TopicPartition("s", 0): 10}
        assert reader.group_offsets("nobody") == {}
        assert reader.lag("grp") == {TopicPartition("s", 0): records[-1][0] + 1 - 10}
        _exercise(reader, records)
    assert_unchanged(before, snapshot(store_path, exclude=("catalog/lock.mdb",)))
    with eventstore.open(store_path, durability="none") as store:  # the handle was released
        assert store.lag("grp") == {TopicPartition("s", 0): records[-1][0] + 1 - 10}


def test_damaged_active_index_is_not_trusted(store_path: Path, reader_of: Any) -> None:
    """The active segment's last index entry points at a wrong batch: scan from byte 0."""
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("s", 1)
        for i in range(200):
            store.append("s", b"%05d" % i + b"-" * 200)
        records = recs(read_all(store, "s", 0))
    idx = partition_dir(store_path, "s", 0) / "00000000000000000000.index"
    data = bytearray(idx.read_bytes())
    assert len(data) >= 16
    rel = struct.unpack_from("<II", data, len(data) - 8)[0]
    prev_pos = struct.unpack_from("<II", data, len(data) - 16)[1]
    struct.pack_into("<I", data, len(data) - 8, prev_pos)  # the previous batch: wrong base offset
    idx.write_bytes(bytes(data))
    before = snapshot(store_path)
    reader = reader_of(store_path)
    assert reader.offsets("s", 0) == (0, 200)
    assert recs(read_all(reader, "s", 0)) == records
    for offset in (0, rel - 1, rel, rel + 1, 199):
        assert recs(reader.read("s", 0, offset, 2)) == records[offset: offset + 2]
    reader.close()
    assert_unchanged(before, snapshot(store_path))


# =============================================================================
# 3. Torn, partial and garbage tails
# =============================================================================


def _tail_bytes(kind: str, end: int) -> tuple[bytes, int]:
    """Bytes to append after a clean end at offset ``end``, and how many records they add."""
    batch = valid_batch(end, [b"tail-%d" % i + b"x" * 300 for i in range(3)])
    if kind == "half-batch":
        return batch[: len(batch) // 2], 0
    if kind == "all-but-one-byte":
        return batch[:-1], 0
    if kind == "prefix-only":
        return batch[:10], 0
    if kind == "garbage":
        return random.Random(3).randbytes(700), 0
    if kind == "zeros":
        return bytes(4096), 0
    if kind == "bad-checksum":
        damaged = bytearray(batch)
        damaged[60] ^= 0x40
        return bytes(damaged), 0
    if kind == "wrong-offset":
        return valid_batch(end + 5, [b"skip"]), 0
    if kind == "valid-then-torn":
        second = valid_batch(end + 3, [b"second" * 50])
        return batch + second[: len(second) - 20], 3
    assert kind == "valid-batch"
    return batch, 3


@pytest.mark.parametrize("kind", [
    "half-batch", "all-but-one-byte", "prefix-only", "garbage", "zeros", "bad-checksum",
    "wrong-offset", "valid-then-torn", "valid-batch",
])
def test_torn_tail_is_hidden_not_cut(store_path: Path, reader_of: Any, kind: str) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 1, segment_bytes=8192)
        for i in range(120):
            store.append("t", b"r%03d" % i + b"." * (i * 7 % 150))
        start, end = store.offsets("t", 0)
        records = recs(read_all(store, "t", 0))
    early = reader_of(store_path)  # its view of the active segment is made before the tail
    assert early.offsets("t", 0) == (start, end)
    assert recs(early.read("t", 0, end - 2)) == records[-2:]
    active = logs_of(partition_dir(store_path, "t", 0))[-1]
    tail, added = _tail_bytes(kind, end)
    with open(active, "ab") as f:
        f.write(tail)
    log_bytes = active.read_bytes()
    late = reader_of(store_path)
    before = snapshot(store_path)
    for reader in (early, late):
        for _ in range(2):  # looked at again on each refresh, still not shown
            assert reader.offsets("t", 0) == (start, end + added)
            assert recs(reader.read("t", 0, end - 3, 3)) == records[-3:]
            assert len(reader.read("t", 0, end)) == added
            assert reader.read("t", 0, end + added) == []
            with pytest.raises(OffsetOutOfRangeError):
                reader.read("t", 0, end + added + 1)
            assert reader.wait_for("t", 0, end + added, 0.02) is False
            assert reader.offset_for_time("t", 0, 2**62) is None
    assert active.read_bytes() == log_bytes
    assert_unchanged(before, snapshot(store_path))
    # the writer's recovery keeps the valid batches and cuts the rest; readers follow on
    with eventstore.open(store_path, durability="none") as store:
        assert store.offsets("t", 0) == (start, end + added)
        store.append_batch("t", [b"after-1", b"after-2"], partition=0)
        store.append("t", b"after-3", partition=0)
        store.append("t", b"y" * 5000, partition=0)  # a roll, too
        expected = recs(read_all(store, "t", 0))
        new_end = store.offsets("t", 0)[1]
        assert new_end == end + added + 4
        for reader in (early, late):
            assert reader.offsets("t", 0) == (start, new_end)
            assert recs(read_all(reader, "t", 0)) == expected
            assert [r.value for r in reader.read("t", 0, end + added)][:3] == \
                [b"after-1", b"after-2", b"after-3"]


def test_reader_waiting_on_a_torn_tail_sees_the_writer_continue(store_path: Path,
                                                                reader_of: Any) -> None:
    """wait_for blocks on a torn tail, and returns once the reopened writer appends."""
    with eventstore.open(store_path, durability="fsync") as store:
        store.create_topic("t", 1)
        store.append("t", b"first")
    active = logs_of(partition_dir(store_path, "t", 0))[-1]
    with open(active, "ab") as f:
        f.write(valid_batch(1, [b"torn" * 100])[:90])
    reader = reader_of(store_path, poll_interval_ms=5)
    assert reader.wait_for("t", 0, 1, 0.05) is False

    def write_later() -> None:
        time.sleep(0.1)
        with eventstore.open(store_path, durability="fsync") as store:
            store.append("t", b"second")

    thread = threading.Thread(target=write_later)
    thread.start()
    try:
        assert reader.wait_for("t", 0, 1, 10.0) is True
    finally:
        thread.join(timeout=10)
    assert [r.value for r in reader.read("t", 0, 0)] == [b"first", b"second"]


# =============================================================================
# 4. Batches bigger than the view's scan chunk
# =============================================================================


def test_batches_bigger_than_the_scan_chunk(store_path: Path, reader_of: Any) -> None:
    chunk = view_module._SCAN_CHUNK_BYTES
    assert chunk == 4 * 1024 * 1024
    rng = random.Random(9)
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("big", 1, max_record_bytes=16 * 1024 * 1024)
        early = reader_of(store_path)
        assert early.offsets("big", 0) == (0, 0)
        store.append("big", b"small-0")
        assert early.offsets("big", 0) == (0, 1)
        store.append("big", rng.randbytes(5 * 1024 * 1024))  # one record past the chunk
        assert early.offsets("big", 0) == (0, 2)
        store.append("big", b"small-2")
        store.append_batch("big", [rng.randbytes(3 * 1024 * 1024), rng.randbytes(3 * 1024 * 1024)])
        # small batches filling most of a chunk, then a big one that starts inside it
        store.append_batch("big", [rng.randbytes(60_000) for _ in range(62)])
        store.append("big", rng.randbytes(chunk + 1))
        store.append("big", b"small-last")
        expected = recs(read_all(store, "big", 0))
        end = store.offsets("big", 0)[1]
        late = reader_of(store_path)
        for reader in (early, late):
            assert reader.offsets("big", 0) == (0, end)
            assert recs(read_all(reader, "big", 0)) == expected
            assert recs(reader.read("big", 0, 1, 1)) == expected[1:2]
            assert recs(reader.read("big", 0, end - 2, 5)) == expected[-2:]
    # a torn big batch at the end is hidden (the scan widens, then finds it short)
    active = logs_of(partition_dir(store_path, "big", 0))[-1]
    batch = valid_batch(end, [rng.randbytes(6 * 1024 * 1024)])
    with open(active, "ab") as f:
        f.write(batch[: len(batch) - 1000])
    before = snapshot(store_path)
    for reader in (early, reader_of(store_path)):
        assert reader.offsets("big", 0) == (0, end)
        assert reader.read("big", 0, end) == []
    assert_unchanged(before, snapshot(store_path))


# =============================================================================
# 5. Tailing a writer in another process
# =============================================================================


def tail_value(p: int, offset: int) -> bytes:
    """The value the tail writer puts at ``offset`` of partition ``p`` (sizes vary)."""
    import hashlib

    digest = hashlib.sha256(b"%d/%d" % (p, offset)).digest()
    return b"%d/%d/" % (p, offset) + digest * (offset % 13)


_TAIL_CHILD = inspect.getsource(tail_value) + r'''
import os, random, sys, time
import eventstore
from eventstore import TopicPartition

path, go_file, total, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = eventstore.open(path, durability="fsync")
store.create_topic("tail", 2, segment_bytes=2048, retention_bytes=3000)
print("OPEN", flush=True)
rng = random.Random(seed)
written = 0
deadline = time.monotonic() + 20
while written < total and time.monotonic() < deadline:
    p = rng.randrange(2)
    end = store.offsets("tail", p)[1]
    n = rng.randint(1, 6)
    metas = store.append_batch("tail", [tail_value(p, end + i) for i in range(n)], partition=p)
    assert [m.offset for m in metas] == list(range(end, end + n)), metas
    written += n
    r = rng.random()
    if r < 0.03:
        store.alter_topic("tail", retention_bytes=rng.choice([3000, 6000, None]))
        store.enforce_retention()
    elif r < 0.2:
        time.sleep(0.001)
commits = {}
for p in range(2):
    start, end = store.offsets("tail", p)
    commits[p] = (start + end) // 2
store.reset_group_offsets("g", {TopicPartition("tail", p): o for p, o in commits.items()})
ends = [x for p in range(2) for x in store.offsets("tail", p)]
print("COMMITTED", commits[0], commits[1], *ends, flush=True)
until = time.monotonic() + 30
while not os.path.exists(go_file) and time.monotonic() < until:
    time.sleep(0.01)
store.close()
print("DONE", flush=True)
'''


def test_tail_a_writer_process(tmp_path: Path, store_path: Path) -> None:
    go = tmp_path / "go"
    child = Child(tmp_path, "tail", ["-c", _TAIL_CHILD, str(store_path), str(go), "2500", "4"])
    child.wait_line("OPEN")
    rng = random.Random(4)
    reader = eventstore.open_reader(store_path, poll_interval_ms=2)
    try:
        # lag behind on purpose until retention has removed offset 0 of partition 0
        deadline = time.monotonic() + _CHILD_TIMEOUT_S
        while reader.offsets("tail", 0)[0] == 0:  # bounded by the deadline
            assert time.monotonic() < deadline, "retention never moved the log start"
            assert child.proc.poll() is None, child.describe()
            time.sleep(0.005)
        nxt = {0: 0, 1: 0}
        jumps = {0: 0, 1: 0}
        seen: dict[int, dict[int, bytes]] = {0: {}, 1: {}}
        reads = 0
        final: list[int] | None = None
        deadline = time.monotonic() + _CHILD_TIMEOUT_S
        while True:  # bounded by the deadline
            assert time.monotonic() < deadline, f"tailing did not finish: {nxt} {child.describe()}"
            if final is None and "COMMITTED" in child.output():
                final = [int(x) for x in child.wait_line("COMMITTED")]
            if final is not None and nxt == {0: final[3], 1: final[5]}:
                break
            for p in (0, 1):
                reader.wait_for("tail", p, nxt[p], 0.01)
                try:
                    got = reader.read("tail", p, nxt[p], rng.choice([1, 5, 100, 500]),
                                      rng.choice([None, 1, 3000]))
                except OffsetOutOfRangeError:
                    start, end = reader.offsets("tail", p)
                    assert start > nxt[p], (p, nxt[p], start, end)
                    nxt[p] = start
                    jumps[p] += 1
                    continue
                reads += 1
                for i, r in enumerate(got):
                    assert r.offset == nxt[p] + i, (p, nxt[p], [x.offset for x in got])
                    assert r.value == tail_value(p, r.offset), (p, r.offset)
                    seen[p][r.offset] = r.value
                if got:
                    nxt[p] = got[-1].offset + 1
        assert jumps[0] >= 1 and reads > 20
        assert child.proc.poll() is None, "the writer must still hold the store"
        c0, c1, s0, e0, s1, e1 = final
        assert reader.offsets("tail", 0) == (s0, e0)
        assert reader.offsets("tail", 1) == (s1, e1)
        # group offsets, read while the writer still holds the store open
        assert reader.list_groups() == ["g"]
        assert reader.group_offsets("g") == {TopicPartition("tail", 0): c0, TopicPartition("tail", 1): c1}
        assert reader.lag("g") == {TopicPartition("tail", 0): e0 - c0, TopicPartition("tail", 1): e1 - c1}
        go.write_bytes(b"")
        assert child.wait() == 0, child.describe()
        assert "DONE" in child.output()
        assert reader.offsets("tail", 0) == (s0, e0)
    finally:
        reader.close()
    with eventstore.open(store_path, durability="none") as store:
        for p, (s, e) in ((0, (s0, e0)), (1, (s1, e1))):
            assert store.offsets("tail", p) == (s, e)
            for r in read_all(store, "tail", p):
                assert r.value == tail_value(p, r.offset)
                assert seen[p][r.offset] == r.value


# =============================================================================
# 6. Writers killed mid-append
# =============================================================================


def _drain(reader: Any, topic: str, partitions: int, nxt: dict[int, int],
           got: dict[int, list[Any]]) -> None:
    """Read everything past ``nxt`` now visible, checking each record verifies."""
    for p in range(partitions):
        while True:  # bounded: each pass reads ≥ 1 record or stops
            batch = reader.read(topic, p, nxt[p], 400)
            if not batch:
                break
            assert batch[0].offset == nxt[p]
            for r in batch:
                cw.verify_record(r)
            assert [r.offset for r in batch] == list(range(nxt[p], nxt[p] + len(batch)))
            got[p].extend(batch)
            nxt[p] = batch[-1].offset + 1


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_sigkill_writer_while_tailing(tmp_path: Path, store_path: Path, durability: str) -> None:
    partitions = 2
    child = Child(tmp_path, "writer", [
        str(_WRITER), "write", str(store_path), "--durability", durability, "--run", "1",
        "--seed", "21", "--partitions", str(partitions), "--segment-bytes", "8192",
        "--max-seconds", "15",
    ])
    child.wait_line("OPEN")
    reader = eventstore.open_reader(store_path)
    nxt = dict.fromkeys(range(partitions), 0)
    got: dict[int, list[Any]] = {p: [] for p in range(partitions)}
    try:
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:  # bounded
            _drain(reader, cw.TOPIC, partitions, nxt, got)
        child.kill()
        assert child.proc.returncode == -signal.SIGKILL, child.describe()
        _drain(reader, cw.TOPIC, partitions, nxt, got)
        assert sum(nxt.values()) > 50, "the writer wrote too little before the kill"
        # every acknowledged record was written whole: the reader sees it
        for ack in cw.parse_acks(child.output()):
            assert ack.offset < nxt[ack.partition], ack
            assert cw.digest(got[ack.partition][ack.offset].value) == ack.digest
        ends = {p: reader.offsets(cw.TOPIC, p) for p in range(partitions)}
        with eventstore.open(store_path, durability="none") as store:  # recovery
            for p in range(partitions):
                assert store.offsets(cw.TOPIC, p) == ends[p] == (0, nxt[p])
                assert recs(read_all(store, cw.TOPIC, p)) == recs(got[p])
            store.append(cw.TOPIC, b"after the crash", partition=0)
            assert reader.offsets(cw.TOPIC, 0) == (0, nxt[0] + 1)
            assert [r.value for r in reader.read(cw.TOPIC, 0, nxt[0])] == [b"after the crash"]
    finally:
        reader.close()


def test_writer_killed_inside_a_write(tmp_path: Path, store_path: Path, reader_of: Any) -> None:
    """crash_writer dies with half a batch written: the reader hides the torn batch, leaves
    the file as it is, and shows exactly what the writer keeps after recovery."""
    partitions = 3
    child = Child(tmp_path, "torn", [
        str(_WRITER), "write", str(store_path), "--durability", "none", "--run", "1",
        "--seed", "5", "--partitions", str(partitions), "--segment-bytes", "16384",
        "--pause-at", "torn-write", "--tear-after", "40",
    ])
    assert child.wait() == -signal.SIGKILL, child.describe()
    before = snapshot(store_path)
    reader = reader_of(store_path)
    nxt = dict.fromkeys(range(partitions), 0)
    got: dict[int, list[Any]] = {p: [] for p in range(partitions)}
    _drain(reader, cw.TOPIC, partitions, nxt, got)
    assert sum(nxt.values()) > 40
    assert_unchanged(before, snapshot(store_path))
    with eventstore.open(store_path, durability="none") as store:
        broken = [p for p in store_path.rglob("*.broken")]
        assert broken, "the writer's recovery found no torn tail: the child did not tear a write"
        for p in range(partitions):
            assert store.offsets(cw.TOPIC, p) == reader.offsets(cw.TOPIC, p) == (0, nxt[p])
            assert recs(read_all(store, cw.TOPIC, p)) == recs(got[p])


# =============================================================================
# 7. Errors
# =============================================================================


def test_store_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(StoreNotFoundError):
        eventstore.open_reader(missing)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StoreNotFoundError):
        eventstore.open_reader(empty)
    assert list(empty.iterdir()) == []
    half = tmp_path / "half"
    (half / "topics").mkdir(parents=True)  # no catalog: not a store
    with pytest.raises(StoreNotFoundError):
        eventstore.open_reader(half)
    assert [p.name for p in half.iterdir()] == ["topics"]
    afile = tmp_path / "file"
    afile.write_bytes(b"x")
    with pytest.raises(StoreNotFoundError):
        eventstore.open_reader(afile)
    assert afile.read_bytes() == b"x"


def test_argument_and_lookup_errors(store_path: Path, reader_of: Any) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("orders", 2)
        store.append("orders", b"a", partition=0)
    reader = reader_of(store_path)
    with pytest.raises(TopicNotFoundError) as e:
        reader.topic("ordres")
    assert e.value.suggestion == "orders"
    with pytest.raises(TopicNotFoundError) as e:
        reader.offsets("zzz", 0)
    assert e.value.suggestion is None
    for call in (lambda: reader.read("nope", 0, 0), lambda: reader.offset_for_time("nope", 0, 1),
                 lambda: reader.wait_for("nope", 0, 0, 0)):
        with pytest.raises(TopicNotFoundError):
            call()
    for bad in (2, -1, True, "0", None, 1.0):
        with pytest.raises(PartitionNotFoundError):
            reader.offsets("orders", bad)
        with pytest.raises(PartitionNotFoundError):
            reader.read("orders", bad, 0)
    for bad_offset in (-1, True, "0", 1.0, None):
        with pytest.raises(InvalidArgumentError):
            reader.read("orders", 0, bad_offset)
    for bad_max in (0, -5, True, 1.5, "3", None):
        with pytest.raises(InvalidArgumentError):
            reader.read("orders", 0, 0, bad_max)
    for bad_bytes in (0, -1, True, 2.0):
        with pytest.raises(InvalidArgumentError):
            reader.read("orders", 0, 0, 10, bad_bytes)
    for bad_ts in ("1", 1.5, None):
        with pytest.raises(InvalidArgumentError):
            reader.offset_for_time("orders", 0, bad_ts)
    for bad_poll in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError):
            eventstore.open_reader(store_path, poll_interval_ms=bad_poll)
    with pytest.raises(OffsetOutOfRangeError):
        reader.read("orders", 0, 2)
    with pytest.raises(OffsetOutOfRangeError):
        reader.read("orders", 1, 1)
    assert reader.read("orders", 1, 0) == []
    assert reader.offset_for_time("orders", 1, 0) is None


def test_topic_deleted_by_the_writer(store_path: Path, reader_of: Any) -> None:
    store = eventstore.open(store_path, durability="none")
    try:
        store.create_topic("gone", 1)
        store.create_topic("kept", 1)
        store.append_batch("gone", [b"a", b"b", b"c"])
        reader = reader_of(store_path)
        assert reader.offsets("gone", 0) == (0, 3)
        store.delete_topic("gone")
        with pytest.raises(TopicNotFoundError):
            reader.offsets("gone", 0)
        with pytest.raises(TopicNotFoundError):
            reader.wait_for("gone", 0, 3, 0.01)
        with pytest.raises(TopicNotFoundError):
            reader.read("gone", 0, 3)  # at the end: a refresh
        with pytest.raises(TopicNotFoundError) as e:
            reader.topic("gone")
        assert e.value.suggestion is None
        assert [c.name for c in reader.topics()] == ["kept"]
        with pytest.raises(TopicNotFoundError):
            reader.read("gone", 0, 0)
    finally:
        store.close()


def test_read_below_the_end_of_a_deleted_topic_raises(store_path: Path, reader_of: Any) -> None:
    store = eventstore.open(store_path, durability="none")
    try:
        store.create_topic("gone", 1)
        store.append_batch("gone", [b"a", b"b", b"c"])
        reader = reader_of(store_path)
        assert [r.value for r in reader.read("gone", 0, 0)] == [b"a", b"b", b"c"]
        store.delete_topic("gone")
        with pytest.raises(TopicNotFoundError):
            reader.read("gone", 0, 0)
    finally:
        store.close()


def test_topic_recreated_under_the_same_name(store_path: Path, reader_of: Any) -> None:
    store = eventstore.open(store_path, durability="none")
    try:
        store.create_topic("t", 1)
        store.append_batch("t", [b"old%d" % i for i in range(5)])
        reader = reader_of(store_path)
        assert reader.offsets("t", 0) == (0, 5)
        assert [r.value for r in reader.read("t", 0, 0)][:1] == [b"old0"]
        store.delete_topic("t")
        store.create_topic("t", 1)
        store.append_batch("t", [b"new0", b"new1"])
        assert reader.offsets("t", 0) == (0, 2)
        assert [r.value for r in reader.read("t", 0, 0)] == [b"new0", b"new1"]
        store.append("t", b"new2")
        assert [r.value for r in reader.read("t", 0, 2)] == [b"new2"]
    finally:
        store.close()


def test_topic_recreated_after_it_had_rolled(store_path: Path, reader_of: Any) -> None:
    store = eventstore.open(store_path, durability="none")
    try:
        store.create_topic("t", 1, segment_bytes=1024)
        for i in range(30):
            store.append("t", b"old-%02d" % i + b"x" * 100, timestamp_ms=1000)
        assert len(logs_of(partition_dir(store_path, "t", 0))) > 2
        reader = reader_of(store_path)
        assert [r.value[:6] for r in reader.read("t", 0, 0, 3)] == [b"old-00", b"old-01", b"old-02"]
        store.delete_topic("t")
        store.create_topic("t", 1, segment_bytes=1024)
        for i in range(3):
            store.append("t", b"new-%02d" % i + b"x" * 100, timestamp_ms=1000)
        assert reader.offsets("t", 0) == store.offsets("t", 0) == (0, 3)
        assert [r.value[:6] for r in reader.read("t", 0, 0)] == [b"new-00", b"new-01", b"new-02"]
    finally:
        store.close()


def test_non_str_topic_name_is_an_eventstore_error(store_path: Path, reader_of: Any) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 1)
    reader = reader_of(store_path)
    with pytest.raises(eventstore.EventStoreError):
        reader.topic(123)  # type: ignore[arg-type]
    with pytest.raises(eventstore.EventStoreError):
        reader.offsets(123, 0)  # type: ignore[arg-type]


def test_invalid_group_ids(store_path: Path, reader_of: Any) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 1)
    reader = reader_of(store_path)
    with pytest.raises(InvalidArgumentError):
        reader.group_offsets(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        reader.group_offsets("")


def test_closed_reader(store_path: Path) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 1)
        store.append("t", b"x")
    with eventstore.open_reader(store_path) as reader:
        assert reader.read("t", 0, 0)[0].value == b"x"
        assert not reader.closed
        assert not repr(reader).endswith("(closed)>")
    assert reader.closed
    assert repr(reader).endswith("(closed)>")
    reader.close()  # idempotent
    calls = [
        reader.topics, lambda: reader.topic("t"), lambda: reader.offsets("t", 0),
        lambda: reader.read("t", 0, 0), lambda: reader.offset_for_time("t", 0, 0),
        lambda: reader.wait_for("t", 0, 0, 0), reader.partition_statistics, reader.list_groups,
        lambda: reader.group_offsets("g"), lambda: reader.lag("g"),
    ]
    for call in calls:
        with pytest.raises(StoreClosedError):
            call()


def test_close_during_wait_for(store_path: Path) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 1)
    reader = eventstore.open_reader(store_path, poll_interval_ms=5)
    threading.Timer(0.1, reader.close).start()
    started = time.monotonic()
    with pytest.raises(StoreClosedError):
        reader.wait_for("t", 0, 0, 10.0)
    assert time.monotonic() - started < 5


def test_wait_for_sees_an_append(store_path: Path, reader_of: Any) -> None:
    store = eventstore.open(store_path, durability="fsync")
    try:
        store.create_topic("t", 1)
        reader = reader_of(store_path, poll_interval_ms=5)
        assert reader.wait_for("t", 0, 0, 0) is False
        started = time.monotonic()
        assert reader.wait_for("t", 0, 0, 0.1) is False
        assert time.monotonic() - started >= 0.09
        timer = threading.Timer(0.1, lambda: store.append("t", b"late"))
        timer.start()
        try:
            assert reader.wait_for("t", 0, 0, 10.0) is True
        finally:
            timer.join(timeout=10)
        assert reader.read("t", 0, 0)[0].value == b"late"
    finally:
        store.close()


# =============================================================================
# 8. offset_for_time
# =============================================================================


def test_offset_for_time_mid_segment(store_path: Path, reader_of: Any) -> None:
    """Time lookups inside closed and active segments (in-memory indexes of the scan, and the
    active segment's index file when the reader starts after the writer), against the
    Store and a brute-force model; timestamps repeat and sometimes go backwards."""
    rng = random.Random(17)
    store = eventstore.open(store_path, durability="none")
    try:
        store.create_topic("t", 1, segment_bytes=48 * 1024)
        early = reader_of(store_path)
        early.offsets("t", 0)
        ts = 1_000_000
        for round_ in range(4):
            for _ in range(150):
                msgs = []
                for _ in range(rng.randint(1, 3)):
                    ts += rng.choice([0, 0, 1, 3, 10])
                    t = ts if rng.random() < 0.9 else ts - rng.randint(1, 200)
                    msgs.append(Message(value=rng.randbytes(rng.randint(20, 300)), partition=0,
                                        timestamp_ms=t))
                store.append_batch("t", msgs)
            records = recs(read_all(store, "t", 0))
            late = reader_of(store_path)
            probes = [records[0][1] - 1, ts, ts + 1, *rng.sample(range(records[0][1], ts + 1), 60)]
            for t in probes:
                want = first_at_or_after(records, t)
                assert store.offset_for_time("t", 0, t) == want, (round_, t)
                assert early.offset_for_time("t", 0, t) == want, (round_, t)
                assert late.offset_for_time("t", 0, t) == want, (round_, t)
        assert len(logs_of(partition_dir(store_path, "t", 0))) >= 3
    finally:
        store.close()


def test_offset_for_time_active_segment_with_lagging_time_index(store_path: Path,
                                                                reader_of: Any) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 1)
        for i in range(100):
            store.append("t", b"x" * 200, timestamp_ms=5000 if i == 10 else 1000 + i)
        assert store.offset_for_time("t", 0, 4000) == 10
    pdir = partition_dir(store_path, "t", 0)
    assert (pdir / "00000000000000000000.index").stat().st_size >= 16
    timeindex = pdir / "00000000000000000000.timeindex"
    # One time entry, made with the first offset entry (record 10's 5000 made the max grow;
    # later entries never grew it). Drop it: the writer's state had that append failed.
    assert timeindex.stat().st_size == 12
    timeindex.write_bytes(b"")
    reader = reader_of(store_path)
    assert reader.offset_for_time("t", 0, 4000) == 10


def test_offset_for_time_while_retention_removes_a_segment(store_path: Path, reader_of: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = eventstore.open(store_path, durability="none")
    try:
        store.create_topic("t", 1, segment_bytes=1024)
        for i in range(60):
            store.append("t", b"x" * 100, timestamp_ms=1000 + i)
        reader = reader_of(store_path)
        assert reader.offsets("t", 0) == (0, 60)
        refresh = view_module.PartitionView.refresh
        fired = []

        def refresh_then_retention(self: Any) -> None:
            refresh(self)
            if not fired:  # the writer's retention runs right after the reader's listing
                fired.append(True)
                store.alter_topic("t", retention_bytes=1024)
                assert store.enforce_retention() > 0

        monkeypatch.setattr(view_module.PartitionView, "refresh", refresh_then_retention)
        try:
            found = reader.offset_for_time("t", 0, 1050)
        except CorruptionError as e:
            pytest.fail(f"offset_for_time raised on a healthy store: {e}")
        assert found == store.offset_for_time("t", 0, 1050) == 50
    finally:
        store.close()


def test_statistics_max_timestamp_when_timestamps_go_backwards(store_path: Path,
                                                               reader_of: Any) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 1, segment_bytes=1024)
        for i in range(30):
            store.append("t", b"x" * 100, timestamp_ms=9000 if i < 5 else 1000 + i)
        assert len(logs_of(partition_dir(store_path, "t", 0))) > 2
        expected = store.statistics().partition_stats
        assert expected[0].max_timestamp_ms == 9000
    reader = reader_of(store_path)
    assert reader.partition_statistics() == expected


def test_lag_counts_from_the_log_start(store_path: Path) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 2, segment_bytes=1024)
        for i in range(80):
            store.append("t", b"%03d" % i + b"-" * 100, partition=0)
        store.append("t", b"p1", partition=1)
        store.reset_group_offsets("g", {TopicPartition("t", 0): 3, TopicPartition("t", 1): 1})
        store.alter_topic("t", retention_bytes=1024)
        store.enforce_retention()
        start, end = store.offsets("t", 0)
        assert start > 3
        expected = store.lag("g")
    with eventstore.open_reader(store_path) as reader:
        assert reader.list_groups() == ["g"]
        assert reader.lag("g") == expected == {TopicPartition("t", 0): end - start,
                                               TopicPartition("t", 1): 0}
        assert reader.group_offsets("g") == {TopicPartition("t", 0): 3, TopicPartition("t", 1): 1}


def test_many_readers_in_threads(store_path: Path) -> None:
    """One reader shared by threads while the writer appends and rolls: nothing raises and
    everything read is what was written."""
    store = eventstore.open(store_path, durability="none")
    errors: list[BaseException] = []
    try:
        store.create_topic("t", 1, segment_bytes=4096)
        reader = eventstore.open_reader(store_path)
        stop = threading.Event()

        def tail(seed: int) -> None:
            rng = random.Random(seed)
            offset = 0
            try:
                while not stop.is_set() or offset < reader.offsets("t", 0)[1]:  # bounded by stop
                    got = reader.read("t", 0, offset, rng.randint(1, 50))
                    for r in got:
                        assert r.offset == offset and r.value == b"%d" % offset * (offset % 9 + 1)
                        offset += 1
                    if not got:
                        reader.wait_for("t", 0, offset, 0.01)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=tail, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for i in range(1500):
            store.append("t", b"%d" % i * (i % 9 + 1))
        stop.set()
        for t in threads:
            t.join(timeout=20)
        assert not any(t.is_alive() for t in threads)
        reader.close()
    finally:
        store.close()
    assert not errors, errors


def test_records_equal_across_partitions_and_keys(store_path: Path, reader_of: Any) -> None:
    """Keys, headers, None values and explicit timestamps round-trip through the reader."""
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t", 3)
        store.append("t", None, key=b"k", partition=1, timestamp_ms=5)
        store.append("t", b"", key=None, headers=[("a", b""), ("b", b"\x00\xff")], partition=1)
        store.append_batch("t", [Message(value=b"v%d" % i, key=b"k%d" % i, partition=i % 3)
                                 for i in range(9)])
        expected = {p: recs(read_all(store, "t", p)) for p in range(3)}
    reader = reader_of(store_path)
    for p in range(3):
        got = read_all(reader, "t", p)
        assert recs(got) == expected[p]
        assert all(r.topic == "t" and r.partition == p for r in got)
    assert sum(len(v) for v in expected.values()) == 11


def test_group_offsets_beside_a_store_of_this_process_say_what_to_do(store_path: Path) -> None:
    """LMDB allows one handle per environment and process: the error says to use the Store."""
    with eventstore.open(store_path) as store:
        store.create_topic("t")
        with eventstore.open_reader(store_path) as reader:
            assert reader.offsets("t", 0) == (0, 0)  # records need no catalog
            with pytest.raises(eventstore.StorageError, match=r"open in this process.*its Store"):
                reader.list_groups()
