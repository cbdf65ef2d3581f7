"""The HTTP port of es serve (docs/operations.md, 4): /metrics scraped and parsed against known
activity, /healthz, /readyz (a follower not caught up is not ready), routes, JSON logs, the
connection and slow-request lines, and store.metrics() for an embedded application."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from serverkit import es_serve

import eventstore
from eventstore import TopicPartition
from eventstore.server.http import HttpResponse, add_route
from eventstore.server.logs import JsonFormatter

TIMEOUT_S = 10.0


@contextmanager
def served_http(tmp_path: Path, **options: Any) -> Iterator[tuple[eventstore.Store, str, str]]:
    """A store served in-process with an HTTP port: ``(store, bootstrap, http base URL)``."""
    store = eventstore.open(tmp_path / "store")
    try:
        handle = store.serve("127.0.0.1:0", http="127.0.0.1:0", **options)
        try:
            assert handle.http_address is not None
            yield store, f"127.0.0.1:{handle.address[1]}", f"127.0.0.1:{handle.http_address[1]}"
        finally:
            handle.close()
    finally:
        store.close()


def get(address: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    status, body = get(address, "/metrics")
    assert status == 200
    return parse(body)


def parse(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, b"value-%d" % i, partition=i % partitions)
    assert producer.flush(TIMEOUT_S) == 0


def consume(bootstrap: str, topic: str, count: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "readers",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got, deadline = 0, time.monotonic() + TIMEOUT_S
    try:
        while got < count and time.monotonic() < deadline:  # bounded by the deadline
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                got += 1
    finally:
        consumer.close()
    return got


def test_metrics_follow_produced_and_fetched_records(tmp_path: Path) -> None:
    with served_http(tmp_path) as (store, bootstrap, address):
        store.create_topic("orders", partitions=3)
        produce(bootstrap, "orders", 30, 3)
        assert consume(bootstrap, "orders", 30) == 30
        m = scrape(address)
    assert sample(m, "eventstore_topic_records_in_total", topic="orders") == 30
    assert sample(m, "eventstore_topic_bytes_in_total", topic="orders") > 30 * len(b"value-0")
    assert sample(m, "eventstore_topic_bytes_out_total", topic="orders") > 30 * len(b"value-0")
    assert sample(m, "eventstore_requests_total", api="Produce") >= 1
    assert sample(m, "eventstore_request_duration_seconds_count", api="Produce") == sample(
        m, "eventstore_requests_total", api="Produce")
    assert sample(m, "eventstore_request_duration_seconds_bucket", api="Fetch", le="+Inf") >= 1
    assert sum(sample(m, "eventstore_partition_log_end_offset", topic="orders", partition=str(p))
               for p in range(3)) == 30
    assert sample(m, "eventstore_partition_log_start_offset", topic="orders", partition="0") == 0
    assert sample(m, "eventstore_partition_size_bytes", topic="orders", partition="0") > 0
    assert sample(m, "eventstore_append_duration_seconds_count") >= 3  # one per batch at least
    assert sample(m, "eventstore_fsync_duration_seconds_bucket", le="+Inf") >= 1
    assert sample(m, "eventstore_fsync_records_sum") == 30  # every record made durable by one fsync
    assert sample(m, "eventstore_connections_opened_total", listener="PLAINTEXT") >= 2
    assert sample(m, "eventstore_replication_role", role="leader") == 1


def test_request_errors_are_counted_per_api_and_error(tmp_path: Path) -> None:
    with served_http(tmp_path) as (store, bootstrap, address):
        store.create_topic("small", partitions=1, max_record_bytes=100)
        producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 3000})
        producer.produce("small", b"x" * 1000)
        producer.flush(TIMEOUT_S)
        m = scrape(address)
    assert sample(m, "eventstore_request_errors_total", api="Produce", error="MESSAGE_TOO_LARGE") >= 1
    assert sample(m, "eventstore_requests_total", api="Metadata") >= 1


def test_failed_authentication_is_counted(tmp_path: Path) -> None:
    sasl = ["SASL_PLAINTEXT://127.0.0.1:0"]
    with eventstore.open(tmp_path / "store") as store, \
            store.serve("127.0.0.1:0", listeners=sasl, http="127.0.0.1:0") as handle:
        assert handle.http_address is not None
        address = f"127.0.0.1:{handle.http_address[1]}"
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{handle.listeners['SASL_PLAINTEXT'][1]}",
                             "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                             "sasl.username": "nobody", "sasl.password": "wrong"})
        labels = (("listener", "SASL_PLAINTEXT"), ("mechanism", "PLAIN"))
        failures = ("eventstore_authentication_failures_total", labels)
        deadline = time.monotonic() + TIMEOUT_S
        m = scrape(address)
        while not m.get(failures) and time.monotonic() < deadline:  # bounded by the deadline
            producer.poll(0.1)
            m = scrape(address)
    assert m.get(failures, 0) >= 1


def test_consumer_group_lag_gauge(tmp_path: Path) -> None:
    with served_http(tmp_path) as (store, _bootstrap, address):
        store.create_topic("events", partitions=2)
        for i in range(10):
            store.append("events", b"e", partition=i % 2)
        store.reset_group_offsets("billing", {TopicPartition("events", 0): 2, TopicPartition("events", 1): 5})
        m = scrape(address)
    lag = "eventstore_consumer_group_lag_records"
    assert sample(m, lag, group="billing", topic="events", partition="0") == 3
    assert sample(m, lag, group="billing", topic="events", partition="1") == 0


def test_scrape_of_1000_partitions_takes_at_most_100_ms(tmp_path: Path) -> None:
    with served_http(tmp_path) as (store, _bootstrap, address):
        for t in range(10):
            store.create_topic(f"t{t}", partitions=100)
            for p in range(100):
                store.append(f"t{t}", b"x", partition=p)
        store.reset_group_offsets("g", {TopicPartition("t0", p): 0 for p in range(100)})
        timings = []
        for _ in range(5):  # the best of five: the machine is shared
            started = time.perf_counter()
            status, body = get(address, "/metrics")
            timings.append(time.perf_counter() - started)
            assert status == 200
    m = parse(body)
    ends = [v for (name, _), v in m.items() if name == "eventstore_partition_log_end_offset"]
    assert len(ends) == 1000 and set(ends) == {1}
    assert min(timings) <= 0.100, f"scrapes took {[round(t * 1000) for t in timings]} ms"


def test_health_readiness_and_routes(tmp_path: Path) -> None:
    async def hello(request: Any) -> HttpResponse:
        return HttpResponse.json({"path": request.path, "q": request.query.get("x")})

    add_route("GET", "/test-hello", hello)
    with served_http(tmp_path) as (_store, _bootstrap, address):
        assert get(address, "/healthz") == (200, b"ok\n")
        assert get(address, "/readyz") == (200, b"ready\n")
        assert get(address, "/nothing-here")[0] == 404
        assert get(address, "/metrics", method="POST")[0] == 405
        status, body = get(address, "/test-hello/a%20b?x=1")
    assert status == 200 and json.loads(body) == {"path": "/test-hello/a b", "q": ["1"]}


def test_a_follower_not_caught_up_is_not_ready(tmp_path: Path) -> None:
    gone = "127.0.0.1:1"  # a follower of a leader nobody serves: it never catches up
    with served_http(tmp_path, replica_of=gone, node_id=2) as (_store, _bootstrap, address):
        assert get(address, "/healthz")[0] == 200
        status, body = get(address, "/readyz")
    assert status == 503 and b"not caught up" in body


def test_json_logs_connection_lines_and_slow_requests(tmp_path: Path) -> None:
    with es_serve(tmp_path / "store", "--log-format", "json", "--slow-request-ms", "1",
                  "--http", "127.0.0.1:0") as proc:
        consumer = Consumer({"bootstrap.servers": proc.bootstrap, "group.id": "g", "fetch.wait.max.ms": 50})
        consumer.list_topics(timeout=TIMEOUT_S)
        consumer.close()
        assert proc.stop() == 0
        stderr = proc.stderr
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    events = [line.get("event") for line in lines]
    assert "connection_open" in events and "connection_closed" in events
    opened = next(line for line in lines if line.get("event") == "connection_open")
    assert opened["principal"] == "User:ANONYMOUS" and opened["listener"] == "PLAINTEXT"
    assert opened["client"].startswith("127.0.0.1:")
    assert any(line.get("event") == "slow_request" and line["ms"] >= 1 for line in lines)


def test_json_formatter_keeps_extra_fields() -> None:
    import logging

    record = logging.LogRecord("eventstore.server", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    record.client = "127.0.0.1:5"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello there" and line["client"] == "127.0.0.1:5" and line["level"] == "info"


def test_embedded_store_metrics_and_registry(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "store") as store:
        store.create_topic("t", partitions=2)
        store.append_batch("t", [b"a", b"b", b"c"], partition=1)
        store.reset_group_offsets("g", {TopicPartition("t", 1): 1})
        figures = store.metrics()
        registry = CollectorRegistry()
        figures_again = store.metrics(registry=registry)
        text = generate_latest(registry).decode()
    assert [(p.topic, p.partition, p.end_offset) for p in figures.partitions] == [("t", 0, 0), ("t", 1, 3)]
    assert [(g.group, g.partition, g.lag) for g in figures.group_lag] == [("g", 0, 0), ("g", 1, 2)]
    assert figures.append_seconds.count == 1 and figures.records_per_fsync.sum == 3
    assert figures_again.statistics.records == 3
    parsed = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "eventstore_appended_records_total"}
    assert parsed == {"eventstore_appended_records_total": 3}


def test_http_address_in_use_is_a_server_error(tmp_path: Path) -> None:
    with served_http(tmp_path / "a") as (_store, _bootstrap, address), \
            eventstore.open(tmp_path / "b") as other, pytest.raises(eventstore.EventStoreError, match="HTTP"):
        other.serve("127.0.0.1:0", http=address)
