"""Crash tests: SIGKILL a writer process mid-append (and mid-recovery), then check the store.

A child process (``crash_writer.py``) appends self-verifying records and prints
an acknowledgement line for each as soon as its append call returns. The test
kills it with SIGKILL at a random moment, reopens the store and checks:

* every acknowledged record is at its offset, intact (a process crash loses
  nothing acknowledged in any durability mode, docs/format.md section 11);
* offsets are contiguous from 0 in every partition;
* every record read verifies (it is one the writer wrote, in the order it wrote
  them), and nothing seen at an earlier reopen has disappeared or changed;
* ``store.check()`` is clean and the store keeps working (appends, reopens).

The kills land during imports, opening and recovery, single appends, multi-
partition batches, rolls and fsyncs; some are placed exactly (inside a write,
at chosen points of recovery) by the child itself.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from siblings import load

import eventstore
from eventstore import Message

_WRITER = Path(__file__).with_name("crash_writer.py")


cw = load("crash_writer")

TOPIC = cw.TOPIC
DURABILITIES = ["fsync", "interval", "none"]
_CHILD_TIMEOUT_S = 20.0
_children: list[Child] = []


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Any:
    """Whatever a test does, the processes it started are gone when it ends."""
    yield
    while _children:
        child = _children.pop()
        if child.proc.poll() is None:
            os.kill(child.proc.pid, signal.SIGKILL)
            child.proc.wait(timeout=_CHILD_TIMEOUT_S)


class Child:
    """A crash_writer.py process whose stdout goes to a file (so it never blocks on a pipe)."""

    def __init__(self, workdir: Path, name: str, args: list[str]) -> None:
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(_WRITER), *args], stdout=out, stderr=err)
        _children.append(self)
        self.started = time.monotonic()
        self.killed_alive = False

    def output(self) -> str:
        return self.out_path.read_text()

    def describe(self) -> str:
        return f"child exit {self.proc.returncode}; stderr:\n{self.err_path.read_text()[-3000:]}"

    def wait_output(self, predicate: Any, timeout: float = _CHILD_TIMEOUT_S) -> None:
        """Poll the child's output until ``predicate(text)``; fail if the child dies first."""
        deadline = time.monotonic() + timeout
        while not predicate(self.output()):  # bounded by the deadline
            if self.proc.poll() is not None:
                if predicate(self.output()):
                    return
                pytest.fail("child ended before the expected output: " + self.describe())
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("child timed out: " + self.describe())
            time.sleep(0.001)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed_alive = True
        self.proc.wait(timeout=_CHILD_TIMEOUT_S)

    def wait_self_kill(self) -> None:
        """For children that SIGKILL themselves."""
        try:
            self.proc.wait(timeout=_CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("child did not kill itself: " + self.describe())
        assert self.proc.returncode == -signal.SIGKILL, self.describe()

    def acks(self) -> list[Any]:
        return cw.parse_acks(self.output())


class Harness:
    """One store under test, and everything its writers acknowledged so far."""

    def __init__(self, workdir: Path, seed: int, partitions: int = 3, segment_bytes: int = 32 * 1024) -> None:
        self.workdir = workdir
        self.path = workdir / "store"
        self.rng = random.Random(seed)
        self.partitions = partitions
        self.segment_bytes = segment_bytes
        self.run = 0
        self.children = 0
        self.kills = 0
        self.acked: dict[tuple[int, int], Any] = {}
        self.seen: dict[int, list[int]] = {}
        self.transactions: set[tuple[int, int]] = set()  # (first seq, count) of those in the store

    def next_run(self) -> int:
        self.run += 1
        return self.run

    def spawn_writer(self, durability: str, *extra: str) -> Child:
        self.children += 1
        return Child(self.workdir, f"child{self.children}", [
            "write", str(self.path), "--durability", durability, "--run", str(self.next_run()),
            "--seed", str(self.rng.randrange(2**32)), "--partitions", str(self.partitions),
            "--segment-bytes", str(self.segment_bytes), *extra,
        ])

    def spawn_opener(self, *extra: str) -> Child:
        self.children += 1
        return Child(self.workdir, f"child{self.children}", ["open", str(self.path), *extra])

    def record_acks(self, child: Child) -> int:
        acks = child.acks()
        for ack in acks:
            assert ack.topic == TOPIC
            key = (ack.partition, ack.offset)
            assert key not in self.acked, f"offset acknowledged twice: {ack} and {self.acked[key]}"
            self.acked[key] = ack
        return len(acks)

    def kill_writer(self, durability: str, timing: tuple[str, float]) -> Child:
        """Run a writer and SIGKILL it: after n acks, d seconds after it opened, or d after spawn."""
        child = self.spawn_writer(durability)
        how, amount = timing
        if how == "acks":
            child.wait_output(lambda text: text.count("\nA ") >= amount)
        elif how == "delay":
            child.wait_output(lambda text: text.startswith("OPEN"))
            time.sleep(amount)
        else:
            assert how == "spawn"
            time.sleep(amount)
        child.kill()
        self.kills += child.killed_alive
        assert child.killed_alive, "the writer ended before the kill: " + child.describe()
        self.record_acks(child)
        return child

    def verify(self, store: eventstore.Store) -> None:
        """Everything acknowledged is there and intact; everything there verifies."""
        parts = store.topic(TOPIC).partitions if TOPIC in {t.name for t in store.topics()} else 0
        digests: dict[int, list[str]] = {}
        transactions: dict[tuple[int, int], list[int]] = {}
        for p in range(parts):
            records = cw.read_all(store, TOPIC, p)
            assert store.offsets(TOPIC, p)[0] == 0
            assert [r.offset for r in records] == list(range(len(records))), f"partition {p}: offsets"
            seqs = []
            for r in records:
                txn = r.key is not None and r.key.startswith(b"txn-")
                seqs.append(cw.verify_record(r, txn=txn))
                if txn:
                    transactions.setdefault(cw.parse_txn_key(r.key), []).append(seqs[-1])
            assert all(a < b for a, b in itertools.pairwise(seqs)), f"partition {p}: order"
            before = self.seen.get(p, [])
            assert seqs[: len(before)] == before, f"partition {p}: records seen at a reopen are gone"
            self.seen[p] = seqs
            digests[p] = [cw.digest(r.value) for r in records]
        for (first, count), seqs in transactions.items():  # all or nothing, each record once
            assert sorted(seqs) == list(range(first, first + count)), f"transaction {first}+{count}: {seqs}"
        self.transactions = set(transactions)
        for (p, offset), ack in self.acked.items():
            assert p < parts and offset < len(self.seen[p]), f"acknowledged record lost: {ack}"
            assert self.seen[p][offset] == ack.seq, f"acknowledged record replaced: {ack}"
            assert digests[p][offset] == ack.digest, f"acknowledged record damaged: {ack}"
        report = store.check()
        assert report.ok, "\n".join(map(str, report.problems))

    def reopen_and_verify(self, durability: str = "fsync") -> list[Any]:
        with eventstore.open(self.path, durability=durability) as store:  # type: ignore[arg-type]
            self.verify(store)
            return list(store.recovery_events)

    def append_in_parent(self, durability: str, n: int = 24) -> None:
        """The store keeps working: append (a multi-partition batch, then singles), reopen, verify."""
        run = self.next_run()
        records = [(run * cw.SEQ_PER_RUN + i, 1500 * (i % 4) + i) for i in range(n)]
        with eventstore.open(self.path, durability=durability) as store:  # type: ignore[arg-type]
            store.create_topic(TOPIC, self.partitions, segment_bytes=self.segment_bytes, exist_ok=True)
            half = n // 2
            metas = list(store.append_batch(TOPIC, [
                Message(value=cw.make_value(seq, size), key=cw.key_for(seq),
                        headers=cw.headers_for(seq) or None, partition=i % self.partitions)
                for i, (seq, size) in enumerate(records[:half])
            ]))
            for i, (seq, size) in enumerate(records[half:], start=half):
                metas.append(store.append(
                    TOPIC, cw.make_value(seq, size), key=cw.key_for(seq),
                    headers=cw.headers_for(seq) or None, partition=i % self.partitions,
                ))
            for (seq, size), meta in zip(records, metas, strict=True):
                ack = cw.Ack(TOPIC, meta.partition, meta.offset, seq, cw.digest(cw.make_value(seq, size)))
                self.acked[(meta.partition, meta.offset)] = ack
            self.verify(store)
        self.reopen_and_verify(durability)


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


# --- kills in the middle of appends ---------------------------------------------


@pytest.mark.parametrize("durability", DURABILITIES)
def test_sigkill_mid_append(tmp_path: Path, durability: str) -> None:
    """Five kills at different moments on one store, each followed by a reopen and a full check."""
    h = Harness(tmp_path, _seed("mid-append", durability))
    timings = [
        ("acks", 1),
        ("acks", h.rng.randint(20, 200)),
        ("delay", h.rng.uniform(0.0, 0.02)),
        ("delay", h.rng.uniform(0.02, 0.25)),
        ("spawn", h.rng.uniform(0.05, 0.4)),  # may land while the child imports or recovers
    ]
    for timing in timings:
        h.kill_writer(durability, timing)
        h.reopen_and_verify(durability)
    assert h.kills >= 4, "most kills must hit a live writer"
    assert len(h.acked) > 20
    h.append_in_parent(durability)


@pytest.mark.slow
def test_repeated_kill_reopen_cycles_on_one_store(tmp_path: Path) -> None:
    """Sixteen kill/reopen cycles on the same store, rotating durability modes and kill timings.

    Every reopen after a kill is itself a recovery of a crashed store; every
    fourth cycle the parent appends and reopens too.
    """
    h = Harness(tmp_path, _seed("cycles"), partitions=4, segment_bytes=16 * 1024)
    for cycle in range(16):
        durability = DURABILITIES[cycle % 3]
        timing = h.rng.choice([
            ("acks", h.rng.randint(1, 300)),
            ("delay", h.rng.uniform(0.0, 0.2)),
            ("spawn", h.rng.uniform(0.0, 0.35)),
        ])
        h.kill_writer(durability, timing)
        if cycle % 2:  # alternate: reopen in this process, or let the next child recover it
            h.reopen_and_verify(durability)
        if cycle % 4 == 3:
            h.append_in_parent(durability)
    h.reopen_and_verify()
    assert h.kills >= 12
    assert sum(len(s) for s in h.seen.values()) > 200


# --- torn writes -----------------------------------------------------------------------


def _last_segments(store_dir: Path) -> dict[int, Path]:
    topic_dir = store_dir / "topics" / TOPIC
    return {
        int(d.name): cw.segment_files(d)[-1] for d in topic_dir.iterdir() if d.is_dir() and d.name.isdigit()
    }


def _torn_position(data: bytes) -> int:
    """Where the first incomplete batch of a segment starts (len(data) if there is none)."""
    position = 0
    while position + 17 <= len(data):  # bounded: each step advances by a batch
        size = 12 + int.from_bytes(data[position + 8 : position + 12], "big", signed=True)
        if position + size > len(data):
            break
        position += size
    return position


@pytest.mark.slow
@pytest.mark.parametrize("durability", DURABILITIES)
def test_kill_inside_a_write_leaves_a_broken_copy_of_exactly_the_torn_bytes(
    tmp_path: Path, durability: str
) -> None:
    """The writer dies inside a pwrite with half a batch written: R3 cuts it, keeps it, reports it."""
    h = Harness(tmp_path, _seed("torn", durability))
    child = h.spawn_writer(durability, "--pause-at", "torn-write", "--tear-after", str(h.rng.randint(30, 90)))
    child.wait_self_kill()
    h.kills += 1
    h.record_acks(child)
    torn = {}
    for p, log in _last_segments(h.path).items():
        data = log.read_bytes()
        position = _torn_position(data)
        if position < len(data):
            torn[p] = (log, position, data[position:])
    assert len(torn) == 1, f"expected exactly one torn tail, found {sorted(torn)}"
    events = h.reopen_and_verify(durability)
    ((p, (log, position, cut)),) = torn.items()
    assert log.stat().st_size == position
    broken = log.with_name(f"{log.name}.{position}.broken")
    assert broken.read_bytes() == cut
    assert [(e.case, e.path, e.position) for e in events if e.case in ("R3", "R4")] == [
        ("R3", str(log), position)
    ]
    h.append_in_parent(durability)


# --- kills during recovery -------------------------------------------------------------


def _torn_store(h: Harness, writes: int = 400) -> dict[int, tuple[Path, int, bytes]]:
    """A store whose writer died inside a write, in mode none with big segments: every batch
    it wrote is past the checkpoint, so reopening scans all of them and cuts a torn tail."""
    child = h.spawn_writer("none", "--pause-at", "torn-write", "--tear-after", str(writes))
    child.wait_self_kill()
    h.kills += 1
    h.record_acks(child)
    out = {}
    for p, log in _last_segments(h.path).items():
        data = log.read_bytes()
        out[p] = (log, _torn_position(data), data)
    assert sum(pos < len(data) for _, pos, data in out.values()) == 1
    return out


def _check_recovered(h: Harness, torn: dict[int, tuple[Path, int, bytes]]) -> None:
    h.reopen_and_verify()
    for log, position, data in torn.values():
        assert log.stat().st_size == position
        broken = log.with_name(f"{log.name}.{position}.broken")
        if position < len(data):
            assert broken.read_bytes() == data[position:]
        else:
            assert not broken.exists()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["scan", "before-truncate", "after-truncate", "after-checkpoint"])
def test_kill_during_recovery_at(tmp_path: Path, point: str) -> None:
    """SIGKILL a process that is recovering a torn store, at a chosen point; a later open finishes the job."""
    h = Harness(tmp_path, _seed("recovery-point", point), segment_bytes=64 * 1024 * 1024)
    torn = _torn_store(h)
    child = h.spawn_opener("--pause-at", point)
    child.wait_output(lambda text: f"PAUSED {point}" in text)
    child.kill()
    h.kills += child.killed_alive
    assert child.killed_alive
    _check_recovered(h, torn)
    h.append_in_parent("fsync")


@pytest.mark.slow
def test_kill_during_recovery_at_random_moments(tmp_path: Path) -> None:
    """Kill openers of a torn store at random moments inside eventstore.open(), calibrated on
    unkilled opens: six times on fresh copies, then three times over on the same directory."""
    h = Harness(tmp_path, _seed("recovery-random"), partitions=6, segment_bytes=64 * 1024 * 1024)
    torn = _torn_store(h, writes=4000)
    pristine = tmp_path / "pristine"
    shutil.copytree(h.path, pristine)
    open_s = []
    for _ in range(2):
        shutil.rmtree(h.path)
        shutil.copytree(pristine, h.path)
        calibrate = h.spawn_opener()
        calibrate.wait_output(lambda text: "OPENING" in text)
        opening = time.monotonic()
        calibrate.wait_output(lambda text: "OPENED" in text)
        open_s.append(time.monotonic() - opening)
        calibrate.kill()
    in_recovery = 0
    for attempt in range(9):
        if attempt <= 6:  # fresh copies; the last one is then killed three times over
            shutil.rmtree(h.path)
            shutil.copytree(pristine, h.path)
        child = h.spawn_opener()
        child.wait_output(lambda text: "OPENING" in text)
        time.sleep(h.rng.uniform(0, 0.7 * min(open_s)))
        child.kill()
        h.kills += child.killed_alive
        if attempt < 6:
            in_recovery += "OPENED" not in child.output()
            _check_recovered(h, torn)
    _check_recovered(h, torn)
    assert in_recovery >= 3, "most kills should land inside eventstore.open()"
    h.append_in_parent("interval")


# --- transactions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", DURABILITIES)
def test_sigkill_mid_transaction(tmp_path: Path, durability: str) -> None:
    """Transactions over several partitions, killed at random: each is in the store entirely or
    not at all, once; acknowledged ones are there; reopening relays committed ones (R: outbox)."""
    h = Harness(tmp_path, _seed("txn", durability))
    for _ in range(4):
        child = h.spawn_writer(durability, "--transactions")
        acks = h.rng.randint(5, 120)
        child.wait_output(lambda text, acks=acks: text.count("\nA ") >= acks)
        time.sleep(h.rng.uniform(0, 0.01))
        child.kill()
        h.kills += child.killed_alive
        assert child.killed_alive, child.describe()
        h.record_acks(child)
        h.reopen_and_verify(durability)
    assert len(h.transactions) > 10
    h.append_in_parent(durability)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["txn-before-relay", "txn-mid-relay", "txn-before-outbox-delete"])
def test_kill_after_a_transaction_committed(tmp_path: Path, point: str) -> None:
    """Killed after the LMDB commit (the point of no return) but before the records are all in
    their partitions: the next open relays them, exactly once."""
    h = Harness(tmp_path, _seed("txn-point", point), partitions=4)
    child = h.spawn_writer("fsync", "--transactions", "--pause-at", point, "--tear-after", "5")
    child.wait_self_kill()
    h.kills += 1
    h.record_acks(child)
    last = cw.parse_transactions(child.output())[-1]
    assert last[1] >= 2
    assert cw.outbox_entries(h.path) == 1
    with eventstore.open(h.path) as store:
        h.verify(store)
    assert last in h.transactions, "a committed transaction was not relayed on open"
    assert cw.outbox_entries(h.path) == 0
    h.reopen_and_verify()  # and relayed once: reopening again changes nothing
    assert last in h.transactions
    h.append_in_parent("fsync")


# Regression: Transaction.commit / transactions.relay once deleted the outbox entry (an fsynced
# LMDB commit) right after append_batch returned, and in modes interval and none append_batch
# returns before the records are fdatasynced. A power loss then lost the outputs of a committed
# transaction for good: the outbox entry that would have relayed them again is gone, while the
# group offsets committed with them were durable - the "never lost" of transactions.py did not
# hold outside mode fsync. (A SIGKILL cannot show this: the page cache survives it; so this
# test watches the order of fdatasync calls and the outbox delete instead.)
@pytest.mark.parametrize("durability", ["fsync", "interval", "none"])
def test_transaction_outputs_are_durable_before_the_outbox_entry_is_deleted(
    tmp_path: Path, durability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventstore.catalog import env, keys
    from eventstore.storage import disk

    events: list[tuple[str, str]] = []
    fdatasync, fsync, delete = disk.fdatasync, disk.fsync, env.Catalog.delete

    def syncing(real: Any) -> Any:
        def sync(fd: int) -> None:
            real(fd)
            events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        return sync

    def deleting(self: Any, db: bytes, key: bytes) -> None:
        if db == keys.DB_OUTBOX:
            events.append(("outbox-delete", ""))
        delete(self, db, key)

    opened = eventstore.open(tmp_path / "s", durability=durability, fsync_interval_ms=600_000)  # type: ignore[arg-type]
    with opened as store:
        store.create_topic(TOPIC, 2)
        monkeypatch.setattr(disk, "fdatasync", syncing(fdatasync))
        monkeypatch.setattr(disk, "fsync", syncing(fsync))
        monkeypatch.setattr(env.Catalog, "delete", deleting)
        txn = store.transaction()
        txn.append(TOPIC, b"one", partition=0)
        txn.append(TOPIC, b"two", partition=1)
        txn.commit()
        logs = [str(seg.log_path) for p in range(2) for seg in store.log.partition(TOPIC, p).segments()]
        monkeypatch.undo()
    done = events.index(("outbox-delete", ""))
    synced = {os.path.realpath(path) for kind, path in events[:done] if kind == "sync"}
    assert all(os.path.realpath(log) in synced for log in logs), (
        f"outbox entry deleted before these were synced: {sorted(set(logs) - synced)}"
    )


# --- event-sourcing streams -----------------------------------------------------------------------


class StreamHarness(Harness):
    """A store written through append_to_stream, and the events acknowledged so far."""

    def __init__(self, workdir: Path, seed: int) -> None:
        super().__init__(workdir, seed)
        self.events: dict[tuple[str, int], tuple[int, int]] = {}  # (stream, version) -> (position, seq)
        self.stream_seqs: dict[str, list[int]] = {}

    def record_events(self, child: Child) -> None:
        for stream, version, position, seq in cw.parse_stream_lines(child.output(), "E"):
            self.events[(stream, int(version))] = (int(position), int(seq))

    def verify_streams(self, store: eventstore.Store) -> None:
        """Versions contiguous, every event verifies, acknowledged ones in place, $all consistent."""
        everything = {}
        for stream in cw.STREAMS:
            events = store.read_stream(stream) if store.stream_version(stream) is not None else []
            assert [e.version for e in events] == list(range(len(events))), f"{stream}: versions"
            seqs = []
            for e in events:
                seq = cw.verify_value(e.data, f"{stream}@{e.version}")
                assert (e.stream_id, e.type, e.id) == (stream, "deposit", cw.event_id(seq))
                seqs.append(seq)
                everything[(stream, e.version)] = (e.position, seq)
            assert all(a < b for a, b in itertools.pairwise(seqs)), f"{stream}: order"
            before = self.stream_seqs.get(stream, [])
            assert seqs[: len(before)] == before, f"{stream}: events seen at a reopen are gone"
            self.stream_seqs[stream] = seqs
        for key, acked in self.events.items():
            assert everything.get(key) == acked, f"acknowledged {key} {acked}: found {everything.get(key)}"
        in_order = store.read_all(0, limit=None)
        positions = [e.position for e in in_order]
        assert positions == sorted(set(positions)), "$all: positions not strictly increasing"
        assert {(e.stream_id, e.version): (e.position, cw.verify_value(e.data)) for e in in_order} == (
            everything
        ), "$all and the streams disagree"
        report = store.check()
        assert report.ok, report.problems

    def reopen_and_verify_streams(self, durability: str = "fsync") -> None:
        with eventstore.open(self.path, durability=durability) as store:  # type: ignore[arg-type]
            self.verify_streams(store)

    def append_streams_in_parent(self, durability: str) -> None:
        """Every stream takes one more event at the version the index says it is at."""
        seq = self.next_run() * cw.SEQ_PER_RUN
        with eventstore.open(self.path, durability=durability) as store:  # type: ignore[arg-type]
            for i, stream in enumerate(cw.STREAMS):
                current = store.stream_version(stream)
                expected = -1 if current is None else current
                result = store.append_to_stream(stream, cw.stream_events(seq + i, 1, [100]), expected)
                assert result.next_expected_version == expected + 1
                self.events[(stream, expected + 1)] = (result.position, seq + i)
            self.verify_streams(store)
        self.reopen_and_verify_streams(durability)


@pytest.mark.parametrize("durability", DURABILITIES)
def test_sigkill_mid_stream_append(tmp_path: Path, durability: str) -> None:
    """Expected-version stream appends killed at random: every acknowledged event keeps its version
    and position, versions stay contiguous, the stream index agrees with the log after reopening."""
    h = StreamHarness(tmp_path, _seed("streams", durability))
    for _ in range(3):
        child = h.spawn_writer(durability, "--streams")
        events = h.rng.randint(3, 150)
        child.wait_output(lambda text, events=events: text.count("\nE ") >= events)
        child.kill()
        h.kills += child.killed_alive
        assert child.killed_alive, child.describe()
        h.record_events(child)
        h.reopen_and_verify_streams(durability)
    assert len(h.events) > 10
    h.append_streams_in_parent(durability)


@pytest.mark.slow
def test_kill_between_the_log_write_and_the_stream_index(tmp_path: Path) -> None:
    """Killed after an append reached the log but not the stream index: opening indexes it from
    the log, and the client's retry of the same events is recognised (no duplicate, no conflict)."""
    h = StreamHarness(tmp_path, _seed("stream-index"))
    child = h.spawn_writer("fsync", "--streams", "--pause-at", "stream-before-index", "--tear-after", "25")
    child.wait_self_kill()
    h.kills += 1
    h.record_events(child)
    stream, expected_s, first_s, *sizes_s = cw.parse_stream_lines(child.output(), "P")[-1]
    expected, first, sizes = int(expected_s), int(first_s), [int(x) for x in sizes_s]
    with eventstore.open(h.path) as store:
        assert store.stream_version(stream) == expected + len(sizes), "the log's events were not indexed"
        h.verify_streams(store)
        total = len(store.read_all(0, limit=None))
        retry = store.append_to_stream(stream, cw.stream_events(first, len(sizes), sizes), expected)
        assert retry.next_expected_version == expected + len(sizes)
        assert store.stream_version(stream) == expected + len(sizes)
        assert len(store.read_all(0, limit=None)) == total, "the retry appended the events again"
        h.verify_streams(store)
    h.append_streams_in_parent("fsync")
