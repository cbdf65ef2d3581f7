"""RP4 (the issue's R4): automatic failover time through etcd (docs/replication.md, 7-9).

Three ``es serve --coordinator`` nodes with default settings (lease TTL 2 s, replica lag
10 s) and ``--min-insync-replicas 2``, so that an acknowledged write is on two nodes; an
etcd the bench starts. librdkafka produces one record every 2 ms (acks=all, idempotent,
bootstrap list of all three nodes), each record remembering when it was produced. The
leader is killed with SIGKILL; the failover time of that kill is from the SIGKILL to the
first acknowledgement of a record produced after it: a record the old leader never saw,
so acknowledged by the new one, once the election, the promotion, the remaining
follower's return to the in-sync set and the client's metadata refresh are all done.
The killed node is started again on its address (it rejoins as a follower), and the next
kill waits until every node is in the new epoch. min, p50 and max over the kills.

Every process runs on 127.0.0.1 with a free port and is stopped by its PID.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.base import Measured, Skipped, System
from bench.network import free_port, kafka, percentile, stop, tail, wait_accepting

if TYPE_CHECKING:
    from bench.runner import Context, Metrics, Row, WorkloadResult

KILLS = 10
TOPIC = "failover"
CLUSTER = "bench"
NODES = 3
PRODUCE_EVERY_S = 0.002
WAIT_SECONDS = 60.0
SETTLE_SECONDS = 1.0  # steady producing on a full cluster before each kill


class Replicated(System):
    name = "eventstore"


@contextmanager
def etcd(directory: Path) -> Iterator[str]:
    """A single-member etcd on free loopback ports; yields ``etcd://127.0.0.1:PORT``."""
    binary = shutil.which("etcd")
    if binary is None:
        raise Skipped("etcd is not installed (Debian's etcd-server package)")
    client_url, peer_url = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    log_path = directory / "etcd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "--name", "bench", "--data-dir", str(directory / "etcd"),
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"bench={peer_url}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _until(lambda: _healthy(client_url, process, log_path), "etcd healthy")
        yield "etcd://" + client_url.removeprefix("http://")
    finally:
        stop(process)


def _healthy(client_url: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"etcd exited: {tail(log_path)}")
    with suppress(OSError, ValueError), urllib.request.urlopen(f"{client_url}/health", timeout=1) as answer:
        return bool(json.load(answer).get("health") == "true")
    return False


class Node:
    """``es serve --coordinator`` on a port kept across restarts; its log in a file per start."""

    def __init__(self, directory: Path, node_id: int, endpoint: str) -> None:
        self.directory = directory
        self.node_id = node_id
        self.endpoint = endpoint
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log_path = self.directory / f"n{self.node_id}.{self.starts}.log"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "eventstore.cli", "serve",
                 "--data", str(self.directory / f"n{self.node_id}"),
                 "--listen", self.address, "--replica-id", str(self.node_id), "--coordinator", self.endpoint,
                 "--cluster", CLUSTER, "--min-insync-replicas", "2"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_accepting(self.process, self.port, log_path)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT_SECONDS)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


class Probe(threading.Thread):
    """Produces a record every 2 ms and notes, per record, when it was produced and when
    its acknowledgement was reported."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="probe", daemon=True)
        self.bootstrap = bootstrap
        self.stopping = threading.Event()
        self.acks: list[tuple[float, float]] = []  # (produced, acknowledged)
        self.failed: list[str] = []

    def run(self) -> None:
        client = kafka().Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                                   "enable.idempotence": True, "linger.ms": 0,
                                   "message.timeout.ms": int(WAIT_SECONDS * 1000)})
        while not self.stopping.is_set():  # bounded by the bench's stop
            produced = time.monotonic()
            client.produce(TOPIC, b"x" * 100,
                           on_delivery=lambda err, _msg, at=produced: self._report(err, at))
            client.poll(PRODUCE_EVERY_S)
        client.flush(WAIT_SECONDS)

    def _report(self, error: Any, produced: float) -> None:
        if error is not None:
            self.failed.append(str(error))
        else:
            self.acks.append((produced, time.monotonic()))

    def first_ack_of_produced_after(self, moment: float) -> float | None:
        if self.failed:
            raise RuntimeError(f"a delivery failed: {self.failed[0]}")
        after = [acked for produced, acked in self.acks[-5000:] if produced > moment]
        return min(after) if after else None

    def acked_since(self, moment: float) -> int:
        return sum(1 for _produced, acked in self.acks[-5000:] if acked > moment)


def _until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:  # bounded by the deadline
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"{what}: not within {WAIT_SECONDS} s")


def _records(client: Any, prefix: str) -> dict[str, dict[str, Any]]:
    return {meta["key"].decode(): json.loads(value) for value, meta in client.get_prefix(prefix)}


def rp4_failover(directory: Path, kills: int) -> list[float]:
    """Seconds from each SIGKILL of the leader to the first acknowledged write on the next one."""
    import etcd3gw
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    from eventstore.server.replication.coordinator import parse_endpoint

    seconds: list[float] = []
    with ExitStack() as stack:
        endpoint = stack.enter_context(etcd(directory))
        host, port = parse_endpoint(endpoint)
        coordinator = etcd3gw.client(host=host, port=port, timeout=5)
        prefix = f"/eventstore/{CLUSTER}/"
        nodes = [Node(directory, n, endpoint) for n in range(NODES)]
        for node in nodes:
            stack.callback(node.stop)
            node.start()
        leader = _until(lambda: _records(coordinator, prefix).get(prefix + "leader"), "the first election")
        admin = AdminClient({"bootstrap.servers": nodes[leader["node_id"]].address})
        admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(timeout=WAIT_SECONDS)
        probe = Probe(",".join(node.address for node in nodes))
        probe.start()
        stack.callback(probe.join, WAIT_SECONDS)
        stack.callback(probe.stopping.set)
        for _ in range(kills):
            leader = _until(lambda: _settled(coordinator, prefix, probe), "every node in the leader's epoch")
            killed_at = time.monotonic()
            nodes[leader["node_id"]].kill()
            acked = _until(lambda: probe.first_ack_of_produced_after(killed_at), "a write on the new leader")  # noqa: B023
            seconds.append(acked - killed_at)
            nodes[leader["node_id"]].start()
    return seconds


def _settled(client: Any, prefix: str, probe: Probe) -> dict[str, Any] | None:
    """The leader's record once every node is a member in its epoch and writes have been
    acknowledged steadily for a while; else None."""
    records = _records(client, prefix)
    leader = records.get(prefix + "leader")
    if leader is None:
        return None
    members = [v for k, v in records.items() if k.startswith(prefix + "members/")]
    in_epoch = len(members) == NODES and all(m["epoch"] == leader["epoch"] for m in members)
    steady = probe.acked_since(time.monotonic() - SETTLE_SECONDS) >= SETTLE_SECONDS / PRODUCE_EVERY_S / 4
    return leader if in_epoch and steady else None


# ------------------------------------------------------------------------- for runner.py


def rp4(ctx: Context) -> WorkloadResult:
    kills = ctx.scaled(KILLS)
    seconds: list[float] = []

    def action(directory: Path) -> Measured:
        seconds.extend(sorted(rp4_failover(directory, kills)))
        return Measured(sum(seconds), "3 x es serve --coordinator, defaults, --min-insync-replicas 2; "
                        "acks=all idempotent, a record every 2 ms",
                        {"min_s": seconds[0], "p50_s": percentile(seconds, 50), "max_s": seconds[-1],
                         "kills_s": " ".join(f"{s:.2f}" for s in seconds)})

    row: Row = ctx.measure("RP4", Replicated(), kills, action, "failover")
    metrics: Metrics = {"failover p50 s": row.get("p50_s"), "failover max s": row.get("max_s")}
    return [row], metrics, {}
