"""Projections: state and checkpoint commit together, resume after a restart, and survive SIGKILL
without applying any event twice or skipping one."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from siblings import load

import eventstore
from eventstore.errors import IllegalStateError, InvalidArgumentError
from eventstore.sourcing.events import NewEvent, RecordedEvent
from eventstore.sourcing.projections import (
    Projection,
    ProjectionCheckpoint,
    ProjectionRunner,
    ProjectionState,
    decode_counter,
)

_WORKER = Path(__file__).with_name("projection_worker.py")
_WAIT_S = 20.0


pw = load("projection_worker")


class CountTypes(Projection):
    def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
        state.add(event.type.encode())


class CountOrders(CountTypes):
    category = "order"


def counts(runner: ProjectionRunner, prefix: bytes = b"") -> dict[str, int]:
    return {k[len(prefix):].decode(): decode_counter(v) for k, v in runner.items(prefix)}


def type_counts(events: list[RecordedEvent]) -> dict[str, int]:
    return dict(collections.Counter(e.type for e in events))


def append_many(store: eventstore.Store, count: int, seed: int = 0,
                streams: tuple[str, ...] = ("order-1", "order-2", "user-1")) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        store.append_to_stream(rng.choice(streams), [NewEvent(type=rng.choice("abc"))])


@pytest.fixture
def store(open_store: Callable[..., eventstore.Store]) -> Iterator[eventstore.Store]:
    yield open_store()


# --- handling and checkpoints ------------------------------------------------------------------


def test_catch_up_folds_every_event_and_checkpoints(store: eventstore.Store) -> None:
    append_many(store, 120)
    commits: list[ProjectionCheckpoint] = []
    runner = ProjectionRunner(store, CountTypes(), name="types", batch_events=50,
                              on_commit=commits.append)
    assert runner.checkpoint is None and runner.catch_up() == 120
    assert counts(runner) == type_counts(store.read_all(0, None))
    assert [c.position for c in commits] == [49, 99, 119]  # one transaction per batch
    assert runner.checkpoint_record() == ProjectionCheckpoint("$all", 119, 120)
    assert runner.catch_up() == 0  # nothing new


def test_resumes_after_a_restart(open_store: Callable[..., eventstore.Store], store_path: Path) -> None:
    first = open_store()
    append_many(first, 40, seed=1)
    assert ProjectionRunner(first, CountTypes(), name="types").catch_up() == 40
    first.close()
    second = open_store(store_path)
    append_many(second, 25, seed=2)
    runner = ProjectionRunner(second, CountTypes(), name="types")
    assert runner.catch_up() == 25  # only the new ones
    assert counts(runner) == type_counts(second.read_all(0, None))
    assert runner.checkpoint_record() == ProjectionCheckpoint("$all", 64, 65)


def test_a_category_projection(store: eventstore.Store) -> None:
    append_many(store, 60, streams=("order-1", "user-1", "orderline-1", "order-2"))
    runner = ProjectionRunner(store, CountOrders(), name="orders", batch_events=7)
    orders = [e for e in store.read_all(0, None) if e.stream_id.startswith("order-")]
    assert runner.catch_up() == len(orders)
    assert counts(runner) == type_counts(orders)
    assert runner.checkpoint == orders[-1].position
    assert runner.checkpoint_record().source == "$ce-order"  # type: ignore[union-attr]


def test_runs_live_until_stopped(store: eventstore.Store) -> None:
    append_many(store, 10)
    runner = ProjectionRunner(store, CountTypes(), name="types", batch_events=4)
    handled: list[int] = []
    thread = threading.Thread(target=lambda: handled.append(runner.run()))
    thread.start()
    for i in range(5):
        store.append_to_stream("order-9", [NewEvent(type="live")] * (i + 1))
    deadline = time.monotonic() + _WAIT_S
    while runner.checkpoint != 24:  # bounded by the deadline
        assert time.monotonic() < deadline
        time.sleep(0.01)
    runner.stop()
    thread.join(_WAIT_S)
    assert handled == [25] and runner.get(b"live") == (15).to_bytes(8, "big")
    runner.stop()  # a stop with nothing running makes the next run return at once
    assert runner.run() == 0


def test_idle_timeout_ends_a_run(store: eventstore.Store) -> None:
    append_many(store, 3)
    start = time.monotonic()
    assert ProjectionRunner(store, CountTypes(), name="types").run(idle_timeout_s=0.1) == 3
    assert time.monotonic() - start < _WAIT_S


# --- failures: nothing of a failed batch stays ----------------------------------------------------


class FailsOnce(Projection):
    def __init__(self, poison: int) -> None:
        self.poison: int | None = poison

    def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
        state.add(b"seen")
        if event.position == self.poison:
            raise ValueError("poison")


def test_a_failing_handler_rolls_its_batch_back(store: eventstore.Store) -> None:
    append_many(store, 30)
    projection = FailsOnce(poison=17)
    runner = ProjectionRunner(store, projection, name="p", batch_events=10)
    with pytest.raises(ValueError, match="poison"):
        runner.catch_up()
    assert runner.checkpoint == 9 and runner.get(b"seen") == (10).to_bytes(8, "big")
    projection.poison = None  # fixed: the next run starts again at the batch that failed
    assert runner.catch_up() == 20
    assert runner.checkpoint == 29 and decode_counter(runner.get(b"seen") or b"") == 30


def test_two_runners_of_one_projection_cannot_both_commit(store: eventstore.Store) -> None:
    append_many(store, 10)
    slow = ProjectionRunner(store, CountTypes(), name="types", batch_events=5)
    fast = ProjectionRunner(store, CountTypes(), name="types", batch_events=5)
    first = slow.checkpoint_record()
    batch = store.read_all(0, 5)
    assert fast.catch_up() == 10
    with pytest.raises(IllegalStateError, match="another runner"):
        slow._commit(batch, first)  # as if it had read its checkpoint before the other committed
    assert counts(fast) == type_counts(store.read_all(0, None))  # applied once


def test_a_runner_runs_once_at_a_time(store: eventstore.Store) -> None:
    runner = ProjectionRunner(store, CountTypes(), name="types")
    thread = threading.Thread(target=runner.run)
    thread.start()
    time.sleep(0.05)
    with pytest.raises(IllegalStateError):
        runner.catch_up()
    with pytest.raises(IllegalStateError):
        runner.reset()
    runner.stop()
    thread.join(_WAIT_S)
    assert not thread.is_alive()


def test_a_changed_source_needs_a_reset(store: eventstore.Store) -> None:
    append_many(store, 20)
    assert ProjectionRunner(store, CountTypes(), name="p").catch_up() == 20
    moved = ProjectionRunner(store, CountOrders(), name="p")
    with pytest.raises(InvalidArgumentError, match="reset"):
        moved.catch_up()
    moved.reset()
    assert moved.checkpoint is None and moved.items() == []
    orders = [e for e in store.read_all(0, None) if e.stream_id.startswith("order-")]
    assert moved.catch_up() == len(orders)
    assert ProjectionRunner(store, CountTypes(), name="other").catch_up() == 20  # names are separate


def test_state_operations(store: eventstore.Store) -> None:
    store.append_to_stream("order-1", [NewEvent(type="x")])
    seen: dict[str, Any] = {}

    class Ops(Projection):
        def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
            state.put(b"a1", b"one")
            state.put(b"a2", b"two")
            state.put(b"b", b"three")
            seen["items"] = state.items(b"a")
            seen["deleted"] = (state.delete(b"a2"), state.delete(b"nope"))
            seen["add"] = (state.add(b"n", 5), state.add(b"n", -7))
            with pytest.raises(InvalidArgumentError):
                state.put(b"", b"v")
            with pytest.raises(InvalidArgumentError):
                state.put(b"k", "v")  # type: ignore[arg-type]
            with pytest.raises(InvalidArgumentError):
                state.get(b"k" * 600)

    runner = ProjectionRunner(store, Ops(), name="ops")
    runner.catch_up()
    assert seen == {"items": [(b"a1", b"one"), (b"a2", b"two")], "deleted": (True, False), "add": (5, -2)}
    assert runner.items() == [(b"a1", b"one"), (b"b", b"three"), (b"n", (-2).to_bytes(8, "big", signed=True))]


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 201, 3])
def test_bad_names(store: eventstore.Store, name: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        ProjectionRunner(store, CountTypes(), name=name)


# --- SIGKILL ---------------------------------------------------------------------------------------


class Worker:
    """A projection_worker.py process whose stdout goes to a file (it never blocks on a pipe)."""

    def __init__(self, workdir: Path, n: int, store_path: Path, target: int) -> None:
        self.out_path = workdir / f"worker-{n}.out"
        self.err_path = workdir / f"worker-{n}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(_WORKER), str(store_path), str(target), str(n)],
                stdout=out, stderr=err,
            )

    def lines(self) -> list[list[str]]:
        text = self.out_path.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line being written is not one yet
        return [line.split() for line in complete.splitlines()]

    def progress(self) -> tuple[int | None, int]:
        """(checkpoint at open, last committed checkpoint): -1 for none."""
        lines = self.lines()
        opened = int(lines[0][1]) if lines and lines[0][0] == "OPEN" else None
        commits = [int(line[1]) for line in lines if line[0] in ("C", "DONE")]
        return opened, (commits[-1] if commits else -1 if opened is None else opened)

    def kill(self) -> bool:
        """SIGKILL it; True if it was still running."""
        running = self.proc.poll() is None
        if running:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(_WAIT_S)
        return running

    def failure(self) -> str:
        return f"worker exited with {self.proc.returncode}:\n{self.err_path.read_text()}"


@pytest.mark.slow
def test_sigkill_never_applies_an_event_twice_or_skips_one(tmp_path: Path) -> None:
    """Kill a live projection (and its writer) at random moments; the state stays exact.

    Each worker appends events while projecting them; the test kills it after
    it has committed a random number of further batches plus a random delay
    (so inside a handler, a commit, an append or an fsync), or while it is
    still opening. Every restart must resume from at least the last checkpoint
    the previous worker reported, and the final state must equal the counts
    computed from all events.
    """
    store_path, target = tmp_path / "es-data", 4000
    rng = random.Random(20260530)
    workers: list[Worker] = []
    kills_while_projecting = kills = 0
    reported = -1  # the last checkpoint a worker reported committed
    try:
        while kills_while_projecting < 8:  # bounded: each round projects at most ~400 events
            assert len(workers) < 20, "the workers finished before enough kills"
            worker = Worker(tmp_path, len(workers), store_path, target)
            workers.append(worker)
            early = len(workers) % 4 == 0  # now and then, kill it while it opens and recovers
            goal = reported + rng.randint(30, 400)
            deadline = time.monotonic() + _WAIT_S
            while worker.proc.poll() is None and not early:  # bounded by the deadline
                assert time.monotonic() < deadline, "the worker made no progress"
                opened, last = worker.progress()
                if opened is not None and last >= goal:
                    break
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.2 if early else 0.004))
            killed = worker.kill()
            assert killed or worker.proc.returncode == 0, worker.failure()
            opened, last = worker.progress()
            assert opened is None or opened >= reported, "a reported checkpoint was lost"
            kills += killed
            kills_while_projecting += killed and opened is not None and last > opened
            reported = max(reported, last)
        final = Worker(tmp_path, len(workers), store_path, target)
        workers.append(final)
        assert final.proc.wait(_WAIT_S * 2) == 0, final.failure()
        assert final.lines()[-1][0] == "DONE"
    finally:
        for worker in workers:
            worker.kill()

    with eventstore.open(store_path) as store:
        events = store.read_all(0, None)
        runner = pw.runner(store)
        assert len(events) == target
        assert counts(runner, pw.TYPE_PREFIX) == type_counts(events)
        assert runner.checkpoint_record() == ProjectionCheckpoint("$all", events[-1].position, len(events))
        last_versions = {k[len(pw.VERSION_PREFIX):].decode(): int.from_bytes(v, "big")
                         for k, v in runner.items(pw.VERSION_PREFIX)}
        assert last_versions == {sid: store.stream_version(sid) for sid in store.list_streams()}
        report = store.check()
        assert report.ok, report.problems
    assert kills >= 8
