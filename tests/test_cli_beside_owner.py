"""``es`` beside a live owner: the owner is a real process holding ``eventstore.open``,
driven over stdin; ``es`` runs as a real process (README "Beside a running application",
docs/format.md section 14).

The owner takes one JSON command per stdin line and answers with one JSON line. Every
wait has a timeout and every loop is bounded by a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import entry_points
import pytest

import eventstore

TIMEOUT_S = 20
PROBE_WAIT_S = 0.1  # between two probe records while waiting for a follower to start

OWNER = r"""
import base64, json, os, sys, threading, time
import eventstore
from eventstore import Message, TopicPartition

store = eventstore.open(sys.argv[1], durability=sys.argv[2])
spin = {"thread": None, "stop": threading.Event(), "count": 0}

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def b(v):
    return None if v is None else base64.b64decode(v)

def spin_loop(topic, partitions, pause_s, pad):
    cfg = store.topic(topic)
    counters = [store.offsets(topic, p)[1] for p in range(cfg.partitions)]
    i = 0
    while not spin["stop"].is_set():
        p = i % partitions
        n = counters[p]
        k = 1 + i % 4
        vals = [f"s-{p}-{n + j}-".encode() + b"x" * ((n + j) % 50) + b"-" * pad for j in range(k)]
        store.append_batch(topic, vals, partition=p)
        counters[p] += k
        spin["count"] += k
        i += 1
        if pause_s:
            time.sleep(pause_s)

def stats():
    s = store.statistics()
    groups = {}
    for g in store.list_groups():
        groups[g] = {
            "offsets": [[tp.topic, tp.partition, o] for tp, o in sorted(store.group_offsets(g).items())],
            "lag": [[tp.topic, tp.partition, o] for tp, o in sorted(store.lag(g).items())],
        }
    return {"path": s.path, "topics": s.topics, "partitions": s.partitions, "records": s.records,
            "size_bytes": s.size_bytes,
            "parts": [{"topic": p.topic, "partition": p.partition, "log_start_offset": p.log_start_offset,
                       "end_offset": p.end_offset, "size_bytes": p.size_bytes, "segments": p.segments,
                       "max_timestamp_ms": p.max_timestamp_ms} for p in s.partition_stats],
            "configs": [[c.name, c.partitions, c.retention_ms, c.retention_bytes] for c in store.topics()],
            "groups": groups}

out({"pid": os.getpid()})
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    try:
        if op == "create":
            store.create_topic(cmd["topic"], cmd.get("partitions", 1),
                               segment_bytes=cmd.get("segment_bytes", 1024),
                               retention_bytes=cmd.get("retention_bytes"))
            out({"ok": True})
        elif op == "append":
            msgs = [Message(value=b(m.get("value")), key=b(m.get("key")), partition=m.get("partition"),
                            timestamp_ms=m.get("ts")) for m in cmd["messages"]]
            md = store.append_batch(cmd["topic"], msgs)
            out({"records": [[m.partition, m.offset, m.timestamp_ms] for m in md]})
        elif op == "alter":
            store.alter_topic(cmd["topic"], retention_bytes=cmd["retention_bytes"])
            out({"ok": True})
        elif op == "retention":
            out({"segments": store.enforce_retention()})
        elif op == "delete":
            store.delete_topic(cmd["topic"])
            out({"ok": True})
        elif op == "commit":
            c = store.consumer(group_id=cmd["group"], enable_auto_commit=False)
            c.commit({TopicPartition(t, p): o for t, p, o in cmd["offsets"]})
            c.close(autocommit=False)
            out({"ok": True})
        elif op == "offsets":
            out([list(store.offsets(cmd["topic"], p)) for p in range(store.topic(cmd["topic"]).partitions)])
        elif op == "stats":
            out(stats())
        elif op == "spin":
            spin["stop"].clear()
            spin["thread"] = threading.Thread(
                target=spin_loop, args=(cmd["topic"], cmd.get("partitions", 1), cmd.get("pause_s", 0.0),
                      cmd.get("pad", 0)))
            spin["thread"].start()
            out({"ok": True})
        elif op == "stop":
            spin["stop"].set()
            spin["thread"].join(30)
            out({"count": spin["count"]})
        elif op == "churn":
            def churn():
                i = 0
                while not spin["stop"].is_set():
                    name = f"tmp{i % 3}"
                    store.create_topic(name, int(cmd.get("partitions", 4)))
                    store.append_batch(name, [b"x"] * 4)
                    store.delete_topic(name)
                    i += 1
                    spin["count"] += 1
            spin["stop"].clear()
            spin["thread"] = threading.Thread(target=churn)
            spin["thread"].start()
            out({"ok": True})
        elif op == "exit":
            break
    except Exception as e:
        out({"error": f"{type(e).__name__}: {e}"})
store.close()
out({"closed": True})
"""


es_command = entry_points.es_command
environment = entry_points.environment


def es(data: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*es_command(), *args], input=input, capture_output=True,
                          env=environment(data), timeout=TIMEOUT_S, check=False)


def es_json(data: Path, *args: str) -> Any:
    result = es(data, *args, "--json")
    assert (result.returncode, result.stderr) == (0, b""), result
    return json.loads(result.stdout)


def b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def value_json(value: bytes | None) -> object:
    """A bytes field as ``es`` prints it in JSON (README, "JSON output")."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


class Lines:
    """Collects a pipe's lines on a thread, so a full pipe never blocks the writer."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[bytes] = []
        self.cond = threading.Condition()
        self.done = False
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):  # bounded by the pipe's end
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait_count(self, n: int, timeout_s: float = TIMEOUT_S) -> list[bytes]:
        return self.wait_until(lambda lines: len(lines) >= n, timeout_s)

    def wait_until(self, ready: Callable[[list[bytes]], bool],
                   timeout_s: float = TIMEOUT_S) -> list[bytes]:
        """The lines once ``ready(lines)`` holds, the pipe ends or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not ready(self.lines) and not self.done:  # bounded by the deadline
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.lines)

    def finish(self, timeout_s: float = TIMEOUT_S) -> list[bytes]:
        self.thread.join(timeout_s)
        with self.cond:
            return list(self.lines)


class Owner:
    """The process that owns the store."""

    def __init__(self, data: Path, durability: str = "fsync") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", OWNER, str(data), durability],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.out = Lines(self.proc.stdout)
        self.read = 0
        self.pid = self._answer()["pid"]
        assert self.pid == self.proc.pid

    def _answer(self) -> Any:
        lines = self.out.wait_count(self.read + 1)
        assert len(lines) > self.read, ("owner did not answer", self.proc.poll())
        self.read += 1
        return json.loads(lines[self.read - 1])

    def __call__(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._answer()
        assert not (isinstance(answer, dict) and "error" in answer), answer
        return answer

    def append(self, topic: str, values: Sequence[bytes | None], *, partition: int | None = None,
               keys: list[bytes | None] | None = None,
               timestamps: list[int] | None = None) -> list[tuple[int, int]]:
        msgs = [{"value": b64(v), "key": b64(keys[i]) if keys else None, "partition": partition,
                 "ts": timestamps[i] if timestamps else None} for i, v in enumerate(values)]
        return [(p, o) for p, o, _ in self("append", topic=topic, messages=msgs)["records"]]

    def exit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"op": "exit"}\n')
        self.proc.stdin.close()
        assert self.proc.wait(timeout=TIMEOUT_S) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT_S)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "es-data"


@pytest.fixture
def owner(data: Path) -> Iterator[Owner]:
    o = Owner(data)
    try:
        yield o
    finally:
        o.kill()


class Follower:
    """``es consume ... --follow`` as a process, with its stdout collected."""

    def __init__(self, data: Path, *args: str) -> None:
        self.proc = subprocess.Popen([*es_command(), "consume", *args, "--follow"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=environment(data))
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def json_lines(self, n: int, timeout_s: float = TIMEOUT_S) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.out.wait_count(n, timeout_s)]

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, list[bytes], bytes]:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.wait()

    def wait(self) -> tuple[int, list[bytes], bytes]:
        code = self.proc.wait(timeout=TIMEOUT_S)
        return code, self.out.finish(), b"".join(self.err.finish())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT_S)


def wait_following(owner: Owner, follower: Follower, topic: str,
                   expected: dict[tuple[int, int], tuple[bytes | None, bytes]],
                   partition: int = 0) -> int:
    """Wait until a ``--format json`` follower without a start option is following; return
    the offset it started at in ``partition``.

    Such a follower starts at the end it finds once it has opened the store (README, "Where
    es consume starts"), and an ``es`` process can take seconds to get there on a loaded
    machine: records appended before that are, rightly, never printed. So no fixed sleep: the
    test appends one probe record at a time to ``partition`` (each kept in ``expected``) until
    the follower prints one. Its first line is the readiness signal: by then it has fixed its
    start in every partition, and prints every record appended later.
    """
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # bounded by the deadline
        value = f"probe-{len(expected)}".encode()
        ((p, o),) = owner.append(topic, [value], partition=partition)
        expected[(p, o)] = (None, value)
        lines = follower.out.wait_count(1, timeout_s=PROBE_WAIT_S)
        if lines:
            first = json.loads(lines[0])
            assert first["partition"] == partition, first
            return int(first["offset"])
        assert follower.proc.poll() is None, follower.wait()
    raise AssertionError(f"the follower printed none of the probes appended to {topic}/{partition}")


def values_for(start: int, n: int, tag: str) -> list[bytes]:
    """Distinct values of varied sizes: UTF-8, non-UTF-8 bytes, an embedded newline."""
    out = []
    for i in range(start, start + n):
        v = f"{tag}-{i}-é-".encode() + b"y" * (i % 70)
        if i % 7 == 3:
            v += b"\xff\x00\xfe"
        if i % 11 == 5:
            v += b"\nsecond line"
        out.append(v)
    return out


def check_stream(got: list[dict[str, Any]], expected: dict[tuple[int, int], tuple[bytes | None, bytes]],
                 topic: str) -> dict[int, list[int]]:
    """Every printed line is a record the owner wrote, each once, in offset order per partition."""
    per_partition: dict[int, list[int]] = {}
    for line in got:
        assert line["topic"] == topic
        p, o = line["partition"], line["offset"]
        key, value = expected[(p, o)]
        assert (line["key"], line["value"]) == (value_json(key), value_json(value)), (p, o)
        per_partition.setdefault(p, []).append(o)
    for p, offsets in per_partition.items():
        assert offsets == sorted(set(offsets)), f"partition {p}: duplicates or out of order"
    return per_partition


def error_lines(stderr: bytes) -> list[str]:
    lines = stderr.decode().splitlines()
    assert lines and lines[0].startswith("error: "), stderr
    assert len(lines) <= 2 and all(x.startswith("hint: ") for x in lines[1:]), stderr
    assert "Traceback" not in stderr.decode()
    return lines


def snapshot(data: Path) -> dict[str, tuple[int, str]]:
    """Every file under the store: size and content hash."""
    out = {}
    for path in sorted(data.rglob("*")):
        if path.is_file():
            raw = path.read_bytes()
            out[str(path.relative_to(data))] = (len(raw), hashlib.sha256(raw).hexdigest())
    return out


# --- 1. es consume --follow beside the owner -------------------------------------------


def test_follow_prints_every_record_once_across_rolls(data: Path, owner: Owner) -> None:
    owner("create", topic="t", partitions=3, segment_bytes=1024)
    follower = Follower(data, "t", "--format", "json")  # no start option: at the end
    expected: dict[tuple[int, int], tuple[bytes | None, bytes]] = {}
    try:
        first = wait_following(owner, follower, "t", expected)  # partitions 1 and 2 start at 0
        probes = len(expected)
        n = 0
        for round_ in range(30):  # many small batches: several rolls per partition
            vals = values_for(n, 10, "f")
            keys: list[bytes | None] = [None if i % 3 == 0 else f"k{i}".encode() for i in range(n, n + 10)]
            for (p, o), k, v in zip(owner.append("t", vals, keys=keys), keys, vals, strict=True):
                expected[(p, o)] = (k, v)
            n += 10
            if round_ % 10 == 9:
                time.sleep(0.05)  # let the follower catch up at times, lag at others
        follower.json_lines(len(expected) - first)
        code, lines, err = follower.stop(signal.SIGTERM)
    finally:
        follower.kill()
    assert (code, err) == (0, b"")
    assert len(expected) == probes + 300
    got = [json.loads(x) for x in lines]
    per_partition = check_stream(got, expected, "t")
    ends = [end for _, end in owner("offsets", topic="t")]
    assert per_partition == {0: list(range(first, ends[0])), 1: list(range(ends[1])),
                             2: list(range(ends[2]))}
    stats = owner("stats")
    assert all(p["segments"] >= 3 for p in stats["parts"])  # the rolls happened


def test_follow_one_partition_raw_from_beginning(data: Path, owner: Owner) -> None:
    owner("create", topic="t", partitions=2, segment_bytes=1024)
    before = [owner.append("t", [f"old-{p}-{i}".encode() for i in range(40)], partition=p)
              for p in range(2)]
    assert before[1][-1] == (1, 39)
    follower = Follower(data, "t", "--partition", "1", "--from-beginning")
    try:
        assert len(follower.out.wait_count(40)) >= 40
        for i in range(5):
            for p in range(2):
                owner.append("t", [f"new-{p}-{i}-{j}".encode() for j in range(8)], partition=p)
        want = [f"old-1-{i}\n".encode() for i in range(40)] + [
            f"new-1-{i}-{j}\n".encode() for i in range(5) for j in range(8)]
        follower.out.wait_count(len(want))
        code, lines, err = follower.stop(signal.SIGINT)
    finally:
        follower.kill()
    assert (code, err) == (0, b"")
    assert lines == want


def test_follow_since(data: Path, owner: Owner) -> None:
    owner("create", topic="t", partitions=1, segment_bytes=1024)
    t0 = 1_700_000_000_000
    owner.append("t", [f"v{i}".encode() * 20 for i in range(60)],
                 timestamps=[t0 + i * 1000 for i in range(60)])
    follower = Follower(data, "t", "--since", str(t0 + 45_000), "--format", "json")
    try:
        first = follower.json_lines(15)
        owner.append("t", [b"later"], timestamps=[t0 + 100_000])
        got = follower.json_lines(16)
        code, _, err = follower.stop()
    finally:
        follower.kill()
    assert (code, err) == (0, b"")
    assert [r["offset"] for r in first[:15]] == list(range(45, 60))
    assert [r["timestamp_ms"] for r in got] == [t0 + i * 1000 for i in range(45, 60)] + [t0 + 100_000]
    assert got[-1]["value"] == "later"


def test_follow_continues_from_the_new_log_start_when_retention_passes_it(
        data: Path, owner: Owner) -> None:
    """Documented behaviour: a follower whose position retention removed jumps to the new log
    start (as auto_offset_reset="earliest"), silently: nothing on stderr, the gap is not shown."""
    owner("create", topic="t", partitions=1, segment_bytes=1024, retention_bytes=3000)
    expected: dict[tuple[int, int], tuple[bytes | None, bytes]] = {}

    def append(n: int, tag: str) -> None:
        vals = [f"{tag}-{i}".encode() + b"z" * 60 for i in range(n)]
        for (p, o), v in zip(owner.append("t", vals), vals, strict=True):
            expected[(p, o)] = (None, v)

    follower = Follower(data, "t", "--format", "json")  # no start option: at the end
    try:
        first = wait_following(owner, follower, "t", expected)
        append(5, "a")
        position = len(expected)  # the end offset, where the follower waits
        assert len(follower.json_lines(position - first)) == position - first
        follower.proc.send_signal(signal.SIGSTOP)  # the follower falls behind
        try:
            for i in range(20):
                append(10, f"b{i}")  # rolls; retention at each roll drops the oldest segments
            owner("retention")
            start, end = owner("offsets", topic="t")[0]
        finally:
            follower.proc.send_signal(signal.SIGCONT)
        assert start > position  # the follower's position is gone
        # offsets come in order: once the last record is printed, everything is
        follower.out.wait_until(lambda lines: bool(lines) and json.loads(lines[-1])["offset"] >= end - 1)
        code, lines, err = follower.stop()
    finally:
        follower.kill()
    assert (code, err) == (0, b"")
    got = [json.loads(x) for x in lines]
    offsets = check_stream(got, expected, "t")[0]
    assert offsets[:position - first] == list(range(first, position))
    # after the pause it may have read a little of a removed segment it still had mapped,
    # but it ends with everything from the new log start, each once
    assert offsets[-(end - start):] == list(range(start, end))
    assert len(offsets) < end - first  # the gap: what retention removed was not printed


def test_follow_exits_1_when_the_owner_deletes_the_topic(data: Path, owner: Owner) -> None:
    owner("create", topic="t", partitions=2, segment_bytes=1024)
    owner("create", topic="other", partitions=1)
    owner.append("t", [b"one", b"two"])
    follower = Follower(data, "t", "--from-beginning")
    try:
        assert len(follower.out.wait_count(2)) == 2
        owner("delete", topic="t")
        code, lines, err = follower.wait()
    finally:
        follower.kill()
    assert code == 1
    assert sorted(lines) == [b"one\n", b"two\n"]
    lines_err = error_lines(err)
    assert lines_err[0] == "error: topic 't' does not exist", err


def test_follow_when_the_owner_deletes_and_recreates_the_topic(data: Path, owner: Owner) -> None:
    owner("create", topic="t", partitions=1)
    owner.append("t", [f"old{i}".encode() for i in range(5)])
    follower = Follower(data, "t", "--from-beginning")
    try:
        assert len(follower.out.wait_count(5)) == 5
        follower.proc.send_signal(signal.SIGSTOP)  # between two polls
        try:
            owner("delete", topic="t")
            owner("create", topic="t", partitions=1)
            owner.append("t", [f"new{i}".encode() for i in range(20)])
        finally:
            follower.proc.send_signal(signal.SIGCONT)
        # it either exits (the pipe ends) or prints the 20 new records: no fixed wait
        follower.out.wait_count(25)
        code, lines, err = follower.stop()
    finally:
        follower.kill()
    assert lines[:5] == [f"old{i}\n".encode() for i in range(5)]
    # either it stops as for a plain delete (status 1, an error: line), or it reads the new
    # topic from its start; never a silent jump into the middle of another log
    if code == 1:
        assert error_lines(err)[0].startswith("error: ")
    else:
        assert (code, err) == (0, b"")
        assert lines[5:] == [f"new{i}\n".encode() for i in range(20)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_records_flow_exits_0_quietly(data: Path, owner: Owner, signum: int) -> None:
    owner("create", topic="t", partitions=2, segment_bytes=1024)
    owner("spin", topic="t", partitions=2, pause_s=0.002)
    try:
        for _ in range(3):  # the signal lands at different points of the read loop
            follower = Follower(data, "t", "--format", "json")
            try:
                assert follower.out.wait_count(20), "no records while the owner appends"
                code, lines, err = follower.stop(signum)
            finally:
                follower.kill()
            assert (code, err) == (0, b""), err.decode()
            got = [json.loads(x) for x in lines if x.endswith(b"\n")]
            for r in got:
                p, o = r["partition"], r["offset"]
                assert r["value"] == f"s-{p}-{o}-" + "x" * (o % 50)
    finally:
        owner("stop")


# --- 2. es consume on a store whose owner crashed --------------------------------------


@pytest.mark.parametrize("torn", [False, True], ids=["killed", "killed-torn-tail"])
def test_consume_after_a_crash_reads_valid_records_and_writes_nothing(data: Path, torn: bool) -> None:
    owner = Owner(data, durability="none")
    try:
        owner("create", topic="t", partitions=2, segment_bytes=2048)
        owner("spin", topic="t", partitions=2, pause_s=0.0)
        deadline = time.monotonic() + TIMEOUT_S
        while min(end for _, end in owner("offsets", topic="t")) < 100:  # bounded by the deadline
            assert time.monotonic() < deadline, "the owner appended too little"
        owner.proc.send_signal(signal.SIGKILL)  # mid-append
        owner.proc.wait(timeout=TIMEOUT_S)
    finally:
        owner.kill()
    if torn:  # what a torn write leaves: part of a batch after the last whole one
        directory = data / "topics" / "t" / "0"
        logs = sorted(directory.glob("*.log"))
        head = logs[0].read_bytes()[:45]
        with open(logs[-1], "ab") as f:
            f.write(head + b"\x00" * 20)
    before = snapshot(data)
    result = es(data, "consume", "t", "--format", "json")
    described = es_json(data, "topics", "describe", "t")
    assert snapshot(data) == before  # no recovery, no index written by read-only commands
    assert (result.returncode, result.stderr) == (0, b"")
    got = [json.loads(x) for x in result.stdout.splitlines()]
    printed: dict[int, list[int]] = {}
    for r in got:
        p, o = r["partition"], r["offset"]
        assert r["value"] == f"s-{p}-{o}-" + "x" * (o % 50)
        printed.setdefault(p, []).append(o)
    for part in described["partitions"]:
        p = part["partition"]
        assert printed.get(p, []) == list(range(part["log_start_offset"], part["end_offset"]))
    assert sum(map(len, printed.values())) > 50
    with eventstore.open(data) as store:  # recovery now
        for p in range(2):
            end = store.offsets("t", p)[1]
            assert end >= (printed[p][-1] + 1)
            assert end == printed[p][-1] + 1  # recovery keeps exactly the whole, valid batches
            records = store.read("t", p, printed[p][0], max_records=100_000)
            assert [r.offset for r in records] == printed[p]
        assert store.check().ok


# --- 3. read-only commands agree with the owner ----------------------------------------


def test_read_only_commands_agree_with_the_owner(data: Path, owner: Owner) -> None:
    owner("create", topic="orders", partitions=3, segment_bytes=1024, retention_bytes=2000)
    owner("create", topic="audit", partitions=1, segment_bytes=1024)
    owner("create", topic="empty", partitions=2)
    t0 = 1_700_000_000_000
    for i in range(20):
        owner.append("orders", values_for(i * 10, 10, "o"))
    # timestamps that go backwards: the max is not the last record's
    owner.append("audit", [b"a" * 100] * 30, timestamps=[t0 + 1_000_000 - i * 1000 for i in range(30)])
    owner("retention")
    ends = owner("offsets", topic="orders")
    assert any(start > 0 for start, _ in ends)  # retention moved a log start
    # every partition of the group's topics committed (partly committed: a test below);
    # orders/0 committed below its log start: lag counts from the log start
    owner("commit", group="billing", offsets=[["orders", 0, 0], ["orders", 1, ends[1][1]],
                                              ["orders", 2, ends[2][1] - 3], ["audit", 0, 7]])
    owner("commit", group="ship", offsets=[["audit", 0, 29]])
    s = owner("stats")
    parts = {(p["topic"], p["partition"]): p for p in s["parts"]}

    listed = es_json(data, "topics", "list")
    assert [t["name"] for t in listed] == ["audit", "empty", "orders"]
    for t in listed:
        mine = [p for p in s["parts"] if p["topic"] == t["name"]]
        assert t["records"] == sum(p["end_offset"] - p["log_start_offset"] for p in mine)
        assert t["size_bytes"] == sum(p["size_bytes"] for p in mine)
        assert t["partitions"] == len(mine)
    assert next(t for t in listed if t["name"] == "orders")["retention_bytes"] == 2000

    for name in ("orders", "audit", "empty"):
        described = es_json(data, "topics", "describe", name)
        assert described["config"]["name"] == name
        for p in described["partitions"]:
            mine = parts[(name, p["partition"])]
            assert (p["log_start_offset"], p["end_offset"], p["size_bytes"], p["max_timestamp_ms"]) == (
                mine["log_start_offset"], mine["end_offset"], mine["size_bytes"],
                mine["max_timestamp_ms"]), (name, p)
            assert p["records"] == mine["end_offset"] - mine["log_start_offset"]
            assert len(p["segments"]) == mine["segments"]
            assert sum(x["size_bytes"] for x in p["segments"]) == mine["size_bytes"]
    assert parts[("audit", 0)]["max_timestamp_ms"] == t0 + 1_000_000

    groups = es_json(data, "groups", "list")
    assert [g["group"] for g in groups] == sorted(s["groups"])
    for g in groups:
        mine = s["groups"][g["group"]]
        assert g["lag"] == sum(x[2] for x in mine["lag"]), g
        assert g["topics"] == sorted({x[0] for x in mine["offsets"]})

    for name, mine in s["groups"].items():
        d = es_json(data, "groups", "describe", name)
        assert (d["group"], d["state"], d["generation"], d["members"]) == (name, "Unknown", None, [])
        committed = {(t, p): o for t, p, o in mine["offsets"]}
        lag = {(t, p): o for t, p, o in mine["lag"]}
        assert {(x["topic"], x["partition"]): x["committed"] for x in d["partitions"]} == committed
        for x in d["partitions"]:
            tp = (x["topic"], x["partition"])
            assert x["lag"] == lag[tp], (name, x)
            assert (x["log_start_offset"], x["end_offset"]) == (
                parts[tp]["log_start_offset"], parts[tp]["end_offset"])

    stats = es_json(data, "stats")
    assert stats["durability"] is None
    assert (stats["topics"], stats["partitions"], stats["records"], stats["size_bytes"]) == (
        s["topics"], s["partitions"], s["records"], s["size_bytes"])
    assert stats["segments"] == sum(p["segments"] for p in s["parts"])
    assert {g["group"]: g["lag"] for g in stats["groups"]} == {
        g: sum(x[2] for x in v["lag"]) for g, v in s["groups"].items()}
    assert [t["name"] for t in stats["per_topic"]] == ["audit", "empty", "orders"]
    assert next(t for t in stats["per_topic"] if t["name"] == "empty")["partitions"] == 2
    assert os.path.realpath(stats["path"]) == os.path.realpath(s["path"])

    # and after the owner moves on, a new run sees the new state
    owner.append("audit", [b"more"] * 5)
    again = es_json(data, "topics", "describe", "audit")["partitions"][0]
    assert again["end_offset"] == parts[("audit", 0)]["end_offset"] + 5
    owner.exit()


def test_group_lag_with_an_uncommitted_partition_agrees_with_the_owner(
        data: Path, owner: Owner) -> None:
    owner("create", topic="orders", partitions=3)
    for p in range(3):
        owner.append("orders", [b"a", b"b"], partition=p)
    owner("commit", group="billing", offsets=[["orders", 1, 1]])
    mine = owner("stats")["groups"]["billing"]
    assert mine["lag"] == [["orders", 0, 2], ["orders", 1, 1], ["orders", 2, 2]]
    assert es_json(data, "groups", "list") == [{"group": "billing", "topics": ["orders"], "lag": 5}]
    assert es_json(data, "stats")["groups"] == [{"group": "billing", "lag": 5}]
    described = es_json(data, "groups", "describe", "billing")
    assert [(x["partition"], x["committed"], x["lag"]) for x in described["partitions"]] == [
        (0, None, 2), (1, 1, 1), (2, None, 2)]


@pytest.mark.parametrize("command", [("topics", "list"), ("stats",)], ids=["topics list", "stats"])
def test_listing_survives_the_owner_deleting_topics(
        data: Path, owner: Owner, command: tuple[str, ...]) -> None:
    owner("create", topic="aaa", partitions=300)  # listed first: widens the window
    owner("churn", partitions=4)  # creates, appends to and deletes tmp0..tmp2 in a loop
    try:
        failures = []
        for _ in range(25):  # bounded; stops at the first failure
            result = es(data, *command, "--json")
            if result.returncode != 0:
                failures.append(result.stderr.decode())
                break
            listed = json.loads(result.stdout)
            if command == ("topics", "list"):
                assert listed[0] == {**listed[0], "name": "aaa", "partitions": 300, "records": 0}
            else:
                assert listed["partitions"] >= 300
    finally:
        assert owner("stop")["count"] > 0
    assert failures == []


def test_listing_while_the_owner_appends_rolls_and_retains(data: Path) -> None:
    """A race: each run hits it with ~10% probability here, so up to 60 runs, stopping at
    the first failure."""
    owner = Owner(data, durability="none")
    try:
        owner("create", topic="t", partitions=4, segment_bytes=1024, retention_bytes=2500)
        owner("spin", topic="t", partitions=4, pause_s=0.0)
        commands = [("topics", "describe", "t"), ("stats",), ("topics", "list")]
        failures = []
        for i in range(60):  # bounded
            result = es(data, *commands[i % 3], "--json")
            if result.returncode != 0:
                failures.append(result.stderr.decode())
                break
            out = json.loads(result.stdout)
            if commands[i % 3][1:2] == ("describe",):
                for p in out["partitions"]:
                    assert p["records"] == p["end_offset"] - p["log_start_offset"] >= 0
        assert owner("stop")["count"] > 0
        owner.exit()
    finally:
        owner.kill()
    assert failures == []


# --- 4. commands that write, beside the owner -------------------------------------------


@pytest.mark.parametrize("args", [
    ("topics", "create", "new"),
    ("topics", "create", "t", "--if-not-exists"),
    ("topics", "alter", "t", "--retention-bytes", "2000"),
    ("topics", "delete", "t"),
    ("produce", "t", "--value", "x"),
    ("consume", "t", "--group", "g", "--from-beginning"),
    ("consume", "t", "--group", "g", "--follow"),
    ("retention",),
    ("retention", "t", "--dry-run"),
    ("groups", "reset-offsets", "billing", "--to-earliest"),
    ("groups", "delete", "billing"),
], ids=lambda a: " ".join(a))
def test_commands_that_write_name_the_owner(data: Path, owner: Owner, args: tuple[str, ...]) -> None:
    owner("create", topic="t", partitions=2, segment_bytes=1024, retention_bytes=1500)
    for i in range(5):
        owner.append("t", values_for(i * 10, 10, "w"))
    owner("commit", group="billing", offsets=[["t", 0, 1]])
    before = snapshot(data)
    result = es(data, *args, input=b"from stdin\n")
    assert result.returncode == 1, result
    assert result.stdout == b""
    lines = error_lines(result.stderr)
    assert len(lines) == 2
    assert lines[0] == f"error: store {str(data)!r} is locked by process {owner.pid}; close it there first"
    assert snapshot(data) == before
    s = owner("stats")  # the owner is unaffected and still sees the same store
    assert [c[0] for c in s["configs"]] == ["t"]
    assert s["groups"]["billing"]["offsets"] == [["t", 0, 1]]
