"""A real full disk: small tmpfs mounts made by the test (issue 10, defect 2, and the suite).

What the log writes is tested with injected faults elsewhere; what LMDB writes
runs in C, so only a disk that really fills shows what it does: a write cut
short is reported by LMDB as EIO, which used to reach the caller as
``StorageError("Input/output error")``. On every full disk here the store must
raise ``StorageFullError``, keep every acknowledged record, make nothing of a
failed operation visible, and open again (with everything) once space returns.

Mounting needs root (CI runs as root); elsewhere these tests are skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import eventstore
from eventstore import StorageFullError, TopicPartition
from eventstore.sourcing.events import NewEvent
from eventstore.sourcing.projections import Projection, ProjectionRunner

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(size_bytes)``: a fresh tmpfs of that size, unmounted at teardown."""
    mounts: list[Path] = []

    def mount(size_bytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounts:
            if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave_bytes: int = 0) -> Path:
    """Take all free space but ``leave_bytes`` with a ballast file; removing it frees the space."""
    ballast = disk / "ballast"
    with open(ballast, "ab") as f:
        while free_bytes(disk) > leave_bytes:  # bounded: each pass takes at least one page
            chunk = max(4096, min(MiB, free_bytes(disk) - leave_bytes))
            try:
                f.write(bytes(chunk))
                f.flush()
            except OSError:
                break
    return ballast


class _Counter(Projection):
    def handle(self, event: object, state: object) -> None:
        state.put(b"n-%d" % event.position, bytes(200))  # type: ignore[attr-defined]


# --- LMDB: the catalog, the stream index, projections -------------------------------------------


@pytest.mark.parametrize("leave_pages", [0, 3])
def test_a_full_disk_under_a_catalog_commit_is_storage_full(
    small_disk: Callable[[int], Path], leave_pages: int
) -> None:
    """Group offsets of many partitions in one commit: dozens of LMDB pages to write."""
    disk = small_disk(8 * MiB)
    path = disk / "s"
    with eventstore.open(path) as store:
        store.create_topic("t", 300)
        for p in range(300):
            store.append("t", b"x", partition=p)
        store.reset_group_offsets("g", {TopicPartition("t", p): 1 for p in range(300)})
        ballast = fill(disk, leave_pages * 4096)
        offsets = {TopicPartition("t", p): 0 for p in range(300)}
        with pytest.raises(StorageFullError):
            for n in range(200):  # new groups until the catalog needs pages the disk lacks
                store.reset_group_offsets(f"group-{n}-" + "x" * 200, offsets)
        assert store.group_offsets("g") == {TopicPartition("t", p): 1 for p in range(300)}
        ballast.unlink()
        store.reset_group_offsets("g", offsets)
    with eventstore.open(path) as store:
        assert store.group_offsets("g") == offsets


def test_a_full_disk_under_a_stream_index_flush_is_storage_full(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(12 * MiB)
    path = disk / "s"
    with eventstore.open(path) as store:
        store.append_to_stream("acct-0", [NewEvent(type="opened", data=b"")])
        store.read_stream("acct-0")
        fill(disk, 300 * 1024)
        error = None
        for i in range(20_000):  # bounded: the disk runs out well before
            try:
                store.append_to_stream(f"acct-{i % 400}", [NewEvent(type="deposit", data=bytes(200))])
                if i % 50 == 0:
                    store.read_stream(f"acct-{i % 400}")  # flushes the staged index updates
            except eventstore.StorageError as e:
                error = e
                break
        assert error is not None, "the disk never filled"
        assert isinstance(error, StorageFullError), f"{type(error).__name__}: {error}"


def test_a_full_disk_under_a_projection_commit_is_storage_full(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(12 * MiB)
    path = disk / "s"
    with eventstore.open(path) as store:
        for i in range(3000):
            store.append_to_stream(f"acct-{i % 100}", [NewEvent(type="deposit", data=b"%d" % i)])
        store.read_all(0, 1)
        runner = ProjectionRunner(store, _Counter(), name="counter", batch_events=3000)
        ballast = fill(disk, 64 * 1024)
        with pytest.raises(StorageFullError):
            runner.catch_up()
        assert runner.checkpoint_record() is None, "nothing of the failed batch is visible"
        ballast.unlink()
        assert runner.catch_up() == 3000


# --- the log: appends, rolls, topic creation -----------------------------------------------------


def test_appends_and_rolls_on_a_full_disk(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(4 * MiB)
    path = disk / "s"
    acked: dict[int, list[bytes]] = {0: [], 1: []}
    failures = 0
    with eventstore.open(path) as store:
        store.create_topic("t", 2, segment_bytes=64 * 1024)
        for i in range(100_000):  # bounded: the disk holds far fewer
            value = b"%08d" % i + bytes(900)
            p = i % 2
            try:
                if i % 3:
                    store.append("t", value, partition=p)
                    acked[p].append(value)
                else:
                    store.append_batch("t", [value, value[::-1]], partition=p)
                    acked[p] += [value, value[::-1]]
            except StorageFullError:
                failures += 1
                if failures == 20:
                    break
        assert failures == 20
        for p in (0, 1):
            assert [r.value for r in store.read("t", p, 0, max_records=10**6)] == acked[p]
    with eventstore.open(path) as store:  # the disk is still full: open must work, reads too
        for p in (0, 1):
            assert [r.value for r in store.read("t", p, 0, max_records=10**6)] == acked[p]
        assert store.check().ok


def test_a_full_disk_under_topic_creation(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(4 * MiB)
    path = disk / "s"
    with eventstore.open(path) as store:
        store.create_topic("kept")
        store.append("kept", b"acknowledged")
        ballast = fill(disk)
        with pytest.raises(StorageFullError):
            for n in range(50):  # bounded: one of them meets the full disk
                store.create_topic(f"new-{n}", partitions=8)
        made = {c.name for c in store.topics()}
        ballast.unlink()
    with eventstore.open(path) as store:
        assert {c.name for c in store.topics()} == made, "a failed creation left a topic behind"
        for name in made - {"kept"}:
            assert store.topic(name).partitions == 8
            store.append(name, b"x", partition=7)
        assert [r.value for r in store.read("kept", 0, 0)] == [b"acknowledged"]
