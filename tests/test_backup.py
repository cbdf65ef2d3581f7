"""Backups beside the owner and restores (docs/format.md, section 20): round trips of both
batch kinds, streams, group offsets and DeleteRecords; resumption copying only new bytes;
points in time by time and by offsets; damage in DEST; a backup beside a writing owner in
another process; a backup process killed at any moment."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventstore
from eventstore import BackupCorruptionError, BackupError, InvalidArgumentError, TopicPartition
from eventstore.backups import backup, restore
from eventstore.sourcing.events import NewEvent, StreamState
from eventstore.wire import batch as kb

HERE = Path(__file__).parent
T0 = 1_700_000_000_000


def kafka(rows: int, ts: int, producer: tuple[int, int, int] = (-1, -1, -1)) -> bytes:
    rows_ = [(i, ts + i, b"k%d" % i, b"kafka-%d" % (ts + i), (("h", b"v"),)) for i in range(rows)]
    pid, epoch, seq = producer
    return kb.encode_batch(rows_, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                           partition_leader_epoch=-1)


def records(store: eventstore.Store | eventstore.StoreReader, topic: str, partition: int) -> list[tuple]:
    start, end = store.offsets(topic, partition)
    out: list[tuple] = []
    while start < end:  # bounded by the end offset
        batch = store.read(topic, partition, start, max_records=1000)
        out += [(r.offset, r.timestamp_ms, r.key, r.value, list(r.headers)) for r in batch]
        start = batch[-1].offset + 1
    return out


def fill(path: Path) -> None:
    """A store with every kind of state a backup keeps."""
    with eventstore.open(path) as store:
        store.create_topic("t", partitions=2, segment_bytes=2048)
        for i in range(120):
            store.append("t", b"native-%d" % i, key=b"k%d" % (i % 5), partition=i % 2, timestamp_ms=T0 + i)
        pid = store.log.allocate_producer_id()
        for seq in range(0, 12, 3):
            store.log.append_kafka("t", 1, kafka(3, T0 + 200 + seq, (pid, 0, seq)))
        store.append_to_stream("order-1", [NewEvent(type="Created", data=b"{}"),
                                           NewEvent(type="Paid", data=b"{}")], StreamState.NO_STREAM)
        store.reset_group_offsets("g", {("t", 0): 50, ("t", 1): 70})
        store.log.delete_records("t", 0, 10)


def assert_same(a: Path, b: Path) -> None:
    with eventstore.open(a) as x, eventstore.open(b) as y:
        assert [(c.name, c.partitions, c.topic_id, c.created_ms) for c in x.topics()] == \
            [(c.name, c.partitions, c.topic_id, c.created_ms) for c in y.topics()]
        for cfg in x.topics():
            for p in range(cfg.partitions):
                assert x.offsets(cfg.name, p) == y.offsets(cfg.name, p)
                assert records(x, cfg.name, p) == records(y, cfg.name, p)
                assert x.log.describe_producers(cfg.name, p) == y.log.describe_producers(cfg.name, p)
        assert x.group_offsets("g") == y.group_offsets("g")
        assert [(e.stream_id, e.version, e.type) for e in x.read_all()] == \
            [(e.stream_id, e.version, e.type) for e in y.read_all()]
        assert y.check().ok


def test_a_round_trip_keeps_both_batch_kinds_streams_groups_and_log_starts(tmp_path: Path) -> None:
    src, dest, out = tmp_path / "src", tmp_path / "dest", tmp_path / "out"
    fill(src)
    first = backup(src, dest)
    assert first.passes == 1 and first.batches_copied > 120
    result = restore(dest, out)
    assert result.groups == 1
    assert_same(src, out)
    with eventstore.open(out) as store:
        assert store.offsets("t", 0)[0] == 10  # DeleteRecords' log start
        assert store.log.allocate_producer_id() == 1  # the sequence went on from the backup's
    restored, original = out / "topics" / "t" / "1", src / "topics" / "t" / "1"
    for name in os.listdir(restored):  # segments byte for byte under their names
        if name.endswith(".log"):
            assert (restored / name).read_bytes() == (original / name).read_bytes()


def test_a_second_pass_copies_only_new_bytes(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    fill(src)
    first = backup(src, dest)
    assert first.bytes_copied == sum(s.size_bytes for s in _stats(src))
    assert backup(src, dest).bytes_copied == 0  # a restarted backup: nothing new
    before = sum(s.size_bytes for s in _stats(src))
    with eventstore.open(src) as store:
        for i in range(40):
            store.append("t", b"more-%d" % i, partition=0)
        store.log.append_kafka("t", 1, kafka(4, T0 + 900))
    again = backup(src, dest)
    assert again.bytes_copied == sum(s.size_bytes for s in _stats(src)) - before
    assert again.batches_copied == 41
    assert_same(src, _restored(dest, tmp_path))


def _stats(path: Path) -> list[eventstore.PartitionStatistics]:
    with eventstore.open_reader(path) as reader:
        return reader.partition_statistics()


def _restored(dest: Path, tmp_path: Path, **cut: object) -> Path:
    out = tmp_path / f"out-{len(os.listdir(tmp_path))}"
    restore(dest, out, **cut)  # type: ignore[arg-type]
    return out


def test_point_in_time_cuts_at_the_first_batch_after_the_time_and_clamps_commits(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    with eventstore.open(src) as store:
        store.create_topic("t", partitions=1, segment_bytes=1024)
        for i in range(60):
            store.append("t", b"v%d" % i, partition=0, timestamp_ms=T0 + 10 * i)
        store.append("t", b"late", partition=0, timestamp_ms=T0)  # older than the cut: still after it
        store.reset_group_offsets("g", {("t", 0): 55})
    backup(src, dest)
    out = _restored(dest, tmp_path, at_ms=T0 + 10 * 30 + 5)
    with eventstore.open(out) as store:
        assert store.offsets("t", 0) == (0, 31)  # the first batch with a max timestamp after it is 31
        assert store.group_offsets("g") == {TopicPartition("t", 0): 31}
        assert [r.value for r in store.read("t", 0, 0, max_records=100)] == [b"v%d" % i for i in range(31)]
    out = _restored(dest, tmp_path, at_ms=T0 - 1)
    with eventstore.open(out) as store:
        assert store.offsets("t", 0) == (0, 0)


def test_point_in_time_by_offsets_never_splits_a_batch(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    with eventstore.open(src) as store:
        store.create_topic("t", partitions=2)
        for i in range(5):
            store.append_batch("t", [b"a%d" % i, b"b%d" % i, b"c%d" % i], partition=0)  # batches of 3
            store.append("t", b"x%d" % i, partition=1)
        store.log.append_kafka("t", 1, kafka(4, T0))
        store.reset_group_offsets("g", {("t", 0): 15, ("t", 1): 9})
    backup(src, dest)
    out = _restored(dest, tmp_path, offsets={("t", 0): 7, ("t", 1): 7})
    with eventstore.open(out) as store:
        assert store.offsets("t", 0) == (0, 6)  # 7 is inside the batch 6..8: cut before it
        assert store.offsets("t", 1) == (0, 5)  # 7 is inside the Kafka batch 5..8
        assert store.group_offsets("g") == {TopicPartition("t", 0): 6, TopicPartition("t", 1): 5}
    out = _restored(dest, tmp_path, offsets={TopicPartition("t", 0): 9})
    with eventstore.open(out) as store:
        assert store.offsets("t", 0) == (0, 9) and store.offsets("t", 1) == (0, 9)
    with pytest.raises(InvalidArgumentError, match="outside"):
        restore(dest, tmp_path / "bad", offsets={("t", 0): 16})
    with pytest.raises(InvalidArgumentError, match="not in the backup"):
        restore(dest, tmp_path / "bad", offsets={("nope", 0): 1})
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("where", ["native", "kafka-epoch", "manifest"])
def test_damage_in_the_backup_is_found_and_nothing_is_restored(tmp_path: Path, where: str) -> None:
    src, dest, out = tmp_path / "src", tmp_path / "dest", tmp_path / "out"
    with eventstore.open(src) as store:
        store.create_topic("t", partitions=1)
        store.append("t", b"native")
        store.log.append_kafka("t", 0, kafka(2, T0))
    backup(src, dest)
    segment = next((dest / "topics").glob("*/0/*.log"))
    data = bytearray(segment.read_bytes())
    if where == "native":
        data[30] ^= 1
        segment.write_bytes(data)
    elif where == "kafka-epoch":  # outside the Kafka CRC: only the file's xxh3 covers it
        native_size = int.from_bytes(data[8:12], "big") + 12
        data[native_size + 13] ^= 1
        segment.write_bytes(data)
    else:
        (dest / "backup.json").write_text("{not json")
    with pytest.raises(BackupCorruptionError, match="damaged backup"):
        restore(dest, out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".restoring-" in p.name]


def test_a_target_that_is_not_empty_or_a_dest_that_is_not_a_backup_is_refused(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    fill(src)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(BackupError, match="not a backup"):
        backup(src, tmp_path / "other")
    backup(src, dest)
    with pytest.raises(BackupError, match="not an empty directory"):
        restore(dest, tmp_path / "other")
    (tmp_path / "empty").mkdir()
    restore(dest, tmp_path / "empty")  # an empty directory is taken
    with pytest.raises(BackupError, match="no backup"):
        restore(tmp_path / "empty", tmp_path / "new")


def test_a_pass_cut_short_before_its_manifest_leaves_the_previous_state(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    fill(src)
    backup(src, dest)
    old = _restored(dest, tmp_path)
    with eventstore.open(src) as store:
        for i in range(30):
            store.append("t", b"after-%d" % i, partition=1)
    import eventstore.backups as backups

    def crash(*args: object) -> None:
        raise OSError("killed before the manifest")

    with monkeypatch.context() as m:
        m.setattr(backups, "_publish_manifest", crash)
        with pytest.raises(OSError):
            backup(src, dest)
    assert_same(old, _restored(dest, tmp_path))  # the bytes past the manifest are not restored
    assert backup(src, dest).batches_copied == 30  # the next pass cuts them and copies again
    assert_same(src, _restored(dest, tmp_path))


# --- beside an owner in another process -------------------------------------------------------


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    src = tmp_path / "src"
    proc = subprocess.Popen([sys.executable, str(HERE / "backup_writer.py"), str(src)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        yield src, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def acknowledged(proc: subprocess.Popen[str], until: float) -> dict[int, int]:
    """The owner's acknowledged end per partition, reading its lines until ``until``."""
    assert proc.stdout is not None
    ends = {0: 0, 1: 0}
    while time.monotonic() < until:  # bounded by the deadline
        line = proc.stdout.readline()
        assert line, "the owner stopped"
        _, p, end = line.split()
        ends[int(p)] = max(ends[int(p)], int(end))
    return ends


def test_backup_beside_a_writing_owner_restores_what_it_acknowledged(
        tmp_path: Path, owner: tuple[Path, subprocess.Popen[str]]) -> None:
    src, proc = owner
    dest = tmp_path / "dest"
    acked = acknowledged(proc, time.monotonic() + 0.5)  # acknowledged before the backup starts
    backup(src, dest)
    once = _restored(dest, tmp_path)
    mid = acknowledged(proc, time.monotonic() + 0.2)  # before the continuous passes start
    passes = []
    backup(src, dest, once=False, interval_ms=50, max_passes=4, on_pass=passes.append)
    assert [p.passes for p in passes] == [2, 3, 4, 5] and all(p.bytes_copied > 0 for p in passes)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    latest = _restored(dest, tmp_path)
    with eventstore.open(src) as source:
        for restored, floor in ((once, acked), (latest, mid)):
            with eventstore.open(restored) as store:
                for p in (0, 1):
                    got = records(store, "w", p)
                    assert len(got) >= floor[p]  # what was acknowledged before the pass began
                    assert got == records(source, "w", p)[:len(got)]  # record by record, a prefix
                assert store.check().ok


def test_a_backup_process_killed_at_any_moment_leaves_dest_restorable(
        tmp_path: Path, owner: tuple[Path, subprocess.Popen[str]]) -> None:
    src, proc = owner
    dest = tmp_path / "dest"
    rng = random.Random(12)
    restored_ends = []
    for i in range(6):  # bounded: six kills
        acknowledged(proc, time.monotonic() + 0.1)
        job = subprocess.Popen([sys.executable, "-m", "eventstore.cli", "backup", "--data", str(src),
                                "--to", str(dest), "--interval-ms", "5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i == 0:  # the first job publishes a pass before its kill, however slow the machine is
            deadline = time.monotonic() + 60
            while not (dest / "backup.json").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(rng.uniform(0.3, 1.0))
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        if not (dest / "backup.json").exists():
            continue  # killed before its first pass was published
        out = _restored(dest, tmp_path)
        with eventstore.open(out) as store:
            restored_ends.append(sum(store.offsets("w", p)[1] for p in (0, 1)))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert restored_ends and restored_ends == sorted(restored_ends)  # each run went on from the last
    with eventstore.open(src) as source, eventstore.open(_restored(dest, tmp_path)) as store:
        for p in (0, 1):
            got = records(store, "w", p)
            assert got == records(source, "w", p)[:len(got)]
