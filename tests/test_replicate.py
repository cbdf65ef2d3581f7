"""``es replicate`` (docs/replication.md, 4.1): a hot standby for an embedded application
that is not changed. The application (``replicate_app.py``) owns the store and appends with
fsync; ``es replicate`` serves it read-only beside it; an ``es serve --replica-of`` follower
copies it. All three are processes, stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import entry_points
import pytest
from clusterkit import History, ends, log_files, log_of, until
from serverkit import ServeProcess, es_serve

import eventstore

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka_admin = pytest.importorskip("confluent_kafka.admin")

APP = Path(__file__).with_name("replicate_app.py")
TIMEOUT_S = 30.0
_LISTENING = re.compile(rb"listening on (\S+):(\d+)")


class App:
    """The application process and the appends it acknowledged."""

    def __init__(self, store: Path, rate: int, count: int | None = None) -> None:
        args = [sys.executable, str(APP), str(store), str(rate), *([str(count)] if count else [])]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.lines: list[str] = []
        self.done = threading.Event()
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"READY"
        # read as it prints, so that a full pipe never stalls the application
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:  # ends when the application dies
            line = raw.decode().strip()
            if line == "DONE":
                self.done.set()
            elif line.startswith("A "):
                self.lines.append(line)

    def read_until_done(self) -> None:
        assert self.done.wait(TIMEOUT_S), "the application did not finish its appends"

    def kill(self) -> None:
        """SIGKILL, then every acknowledgement it printed before dying."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT_S)
        self._reader.join(TIMEOUT_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def history(self) -> History:
        history = History()
        for line in self.lines:
            _, topic, partition, offset, value = line.split()
            history.ack(topic, int(partition), int(offset), value.encode())
        return history


@contextmanager
def es_replicate(data: Path, *args: str) -> Iterator[ServeProcess]:
    """``es replicate --data DATA --listen 127.0.0.1:0`` as a process, once it listens."""
    command = [*entry_points.es_command(), "replicate", "--data", str(data), "--listen", "127.0.0.1:0", *args]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=entry_points.environment(data))
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + TIMEOUT_S
        while not _LISTENING.search(seen):  # bounded by the deadline and the process's output
            line = proc.stderr.readline()
            if not line or time.monotonic() > deadline:
                raise AssertionError(f"es replicate did not start: {seen.decode(errors='replace')}")
            seen += line
        found = _LISTENING.search(seen)
        assert found is not None
        yield ServeProcess(proc, f"127.0.0.1:{found.group(2).decode()}", seen)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(TIMEOUT_S)
        if proc.stderr is not None:
            proc.stderr.close()


def group_offsets(path: Path) -> dict[eventstore.TopicPartition, int]:
    with eventstore.open_reader(path) as reader:
        return reader.group_offsets("app")


def files_of(root: Path) -> dict[str, tuple[int, int, str]]:
    """(size, mtime_ns, sha256) of every file under ``root`` but LMDB's reader table."""
    out = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            rel = str(path.relative_to(root))
            if rel != os.path.join("catalog", "lock.mdb"):
                st = path.stat()
                out[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def test_the_reader_gives_a_replica_the_stored_batches_and_epochs(tmp_path: Path) -> None:
    """What replica Fetch and OffsetForLeaderEpoch read beside the owner: the owner's bytes."""
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t", partitions=1)
        for i in range(50):  # several batches
            store.append("t", b"v%d" % i, partition=0)
        stored, end = store.log.read_replica("t", 0, 0, 1 << 20)
        with eventstore.open_reader(tmp_path / "s") as reader:
            assert reader.read_batches("t", 0, 0, 1 << 20) == (stored, end)
            middle = store.log.read_replica("t", 0, 20, 1 << 20)[0]
            assert reader.read_batches("t", 0, 20, 1 << 20)[0] == middle
            assert reader.read_batches("t", 0, end, 1 << 20) == (b"", end)
            first = reader.read_batches("t", 0, 0, 1)[0]
            assert stored.startswith(first) and 0 < len(first) < len(stored)
            assert reader.epoch_entries("t", 0) == [(0, 0)]
            with pytest.raises(eventstore.OffsetOutOfRangeError):
                reader.read_batches("t", 0, end + 1, 1 << 20)


def test_replicate_writes_nothing_serves_a_follower_and_refuses_writes(tmp_path: Path) -> None:
    app_dir, follower_dir = tmp_path / "app", tmp_path / "follower"
    app = App(app_dir, rate=2000, count=300)
    try:
        app.read_until_done()
        with eventstore.open_reader(app_dir):
            pass
        time.sleep(0.05)
        before = files_of(app_dir)
        with es_replicate(app_dir) as replicate:
            with es_serve(follower_dir, "--replica-of", replicate.bootstrap, "--replica-id", "1"):
                until(lambda: (follower_dir / "topics").exists() and ends(follower_dir) == ends(app_dir))
            admin = kafka_admin.AdminClient({"bootstrap.servers": replicate.bootstrap})
            created = admin.create_topics([kafka_admin.NewTopic("new", 1, 1)])["new"]
            with pytest.raises(confluent_kafka.KafkaException, match=r"NOT_CONTROLLER|controller"):
                created.result(TIMEOUT_S)
            # the application's groups are not served (list_groups: the call that sends ListGroups plainly)
            not_leader = pytest.raises(confluent_kafka.KafkaException, match=r"(?i)not leader")
            with warnings.catch_warnings(), not_leader:
                warnings.simplefilter("ignore", DeprecationWarning)
                admin.list_groups(timeout=TIMEOUT_S)
            producer = confluent_kafka.Producer({"bootstrap.servers": replicate.bootstrap,
                                                 "message.timeout.ms": 2000})
            errors: list[object] = []
            producer.produce("t", b"refused", partition=0, on_delivery=lambda err, _m: errors.append(err))
            producer.flush(TIMEOUT_S)
            assert errors and errors[0] is not None
        assert files_of(app_dir) == before
        assert log_files(follower_dir) == log_files(app_dir)
    finally:
        app.kill()


def test_follower_of_a_killed_app_holds_what_it_wrote_and_is_promoted(tmp_path: Path) -> None:
    app_dir, follower_dir = tmp_path / "app", tmp_path / "follower"
    app = App(app_dir, rate=300)
    try:
        with es_replicate(app_dir) as replicate, \
                es_serve(follower_dir, "--replica-of", replicate.bootstrap, "--replica-id", "1") as follower:
            until(lambda: (follower_dir / "topics").exists() and sum(ends(follower_dir).values()) > 0)
            copying = sum(ends(follower_dir).values())  # from here the app's catalog changes come as deltas
            until(lambda: sum(ends(follower_dir).values()) > max(400, copying + 300))
            app.kill()
            history = app.history()
            assert history.acked_count > 400 and ("u", 0) in history.acked
            until(lambda: ends(follower_dir) == ends(app_dir))
            until(lambda: group_offsets(follower_dir) == group_offsets(app_dir))
            assert group_offsets(app_dir)[eventstore.TopicPartition("t", 0)] > 100
            history.check({"app": log_of(app_dir), "follower": log_of(follower_dir)})
            assert log_files(follower_dir) == log_files(app_dir)
            replicate.stop()
            promoted = subprocess.run([*entry_points.es_command(), "promote", "--data", str(follower_dir)],
                                      capture_output=True, timeout=TIMEOUT_S,
                                      env=entry_points.environment(follower_dir))
            assert promoted.returncode == 0, promoted.stderr
            end = ends(follower_dir)[("t", 0)]
            producer = confluent_kafka.Producer({"bootstrap.servers": follower.bootstrap, "acks": "all",
                                                 "message.timeout.ms": 20_000})
            delivered: list[tuple[object, int]] = []
            producer.produce("t", b"after", partition=0,
                             on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
            assert producer.flush(TIMEOUT_S) == 0
            assert delivered == [(None, end)]
    finally:
        if app.proc.poll() is None:
            app.kill()
