"""Recovery, case by case (docs/format.md, section 9: the table R1..R8), and its cost.

Each test is named after the case it exercises. ``scans`` records every range
of bytes that ``Segment.batches`` validates, which is how recovery reads a log:
what open reads is exactly what these ranges say.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from siblings import load

import eventstore
from eventstore import CorruptionError, Message
from eventstore.storage import disk, topicdir
from eventstore.storage.segment import Segment

TOPIC = "r"
TS0 = 1_760_000_000_000


cw = load("crash_writer")


# --- helpers ----------------------------------------------------------------------------------


class Scans:
    """The (segment file name, start, end) ranges validated by Segment.batches."""

    def __init__(self) -> None:
        self.ranges: list[tuple[str, int, int]] = []
        self.mapped: list[str] = []

    def clear(self) -> None:
        self.ranges.clear()
        self.mapped.clear()

    @property
    def bytes(self) -> int:
        return sum(end - start for _, start, end in self.ranges)


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> Scans:
    seen = Scans()
    batches, view = Segment.batches, Segment.view

    def counting_batches(self: Segment, start: int, end: int) -> Iterator[Any]:
        seen.ranges.append((os.path.basename(self.log_path), start, end))
        return batches(self, start, end)

    def counting_view(self: Segment, end: int) -> Any:
        seen.mapped.append(os.path.basename(self.log_path))
        return view(self, end)

    monkeypatch.setattr(Segment, "batches", counting_batches)
    monkeypatch.setattr(Segment, "view", counting_view)
    return seen


def open_counted(path: Path, scans: Scans, **kwargs: Any) -> eventstore.Store:
    scans.clear()
    return eventstore.open(path, **kwargs)


def build(path: Path, records: int = 400, *, partitions: int = 1, segment_bytes: int = 16 * 1024,
          value_bytes: int = 90, batch: int = 1) -> dict[int, list[bytes]]:
    """A closed store of ``records`` records per partition, values b'<p>:<i>' padded."""
    values: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    with eventstore.open(path, durability="none") as store:
        store.create_topic(TOPIC, partitions, segment_bytes=segment_bytes)
        for p in range(partitions):
            for first in range(0, records, batch):
                last = min(first + batch, records)
                chunk = [b"%d:%d:" % (p, i) + bytes(value_bytes) for i in range(first, last)]
                store.append_batch(TOPIC, [
                    Message(value=v, partition=p, timestamp_ms=TS0 + first + j) for j, v in enumerate(chunk)
                ])
                values[p] += chunk
    return values


def values_of(store: eventstore.Store, p: int = 0) -> list[bytes | None]:
    return [r.value for r in cw.read_all(store, TOPIC, p)]


def partition_dir(path: Path, p: int = 0) -> Path:
    return path / "topics" / TOPIC / str(p)


def rewind_checkpoint(path: Path, log: Path, position: int) -> list[int]:
    """Make the checkpoint say: byte ``position`` (a batch start) of ``log``, with the index entries
    that precede it, as a crash at that point would have left it."""
    spans = cw.batch_layout(log.read_bytes())
    base = spans[0].base_offset
    next_offset = next((s.base_offset for s in spans if s.position >= position), spans[-1].next_offset)
    index = [e for e in struct.iter_unpack("<II", log.with_suffix(".index").read_bytes()) if e[1] < position]
    times = [e for e in struct.iter_unpack("<qI", log.with_suffix(".timeindex").read_bytes())
             if base + e[1] < next_offset]
    max_ts = TS0 + next_offset - 1 if next_offset > base else -1  # build() stamps offset i with TS0 + i
    cp = [base, position, next_offset, max_ts, len(index), len(times)]
    cw.write_checkpoint(path, TOPIC, 0, cp)
    return cp


def events(store: eventstore.Store, *cases: str) -> list[Any]:
    return [e for e in store.recovery_events if not cases or e.case in cases]


# --- R1 .. R8 ----------------------------------------------------------------------------------


def test_r1_clean_open_scans_nothing(tmp_path: Path, scans: Scans) -> None:
    path = tmp_path / "s"
    values = build(path, 600, partitions=3)
    with open_counted(path, scans) as store:
        assert scans.ranges == [] and scans.mapped == []
        assert store.recovery_events == []
        for p in range(3):
            assert values_of(store, p) == values[p]
        assert store.check().ok


def test_r2_tail_past_the_checkpoint_is_kept_and_indexed(tmp_path: Path, scans: Scans) -> None:
    path = tmp_path / "s"
    values = build(path, 300)
    log = cw.segment_files(partition_dir(path))[-1]
    spans = cw.batch_layout(log.read_bytes())
    position = spans[len(spans) // 3].position
    rewind_checkpoint(path, log, position)
    with open_counted(path, scans) as store:
        assert scans.ranges == [(log.name, position, log.stat().st_size)]
        (event,) = events(store)
        assert (event.case, event.path, event.position) == ("R2", str(log), position)
        assert values_of(store, 0) == values[0]
        assert store.check().ok
        seg = store.log.partition(TOPIC, 0).segments()[-1]
        assert list(seg.index.positions), "the scan rebuilds index entries past the checkpoint"
    assert cw.read_checkpoint(path, TOPIC, 0)[1] == log.stat().st_size


# Regression (from the index_due_position fast path): recovery once scanned with the
# segment's index_due_position still at its initial 4096 instead of last entry + 4096, so the
# first batch past a checkpoint got an entry however close it was to the previous one, and
# every later entry shifted. The index stayed usable, but it broke section 3's spacing rule and
# differed from the index the same appends made without a crash.
def test_r2_rebuilt_index_entries_match_an_uncrashed_store(tmp_path: Path) -> None:
    path = tmp_path / "s"
    build(path, 300, value_bytes=300, segment_bytes=1024 * 1024)
    log = cw.segment_files(partition_dir(path))[-1]
    index, timeindex = log.with_suffix(".index"), log.with_suffix(".timeindex")
    original = index.read_bytes(), timeindex.read_bytes()
    first_entry = struct.unpack_from("<II", original[0])[1]
    position = next(s.position for s in cw.batch_layout(log.read_bytes()) if s.position > first_entry)
    rewind_checkpoint(path, log, position)
    eventstore.open(path).close()
    entries = list(struct.iter_unpack("<II", index.read_bytes()))
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(entries)]
    assert min(gaps) >= 4096, f"index entries closer than index_interval_bytes: {entries}"
    assert (index.read_bytes(), timeindex.read_bytes()) == original


def test_r3_torn_short_tail_is_cut_and_kept(tmp_path: Path, scans: Scans) -> None:
    path = tmp_path / "s"
    values = build(path, 200)
    log = cw.segment_files(partition_dir(path))[-1]
    spans = cw.batch_layout(log.read_bytes())
    position = spans[-5].position
    rewind_checkpoint(path, log, position)
    data = log.read_bytes()
    cut = spans[-1].position + 20  # the last batch is torn
    log.write_bytes(data[:cut])
    with open_counted(path, scans) as store:
        assert scans.ranges == [(log.name, position, cut)]
        assert [(e.case, e.position) for e in events(store)] == [("R3", spans[-1].position)]
        assert values_of(store, 0) == values[0][:-1]
        assert store.check().ok
    assert log.stat().st_size == spans[-1].position
    broken = log.with_name(f"{log.name}.{spans[-1].position}.broken")
    assert broken.read_bytes() == data[spans[-1].position : cut]


# After a torn tail is cut at P, the next append is written at P again; if that write is torn
# too (another crash), the second recovery must not overwrite the first copy: a .broken file
# keeps bytes recovery removed from the log. (It matters most when the cut bytes were valid
# data: see test_r5_when_the_damaged_field_is_batch_length in test_corruption.py.)
def test_r3_two_torn_tails_at_the_same_position_keep_both_copies(tmp_path: Path) -> None:
    path = tmp_path / "s"
    build(path, 50)
    log = cw.segment_files(partition_dir(path))[-1]
    kept = []
    for attempt in range(2):
        with eventstore.open(path, durability="none") as store:
            store.append(TOPIC, b"torn-%d" % attempt + bytes(200), partition=0, timestamp_ms=TS0 + 50)
        spans = cw.batch_layout(log.read_bytes())
        rewind_checkpoint(path, log, spans[-1].position)
        data = log.read_bytes()
        log.write_bytes(data[: spans[-1].position + 100])
        kept.append(data[spans[-1].position : spans[-1].position + 100])
        with eventstore.open(path) as store:
            assert [e.case for e in events(store)] == ["R3"]
    assert kept[0] != kept[1]
    copies = [f.read_bytes() for f in partition_dir(path).glob("*.broken")]
    assert sorted(copies) == sorted(kept), "every torn tail cut off is kept"


def test_r3_a_kill_while_keeping_the_torn_bytes_leaves_no_short_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is written aside and renamed: a crash mid-copy leaves a .tmp that the next
    open removes (R7), never a short .broken that would pass for the kept bytes."""
    path = tmp_path / "s"
    build(path, 50)
    log = cw.segment_files(partition_dir(path))[-1]
    spans = cw.batch_layout(log.read_bytes())
    rewind_checkpoint(path, log, spans[-1].position)
    data = log.read_bytes()
    log.write_bytes(data[: spans[-1].position + 30])
    broken = log.with_name(f"{log.name}.{spans[-1].position}.broken")

    def crash(src: str, dst: str) -> None:
        raise OSError(errno.EIO, "simulated crash before the rename")

    monkeypatch.setattr(disk, "replace", crash)
    with pytest.raises(eventstore.StorageError):
        eventstore.open(path)
    monkeypatch.undo()
    assert not broken.exists() and broken.with_name(broken.name + ".tmp").exists()
    assert log.stat().st_size == spans[-1].position + 30, "nothing cut before the copy is kept"
    with eventstore.open(path) as store:
        assert sorted(e.case for e in events(store)) == ["R3", "R7"]
    assert broken.read_bytes() == data[spans[-1].position : spans[-1].position + 30]
    assert not broken.with_name(broken.name + ".tmp").exists()


def test_r4_torn_bad_last_batch_is_cut_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "s"
    values = build(path, 200, batch=4)
    log = cw.segment_files(partition_dir(path))[-1]
    spans = cw.batch_layout(log.read_bytes())
    rewind_checkpoint(path, log, spans[-3].position)
    data = bytearray(log.read_bytes())
    data[spans[-1].position + 60] ^= 0x10  # inside the records: only the checksum notices
    log.write_bytes(bytes(data))
    with eventstore.open(path) as store:
        (event,) = events(store, "R3", "R4")
        assert (event.case, event.position) == ("R4", spans[-1].position)
        assert "checksum" in event.detail
        assert values_of(store, 0) == values[0][: spans[-1].base_offset]
    assert log.with_name(f"{log.name}.{spans[-1].position}.broken").read_bytes() == data[spans[-1].position :]


def test_r5_mid_corrupt_raises_and_truncates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s"
    build(path, 200)
    log = cw.segment_files(partition_dir(path))[-1]
    spans = cw.batch_layout(log.read_bytes())
    rewind_checkpoint(path, log, spans[-6].position)
    data = bytearray(log.read_bytes())
    bad = spans[-4]
    data[bad.end - 3] ^= 0x01  # its checksum; the three batches after it are valid
    log.write_bytes(bytes(data))
    files = {p.name: p.read_bytes() for p in partition_dir(path).iterdir()}
    with pytest.raises(CorruptionError) as raised:
        eventstore.open(path)
    assert (raised.value.path, raised.value.position) == (str(log), bad.position)
    assert "checksum" in raised.value.reason
    after = {p.name: p.read_bytes() for p in partition_dir(path).iterdir()}
    assert after[log.name] == files[log.name]
    assert set(after) == set(files), "no .broken file, nothing created or removed"


def test_r5_invalid_batch_in_a_segment_that_is_not_the_last(tmp_path: Path) -> None:
    """The checkpoint is in an earlier segment (a crash right after a roll): the rescan crosses
    into the next segment, and a bad batch at the end of the earlier one is corruption."""
    path = tmp_path / "s"
    build(path, 300)
    logs = cw.segment_files(partition_dir(path))
    previous = logs[-2]
    spans = cw.batch_layout(previous.read_bytes())
    rewind_checkpoint(path, previous, spans[-3].position)
    data = bytearray(previous.read_bytes())
    data[-1] ^= 0x80
    previous.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as raised:
        eventstore.open(path)
    assert (raised.value.path, raised.value.position) == (str(previous), spans[-1].position)
    assert previous.read_bytes() == bytes(data)


def test_r6_file_shorter_than_its_checkpoint_is_rescanned_from_zero(tmp_path: Path, scans: Scans) -> None:
    path = tmp_path / "s"
    values = build(path, 300)
    log = cw.segment_files(partition_dir(path))[-1]
    spans = cw.batch_layout(log.read_bytes())
    assert cw.read_checkpoint(path, TOPIC, 0)[1] == spans[-1].end
    keep = spans[len(spans) // 2]
    with open(log, "r+b") as f:
        f.truncate(keep.position + 10)  # cut outside the store, inside a batch
    with open_counted(path, scans) as store:
        assert scans.ranges == [(log.name, 0, keep.position + 10)]
        assert [(e.case, e.position) for e in events(store)] == [("R6", spans[-1].end), ("R3", keep.position)]
        assert values_of(store, 0) == values[0][: keep.base_offset]
        assert store.check().ok
        store.append(TOPIC, b"more", partition=0)
    with eventstore.open(path) as store:
        assert values_of(store, 0) == [*values[0][: keep.base_offset], b"more"]


def test_r7_orphans_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "s"
    values = build(path, 300)
    d = partition_dir(path)
    orphans = [
        d / "00000000000000999999.index", d / "00000000000000999999.timeindex",  # no .log
        d / "00000000000000000000.log.deleted", d / "00000000000000000000.index.tmp",
    ]
    keep = [d / "00000000000000000000.log.1234.broken", d / "notes.txt"]
    for f in orphans + keep:
        f.write_bytes(b"x" * 13)
    # An unfinished topic creation or deletion (the code names them "+creating-<hex>" and
    # "+deleting-<hex>"; docs/format.md section 1 still says ".<name>.creating").
    prefix = topicdir.TRANSIENT_PREFIX
    transient = [path / "topics" / f"{prefix}creating-0a1b", path / "topics" / f"{prefix}deleting-2c3d"]
    for t in transient:
        (t / "0").mkdir(parents=True)
        (t / "0" / "00000000000000000000.log").write_bytes(b"junk")
    with eventstore.open(path) as store:
        r7 = sorted(e.path for e in events(store, "R7"))
        assert r7 == sorted(str(f) for f in orphans + transient)
        assert [e for e in store.recovery_events if e.case != "R7"] == []
        assert values_of(store, 0) == values[0]
        assert [t.name for t in store.topics()] == [TOPIC]
    assert not any(f.exists() for f in orphans + transient)
    assert all(f.read_bytes() == b"x" * 13 for f in keep)


def _bad_index(data: bytes, how: str, log_size: int) -> bytes:
    if how == "torn-entry":
        return data + b"\x01\x02\x03"
    if how == "past-the-end":
        return data + struct.pack("<II", 0xFFFFF, log_size + 8)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["torn-entry", "past-the-end"])
def test_r8_bad_index_of_a_closed_segment_is_rebuilt_on_first_use(tmp_path: Path, how: str) -> None:
    path = tmp_path / "s"
    values = build(path, 400)
    logs = cw.segment_files(partition_dir(path))
    closed = logs[1]
    index = closed.with_suffix(".index")
    original = index.read_bytes()
    assert original, "the segment needs index entries"
    bad = _bad_index(original, how, closed.stat().st_size)
    index.write_bytes(bad)
    base = int(closed.name[:20])
    with eventstore.open(path) as store:
        assert index.read_bytes() == bad, "nothing is read or rebuilt before the segment is used"
        assert [r.value for r in store.read(TOPIC, 0, base + 5, max_records=1)] == [values[0][base + 5]]
        assert index.read_bytes() == original, "rebuilt from the log when first used"
        assert store.check().ok


# --- the final time-index entry of a sealed segment ----------------------------------------------------


# Regression: sealing a segment that was not appended to since open - a roll by the first
# append after a reopen, or the seal of an earlier segment during a rescan - once wrote the
# final time-index entry with relative offset 0 instead of the last batch's (recovery did not
# restore where the last batch starts). Relative offsets then went backwards (section 4),
# check() did not notice, and the next load rejected and rebuilt the whole time index.
@pytest.mark.parametrize("how", ["roll-after-reopen", "seal-during-rescan"])
def test_final_time_entry_points_at_the_last_batch(tmp_path: Path, how: str) -> None:
    path = tmp_path / "s"
    with eventstore.open(path, durability="none") as store:
        store.create_topic(TOPIC, 1, segment_bytes=8 * 1024)
        for i in range(7):  # 7 x ~1 KiB: the next append rolls
            store.append(TOPIC, bytes(1000), timestamp_ms=TS0 + i)
    first = cw.segment_files(partition_dir(path))[0]
    if how == "seal-during-rescan":  # a crash after the roll below, with the checkpoint still in `first`
        with eventstore.open(path, durability="none") as store:
            store.append(TOPIC, bytes(1000), timestamp_ms=TS0 + 7)
        spans = cw.batch_layout(first.read_bytes())
        for f in (first.with_suffix(".timeindex"), first.with_suffix(".index")):
            f.write_bytes(b"")
        cw.write_checkpoint(path, TOPIC, 0, [0, spans[2].position, 2, TS0 + 1, 0, 0])
        eventstore.open(path).close()
    else:
        with eventstore.open(path, durability="none") as store:
            store.append(TOPIC, bytes(1000), timestamp_ms=TS0 + 7)
    spans = cw.batch_layout(first.read_bytes())
    entries = list(struct.iter_unpack("<qI", first.with_suffix(".timeindex").read_bytes()))
    assert entries[-1] == (TS0 + 6, spans[-1].base_offset), entries


# --- cost of opening ----------------------------------------------------------------------------------


def _median_open_s(path: Path, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        store = eventstore.open(path)
        times.append(time.perf_counter() - started)
        store.close()
    return sorted(times)[runs // 2]


@pytest.mark.slow
def test_open_time_does_not_grow_with_the_log(tmp_path: Path, scans: Scans) -> None:
    """A clean open reads no log bytes, whatever the log's size; and it takes about as long."""
    sizes = {"small": 10_000, "large": 200_000}
    opened = {}
    for name, records in sizes.items():
        path = tmp_path / name
        with eventstore.open(path, durability="none") as store:
            store.create_topic(TOPIC, 2, segment_bytes=1024 * 1024)
            for p in range(2):
                for first in range(0, records, 2000):
                    store.append_batch(TOPIC, [b"%08d" % i + bytes(40) for i in range(first, first + 2000)],
                                       partition=p)
        with open_counted(path, scans) as store:
            assert scans.bytes == 0 and scans.mapped == []
            assert store.offsets(TOPIC, 1) == (0, records)
        opened[name] = _median_open_s(path)
    large_segments = len(cw.segment_files(partition_dir(tmp_path / "large")))
    assert large_segments > 8
    assert opened["large"] < max(3 * opened["small"], opened["small"] + 0.05), opened


@pytest.mark.slow
def test_crash_after_many_appends_rescans_only_past_the_last_checkpoint(tmp_path: Path, scans: Scans) -> None:
    """SIGKILL a writer after thousands of appends; the reopen validates only the bytes written
    since the last checkpoint (the last roll, in mode none), not the log."""
    path = tmp_path / "s"
    out = tmp_path / "writer.out"
    with open(out, "wb") as stdout:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("crash_writer.py")), "write", str(path),
             "--durability", "none", "--run", "1", "--partitions", "2", "--segment-bytes", str(256 * 1024),
             "--crash-after", "3000"],
            stdout=stdout, stderr=subprocess.PIPE, timeout=60, check=False,
        )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    acks = cw.parse_acks(out.read_text())
    assert len(acks) > 3000
    checkpoints = {p: cw.read_checkpoint(path, cw.TOPIC, p) for p in range(2)}
    total = sum(f.stat().st_size for f in path.rglob("*.log"))
    expected_ranges = []
    for p, cp in checkpoints.items():
        log = cw.segment_files(path / "topics" / cw.TOPIC / str(p))[-1]
        assert int(log.name[:20]) == cp[0], "rolls checkpoint the new segment"
        if cp[1] < log.stat().st_size:
            expected_ranges.append((log.name, cp[1], log.stat().st_size))
    with open_counted(path, scans) as store:
        assert sorted(scans.ranges) == sorted(expected_ranges)
        assert scans.bytes < total / 10
        for ack in acks:
            record = store.read(cw.TOPIC, ack.partition, ack.offset, max_records=1)[0]
            assert cw.verify_record(record) == ack.seq and cw.digest(record.value) == ack.digest
        assert store.check().ok
    # After the crash recovery checkpointed, the next open scans nothing.
    with open_counted(path, scans) as store:
        assert scans.ranges == [] and store.recovery_events == []
    shutil.rmtree(path)


@pytest.mark.parametrize("durability", ["fsync", "interval"])
def test_a_checkpoint_every_32_mib_after_a_sync(tmp_path: Path, durability: str) -> None:
    """Section 7: a long run without rolls still moves the checkpoint (so a crash rescans at most
    about 32 MiB), once a sync - per append in fsync mode, the background one in interval mode -
    has covered the data."""
    from eventstore.catalog import checkpoints

    with eventstore.open(tmp_path / "s", durability=durability, fsync_interval_ms=10) as store:  # type: ignore[arg-type]
        store.create_topic(TOPIC, 1, segment_bytes=1 << 30)
        for _ in range(70):  # 70 x 512 KiB
            store.append_batch(TOPIC, [bytes(8192)] * 64, partition=0)
        deadline = time.monotonic() + 10
        checkpoint = None
        while time.monotonic() < deadline:  # bounded: the interval flusher runs every 10 ms
            found = checkpoints.get(store.log.catalog, TOPIC, 0)
            assert found is not None
            checkpoint = list(found)
            if checkpoint[1] >= 32 * 1024 * 1024:
                break
            time.sleep(0.01)
        assert checkpoint is not None and checkpoint[1] >= 32 * 1024 * 1024, checkpoint
        assert checkpoint[2] * 8192 <= checkpoint[1]

