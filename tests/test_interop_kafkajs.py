"""Conformance with kafkajs (Node), unmodified: admin, keyed produce with headers (acks -1
and 1, idempotent), gzip, and group consumers that commit, resume and share partitions.

kafkajs runs in ``node tests/kafkajs/client.js OP`` processes (one JSON request on stdin,
JSON lines out; bytes as base64) against an in-process server; what kafkajs was told is
compared with what the store holds (``store.read``), byte for byte. Every process is
stopped by the test that started it (by its handle), every wait bounded.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from serverkit import served

import eventstore
from eventstore.partitioner import partition_for_key
from eventstore.wire import batch as kb
from eventstore.wire.compression import GZIP

NODE_DIR = Path(__file__).parent / "kafkajs"
TIMEOUT_S = 30.0

pytestmark = pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "kafkajs").is_dir(),
    reason="kafkajs is not installed: run `npm install --no-audit --no-fund` in tests/kafkajs (needs node)",
)

#: Header names and values kafkajs must carry byte for byte: empty, binary, non-ASCII, NUL.
HEADERS: list[tuple[str, bytes]] = [
    ("trace", b""),
    ("bin", bytes(range(256))),
    ("naïve-κλειδί", "värde".encode()),
    ("nul", b"\x00"),
]


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class Node:
    """One ``node client.js OP`` process: its JSON lines as they come (a reader thread),
    its stderr kept for failure messages, stopped by its handle."""

    def __init__(self, op: str, request: dict[str, Any]) -> None:
        self.op = op
        node = shutil.which("node")
        assert node is not None, "node is not on PATH"
        self.proc = subprocess.Popen([node, "client.js", op], cwd=NODE_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"})
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[bytes] = []
        self.threads = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self.threads:
            thread.start()
        self.send(json.dumps({"timeoutMs": int(TIMEOUT_S * 1000), **request}))

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # ends when the process closes its stdout
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def next(self, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        """The next line; fails on the process' error line, its exit, or the timeout."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no answer from kafkajs within {timeout_s} s{self.log()}") from None
        if line is None:
            raise AssertionError(f"kafkajs exited with {self.proc.wait(TIMEOUT_S)}{self.log()}")
        if line["event"] == "error":
            raise AssertionError(f"kafkajs failed: {line['message']}{self.log()}")
        return line

    def until_done(self) -> list[dict[str, Any]]:
        """Every line up to ``done``. A consumer's stdin stays open: closing it means stop."""
        assert self.proc.stdin is not None
        if self.op != "consume":
            self.proc.stdin.close()
        out: list[dict[str, Any]] = []
        while (line := self.next())["event"] != "done":  # bounded: next() times out
            out.append(line)
        assert self.proc.wait(TIMEOUT_S) == 0, self.log()
        return out

    def log(self) -> str:
        text = b"".join(self.stderr[-40:]).decode(errors="replace")
        return f"\nkafkajs stderr:\n{text}" if text else ""

    def stop(self) -> None:
        """Ask it to stop (a consumer commits and leaves its group), then end it by its handle."""
        if self.proc.poll() is None:
            try:
                self.send("stop")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(TIMEOUT_S)
        for thread in self.threads:
            thread.join(TIMEOUT_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()



@contextmanager
def node(op: str, request: dict[str, Any]) -> Iterator[Node]:
    """A ``Node`` process stopped on the way out, whatever the test did."""
    process = Node(op, request)
    try:
        yield process
    finally:
        process.stop()


def run(op: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """One request to completion: its lines but ``done``."""
    with node(op, request) as process:
        return process.until_done()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[eventstore.Store, str]]:
    """An in-process server; the store is checked once the test is done with it."""
    with served(tmp_path) as pair:
        yield pair
        report = pair[0].check()
        assert report.ok, report.problems


def stored(store: eventstore.Store, topic: str, partition: int) -> list[eventstore.Record]:
    start, end = store.offsets(topic, partition)
    return store.read(topic, partition, start, max_records=max(1, end - start))


def keyed(count: int, tag: str) -> list[dict[str, Any]]:
    """``count`` messages with binary keys (six distinct) and values, and every header of HEADERS."""
    return [{"key": b64(f"key-{i % 6}-".encode() + b"\xff\x00"),
             "value": b64(f"{tag}-{i}-".encode() + bytes(range(i % 7, 250))),
             "headers": [[name, b64(value)] for name, value in HEADERS] + [["seq", b64(str(i).encode())]]}
            for i in range(count)]


def partition_of(message: dict[str, Any], partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives the message's key."""
    key = unb64(message["key"])
    assert key is not None
    return partition_for_key(key, partitions)


def assert_stored(store: eventstore.Store, topic: str, messages: list[dict[str, Any]],
                  partitions: int) -> dict[int, list[eventstore.Record]]:
    """Each message is in the partition the Java partitioner gives its key, in send order,
    with key, value and headers byte for byte; the records of each partition."""
    expected: dict[int, list[dict[str, Any]]] = {p: [] for p in range(partitions)}
    for m in messages:
        expected[partition_of(m, partitions)].append(m)
    held = {p: stored(store, topic, p) for p in range(partitions)}
    for p, records in held.items():
        got = [(r.key, r.value, list(r.headers)) for r in records]
        want = [(unb64(m["key"]), unb64(m["value"]), [(n, unb64(v)) for n, v in m["headers"]])
                for m in expected[p]]
        assert got == want, f"partition {p}"
    return held


# ------------------------------------------------------------------------------- admin


def test_admin_creates_describes_and_deletes_topics(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("kept", 1)
    steps = [
        {"op": "createTopics", "topics": [{"name": "made", "partitions": 3,
                                           "configs": {"retention.ms": "3600000"}}]},
        {"op": "createTopics", "topics": [{"name": "made", "partitions": 3}]},
        {"op": "fetchTopicMetadata", "topics": ["made", "kept"]},
        {"op": "deleteTopics", "topics": ["made"]},
        {"op": "listTopics"},
    ]
    created, again, metadata, deleted, listed = run("admin", {"bootstrap": bootstrap, "steps": steps})
    assert (created["created"], again["created"]) == (True, False)  # false: it already exists
    by_name = {t["name"]: t["partitions"] for t in metadata["topics"]}
    assert [p["partition"] for p in by_name["made"]] == [0, 1, 2]
    assert [p["partition"] for p in by_name["kept"]] == [0]
    assert all(p["leader"] >= 0 and p["error"] == 0 for t in by_name.values() for p in t)
    assert deleted == {"event": "deleteTopics"}
    assert "made" not in listed["topics"] and "kept" in listed["topics"]
    assert [t.name for t in store.topics()] == ["kept"]


def test_created_topic_takes_its_configs(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    steps = [{"op": "createTopics", "topics": [{"name": "cfg", "partitions": 2,
                                                "configs": {"retention.ms": "3600000",
                                                            "message.timestamp.type": "LogAppendTime"}}]}]
    (created,) = run("admin", {"bootstrap": bootstrap, "steps": steps})
    assert created["created"] is True
    cfg = store.topic("cfg")
    assert (cfg.partitions, cfg.retention_ms, cfg.timestamp_type) == (2, 3_600_000, "LogAppendTime")


# ----------------------------------------------------------------------------- produce


@pytest.mark.parametrize(("acks", "idempotent"), [(-1, False), (1, False), (-1, True)],
                         ids=["acks-all", "acks-1", "idempotent"])
def test_keyed_messages_with_headers_are_stored_byte_for_byte(
        server: tuple[eventstore.Store, str], acks: int, idempotent: bool) -> None:
    store, bootstrap = server
    store.create_topic("keyed", 3)
    first, second = keyed(24, "a"), keyed(12, "b")
    sends = [{"topic": "keyed", "acks": acks, "messages": first},
             {"topic": "keyed", "acks": acks, "messages": second}]
    answers = run("produce", {"bootstrap": bootstrap, "idempotent": idempotent, "sends": sends})
    assert [a["event"] for a in answers] == ["sent", "sent"]
    held = assert_stored(store, "keyed", first + second, 3)
    for answer in answers:  # each partition's base offset is where its records landed
        for result in answer["results"]:
            assert result["errorCode"] == 0 and result["logAppendTime"] == -1
            assert 0 <= result["baseOffset"] < len(held[result["partition"]])
    first_counts = {p: sum(partition_of(m, 3) == p for m in first) for p in range(3)}
    second_partitions = {partition_of(m, 3) for m in second}
    assert {r["partition"]: r["baseOffset"] for r in answers[1]["results"]} == {
        p: first_counts[p] for p in second_partitions}  # the second batches follow the first
    for p in range(3):  # two batches a partition: idempotent ones carry a producer id and sequences
        batches, _ = store.log.read_batches("keyed", p, 0, 1 << 20)
        head = kb.check_batch(batches)
        assert head.record_count == first_counts[p]
        tail = kb.check_batch(batches, head.size)
        if idempotent:
            assert head.producer_id >= 0 and head.producer_epoch >= 0 and head.base_sequence == 0
            assert (tail.producer_id, tail.base_sequence) == (head.producer_id, first_counts[p])
        else:
            assert head.producer_id == tail.producer_id == -1


def test_gzip_batches_are_kept_compressed_and_read_back(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("zipped", 1)
    messages = [{**m, "partition": 0} for m in keyed(40, "gz")]
    (sent,) = run("produce", {"bootstrap": bootstrap, "sends": [
        {"topic": "zipped", "acks": -1, "compression": "gzip", "messages": messages}]})
    assert [(r["partition"], r["baseOffset"]) for r in sent["results"]] == [(0, 0)]
    batches, end = store.log.read_batches("zipped", 0, 0, 1 << 20)
    header = kb.check_batch(batches)
    assert (header.compression, header.record_count, header.size, end) == (GZIP, 40, len(batches), 40)
    records = stored(store, "zipped", 0)
    assert [(r.key, r.value) for r in records] == [(unb64(m["key"]), unb64(m["value"])) for m in messages]
    with node("consume", {"bootstrap": bootstrap, "topic": "zipped", "groupId": "gz", "count": 40}) as member:
        got = [line for line in member.until_done() if line["event"] == "message"]
    assert [(g["offset"], unb64(g["key"]), unb64(g["value"])) for g in got] == [
        (r.offset, r.key, r.value) for r in records]


# ---------------------------------------------------------------------------- consumers


def test_a_group_member_resumes_after_its_commit(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("events", 1)
    for i in range(5):
        store.append("events", f"event-{i}".encode() + b"\x00\xff", key=b"k%d" % i,
                     headers=[("n", str(i).encode()), ("bin", b"\x01\x80")])
    request = {"bootstrap": bootstrap, "topic": "events", "groupId": "readers", "count": 3}
    lines = run("consume", request)
    got = [line for line in lines if line["event"] == "message"]
    held = stored(store, "events", 0)
    assert [(g["offset"], unb64(g["key"]), unb64(g["value"]), g["timestamp"]) for g in got] == [
        (r.offset, r.key, r.value, r.timestamp_ms) for r in held[:3]]
    headers = {name: unb64(value) for name, value in got[0]["headers"].items()}
    assert headers == {"n": b"0", "bin": b"\x01\x80"}
    assert lines[-1] == {"event": "committed", "count": 3}
    assert store.group_offsets("readers") == {eventstore.TopicPartition("events", 0): 3}

    store.append("events", b"after the commit")
    again = [line for line in run("consume", {**request, "count": 3}) if line["event"] == "message"]
    assert [(g["offset"], unb64(g["value"])) for g in again] == [(r.offset, r.value) for r in stored(
        store, "events", 0)[3:6]]
    assert store.group_offsets("readers") == {eventstore.TopicPartition("events", 0): 6}


def test_two_members_of_a_group_split_the_partitions(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    partitions = 4
    store.create_topic("shared", partitions)
    request = {"bootstrap": bootstrap, "topic": "shared", "groupId": "pair"}
    with node("consume", request) as first, node("consume", request) as second:
        assignments = split_between(first, second, partitions)
        for p in range(partitions):
            store.append_batch("shared", [b"p%d-a" % p, b"p%d-b" % p], partition=p)
        seen: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
        deadline = time.monotonic() + TIMEOUT_S
        while sum(map(len, seen.values())) < 2 * partitions:  # bounded by the deadline
            assert time.monotonic() < deadline, seen
            for i, member in enumerate((first, second)):
                try:
                    line = member.lines.get(timeout=0.05)
                except queue.Empty:
                    continue
                assert line is not None and line["event"] == "message", (line, member.log())
                seen[i].append((line["partition"], line["offset"]))
    for i, got in seen.items():  # each member read exactly its own partitions, in order
        assert {p for p, _ in got} == set(assignments[i]), (assignments, seen)
        assert sorted(got) == [(p, o) for p in sorted(assignments[i]) for o in (0, 1)]
    committed = store.group_offsets("pair")
    assert committed == {eventstore.TopicPartition("shared", p): 2 for p in range(partitions)}


def split_between(first: Node, second: Node, partitions: int) -> list[list[int]]:
    """Wait until the latest assignments of both members are non-empty and split the
    topic's partitions between them; those two assignments."""
    latest: list[list[int] | None] = [None, None]
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # bounded by the deadline
        for i, member in enumerate((first, second)):
            try:
                line = member.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            assert line is not None and line["event"] == "join", (line, member.log())
            latest[i] = sorted(line["assignment"].get("shared", []))
        a, b = latest
        if a and b and not set(a) & set(b) and sorted(a + b) == list(range(partitions)):
            return [a, b]
        assert time.monotonic() < deadline, f"no split in {TIMEOUT_S} s: {latest}{first.log()}{second.log()}"


def test_log_append_time_topics_answer_and_serve_append_times(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("lat", 1, timestamp_type="LogAppendTime")
    old = 1_000_000  # 1970: never an append time
    embedded = store.append("lat", b"embedded", timestamp_ms=old)
    before = int(time.time() * 1000)
    (sent,) = run("produce", {"bootstrap": bootstrap, "sends": [{"topic": "lat", "acks": -1, "messages": [
        {"key": b64(b"k"), "value": b64(b"produced"), "headers": [], "timestamp": old, "partition": 0}]}]})
    (result,) = sent["results"]
    assert result["baseOffset"] == 1 and before <= result["logAppendTime"] <= int(time.time() * 1000)
    held = stored(store, "lat", 0)
    assert [(r.timestamp_ms, r.timestamp_type) for r in held] == [
        (embedded.timestamp_ms, 1), (result["logAppendTime"], 1)]
    with node("consume", {"bootstrap": bootstrap, "topic": "lat", "groupId": "lat", "count": 2}) as member:
        got = [line for line in member.until_done() if line["event"] == "message"]
    assert [(g["offset"], g["timestamp"]) for g in got] == [(r.offset, r.timestamp_ms) for r in held]
