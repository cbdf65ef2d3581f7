"""Commits of the eventsourcing persistence module (eventstore/eventsourcing/commits.py):
the events of several streams and a tracking record are all there or none is, whether
a write fails between the commit and its appends or the process is killed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import InfrastructureFactory, ProcessRecorder, StoredEvent, Tracking

from eventstore import StorageError
from eventstore.eventsourcing import EventStoreFactory

MODULE = "eventstore.eventsourcing"
_WRITER = Path(__file__).with_name("eventsourcing_writer.py")


def _factory(path: Path, durability: str = "fsync") -> EventStoreFactory:
    made = InfrastructureFactory.construct({"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": str(path),
                                            "EVENTSTORE_DURABILITY": durability})
    assert isinstance(made, EventStoreFactory)
    return made


def _moved(originator: UUID, version: int) -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version, topic="Moved",
                       state=b"%d" % version)


def _versions(recorder: ProcessRecorder, originator: UUID) -> list[int]:
    return [s.originator_version for s in recorder.select_events(originator)]


def _fail_append(store: Any, after: int) -> Callable[[], None]:
    """Make ``store.append_to_stream`` raise ``StorageError`` after ``after`` more calls."""
    real = store.append_to_stream
    calls = [0]

    def append(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > after:
            raise StorageError(store.path, "injected: the disk is gone")
        return real(*args, **kwargs)

    store.append_to_stream = append
    return lambda: delattr(store, "append_to_stream")


@pytest.mark.parametrize("appends_before_failure", [0, 1, 2])
def test_a_failure_at_any_step_leaves_all_or_nothing_after_reopening(
        tmp_path: Path, appends_before_failure: int) -> None:
    """Step 3 (the commit event) is append 1, the two originators' appends are 2 and 3."""
    path = tmp_path / "store"
    x, y = uuid4(), uuid4()
    with closing(_factory(path)) as factory:
        recorder = factory.process_recorder()
        recorder.insert_events([_moved(x, 1), _moved(y, 1)], tracking=Tracking("Upstream", 1))
        _fail_append(factory.store, appends_before_failure)
        with pytest.raises(StorageError, match="injected"):
            recorder.insert_events([_moved(x, 2), _moved(y, 2)], tracking=Tracking("Upstream", 2))
    with closing(_factory(path)) as factory:  # as after a crash: the commit is applied on open
        recorder = factory.process_recorder()
        committed = appends_before_failure >= 1
        assert recorder.max_tracking_id("Upstream") == (2 if committed else 1)
        expected = [1, 2] if committed else [1]
        assert _versions(recorder, x) == _versions(recorder, y) == expected


def test_a_commit_whose_appends_failed_is_applied_before_the_next_write(tmp_path: Path) -> None:
    x, y, z = uuid4(), uuid4(), uuid4()
    with closing(_factory(tmp_path / "store")) as factory:
        recorder = factory.process_recorder()
        restore = _fail_append(factory.store, 2)  # the commit and x's append; not y's
        with pytest.raises(StorageError, match="injected"):
            recorder.insert_events([_moved(x, 1), _moved(y, 1)], tracking=Tracking("Upstream", 1))
        restore()
        assert _versions(recorder, y) == []  # not yet: the commit waits to be applied
        # the next write of the module, to any stream, applies it first
        recorder.insert_events([_moved(z, 1)])
        assert _versions(recorder, x) == _versions(recorder, y) == _versions(recorder, z) == [1]
        with pytest.raises(Exception, match="not after the last one recorded"):
            recorder.insert_events([_moved(x, 2)], tracking=Tracking("Upstream", 1))  # a retry
        assert _versions(recorder, x) == [1]


def test_a_commit_applied_again_writes_nothing_twice(tmp_path: Path) -> None:
    """Every open applies the last commits again: eventstore takes their event ids as a retry,
    even after the streams have moved on."""
    path = tmp_path / "store"
    x, y = uuid4(), uuid4()
    with closing(_factory(path)) as factory:
        recorder = factory.process_recorder()
        recorder.insert_events([_moved(x, 1), _moved(y, 1)], tracking=Tracking("Upstream", 1))
        recorder.insert_events([_moved(x, 2)])  # x moved on after the commit
    for _ in range(2):
        with closing(_factory(path)) as factory:
            recorder = factory.process_recorder()
            assert _versions(recorder, x) == [1, 2] and _versions(recorder, y) == [1]
            assert [n.originator_version for n in recorder.select_notifications(None, 10)] == [1, 1, 2]


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=20)


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_sigkill_during_commits_leaves_tracking_and_events_together(
        tmp_path: Path, durability: str, children: list[subprocess.Popen[str]]) -> None:
    """A writer records two originators' events with a tracking record per insert; killed at
    random moments, the store holds, after each reopen, exactly the events of the tracking
    records it holds, and at least every acknowledged one."""
    path = tmp_path / "store"
    x, y = uuid4(), uuid4()
    rng = random.Random(1405)
    acked = 0
    for _ in range(4):  # bounded: four kills
        proc = subprocess.Popen([sys.executable, str(_WRITER), str(path), durability, str(x), str(y)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ})
        children.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        deadline = time.monotonic() + rng.uniform(0.05, 0.4)
        while time.monotonic() < deadline:  # bounded by the deadline
            line = proc.stdout.readline().split()
            if line and line[0] == "ACK":
                acked = max(acked, int(line[1]))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
        with closing(_factory(path, durability)) as factory:
            recorder = factory.process_recorder()
            tracked = recorder.max_tracking_id("Upstream") or 0
            assert tracked >= acked
            assert _versions(recorder, x) == _versions(recorder, y) == list(range(1, tracked + 1))
            assert factory.store.check().ok
    assert acked > 0


def test_racing_commits_and_single_inserts_keep_every_originator_whole(tmp_path: Path) -> None:
    """Threads insert into overlapping pairs of originators (commits) and single originators
    (one append), each re-reading its versions after a conflict: no deadlock, no lost or
    doubled version, every notification id once."""
    import threading

    from eventsourcing.persistence import IntegrityError

    originators = [uuid4() for _ in range(4)]
    rng = random.Random(7)
    plans = [[rng.sample(originators, rng.choice((1, 2))) for _ in range(25)] for _ in range(8)]
    with closing(_factory(tmp_path / "store", "none")) as factory:
        recorder = factory.process_recorder()
        written: list[int] = []
        errors: list[BaseException] = []

        def worker(plan: list[list[UUID]]) -> None:
            try:
                for targets in plan:  # bounded by the plan
                    for _ in range(100):  # bounded: retries after conflicts
                        heads = [recorder.select_events(o, desc=True, limit=1) for o in targets]
                        events = [_moved(o, (h[0].originator_version if h else 0) + 1)
                                  for o, h in zip(targets, heads, strict=True)]
                        try:
                            written.extend(recorder.insert_events(events) or [])
                            break
                        except IntegrityError:
                            continue
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(plan,)) for plan in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads) and errors == []
        total = sum(len(targets) for plan in plans for targets in plan)
        assert len(written) == len(set(written)) == total
        for o in originators:
            versions = _versions(recorder, o)
            assert versions == list(range(1, len(versions) + 1))
        notes = recorder.select_notifications(None, total + 10)
        assert sorted(n.id for n in notes) == sorted(written)
