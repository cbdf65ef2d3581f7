"""The installed ``es`` entry point, run as a real process: exit statuses, stderr, signals.

Uses the ``es`` script next to this interpreter (the package installed in its
environment), else ``python -m eventstore.cli``. Every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import entry_points
import pytest

import eventstore

TIMEOUT_S = 30
PROBE_WAIT_S = 0.1  # between two probe records while waiting for a follower to start


es_command = entry_points.es_command
environment = entry_points.environment


def es(data: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*es_command(), *args], input=input, capture_output=True,
                          env=environment(data), timeout=TIMEOUT_S, check=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "es-data"
    with eventstore.open(path) as store:
        store.create_topic("orders", partitions=1)
        store.append_batch("orders", [b"first", b"second"])
    return path


def test_round_trip_through_the_entry_point(data: Path) -> None:
    created = es(data, "topics", "create", "events", "-p", "2")
    assert created.returncode == 0 and created.stdout == b"created topic 'events' with 2 partitions\n"
    produced = es(data, "produce", "events", "--key", "k", input=b"one\ntwo\n")
    assert produced.returncode == 0, produced.stderr
    consumed = es(data, "consume", "events")
    assert (consumed.returncode, consumed.stdout, consumed.stderr) == (0, b"one\ntwo\n", b"")
    verified = es(data, "verify")
    assert verified.returncode == 0 and b"no problems found" in verified.stdout


def test_python_dash_m(data: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "eventstore.cli", "topics", "list", "--json"],
                            capture_output=True, env=environment(data), timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0 and b'"name": "orders"' in result.stdout


def test_unknown_topic_exits_1_with_one_line(data: Path) -> None:
    result = es(data, "consume", "ordres")
    assert result.returncode == 1
    assert result.stderr == b"error: topic 'ordres' does not exist (did you mean 'orders'?)\n"
    assert result.stdout == b""


def test_bad_usage_exits_2(data: Path) -> None:
    result = es(data, "consume", "orders", "--max", "0")
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert es(data, "topics", "frobnicate").returncode == 2


def test_debug_shows_a_traceback(data: Path) -> None:
    result = es(data, "--debug", "topics", "describe", "ordres")
    assert result.returncode == 1
    assert b"Traceback" in result.stderr and b"TopicNotFoundError" in result.stderr


def test_locked_store_names_the_pid(data: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import eventstore, sys\n"
         "with eventstore.open(sys.argv[1]):\n"
         "    print('ready', flush=True)\n"
         "    sys.stdin.read()\n", str(data)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        result = es(data, "topics", "create", "more")
        assert result.returncode == 1
        lines = result.stderr.decode().splitlines()
        assert lines[0] == (f"error: store {str(data)!r} is locked by process {holder.pid}; "
                            "close it there first")
        assert lines[1].startswith("hint: ")
    finally:
        holder.communicate(timeout=TIMEOUT_S)  # closing its stdin lets it close the store
    assert holder.returncode == 0
    assert es(data, "topics", "list").returncode == 0


def _read_line(fd: int, timeout_s: float) -> bytes:
    """Bytes from ``fd`` up to the first newline, or whatever came before the timeout."""
    got = b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in got:  # bounded by the deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_follow_exits_cleanly_on_a_signal(data: Path, signum: int) -> None:
    proc = subprocess.Popen([*es_command(), "consume", "orders", "--follow", "--from-beginning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(data))
    try:
        assert proc.stdout is not None
        assert _read_line(proc.stdout.fileno(), TIMEOUT_S).startswith(b"first\n")
        time.sleep(0.2)  # now waiting for more records
        proc.send_signal(signum)
        started = time.monotonic()
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT_S)
    assert proc.returncode in ((0, 130) if signum == signal.SIGINT else (0,))
    assert b"Traceback" not in err and b"error" not in err
    assert es(data, "topics", "list").returncode == 0  # the lock was released


_HOLDER = """
import sys, eventstore
store = eventstore.open(sys.argv[1])
store.consumer(group_id="billing").commit({eventstore.TopicPartition("orders", 0): 1})
print("open", flush=True)
for line in sys.stdin:  # one record per line, until stdin closes
    store.append("orders", line.strip().encode())
    print("appended", flush=True)
store.close()
"""


def test_follow_tails_a_store_another_process_holds(data: Path) -> None:
    """``es consume`` takes no lock: it reads beside the application that owns the store."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(data)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    follower: subprocess.Popen[bytes] | None = None
    try:
        assert holder.stdin is not None and holder.stdout is not None
        assert _read_line(holder.stdout.fileno(), TIMEOUT_S) == b"open\n"
        locked = es(data, "consume", "orders", "--group", "g")
        assert locked.returncode == 1
        assert f"locked by process {holder.pid}".encode() in locked.stderr
        assert es(data, "consume", "orders").stdout == b"first\nsecond\n"
        groups = json.loads(es(data, "groups", "list", "--json").stdout)
        assert groups == [{"group": "billing", "topics": ["orders"], "lag": 1}]
        described = json.loads(es(data, "groups", "describe", "billing", "--json").stdout)
        assert (described["state"], described["generation"], described["members"]) == ("Unknown", None, [])
        assert [(p["committed"], p["end_offset"], p["lag"]) for p in described["partitions"]] == [(1, 2, 1)]
        stats = json.loads(es(data, "stats", "--json").stdout)
        assert (stats["durability"], stats["records"], stats["groups"]) == (
            None, 2, [{"group": "billing", "lag": 1}])

        follower = subprocess.Popen([*es_command(), "consume", "orders", "--follow"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=environment(data))
        assert follower.stdout is not None
        # it starts at the end it finds once started (seconds later on a loaded machine), so
        # no fixed sleep: probe records until it prints one, its sign that it is following
        printed = b""
        deadline = time.monotonic() + TIMEOUT_S
        while not printed:  # bounded by the deadline
            assert time.monotonic() < deadline, "the follower printed none of the probes"
            holder.stdin.write(b"probe\n")
            holder.stdin.flush()
            assert _read_line(holder.stdout.fileno(), TIMEOUT_S) == b"appended\n"
            printed = _read_line(follower.stdout.fileno(), PROBE_WAIT_S)
        holder.stdin.write(b"third\n")
        holder.stdin.flush()
        assert _read_line(holder.stdout.fileno(), TIMEOUT_S) == b"appended\n"
        while not printed.endswith(b"third\n"):  # bounded: one line a read, each with a timeout
            line = _read_line(follower.stdout.fileno(), TIMEOUT_S)
            assert line, printed
            printed += line
        probes, third = printed.splitlines()[:-1], printed.splitlines()[-1]
        assert (set(probes), third) == ({b"probe"}, b"third")
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=10)
        assert (follower.returncode, out, err) == (0, b"", b"")
        holder.stdin.close()
        assert holder.wait(timeout=TIMEOUT_S) == 0  # the reader never got in the owner's way
    finally:
        for proc in (follower, holder):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=TIMEOUT_S)
