"""The installed ``es`` entry point, run as a real process: exit statuses, stderr, signals.

Uses the ``es`` script next to this interpreter (the package installed in its
environment), else ``python -m eventstore.cli``. Every wait has a timeout.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventstore

TIMEOUT_S = 30


def es_command() -> list[str]:
    script = Path(sys.executable).with_name("es")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "eventstore.cli"]


def environment(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ES_DEBUG", "ES_DATA")}
    return {**env, "ES_DATA": str(data)}


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
        result = es(data, "topics", "list")
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
