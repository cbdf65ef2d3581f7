"""Failover through etcd with clients that keep running (docs/replication.md, sections 7-9).

Three ``es serve --coordinator`` processes; a librdkafka idempotent producer (acks=all,
``--min-insync-replicas 2``) produces without pause to the bootstrap list of all three;
a consumer group member (librdkafka) consumes and commits after processing. The leader
is killed with SIGKILL twice; each time another node is elected, the producer finds it
by itself, the consumer rejoins through it and resumes from its commits, and the killed
node is started again on its port and directory and rejoins as a follower. Checked:
every acknowledged record read by the group at least once; a record read again only
from a restart at or above the last acknowledged commit of its partition; the history
checker over the three replicas' logs.

etcd and every ``es serve`` are started by the test on loopback ports the OS chose and
stopped by their PIDs; each server's log goes to a file (a pipe nobody reads could fill
and stall it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import entry_points
import etcd3gw
import pytest
from clusterkit import History, log_of
from etcdkit import etcd_server, free_port

from eventstore.server.replication.coordinator import parse_endpoint

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka_admin = pytest.importorskip("confluent_kafka.admin")

TIMEOUT_S = 30.0
TOPIC = "t"
PARTITIONS = 2
GROUP = "g"
CLUSTER = "clients"
KILLS = 2
COMMIT_EVERY = 25
AFTER_EACH_KILL = 150  # records acknowledged on the new leader before the next kill
_LISTENING = re.compile(rb"listening on")


class Node:
    """One ``es serve --coordinator`` on a port fixed for its life, so that a restarted
    node keeps the address that clients and peers know."""

    def __init__(self, root: Path, node_id: int, endpoint: str) -> None:
        self.node_id = node_id
        self.data = root / f"n{node_id}"
        self.port = free_port()
        self.root = root
        self.endpoint = endpoint
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / f"n{self.node_id}.{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        command = [*entry_points.es_command(), "serve", "--data", str(self.data), "--listen", self.address,
                   "--replica-id", str(self.node_id), "--coordinator", self.endpoint, "--cluster", CLUSTER,
                   "--min-insync-replicas", "2", "--replica-lag-ms", "1500"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=entry_points.environment(self.data))
        _until(lambda: self._listening(), what=f"node {self.node_id} listening")

    def _listening(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"node {self.node_id} exited: {self.tail()}"
        return bool(_LISTENING.search(self.log.read_bytes()))

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM by PID; SIGKILL if it outlives the timeout (then the test fails)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0 if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(TIMEOUT_S)
            raise

    def tail(self) -> str:
        return self.log.read_bytes()[-2000:].decode(errors="replace")


class Client(threading.Thread):
    """A client thread whose failure (an exception, a history assertion) the test sees."""

    def __init__(self, name: str, bootstrap: str, history: History) -> None:
        super().__init__(name=name, daemon=True)
        self.bootstrap = bootstrap
        self.history = history
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # handed to the test, which raises it
            self.error = exc

    def work(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"{self.name} failed") from self.error


class Producing(Client):
    """Produces unique values without pause (acks=all, idempotent) until stopped; every
    acknowledged delivery goes into the history with the time it was reported."""

    def __init__(self, bootstrap: str, history: History) -> None:
        super().__init__("producer", bootstrap, history)
        self.ack_times: list[float] = []
        self.failed: list[str] = []
        self.unflushed = -1

    def work(self) -> None:
        producer = confluent_kafka.Producer({
            "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "message.timeout.ms": 60_000})
        sent = 0
        while not self.stopping.is_set():  # bounded by the test's stop
            producer.produce(TOPIC, value=f"v{sent}".encode(), on_delivery=self._delivered)
            sent += 1
            producer.poll(0.005)
        self.unflushed = producer.flush(TIMEOUT_S)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))
            return
        self.history.ack(msg.topic(), msg.partition(), msg.offset(), msg.value())
        self.ack_times.append(time.monotonic())

    def acked_since(self, moment: float) -> int:
        self.check()
        return sum(1 for t in self.ack_times[-2000:] if t > moment)


class Consuming(Client):
    """A group member that commits synchronously every few records, after recording them.

    ``restarts`` holds, for every read that went back (a re-read after a rejoin),
    ``(partition, offset read, last acknowledged commit of the partition)``."""

    def __init__(self, bootstrap: str, history: History) -> None:
        super().__init__("consumer", bootstrap, history)
        self.values: set[bytes] = set()
        self.next_offset: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.restarts: list[tuple[int, int, int]] = []
        self.assignments = 0
        self.commit_errors: list[str] = []

    def work(self) -> None:
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": GROUP, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6_000, "heartbeat.interval.ms": 500})
        consumer.subscribe([TOPIC], on_assign=self._assigned)
        since_commit = 0
        while not self.stopping.is_set():  # bounded by the test's stop
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            self._record(msg.partition(), msg.offset(), msg.value())
            since_commit += 1
            if since_commit >= COMMIT_EVERY:
                since_commit = 0
                self._commit(consumer)
        self._commit(consumer)
        consumer.close()

    def seen(self) -> set[bytes]:
        self.check()
        return self.values

    def _assigned(self, _consumer: Any, _partitions: Any) -> None:
        self.assignments += 1

    def _record(self, partition: int, offset: int, value: bytes) -> None:
        self.history.saw(TOPIC, partition, offset, value)
        expected = self.next_offset.get(partition)
        if expected is not None and offset < expected:
            self.restarts.append((partition, offset, self.committed.get(partition, 0)))
        self.next_offset[partition] = offset + 1
        self.values.add(value)

    def _commit(self, consumer: Any) -> None:
        try:
            answered = consumer.commit(asynchronous=False)
        except confluent_kafka.KafkaException as exc:  # no coordinator during a failover
            self.commit_errors.append(str(exc))
            return
        for tp in answered or ():
            if tp.error is None and tp.offset >= 0:
                self.committed[tp.partition] = max(self.committed.get(tp.partition, 0), tp.offset)


def _leader(endpoint: str) -> dict[str, Any] | None:
    import json

    host, port = parse_endpoint(endpoint)
    found = etcd3gw.client(host=host, port=port, timeout=5).get(f"/eventstore/{CLUSTER}/leader")
    return json.loads(found[0]) if found else None


def _until(condition: Callable[[], Any], what: str, timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # bounded by the deadline
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _ends(node: Node) -> dict[tuple[str, int], int]:
    return {tp: (rows[-1][0] + 1 if rows else 0) for tp, rows in log_of(node.data, [TOPIC]).items()}


@pytest.mark.slow
def test_clients_resume_across_two_leader_kills(tmp_path: Path) -> None:
    history = History()
    with ExitStack() as stack:
        endpoint = stack.enter_context(etcd_server(tmp_path / "etcd"))
        nodes = {n: Node(tmp_path, n, endpoint) for n in range(3)}
        for node in nodes.values():
            stack.callback(node.stop)
            node.start()
        bootstrap = ",".join(node.address for node in nodes.values())
        leader = _until(lambda: _leader(endpoint), "first election")
        admin = kafka_admin.AdminClient({"bootstrap.servers": nodes[leader["node_id"]].address})
        admin.create_topics([kafka_admin.NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(timeout=TIMEOUT_S)

        producing, consuming = Producing(bootstrap, history), Consuming(bootstrap, history)
        for client in (producing, consuming):
            client.start()
            stack.callback(client.join, TIMEOUT_S)
            stack.callback(client.stopping.set)
        _until(lambda: producing.acked_since(0) >= 200 and len(consuming.seen()) >= 100, "first records")

        timings = []
        for kill in range(KILLS):
            old = leader["node_id"]
            killed_at = time.monotonic()
            nodes[old].kill()
            leader = _until(lambda: (found := _leader(endpoint)) and found["node_id"] != old and found,  # noqa: B023
                            f"election after kill {kill + 1}")
            elected_s = time.monotonic() - killed_at
            assert leader["epoch"] == kill + 2
            _until(lambda: producing.acked_since(killed_at) > 0,  # noqa: B023
                   f"an acknowledged write after kill {kill + 1}")
            first_write_s = min(t for t in producing.ack_times[-2000:] if t > killed_at) - killed_at
            timings.append((round(elected_s, 2), round(first_write_s, 2)))
            nodes[old].start()  # rejoins as a follower of the new leader
            restarted = time.monotonic()
            _until(lambda: producing.acked_since(restarted) >= AFTER_EACH_KILL, "producing on the new leader")  # noqa: B023
        print(f"kills: (elected s, first acknowledged write s) {timings}")

        acked_at_stop = history.acked_count
        producing.stopping.set()
        producing.join(TIMEOUT_S)
        producing.check()
        assert producing.failed == [], producing.failed[:5]
        assert producing.unflushed == 0
        assert history.acked_count >= acked_at_stop
        acked = {v for rows in history.acked.values() for v in rows.values()}
        _until(lambda: acked <= consuming.seen(), "the group reading every acknowledged record")
        consuming.stopping.set()
        consuming.join(TIMEOUT_S)
        consuming.check()

        assert consuming.assignments >= 1 + KILLS, "the consumer did not rejoin after each failover"
        print(f"{history.acked_count} acknowledged; {consuming.assignments} assignments, re-reads from "
              f"(partition, offset, last acknowledged commit) {consuming.restarts}")
        for partition, offset, committed in consuming.restarts:
            assert offset >= committed, (
                f"partition {partition} read again from {offset}, below its acknowledged commit {committed}")
        want = _ends(nodes[leader["node_id"]])
        for node in nodes.values():
            _until(lambda: _ends(node) == want, f"node {node.node_id} caught up")  # noqa: B023
        history.check({f"n{n}": log_of(node.data, [TOPIC]) for n, node in nodes.items()})
        for node in nodes.values():
            assert node.stop() == 0, node.tail()
