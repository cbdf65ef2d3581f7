"""Replication workloads (docs/replication.md): a follower's catch-up against the leader's own
append rate, and acks=all with one follower against acks=1 on the same server.

RP1: the leader's store is filled embedded as W1 does (batches of 1,000, durable per
batch), timed; then ``es serve`` on it and an ``es serve --replica-of`` follower on a
fresh directory, timed from the follower listening until its log ends equal the
leader's. The ratio is catch-up rate / append rate, both in the same run.

RP2: one ``es serve --min-insync-replicas 2`` leader with one follower; librdkafka
produces the same records with acks=1 into one topic and acks=all into another, in
turns, three times, each with a new producer timed from its first acknowledged record
(``produce_rate``); the ratio is the median acks=all rate / the median acks=1 rate.

RP3: replication lag at 1,000 records/s. A leader (``--min-insync-replicas 1``, so it
keeps a high watermark) and one follower; librdkafka produces one record each 1 ms
(acks=1, linger.ms=0), each value carrying its send time; a consumer Fetch long-polls
the *follower*. The lag of a record is from ``produce`` to the follower letting a reader
see it (its high watermark): the leader's write, the follower's replica fetch and
fsync, and the round trip that tells the follower the leader's new high watermark.
It bounds what acks=1 loses when the leader dies and this follower takes over.

Every process runs on 127.0.0.1 with a free port and is stopped by its handle.
"""

from __future__ import annotations

import gc
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.base import Measured, System
from bench.network import (
    DEADLINE_SECONDS,
    N3_RATE,
    N3_WARMUP,
    Delivery,
    create_topic,
    free_port,
    kafka,
    percentile,
    producer,
    send_paced,
    stop,
    tail,
    wait_accepting,
)

if TYPE_CHECKING:
    from bench.runner import Context, Metrics, Row, WorkloadResult

TOPIC = "bench"
PARTITIONS = 3
BATCH = 1_000
RP_RECORDS = 200_000
RP3_RECORDS = 10_000
RP2_ROUNDS = 3
POLL_SECONDS = 0.005  # the catch-up takes about 0.15 s at 200,000 records: poll finely


class Replicated(System):
    name = "eventstore"


@contextmanager
def es_serve(directory: Path, name: str, *args: str) -> Iterator[str]:
    """``es serve`` on ``directory / name`` with ``args``; yields its bootstrap address."""
    port = free_port()
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventstore.cli", "serve", "--data", str(directory / name),
             "--listen", f"127.0.0.1:{port}", *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_accepting(process, port, log_path)
            yield f"127.0.0.1:{port}"
        finally:
            stop(process)


def log_ends(path: Path) -> dict[tuple[str, int], int]:
    """Every partition's end offset, read beside the process that holds the store."""
    import eventstore

    with eventstore.open_reader(path) as reader:
        return {(cfg.name, p): reader.offsets(cfg.name, p)[1]
                for cfg in reader.topics() for p in range(cfg.partitions)}


def wait_equal(path: Path, want: dict[tuple[str, int], int]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:  # bounded by the deadline
        if (path / "topics").exists() and log_ends(path) == want:
            return
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"the follower did not catch up within {DEADLINE_SECONDS} s")


def rp1_catch_up(directory: Path, values: list[bytes], records: int) -> tuple[Measured, float]:
    """Fill the leader as W1 (timed), then time a fresh follower's catch-up."""
    import eventstore

    leader_dir = directory / "leader"
    with eventstore.open(leader_dir, durability="fsync") as store:
        store.create_topic(TOPIC, PARTITIONS)
        pool = len(values)
        started = time.perf_counter()
        for first in range(0, records, BATCH):  # bounded by records
            items = [values[i % pool] for i in range(first, min(first + BATCH, records))]
            store.append_batch(TOPIC, items, partition=(first // BATCH) % PARTITIONS)
        append_seconds = time.perf_counter() - started
        want = {(TOPIC, p): store.offsets(TOPIC, p)[1] for p in range(PARTITIONS)}
    with es_serve(directory, "leader") as leader:
        port = free_port()
        log_path = directory / "follower.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "eventstore.cli", "serve", "--data", str(directory / "follower"),
                 "--listen", f"127.0.0.1:{port}", "--replica-of", leader, "--replica-id", "1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                wait_listening(log_path, process)
                started = time.perf_counter()
                wait_equal(directory / "follower", want)
                seconds = time.perf_counter() - started
            finally:
                stop(process)
    config = "es serve --replica-of (fsync), fresh follower, 3 partitions"
    return Measured(seconds, config), records / append_seconds


def wait_listening(log_path: Path, process: subprocess.Popen[bytes]) -> None:
    """Until the server's log says it listens (its catch-up starts right after)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:  # bounded by the deadline
        if process.poll() is not None:
            raise RuntimeError(f"the follower exited: {tail(log_path)}")
        if re.search(rb"listening on", log_path.read_bytes()):
            return
        time.sleep(0.01)
    raise RuntimeError(f"the follower did not start: {tail(log_path)}")


def rp2_produce(directory: Path, values: list[bytes], records: int) -> dict[str, float]:
    """acks=1 and acks=all through the same leader with one follower; records/s of each, and
    each producer's start-up seconds (``produce_rate``) under ``start-KEY``."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    rates: dict[str, float] = {}
    with es_serve(directory, "leader", "--min-insync-replicas", "2", "--replica-lag-ms", "10000") as leader, \
            es_serve(directory, "follower", "--replica-of", leader, "--replica-id", "1"):
        admin = AdminClient({"bootstrap.servers": leader})
        topics = {acks: f"{TOPIC}-acks-{acks}" for acks in ("1", "all")}
        for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics.values()],
                                          operation_timeout=10).values():
            future.result(timeout=30)
        wait_equal_topics(directory / "follower", set(topics.values()))
        runs: dict[str, list[tuple[float, float]]] = {acks: [] for acks in topics}
        for _round in range(RP2_ROUNDS):  # in turns, so a drift of the CPU's speed weighs on both
            for acks, topic in topics.items():  # acks=1 first, then acks=all
                runs[acks].append(produce_rate(leader, topic, acks, values, records))
        for acks, measured in runs.items():  # the median round of each
            rates[acks], rates[f"start-{acks}"] = sorted(measured)[len(measured) // 2]
    return rates


def wait_equal_topics(path: Path, names: set[str]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:  # bounded by the deadline
        if (path / "topics").exists() and names <= {t for t, _p in log_ends(path)}:
            return
        time.sleep(0.1)
    raise RuntimeError("the follower did not learn the topics")


def produce_rate(bootstrap: str, topic: str, acks: str, values: list[bytes],
                 records: int) -> tuple[float, float]:
    """(records/s, start-up seconds): the start-up is the producer's first record, delivered
    before the clock starts. It holds the client's connections, metadata and, for the
    idempotent producer, its producer id, which librdkafka asks for on a timer that often
    waits half a second whatever the broker (Tansu too): a fixed cost of the client that
    would otherwise weigh on the shorter acks=1 run and say nothing of replication."""
    client: Any = kafka().Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": acks,
                                    "enable.idempotence": acks == "all"})
    delivery = Delivery()
    pool = len(values)
    started = time.perf_counter()
    client.produce(topic, values[0], on_delivery=delivery)
    if client.flush(DEADLINE_SECONDS):
        raise RuntimeError(f"the first record was not acknowledged within {DEADLINE_SECONDS} s")
    start_up = time.perf_counter() - started
    records -= 1
    started = time.perf_counter()
    for i in range(records):  # bounded by records
        while True:  # bounded: each retry serves reports, which frees the local queue
            try:
                client.produce(topic, values[i % pool], on_delivery=delivery)
                break
            except BufferError:
                client.poll(0.01)
        if i % 1_000 == 0:
            client.poll(0)
    if client.flush(DEADLINE_SECONDS):
        raise RuntimeError(f"records still unacknowledged after {DEADLINE_SECONDS} s")
    seconds = time.perf_counter() - started
    delivery.check(records + 1)
    return records / seconds, start_up


def rp3_lag(directory: Path, records: int) -> Measured:
    """Produce at 1,000 records/s to the leader; every record's lag until the follower shows it."""
    from bench import network

    lags: list[float] = []
    with es_serve(directory, "leader", "--min-insync-replicas", "1") as leader, \
            es_serve(directory, "follower", "--replica-of", leader, "--replica-id", "1") as follower:
        create_topic(leader)
        wait_equal_topics(directory / "follower", {network.TOPIC})
        client = producer(leader, **{"linger.ms": 0, "acks": "1"})
        done, ready = threading.Event(), threading.Event()
        reader = threading.Thread(target=follower_lags,
                                  args=(follower, records + N3_WARMUP, lags, done, ready), daemon=True)
        reader.start()
        if not ready.wait(DEADLINE_SECONDS):
            raise RuntimeError("the reader did not reach the follower")
        delivery = Delivery()
        gc.freeze()  # this process's own collections would count as lag: only what the run makes is scanned
        send_paced(client, records + N3_WARMUP, delivery)
        reader.join(DEADLINE_SECONDS)
        done.set()
        delivery.check(records + N3_WARMUP)
    measured = sorted(lags[N3_WARMUP:])
    if len(measured) != records:
        raise RuntimeError(f"the follower showed {len(measured)} of {records} records")
    return Measured(records / N3_RATE, f"es serve + 1 follower (fsync); {N3_RATE:,}/s, acks=1, linger.ms=0",
                    {"p50_ms": percentile(measured, 50), "p99_ms": percentile(measured, 99),
                     "max_ms": measured[-1]})


def follower_lags(follower: str, count: int, lags: list[float], done: threading.Event,
                  ready: threading.Event) -> None:
    """Long-poll consumer Fetches on the follower (not a replica: what its readers see);
    each record's lag from the send time its value starts with. ``ready`` is set once the
    first Fetch is answered: the sender starts then, so that the reader's imports and
    connection (about a second on a loaded machine) are not counted as lag."""
    import anyio

    anyio.run(_follower_lags, follower, count, lags, done, ready)


async def _follower_lags(follower: str, count: int, lags: list[float], done: threading.Event,
                         ready: threading.Event) -> None:
    from bench import network
    from eventstore.server.replication.client import LeaderConnection
    from eventstore.wire.batch import decode_records, parse_header

    host, _, port = follower.rpartition(":")
    offsets = dict.fromkeys(range(network.PARTITIONS), 0)
    async with await LeaderConnection.open(host, int(port)) as conn:
        await conn.call(_consumer_fetch(network.TOPIC, offsets, max_wait_ms=0))
        ready.set()
        while len(lags) < count and not done.is_set():  # bounded by the count and the sender's end
            answer = await conn.call(_consumer_fetch(network.TOPIC, offsets))
            now = time.perf_counter()
            for part in answer.responses[0].partitions:
                data, position = bytes(part.records or b""), 0
                while position + 61 <= len(data):  # bounded by the bytes
                    size = parse_header(data, position).size
                    if position + size > len(data):
                        break
                    for row in decode_records(data, position):
                        offset, value = row[0], row[3] or b""
                        if offset >= offsets[int(part.partition_index)] and len(value) >= 8:
                            lags.append((now - struct.unpack_from(">d", value)[0]) * 1000)
                            offsets[int(part.partition_index)] = offset + 1
                    position += size


def _consumer_fetch(topic: str, offsets: dict[int, int], max_wait_ms: int = 500) -> Any:
    import datetime

    from kio.schema.fetch.v12 import request as fr
    from kio.schema.types import BrokerId, TopicName
    from kio.static.primitive import i8, i32, i32Timedelta, i64

    parts = tuple(fr.FetchPartition(partition=i32(p), current_leader_epoch=i32(-1), fetch_offset=i64(o),
                                    partition_max_bytes=i32(1 << 20)) for p, o in offsets.items())
    return fr.FetchRequest(
        replica_id=BrokerId(-1), max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=max_wait_ms)),
        min_bytes=i32(1), max_bytes=i32(4 << 20), isolation_level=i8(0), session_id=i32(0),
        session_epoch=i32(-1), topics=(fr.FetchTopic(topic=TopicName(topic), partitions=parts),),
        forgotten_topics_data=(), rack_id="")


# ------------------------------------------------------------------------- for runner.py


def rp1(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(RP_RECORDS)
    append_rate: list[float] = []

    def action(directory: Path) -> Measured:
        measured, rate = rp1_catch_up(directory, ctx.values, records)
        append_rate.append(rate)
        return Measured(measured.seconds, measured.config, {"leader_append_records_per_s": rate})

    row: Row = ctx.measure("RP1", Replicated(), records, action)
    catch_up = row.get("records_per_s")
    ratio = catch_up / append_rate[0] if catch_up and append_rate else None
    metrics: Metrics = {"catch-up/append": ratio}
    return [row], metrics, {}


def rp2(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(RP_RECORDS)
    rates: dict[str, float] = {}

    def action(directory: Path) -> Measured:
        rates.update(rp2_produce(directory, ctx.values, records))
        return Measured(records / rates["all"], "es serve --min-insync-replicas 2, 1 follower; linger.ms=5; "
                        "timed after each producer's first record",
                        {"acks_1_records_per_s": rates["1"], "start_up_ms_acks_1": rates["start-1"] * 1000,
                         "start_up_ms_acks_all": rates["start-all"] * 1000})

    row: Row = ctx.measure("RP2", Replicated(), records, action, "acks=all")
    ratio = rates["all"] / rates["1"] if rates.get("1") and rates.get("all") else None
    metrics: Metrics = {"acks=all/acks=1": ratio}
    return [row], metrics, {}


def rp3(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(RP3_RECORDS)
    row: Row = ctx.measure("RP3", Replicated(), records, lambda d: rp3_lag(d, records))
    metrics: Metrics = {"follower lag p99 ms": row.get("p99_ms"), "follower lag p50 ms": row.get("p50_ms")}
    return [row], metrics, {}
