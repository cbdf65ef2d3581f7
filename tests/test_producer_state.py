"""Idempotent producers (docs/format.md, section 19): the rules P1-P7 per partition, and the
state's durability: snapshotted in every checkpoint, replayed from the log after it, rebuilt
from the whole log without one, and what a SIGKILL leaves behind."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from siblings import crash, load

import eventstore
from eventstore.catalog import checkpoints
from eventstore.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from eventstore.storage.producers import RETAINED_BATCHES, ProducerState, next_sequence
from eventstore.wire import batch as kb
from eventstore.wire.errors import kafka_error_for

PID = 4242
#: Batches are stamped now: producer entries older than a day expire at checkpoints (section 19).
NOW = int(time.time() * 1000)
cw = load("crash_writer")


def batch(sequence: int, count: int = 1, *, pid: int = PID, epoch: int = 0, tag: bytes = b"") -> bytes:
    return kb.encode_batch([(i, NOW + i, None, tag + b"%d" % (sequence + i), ()) for i in range(count)],
                           producer_id=pid, producer_epoch=epoch, base_sequence=sequence)


def append(store: eventstore.Store, data: bytes, partition: int = 0) -> tuple[int, bool]:
    result = store.log.append_kafka("t", partition, data)
    return result.base_offset, result.duplicate


@pytest.fixture
def topic(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("t", 2)
    return store


def test_in_sequence_duplicates_and_gaps(topic: eventstore.Store) -> None:
    store = topic
    assert append(store, batch(0, 3)) == (0, False)  # P2: unknown producer
    assert append(store, batch(3, 2)) == (3, False)  # P5
    assert append(store, batch(0, 3)) == (0, True)  # P4: a retry of the first, nothing written
    assert append(store, batch(3, 2)) == (3, True)
    with pytest.raises(OutOfOrderSequenceError) as gap:
        append(store, batch(6))  # 5 is missing: P7
    assert kafka_error_for(gap.value).name == "OUT_OF_ORDER_SEQUENCE_NUMBER"
    with pytest.raises(OutOfOrderSequenceError):
        append(store, batch(1, 2))  # overlaps a kept batch without being one
    assert store.offsets("t", 0) == (0, 5)
    assert [r.value for r in store.read("t", 0, 0)] == [b"0", b"1", b"2", b"3", b"4"]
    assert append(store, batch(5)) == (5, False)
    assert store.log.describe_producers("t", 0) == [(PID, 0, 5, NOW)]
    assert store.log.describe_producers("t", 1) == []


def test_sequences_are_per_partition_and_per_producer(topic: eventstore.Store) -> None:
    store = topic
    assert append(store, batch(0), partition=0) == (0, False)
    assert append(store, batch(0), partition=1) == (0, False)  # the same sequence elsewhere: new
    assert append(store, batch(0, pid=7), partition=0) == (1, False)
    assert append(store, batch(1), partition=0) == (2, False)
    assert [p for p, *_ in store.log.describe_producers("t", 0)] == [7, PID]


def test_only_the_last_five_batches_are_duplicates(topic: eventstore.Store) -> None:
    store = topic
    for s in range(RETAINED_BATCHES + 2):
        append(store, batch(s))
    for s in range(2, RETAINED_BATCHES + 2):
        assert append(store, batch(s)) == (s, True)
    with pytest.raises(OutOfOrderSequenceError):
        append(store, batch(1))  # older than the five kept: Kafka says out of order too
    assert store.offsets("t", 0)[1] == RETAINED_BATCHES + 2


def test_epochs_fence_and_restart_sequences(topic: eventstore.Store) -> None:
    store = topic
    append(store, batch(0, epoch=3))
    with pytest.raises(InvalidProducerEpochError) as fenced:
        append(store, batch(1, epoch=2))  # P3
    assert kafka_error_for(fenced.value).name == "INVALID_PRODUCER_EPOCH"
    with pytest.raises(OutOfOrderSequenceError):
        append(store, batch(1, epoch=4))  # P6 needs sequence 0 for a new epoch
    assert append(store, batch(0, epoch=4)) == (1, False)
    assert append(store, batch(0, epoch=4)) == (1, True)
    assert store.log.describe_producers("t", 0) == [(PID, 4, 0, NOW)]


def test_sequences_wrap_after_int32_max() -> None:
    state = ProducerState()
    top = 2**31 - 1
    state.update(PID, 0, top - 1, 2, 0, 0)  # sequences top - 1 and top
    assert state.entries[PID].last_sequence == top
    assert state.check("t", 0, PID, 0, 0, 1) is None  # the next is 0
    state.update(PID, 0, top, 3, 2, 0)  # top, 0, 1
    assert state.entries[PID].batches[-1][:2] == (top, 1) and next_sequence(top, 1) == 0
    assert state.check("t", 0, PID, 0, top, 3) is not None  # that batch again: a duplicate


def test_non_idempotent_batches_keep_no_state(topic: eventstore.Store) -> None:
    store = topic
    plain = kb.encode_batch([(0, 1, None, b"x", ())])
    assert append(store, plain) == (0, False)
    assert append(store, plain) == (1, False)  # no producer id: every copy is written
    assert store.log.describe_producers("t", 0) == []


# --- durability -----------------------------------------------------------------------------------


def test_a_duplicate_after_a_clean_restart_gets_the_original_offsets(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        store.create_topic("t", 1)
        store.append("t", b"native")
        for s in range(0, 6, 2):
            append(store, batch(s, 2))
    with eventstore.open(path) as store:
        assert append(store, batch(4, 2)) == (5, True)
        assert append(store, batch(2, 2)) == (3, True)
        assert append(store, batch(6, 1)) == (7, False)
        assert store.offsets("t", 0) == (0, 8)


def test_the_checkpoint_holds_the_snapshot_and_the_tail_is_replayed(tmp_path: Path) -> None:
    path = tmp_path / "s"
    store = eventstore.open(path, durability="none")
    store.create_topic("t", 1)
    append(store, batch(0, pid=1))
    store.log.flush()  # a checkpoint with producer 1 in its snapshot
    fields = checkpoints.get(store.log.catalog, "t", 0)
    assert fields is not None and fields[6] == ((1, 0, NOW, ((0, 0, 0, 1),)),)
    append(store, batch(1, pid=1))  # after the checkpoint: replayed from the log
    append(store, batch(0, pid=2))
    crash(store)
    with eventstore.open(path) as again:
        assert [e.case for e in again.recovery_events] == ["R2"]
        assert append(again, batch(1, pid=1)) == (1, True)
        assert append(again, batch(0, pid=2)) == (2, True)
        assert append(again, batch(0, pid=1)) == (0, True)
        assert [p for p, *_ in again.log.describe_producers("t", 0)] == [1, 2]


def test_without_a_catalog_the_state_is_rebuilt_from_every_segment(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with eventstore.open(path, durability="none") as store:
        store.create_topic("t", 1, segment_bytes=1024)
        for s in range(30):
            append(store, batch(s, tag=b"x" * 100))
        assert len(store.log.partition("t", 0).segments()) > 3
    shutil.rmtree(path / "catalog")
    with eventstore.open(path) as store:
        for s in range(25, 30):
            assert append(store, batch(s, tag=b"x" * 100)) == (s, True)
        assert append(store, batch(30)) == (30, False)


def test_a_torn_batch_is_forgotten_by_the_producer_state(tmp_path: Path) -> None:
    """A batch a crash cut off the tail was never acknowledged: its retry is written anew."""
    path = tmp_path / "s"
    with eventstore.open(path, durability="none") as store:
        store.create_topic("t", 1)
        append(store, batch(0))
        append(store, batch(1, 3))
    log = path / "topics" / "t" / "0" / ("0" * 20 + ".log")
    with open(log, "r+b") as f:
        f.truncate(log.stat().st_size - 4)
    shutil.rmtree(path / "catalog")
    with eventstore.open(path) as store:
        assert [e.case for e in store.recovery_events] == ["R3"]
        assert append(store, batch(1, 3)) == (1, False)
        assert store.log.describe_producers("t", 0) == [(PID, 0, 3, NOW + 2)]


# --- SIGKILL during idempotent appends -----------------------------------------------------------

# The child appends Kafka batches of an idempotent producer whose values are crash_writer.py's
# self-verifying ones (a value proves which sequence number it carries), and prints one line
# per batch as soon as append_kafka returns (fsync mode: the batch is durable).
_WRITER = r"""
import sys
sys.path.insert(0, sys.argv[4])
import time
import crash_writer as cw
import eventstore
from eventstore.wire import batch as kb

path, pid, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = eventstore.open(path, durability="fsync")
store.create_topic("t", 2, exist_ok=True, segment_bytes=64 * 1024)
sequence = [0, 0]
for n in range(1_000_000):  # bounded; the parent kills it long before
    p = n % 2
    count = 1 + n % 7
    rows = [(i, int(time.time() * 1000), cw.key_for(seq + i), cw.make_value(seq + i, 40 + (seq + i) % 300),
             tuple(cw.headers_for(seq + i))) for i in range(count)]
    data = kb.encode_batch(rows, producer_id=pid, producer_epoch=0, base_sequence=sequence[p])
    result = store.log.append_kafka("t", p, data)
    print(f"A {p} {sequence[p]} {count} {result.base_offset}", flush=True)
    sequence[p] += count
    seq += count
"""


def _acknowledged(out: str) -> list[tuple[int, int, int, int]]:
    acks = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "A":
            acks.append((int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])))
    return acks


def _run_and_kill(tmp_path: Path, path: Path, pid: int, first_seq: int, acks_wanted: int) -> list[Any]:
    """A writer child killed by SIGKILL once it acknowledged ``acks_wanted`` batches (or a random
    moment shortly after); its acknowledgements."""
    out_path = tmp_path / f"writer-{pid}.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(pid), str(first_seq),
                                 str(Path(__file__).parent)], stdout=out, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while len(_acknowledged(out_path.read_text())) < acks_wanted and time.monotonic() < deadline:
            assert proc.poll() is None, "the writer died on its own"
            time.sleep(0.01)
        time.sleep(random.random() * 0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    acks = _acknowledged(out_path.read_text())
    assert len(acks) >= acks_wanted
    return acks


def test_sigkill_during_idempotent_appends_keeps_every_acknowledged_batch_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "s"
    first_seq = 0
    for pid in (PID, PID + 1):  # two writers in turn, each killed mid-append
        acks = _run_and_kill(tmp_path, path, pid, first_seq, random.randint(50, 250))
        with eventstore.open(path) as store:
            report = store.check()
            assert report.ok, report.problems
            seen = []
            for p in (0, 1):
                records = store.read("t", p, 0, max_records=100_000)
                seen += [cw.verify_record(r) for r in records]  # every record is one the writer wrote
                for _, _, count, base in [a for a in acks if a[0] == p]:  # each acknowledged batch, whole
                    got = [cw.verify_value(r.value) for r in records[base:base + count]]
                    assert len(got) == count and got == list(range(got[0], got[0] + count))
                # the retry of each of the last ones is a duplicate: of the 5 batches kept, one may
                # be a batch written but not acknowledged (the writer has one append in flight)
                for _, sequence, count, base in [a for a in acks if a[0] == p][-(RETAINED_BATCHES - 1):]:
                    data = kb.encode_batch([(i, 0, None, b"", ()) for i in range(count)], producer_id=pid,
                                           producer_epoch=0, base_sequence=sequence)
                    result = store.log.append_kafka("t", p, data)
                    assert (result.base_offset, result.duplicate) == (base, True)
            assert len(seen) == len(set(seen))  # nothing twice
            first_seq = max(seen) + 1
