"""Kills between every two steps of multi-step operations (issue 10, the suite).

``storage/faults.py`` names the steps of a roll, of retention, of a checkpoint,
of topic creation and of topic deletion (``faults.POINTS``); with
``EVENTSTORE_KILL_AT=<point>:<n>`` a process SIGKILLs itself the n-th time it
reaches that point. For every point, a writer (``step_writer.py``) runs until
it is killed there; then the store is opened and checked: every acknowledged
record is there, exactly once and intact (retention may only take whole
segments from the front); topics acknowledged as created exist and those
acknowledged as deleted do not; the operation that was cut is there whole or
not at all, and a deleted topic leaves no group offsets; the store passes
``check()`` and takes appends again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from siblings import load

import eventstore
from eventstore.storage import faults

cw = load("crash_writer")
WRITER = Path(__file__).with_name("step_writer.py")
KILL_ON = {"roll": 3, "retention": 3, "checkpoint": 3, "create-topic": 3, "delete-topic": 2}
CASES = [(op, point) for op, points in faults.POINTS.items() for point in points]


def run_writer(path: Path, workload: str, kill_at: str) -> str:
    env = {**os.environ, faults.KILL_AT_VARIABLE: kill_at}
    done = subprocess.run([sys.executable, str(WRITER), str(path), workload], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, (
        f"the writer was not killed at {kill_at} (status {done.returncode}): the step is never "
        f"reached, or POINTS names a step the code lacks\n{done.stdout[-500:]}\n{done.stderr[-2000:]}")
    return done.stdout


def lines(out: str, kind: str) -> list[list[str]]:
    return [line.split()[1:] for line in out.split("\n")[:-1] if line.startswith(kind + " ")]


def check_store(path: Path, out: str) -> eventstore.Store:
    """Open the killed writer's store and check it against what the writer acknowledged."""
    store = eventstore.open(path)
    created = {name for (name,) in lines(out, "C")}
    deleting = [name for (name,) in lines(out, "P")]
    deleted = {name for (name,) in lines(out, "D")}
    names = {c.name for c in store.topics()}
    assert not names & deleted, f"deleted topics came back: {sorted(names & deleted)}"
    assert created - deleted - set(deleting[-1:]) <= names, "acknowledged topics are missing"
    for name in names:
        assert store.topic(name).partitions == 2
    acked = {}
    for topic, p, offset, seq in lines(out, "A"):
        acked[(topic, int(p), int(offset))] = int(seq)
    in_flight = deleting[-1] if deleting and deleting[-1] not in deleted else None
    seen: set[int] = set()
    for name in sorted(names):
        for p in (0, 1):
            start, end = store.offsets(name, p)
            records = cw.read_all(store, name, p)
            assert [r.offset for r in records] == list(range(start, end))
            for r in records:
                seq = cw.verify_value(r.value, f"{name}/{p}@{r.offset}")
                assert seq not in seen, f"seq {seq} twice"
                seen.add(seq)
                if (name, p, r.offset) in acked:
                    assert acked[(name, p, r.offset)] == seq, f"{name}/{p}@{r.offset}: another record"
            lost = [o for (t, q, o) in acked if t == name and q == p and start <= o and o >= end]
            assert not lost, f"{name}/{p}: acknowledged offsets {lost[:5]} lost (end {end})"
            if name != "w" or store.topic(name).retention_bytes is None:
                assert start == 0, f"{name}/{p}: log start {start} without retention"
    if in_flight is not None and in_flight in names:  # a cut deletion: whole or gone
        assert all((in_flight, p, o) in {(t, q, o2) for (t, q, o2) in acked if t == in_flight}
                   for p in (0, 1) for o in range(*store.offsets(in_flight, p)))
    stale = [tp for tp in store.group_offsets("g") if tp.topic not in names]
    assert not stale, f"group offsets of deleted topics survived: {stale}"
    assert store.check().ok
    return store


@pytest.mark.slow
@pytest.mark.parametrize(("op", "point"), CASES, ids=[p for _, p in CASES])
def test_a_kill_between_two_steps_loses_nothing(tmp_path: Path, op: str, point: str) -> None:
    path = tmp_path / "s"
    out = run_writer(path, op, f"{point}:{KILL_ON[op]}")
    assert lines(out, "A"), "nothing was acknowledged before the kill"
    store = check_store(path, out)
    after = iter(range(10**8, 10**8 + 1000))  # sequence numbers the writer never uses
    try:
        store.append("w", cw.make_value(next(after), 10), partition=0)
        if op == "create-topic":
            for name in {c.name for c in store.topics()} - {"w"}:
                store.append(name, cw.make_value(next(after), 10), partition=1)
        store.create_topic("fresh", 2)
    finally:
        store.close()
    store = check_store(path, out)  # a clean close and open keep it all
    store.close()
