"""A replica's truncation and reset killed at each step (``faults.REPLICA_POINTS``): the
partition recovers to before the operation or after it, never in between, and keeps
working (docs/format.md, "Truncation and reset (replicas)")."""

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
from eventstore.storage import format as fmt

tw = load("truncate_writer")
WRITER = Path(__file__).with_name("truncate_writer.py")
CASES = [(op, point) for op, points in faults.REPLICA_POINTS.items() for point in points]


def run_writer(path: Path, operation: str, kill_at: str | None) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if k != faults.KILL_AT_VARIABLE}
    if kill_at is not None:
        env[faults.KILL_AT_VARIABLE] = kill_at
    done = subprocess.run([sys.executable, str(WRITER), str(path), operation], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    expected = 0 if kill_at is None else -signal.SIGKILL
    assert done.returncode == expected, f"{kill_at}: status {done.returncode}\n{done.stderr[-2000:]}"
    return {line.split()[0]: int(line.split()[1]) for line in done.stdout.splitlines()}


def stored_epochs(store: eventstore.Store) -> list[tuple[int, int]]:
    """The epoch entries the batches of partition t/0 say (each new epoch's first base)."""
    out: list[tuple[int, int]] = []
    for seg in store.log.partition("t", 0).segments():
        data = Path(seg.log_path).read_bytes()
        position = 0
        while position < len(data):
            base, size, _magic = fmt.read_prefix(data, position)
            epoch = fmt.read_epoch(data, position)
            if not out or epoch > out[-1][0]:
                out.append((epoch, base))
            position += size
    return out


def check(store: eventstore.Store, start: int, end: int) -> None:
    assert store.offsets("t", 0) == (start, end)
    records = store.read("t", 0, start, max_records=1000)
    assert [r.offset for r in records] == list(range(start, end))
    assert [r.value for r in records] == [tw.value(o) for o in range(start, end)]
    assert store.log.partition("t", 0).epochs.entries == stored_epochs(store)
    assert store.check().ok


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    """What each operation does when nothing kills it."""
    return {op: run_writer(tmp_path_factory.mktemp(op) / "s", op, None) for op in faults.REPLICA_POINTS}


@pytest.mark.parametrize(("op", "point"), CASES, ids=[f"{op}-{point}" for op, point in CASES])
def test_a_kill_during_a_cut_ends_before_or_after_it(tmp_path: Path, op: str, point: str,
                                                     outcomes: dict[str, dict[str, int]]) -> None:
    path = tmp_path / "s"
    out = run_writer(path, op, f"{point}:1")
    before, after = out["B"], outcomes[op]["A"]
    assert "A" not in out
    with eventstore.open(path) as store:
        start, end = store.offsets("t", 0)
        assert end in (before, after), f"{point}: end {end}, neither {before} nor {after}"
        if op == "reset" and end == after:
            assert start == tw.RESET_AT
        check(store, start, end)
        store.append("t", tw.value(end))
    with eventstore.open(path) as store:
        check(store, start, end + 1)
        assert not os.path.exists(os.path.join(store.log.partition_path("t", 0), "truncation"))
