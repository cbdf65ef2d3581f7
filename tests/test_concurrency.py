"""Threads: appenders share offsets without gaps or duplicates, fsyncs are shared (group
commit), and readers neither block nor see a gap, a torn record or an unsynced one."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import eventstore
from eventstore import Message, Record, partition_for_key
from eventstore.storage import disk

OpenStore = Callable[..., eventstore.Store]
MODES = ["fsync", "interval", "none"]


def make_value(writer: int, seq: int, size: int) -> bytes:
    """A self-checking value: a header naming its writer and sequence, then a digest-derived body."""
    head = b"w%03d-s%06d-n%05d|" % (writer, seq, size)
    body = hashlib.sha256(head).digest() * (size // 32 + 1)
    return head + body[:size]


def value_ok(value: bytes | None) -> bool:
    if value is None or b"|" not in value:
        return False
    head, body = value.split(b"|", 1)
    size = int(head.rsplit(b"-n", 1)[1])
    digest = hashlib.sha256(head + b"|").digest() * (size // 32 + 1)
    return body == digest[:size]


def run_threads(targets: list[Callable[[], None]], timeout: float = 120) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread did not finish"
    if errors:
        raise errors[0]


def read_all(store: eventstore.Store, topic: str, p: int) -> list[Record]:
    out: list[Record] = []
    offset, end = store.offsets(topic, p)
    while offset < end:
        got = store.read(topic, p, offset, max_records=1000)
        out += got
        offset = got[-1].offset + 1
    return out


@pytest.mark.parametrize("durability", MODES)
def test_appenders_to_one_partition_get_unique_contiguous_offsets(
    open_store: OpenStore, durability: str
) -> None:
    store = open_store(durability=durability, fsync_interval_ms=5)
    store.create_topic("t", segment_bytes=16 * 1024)
    threads, rounds = 8, 60
    written: dict[int, bytes] = {}
    per_writer: dict[int, list[int]] = {}
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def writer(w: int) -> None:
        rng = random.Random(w)
        mine = []
        start.wait()
        for seq in range(rounds):
            if seq % 3 == 0:
                values = [make_value(w, seq * 10 + j, rng.randrange(300)) for j in range(3)]
                metas = list(store.append_batch("t", values, partition=0))
                assert [m.offset for m in metas] == list(range(metas[0].offset, metas[0].offset + 3))
            else:
                values = [make_value(w, seq * 10, rng.randrange(300))]
                metas = [store.append("t", values[0], partition=0)]
            for m, v in zip(metas, values, strict=True):
                assert m.partition == 0
                mine.append(m.offset)
                with lock:
                    assert m.offset not in written
                    written[m.offset] = v
        per_writer[w] = mine

    run_threads([lambda w=w: writer(w) for w in range(threads)])
    total = threads * (rounds // 3 * 3 + (rounds - rounds // 3) * 1)
    assert sorted(written) == list(range(total))
    for offsets in per_writer.values():
        assert offsets == sorted(offsets)  # each thread's appends in its own order
    assert store.offsets("t", 0) == (0, total)
    records = read_all(store, "t", 0)
    assert [r.offset for r in records] == list(range(total))
    assert all(r.value == written[r.offset] for r in records)
    assert store.statistics().partition_stats[0].segments > 1


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_appenders_to_several_partitions(open_store: OpenStore, durability: str) -> None:
    store = open_store(durability=durability)
    store.create_topic("t", partitions=4, segment_bytes=8 * 1024)
    written: dict[tuple[int, int], bytes] = {}
    lock = threading.Lock()

    def writer(w: int) -> None:
        rng = random.Random(100 + w)
        for seq in range(80):
            kind = seq % 4
            value = make_value(w, seq, rng.randrange(200))
            if kind == 0:
                metas = [store.append("t", value, partition=rng.randrange(4))]
                values = [value]
            elif kind == 1:
                key = b"key-%d" % rng.randrange(50)
                metas = [store.append("t", value, key=key)]
                assert metas[0].partition == partition_for_key(key, 4)
                values = [value]
            elif kind == 2:
                values = [make_value(w, seq * 100 + j, 50) for j in range(5)]
                items = [Message(value=v, key=b"k%d" % j) for j, v in enumerate(values)]
                metas = list(store.append_batch("t", items))
            else:
                metas = [store.append("t", value)]
                values = [value]
            with lock:
                for m, v in zip(metas, values, strict=True):
                    assert (m.partition, m.offset) not in written
                    written[(m.partition, m.offset)] = v

    run_threads([lambda w=w: writer(w) for w in range(8)])
    for p in range(4):
        offsets = sorted(o for (q, o) in written if q == p)
        assert offsets == list(range(len(offsets)))
        assert store.offsets("t", p) == (0, len(offsets))
        assert [r.value for r in read_all(store, "t", p)] == [written[(p, o)] for o in offsets]


def test_group_commit_shares_fsyncs(open_store: OpenStore) -> None:
    store = open_store(durability="fsync")
    store.create_topic("t")
    threads, rounds = 16, 25
    start = threading.Barrier(threads)
    before = store.statistics().fsyncs

    def writer(w: int) -> None:
        start.wait()
        for seq in range(rounds):
            store.append("t", make_value(w, seq, 20), partition=0)

    run_threads([lambda w=w: writer(w) for w in range(threads)])
    fsyncs = store.statistics().fsyncs - before
    assert store.offsets("t", 0) == (0, threads * rounds)
    assert 0 < fsyncs < threads * rounds


@pytest.mark.parametrize("durability", MODES)
def test_readers_never_see_a_gap_or_a_torn_record(open_store: OpenStore, durability: str) -> None:
    store = open_store(durability=durability, fsync_interval_ms=5)
    store.create_topic("t", segment_bytes=32 * 1024)
    writers, rounds = 4, 400
    written: dict[int, bytes] = {}
    lock = threading.Lock()
    done = threading.Event()
    seen: dict[int, bytes] = {}
    problems: list[str] = []
    slowest = [0.0]

    def writer(w: int) -> None:
        rng = random.Random(w)
        for seq in range(rounds):
            if seq % 5 == 0:
                values = [make_value(w, seq * 10 + j, rng.randrange(1500)) for j in range(4)]
                metas = list(store.append_batch("t", values, partition=0))
            else:
                values = [make_value(w, seq, rng.randrange(1500))]
                metas = [store.append("t", values[0], partition=0)]
            with lock:
                for m, v in zip(metas, values, strict=True):
                    written[m.offset] = v

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        offset = 0
        while True:
            finished = done.is_set()
            t0 = time.monotonic()
            got = store.read("t", 0, offset, max_records=rng.choice([1, 7, 50, 500]),
                             max_bytes=rng.choice([None, 1, 5000]))
            slowest[0] = max(slowest[0], time.monotonic() - t0)
            if offset + len(got) > store.offsets("t", 0)[1]:
                problems.append(f"read past the high watermark from {offset}")
                return
            if [r.offset for r in got] != list(range(offset, offset + len(got))):
                problems.append(f"gap or disorder reading from {offset}: {[r.offset for r in got][:5]}")
                return
            for r in got:
                if not value_ok(r.value):
                    problems.append(f"torn value at {r.offset}")
                    return
                seen[r.offset] = r.value  # type: ignore[assignment]
            offset += len(got)
            if finished and offset >= store.offsets("t", 0)[1]:
                return
            time.sleep(0.0002)  # let the writers have the GIL

    readers = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    for t in readers:
        t.start()
    try:
        run_threads([lambda w=w: writer(w) for w in range(writers)])
    finally:
        done.set()
        for t in readers:
            t.join(60)
    assert not problems, problems
    total = len(written)
    assert sorted(written) == list(range(total))
    assert seen == written  # every record read once it was visible, with the value written there
    assert slowest[0] < 5


def test_readers_do_not_take_the_write_lock(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append_batch("t", [b"a", b"b", b"c"])
    plog = store.log.partition("t", 0)
    results: list[Any] = []
    with plog._lock:  # an appender is inside its critical section
        t = threading.Thread(target=lambda: results.append(
            (store.read("t", 0, 0), store.offsets("t", 0), store.offset_for_time("t", 0, 0))
        ))
        t.start()
        t.join(10)
        assert not t.is_alive(), "a reader blocked on the partition's write lock"
    [(records, offsets, first)] = results
    assert [r.value for r in records] == [b"a", b"b", b"c"]
    assert offsets == (0, 3) and first == 0


def test_unsynced_records_are_invisible_and_readers_do_not_wait_for_fsync(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(durability="fsync")
    store.create_topic("t")
    store.append("t", b"synced")
    entered, release = threading.Event(), threading.Event()
    real = disk.fdatasync

    def slow_fdatasync(fd: int) -> None:
        if not entered.is_set():
            entered.set()
            assert release.wait(30)
        real(fd)

    monkeypatch.setattr(disk, "fdatasync", slow_fdatasync)
    metas: list[Any] = []
    writers = [threading.Thread(target=lambda v=v: metas.append(store.append("t", v))) for v in (b"x", b"y")]
    writers[0].start()
    assert entered.wait(10)
    writers[1].start()
    time.sleep(0.05)
    try:
        # written but not yet durable: not visible, and reads do not wait for the sync
        t0 = time.monotonic()
        assert store.offsets("t", 0) == (0, 1)
        assert [r.value for r in store.read("t", 0, 0)] == [b"synced"]
        assert store.read("t", 0, 1) == []
        assert store.wait_for("t", 0, 1, 0.01) is False
        assert time.monotonic() - t0 < 5
        assert metas == []  # neither appender was acknowledged
    finally:
        release.set()
        for t in writers:
            t.join(30)
    assert sorted(m.offset for m in metas) == [1, 2]
    assert store.offsets("t", 0) == (0, 3)
    assert {r.value for r in store.read("t", 0, 1)} == {b"x", b"y"}


def test_waiters_wake_when_records_arrive(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=2)
    woke: list[bool] = []

    def wait(p: int) -> None:
        woke.append(store.wait_for("t", p, 0, 30))

    waiters = [threading.Thread(target=wait, args=(p % 2,)) for p in range(6)]
    for t in waiters:
        t.start()
    time.sleep(0.05)
    store.append("t", b"a", partition=0)
    store.append("t", b"b", partition=1)
    for t in waiters:
        t.join(30)
    assert woke == [True] * 6


def test_statistics_and_check_while_appending(open_store: OpenStore) -> None:
    store = open_store(durability="none")
    store.create_topic("t", partitions=2, segment_bytes=4096)
    done = threading.Event()
    observed: list[int] = []

    def writer(w: int) -> None:
        for seq in range(300):
            store.append("t", make_value(w, seq, 100), partition=w % 2)

    def observer() -> None:
        while not done.is_set():
            stats = store.statistics()
            observed.append(stats.records)
            report = store.check()
            assert report.ok, report.problems
            time.sleep(0.001)

    watcher = threading.Thread(target=observer)
    watcher.start()
    try:
        run_threads([lambda w=w: writer(w) for w in range(4)])
    finally:
        done.set()
        watcher.join(60)
    assert observed == sorted(observed)  # counts only grow
    assert store.statistics().records == 1200


@pytest.mark.parametrize("method", ["append_one", "append"])
@pytest.mark.parametrize("closer", ["close", "delete_topic"])
def test_an_append_racing_close_gets_a_clear_error(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch, method: str, closer: str
) -> None:
    """The interleaving: the appender passed the store's checks, then another thread closed the
    store (or deleted the topic) before the appender took the partition's lock."""
    from eventstore.storage.partition import PartitionLog

    store = open_store(durability="none")
    store.create_topic("t")
    store.append("t", b"before")
    original = getattr(PartitionLog, method)
    fired: list[bool] = []

    def racing(self: PartitionLog, *args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(True)
            shut: Callable[[], object] = store.close if closer == "close" else lambda: store.delete_topic("t")
            other = threading.Thread(target=shut)
            other.start()
            other.join(30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PartitionLog, method, racing)
    expected = eventstore.StoreClosedError if closer == "close" else eventstore.TopicNotFoundError
    with pytest.raises(expected):
        if method == "append_one":
            store.append("t", b"racing")
        else:
            store.append_batch("t", [b"racing", b"too"])
    assert fired


def test_readers_at_the_log_start_while_retention_deletes_segments(open_store: OpenStore) -> None:
    """Readers chase the log start while appends roll and retention deletes segments under them:
    each read returns valid, contiguous records or OffsetOutOfRangeError, nothing else."""
    store = open_store(durability="none")
    store.create_topic("t", segment_bytes=1024, retention_bytes=2048)
    done = threading.Event()
    outcomes: dict[str, int] = {"records": 0, "out_of_range": 0}
    problems: list[str] = []

    def reader() -> None:
        while not done.is_set():
            start, _end = store.offsets("t", 0)
            try:
                got = store.read("t", 0, start, max_records=20)
            except eventstore.OffsetOutOfRangeError:
                outcomes["out_of_range"] += 1
            except Exception as e:
                problems.append(f"{type(e).__name__}: {e}")
                return
            else:
                if [r.offset for r in got] != list(range(start, start + len(got))):
                    problems.append(f"gap reading from {start}")
                    return
                if not all(value_ok(r.value) for r in got):
                    problems.append(f"torn value reading from {start}")
                    return
                outcomes["records"] += 1
            time.sleep(0)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        deadline = time.monotonic() + 1.5
        seq = 0
        while time.monotonic() < deadline or seq < 300:
            store.append("t", make_value(0, seq, 150))
            seq += 1
    finally:
        done.set()
        for t in readers:
            t.join(60)
    assert not problems, problems
    assert outcomes["records"] > 0
    assert store.offsets("t", 0)[0] > 100  # retention ran many times
