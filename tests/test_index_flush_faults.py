"""A stream index flush that fails (issue 10, defect 1; docs/design.md, Faults).

A flush used to drop the staged index updates it failed to write, and the
next flush moved the partition's ``covered`` mark past them: a reopen never
indexed them again, ``read_stream`` said the stream did not exist although its
events were in the log, a ``NO_STREAM`` append to it was accepted (version 0
twice) and ``check()`` said ok. The contract: a failed flush keeps what it
staged, the append whose event is in the log does not fail because of the
index, ``check()`` compares the index with the log, and what the index lacks is
indexed again at the next open.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from siblings import load

import eventstore
from eventstore import StorageError, StorageFullError, StreamState, WrongExpectedVersionError
from eventstore.sourcing.events import NewEvent, events_from_records
from eventstore.sourcing.index import StreamIndex

dfull = load("test_disk_full")
small_disk = dfull.small_disk  # the tmpfs fixture


def _event(i: int) -> list[NewEvent]:
    return [NewEvent(type="opened", data=b"account %d" % i)]


class _FailingWrites:
    """Makes the stream index's writes raise ``StorageFullError`` while ``failing`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing = False
        self.failed = 0
        real = StreamIndex.write

        def write(index: StreamIndex, fn: Any) -> Any:
            if self.failing:
                self.failed += 1
                raise StorageFullError(index.path, "stream index write failed: injected; the disk is full")
            return real(index, fn)

        monkeypatch.setattr(StreamIndex, "write", write)


def _versions_in_log(store: eventstore.Store, topic: str) -> dict[str, list[int]]:
    """Every stream's versions as the log holds them, in log order."""
    out: dict[str, list[int]] = {}
    for p in range(store.topic(topic).partitions):
        start, end = store.offsets(topic, p)
        for event in events_from_records(store.read(topic, p, start, max_records=end - start + 1)):
            out.setdefault(event.stream_id, []).append(event.version)
    return out


def test_a_failed_flush_keeps_its_updates_and_the_append_does_not_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = _FailingWrites(monkeypatch)
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        store.append_to_stream("acct-x", _event(-1))
        store.read_stream("acct-x")
        faults.failing = True
        for i in range(700):  # past STAGED_MAX: the appenders' flush fails
            store.append_to_stream(f"acct-{i}", _event(i), expected_version=StreamState.NO_STREAM)
        assert faults.failed, "no flush was tried"
        with pytest.raises(StorageFullError):
            store.read_stream("acct-3")  # a read needs the index: it says why it cannot
        with pytest.raises(WrongExpectedVersionError):  # the staged head still counts
            store.append_to_stream("acct-5", _event(5), expected_version=StreamState.NO_STREAM)
        faults.failing = False
        for i in range(700, 720):
            store.append_to_stream(f"acct-{i}", _event(i), expected_version=StreamState.NO_STREAM)
        assert [e.data for e in store.read_stream("acct-3")] == [b"account 3"]
        assert store.check().ok
    with eventstore.open(path) as store:
        for i in range(720):
            assert [e.version for e in store.read_stream(f"acct-{i}")] == [0], i
        assert len(store.read_all(0, None)) == 721
        with pytest.raises(WrongExpectedVersionError):
            store.append_to_stream("acct-5", _event(5), expected_version=StreamState.NO_STREAM)
        assert store.check().ok


def test_a_close_whose_flush_fails_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The close cannot write the staged updates; they are in the log, so the next open
    indexes them (the ``covered`` mark never passed them)."""
    faults = _FailingWrites(monkeypatch)
    path = tmp_path / "s"
    store = eventstore.open(path)
    store.append_to_stream("acct-x", _event(-1))
    store.read_stream("acct-x")
    faults.failing = True
    for i in range(100):
        store.append_to_stream(f"acct-{i}", _event(i), expected_version=StreamState.NO_STREAM)
    store.close()
    faults.failing = False
    with eventstore.open(path) as store:
        assert len(store.read_all(0, None)) == 101
        assert [e.version for e in store.read_stream("acct-42")] == [0]
        assert store.check().ok


def test_an_append_that_piles_up_too_much_unflushed_is_refused_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays bounded while the index cannot be written: once eight times the flush
    threshold waits, an append is refused with the flush's error, and nothing of it is in the log."""
    faults = _FailingWrites(monkeypatch)
    with eventstore.open(tmp_path / "s") as store:
        store.append_to_stream("acct-x", _event(-1))
        store.read_stream("acct-x")
        store.streams.staging.staged_max = 8
        faults.failing = True
        refused = None
        for i in range(200):  # bounded: refused after 64 staged
            try:
                store.append_to_stream(f"acct-{i}", _event(i))
            except StorageFullError:
                refused = i
                break
        assert refused is not None
        assert f"acct-{refused}" not in _versions_in_log(store, "acct")
        faults.failing = False
        store.append_to_stream(f"acct-{refused}", _event(refused))
        assert len(store.read_all(0, None)) == refused + 2


def test_check_compares_the_stream_index_with_the_log_and_the_next_open_reindexes(tmp_path: Path) -> None:
    """An index that lacks events the log has (as the old flush left it): ``check()`` names
    each inconsistency, and the next open rebuilds the index from the log."""
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        for i in range(30):
            store.append_to_stream(f"acct-{i % 10}", _event(i))
        store.read_all(0, None)
        index = store.streams.index

        def lose(txn: Any) -> None:  # acct-3 gone from the index, as a dropped flush leaves it
            txn.delete(b"acct-3", db=index.dbs[b"heads"])

        index.write(lose)
        report = store.check()
        assert not report.ok
        reasons = [str(p) for p in report.problems]
        assert any("acct-3" in r and "stream index" in r for r in reasons), reasons
        assert all(p.path for p in report.problems)
    with eventstore.open(path) as store:
        assert [e.version for e in store.read_stream("acct-3")] == [0, 1, 2]
        with pytest.raises(WrongExpectedVersionError):
            store.append_to_stream("acct-3", _event(0), expected_version=StreamState.NO_STREAM)
        assert store.check().ok


def test_the_issue_repro_on_a_full_tmpfs(small_disk: Callable[[int], Path]) -> None:
    """20 MB tmpfs, 3 MB ballast; NO_STREAM appends to new streams until an error; free the
    ballast, append a few more, reopen: every acknowledged event readable, no version twice."""
    disk = small_disk(20 * dfull.MiB)
    path = disk / "s"
    (disk / "ballast").write_bytes(bytes(3 * dfull.MiB))
    acknowledged: list[str] = []
    with eventstore.open(path) as store:
        error: StorageError | None = None
        for i in range(200_000):  # bounded: the disk runs out well before
            try:
                store.append_to_stream(f"acct-{i}", [NewEvent(type="opened", data=bytes(100))],
                                       expected_version=StreamState.NO_STREAM)
            except StorageError as e:
                error = e
                break
            acknowledged.append(f"acct-{i}")
        assert error is not None, "the disk never filled"
        assert isinstance(error, StorageFullError), f"{type(error).__name__}: {error}"
        (disk / "ballast").unlink()
        for sid in acknowledged[:5] + [f"more-{i}" for i in range(5)]:
            try:
                store.append_to_stream(sid, _event(0), expected_version=StreamState.NO_STREAM)
            except WrongExpectedVersionError:
                assert sid.startswith("acct-")
            else:
                assert sid.startswith("more-"), f"{sid}: NO_STREAM accepted twice"
        acknowledged += [f"more-{i}" for i in range(5)]
    with eventstore.open(path) as store:
        for sid in acknowledged:
            assert store.read_stream(sid)[0].version == 0, sid
        logged = _versions_in_log(store, "acct")
        logged.update(_versions_in_log(store, "more"))
        assert all(versions == list(range(len(versions))) for versions in logged.values())
        assert store.check().ok
