"""A failed open closes what it opened (issue 10, defect 8).

Opens are made to fail deterministically with ``storage/faults.py``: the N-th
write, fsync, directory fsync, truncation, unlink, rename or file creation of
the open fails (and keeps failing: a full disk), for every N the open reaches.
Each failed open must leave the process with as many file descriptors as
before, and the store must open once the fault is gone, with every record.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from siblings import crash

import eventstore
from eventstore import EventStoreError, StorageError, StorageFullError
from eventstore.catalog.env import Catalog
from eventstore.sourcing.events import NewEvent
from eventstore.sourcing.index import StreamIndex
from eventstore.storage import faults
from eventstore.storage.faults import Fault, FaultPlan

TOPIC = "t"
PARTITIONS = 3


def open_fds() -> set[str]:
    """The file descriptors this process has open, as the paths they name."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the descriptor listdir itself used
    return out


def store_fds(path: Path) -> list[str]:
    """Descriptors open on files of the store at ``path``."""
    root = os.path.realpath(path)
    return sorted(fd for fd in open_fds() if fd.startswith(root))


def written_store(path: Path) -> dict[int, list[bytes]]:
    """A store left as a kill leaves it: several segments per partition, checkpoints behind
    the logs (so that the next open recovers every partition), a streams topic. Returns the
    values of each partition of ``TOPIC``."""
    store = eventstore.open(path)
    store.create_topic(TOPIC, PARTITIONS, segment_bytes=2048)
    values: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for i in range(120):
        p = i % PARTITIONS
        value = b"value-%d-" % i + bytes(60)
        store.append(TOPIC, value, partition=p)
        values[p].append(value)
    for i in range(10):
        store.append_to_stream(f"acct-{i % 3}", [NewEvent(type="deposit", data=b"%d" % i)])
    store.streams.flush()
    torn = store.log.partition(TOPIC, 0).segments()[-1].log_path
    crash(store)
    with open(torn, "ab") as f:  # a torn last write: recovery keeps a .broken copy and cuts it
        f.write(bytes(8) + (500).to_bytes(4, "big") + bytes(20))
    return values


def assert_intact(path: Path, values: dict[int, list[bytes]]) -> None:
    with eventstore.open(path) as store:
        for p, expected in values.items():
            assert [r.value for r in store.read(TOPIC, p, 0, max_records=1000)] == expected
        assert sum(len(store.read_stream(f"acct-{i}")) for i in range(3)) == 10
        assert store.check().ok


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, list[bytes]]]:
    path = tmp_path_factory.mktemp("pristine") / "s"
    return path, written_store(path)


def disk_calls_of_open(path: Path) -> dict[str, int]:
    """How many disk calls of each kind an open (and close) of ``path`` makes."""
    with FaultPlan([]) as plan:
        eventstore.open(path).close()
    return dict(plan.calls)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(faults.KINDS))
def test_every_failed_disk_call_of_an_open_leaves_no_descriptor_open(
    pristine: tuple[Path, dict[int, list[bytes]]], tmp_path: Path, kind: str
) -> None:
    source, values = pristine
    probe = tmp_path / "probe"
    shutil.copytree(source, probe)
    calls = disk_calls_of_open(probe).get(kind, 0)
    if kind != "unlink":
        assert calls > 0, f"recovering a killed store makes no {kind} call: the sweep tests nothing"
    before = open_fds()
    failed = 0
    for nth in range(1, calls + 1):  # bounded by the calls the open makes
        copy = tmp_path / f"{kind}-{nth}"
        shutil.copytree(source, copy)
        with FaultPlan([Fault(kind, nth, error="ENOSPC", sticky=True)]) as plan:
            try:
                eventstore.open(copy).close()
            except EventStoreError as e:
                assert isinstance(e, StorageError), f"{kind} #{nth}: {e!r}"
                failed += 1
        assert store_fds(copy) == [], f"{kind} #{nth} left these open: {store_fds(copy)}"
        assert open_fds() == before
        assert plan.injected >= 1 or nth > plan.calls.get(kind, 0)
        assert_intact(copy, values)  # the fault is gone: the store opens with everything
        shutil.rmtree(copy)
    if kind in ("fsync", "dirsync"):
        assert failed, f"no failed {kind} made the open fail"


def test_a_full_disk_while_recovery_syncs_a_partition(
    pristine: tuple[Path, dict[int, list[bytes]]], tmp_path: Path
) -> None:
    source, values = pristine
    for nth in (1, 2, PARTITIONS):  # the first partition, one in the middle, the last
        copy = tmp_path / f"s{nth}"
        shutil.copytree(source, copy)
        before = open_fds()
        with FaultPlan([Fault("fsync", nth, where=".log", sticky=True)]), \
                pytest.raises(StorageFullError) as info:
            eventstore.open(copy)
        assert info.value.path.endswith(".log")
        assert store_fds(copy) == [] and open_fds() == before
        assert_intact(copy, values)


def test_a_failed_checkpoint_commit_on_open(
    pristine: tuple[Path, dict[int, list[bytes]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, values = pristine
    put = Catalog.put
    for nth in (1, 2, PARTITIONS):
        copy = tmp_path / f"s{nth}"
        shutil.copytree(source, copy)
        seen = [0]

        def failing_put(self: Catalog, db: bytes, key: bytes, value: bytes, nth: int = nth,
                        seen: list[int] = seen) -> None:
            if db == b"checkpoints":
                seen[0] += 1
                if seen[0] >= nth:
                    raise StorageFullError(self.path, "catalog write failed: no space (injected)")
            put(self, db, key, value)

        monkeypatch.setattr(Catalog, "put", failing_put)
        before = open_fds()
        with pytest.raises(StorageFullError):
            eventstore.open(copy)
        monkeypatch.undo()
        assert store_fds(copy) == [] and open_fds() == before
        assert_intact(copy, values)


def test_a_stream_index_whose_catch_up_fails_is_closed(
    pristine: tuple[Path, dict[int, list[bytes]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LMDB allows one handle per environment and process: an index left open by a failed
    open would make every later open of the store in this process fail."""
    source, values = pristine
    copy = tmp_path / "s"
    shutil.copytree(source, copy)
    write = StreamIndex.write

    def failing(self: StreamIndex, fn: Callable[[Any], Any]) -> Any:
        if "_catch_up_partition" in _callers():
            raise StorageFullError(self.path, "stream index write failed (injected)")
        return write(self, fn)

    monkeypatch.setattr(StreamIndex, "write", failing)
    with eventstore.open(copy) as store:  # records past the index's coverage, to catch up
        for i in range(5):
            store.append_to_stream("acct-9", [NewEvent(type="deposit", data=b"late-%d" % i)])
        crash(store)
    before = open_fds()
    with pytest.raises(StorageFullError):
        eventstore.open(copy)
    assert store_fds(copy) == [] and open_fds() == before
    monkeypatch.undo()
    with eventstore.open(copy) as store:
        assert len(store.read_stream("acct-9")) == 5
    assert_intact(copy, values)


def test_a_failed_topic_creation_closes_its_partitions_and_leaves_no_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        store.create_topic("kept")
        store.append("kept", b"acknowledged")
        before = open_fds()
        with FaultPlan([Fault("dirsync", 4, sticky=True)]), pytest.raises(StorageError):
            store.create_topic("new", partitions=4)  # the third partition's directory fsync fails
        assert [r for r in open_fds() - before if "/topics/" in r] == []
        assert [c.name for c in store.topics()] == ["kept"]
        store.create_topic("new", partitions=4)  # the name is free again
        store.append("new", b"x", partition=3)
    with eventstore.open(path) as store:
        assert [c.name for c in store.topics()] == ["kept", "new"]
        assert [r.value for r in store.read("kept", 0, 0)] == [b"acknowledged"]


def _callers() -> set[str]:
    import inspect

    return {f.function for f in inspect.stack(context=0)}


def test_a_reader_whose_catalog_is_damaged_keeps_nothing_open(
    pristine: tuple[Path, dict[int, list[bytes]]], tmp_path: Path
) -> None:
    source, values = pristine
    copy = tmp_path / "s"
    shutil.copytree(source, copy)
    eventstore.open(copy).close()  # recovered and checkpointed: the reader needs no recovery
    with open(copy / "catalog" / "data.mdb", "r+b") as f:  # its second meta page zeroed
        f.seek(4096)
        f.write(bytes(4096))
    before = open_fds()
    with eventstore.open_reader(copy) as reader:
        for _ in range(2):  # an environment left open would make the second one fail otherwise
            with pytest.raises(eventstore.CorruptionError):
                reader.group_offsets("g")
            assert store_fds(copy / "catalog") == []
        assert [r.value for r in reader.read(TOPIC, 1, 0, max_records=1000)] == values[1]
    assert open_fds() == before
