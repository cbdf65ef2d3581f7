"""Client quotas (docs/operations.md, "Quotas"): Kafka's entity precedence, the windowed
rate and its throttle, a greedy producer and a consumer held to their byte rates while
another client is not slowed, throttle_time_ms in responses, connections per address,
and DescribeClientQuotas / AlterClientQuotas kept in the catalog across a restart.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer
from kio.index import load_request_schema
from serverkit import RawClient, served

from eventstore.server.config import ServerConfig
from eventstore.server.entities import entity, item_class
from eventstore.server.quotas import QuotaError, Quotas, Rate

NONE, INVALID_REQUEST = 0, 42
API_VERSIONS = 18
WINDOW = {"quota_window_num": 5, "quota_window_size_ms": 200}  # rates over about one second
LONG_WINDOW = {"quota_window_num": 10, "quota_window_size_ms": 200}


def _quotas(stored: dict[Any, dict[str, float]], **config: Any) -> Quotas:
    quotas = Quotas(ServerConfig(**config), None)
    quotas.apply(stored)
    return quotas


# --- the model ------------------------------------------------------------------------------


def test_precedence_is_kafkas_and_usage_is_kept_per_matched_entity() -> None:
    quotas = _quotas({
        (("user", "alice"),): {"producer_byte_rate": 100.0},
        (("client-id", "app"), ("user", "alice")): {"producer_byte_rate": 50.0},
        (("client-id", None),): {"consumer_byte_rate": 7.0},
        (("user", None),): {"request_percentage": 20.0},
    }, quota_default_producer_bytes=1000)
    assert quotas.bound("producer_byte_rate", "alice", "app") == (50.0, "alice", "app")
    assert quotas.bound("producer_byte_rate", "alice", "other") == (100.0, "alice", "")  # shared by alice
    assert quotas.bound("producer_byte_rate", "bob", "x") == (1000.0, "", "x")  # the configured default
    assert quotas.bound("consumer_byte_rate", "bob", "x") == (7.0, "", "x")  # each client id its own
    assert quotas.bound("request_percentage", "bob", "x") == (20.0, "bob", "")  # each user its own
    assert _quotas({}).bound("producer_byte_rate", "bob", "x") is None


def test_rate_and_throttle_follow_the_window() -> None:
    rate = Rate(5, 1.0)
    rate.record(400, now=100.0)
    assert rate.measure(100.0) == pytest.approx(100.0)  # over at least num - 1 samples
    rate.record(600, now=104.5)
    assert rate.measure(104.5) == pytest.approx(1000 / 4.5)
    assert rate.measure(105.0) == pytest.approx(600 / 4.0)  # the first sample left the window
    quotas = _quotas({(("client-id", "c"),): {"producer_byte_rate": 100.0}}, quota_window_num=5,
                     quota_window_size_ms=1000)
    assert quotas.charge("User:ANONYMOUS", "c", produced=300, now=10.0) == 0  # 75 B/s
    # 900 bytes over 4 s is 225 B/s: (225 - 100) / 100 * 4 s = 5 s
    assert quotas.charge("User:ANONYMOUS", "c", produced=600, now=10.1) == 5000
    assert quotas.charge("User:ANONYMOUS", "other", produced=10**6, now=10.2) == 0


def test_alter_checks_keys_values_and_entities() -> None:
    quotas = _quotas({})
    entity_ = (("user", "alice"),)
    ops = [("producer_byte_rate", 1024, False), ("request_percentage", 12.5, False)]
    assert quotas.altered(entity_, ops) == {"producer_byte_rate": 1024.0, "request_percentage": 12.5}
    for ops in ([("controller_mutation_rate", 1, False)], [("producer_byte_rate", 1.5, False)],
                [("consumer_byte_rate", 0, False)], [("request_percentage", float("nan"), False)]):
        with pytest.raises(QuotaError):
            quotas.altered(entity_, ops)
    for bad in ((("ip", "1.2.3.4"),), (("user", "a"), ("user", "b")), ()):
        with pytest.raises(QuotaError):
            quotas.altered(bad, [])


# --- over the wire ---------------------------------------------------------------------------


def _alter(raw: RawClient, entries: list[tuple[dict[str, str | None], list[tuple[str, float, bool]]]],
           validate_only: bool = False, version: int = 1) -> list[tuple[int, str | None]]:
    cls = load_request_schema(49, version)
    entry_cls = item_class(cls, "entries")
    entity_cls, op_cls = item_class(entry_cls, "entity"), item_class(entry_cls, "ops")
    request = entity(cls, validate_only=validate_only, entries=tuple(
        entity(entry_cls,
               entity=tuple(entity(entity_cls, entity_type=t, entity_name=n) for t, n in named.items()),
               ops=tuple(entity(op_cls, key=k, value=v, remove=r) for k, v, r in ops))
        for named, ops in entries))
    answer = raw.call(request)
    return [(int(e.error_code), e.error_message) for e in answer.entries]


def _describe(raw: RawClient, components: list[tuple[str, int, str | None]], strict: bool = False,
              version: int = 1) -> Any:
    cls = load_request_schema(48, version)
    component_cls = item_class(cls, "components")
    answer = raw.call(entity(cls, strict=strict, components=tuple(
        entity(component_cls, entity_type=t, match_type=m, match=n) for t, m, n in components)))
    if answer.entries is None:
        return int(answer.error_code)
    return sorted(((tuple((e.entity_type, e.entity_name) for e in entry.entity),
                    {v.key: v.value for v in entry.values}) for entry in answer.entries), key=repr)


def test_alter_and_describe_round_trip_and_survive_a_restart(tmp_path: Path) -> None:
    with served(tmp_path) as (_store, bootstrap), RawClient(bootstrap) as raw:
        answered = _alter(raw, [
            ({"user": "alice"}, [("producer_byte_rate", 1024, False), ("request_percentage", 50, False)]),
            ({"user": "alice", "client-id": "app"}, [("consumer_byte_rate", 2048, False)]),
            ({"client-id": None}, [("producer_byte_rate", 4096, False)]),
            ({"user": "bob"}, [("no_such_quota", 1, False)]),
        ])
        assert [code for code, _ in answered] == [NONE, NONE, NONE, INVALID_REQUEST]
        assert _describe(raw, [("user", 0, "alice")]) == [
            ((("client-id", "app"), ("user", "alice")), {"consumer_byte_rate": 2048.0}),
            ((("user", "alice"),), {"producer_byte_rate": 1024.0, "request_percentage": 50.0})]
        assert _describe(raw, [("user", 0, "alice")], strict=True) == [
            ((("user", "alice"),), {"producer_byte_rate": 1024.0, "request_percentage": 50.0})]
        assert _describe(raw, [("client-id", 1, None)]) == [
            ((("client-id", None),), {"producer_byte_rate": 4096.0})]
        assert len(_describe(raw, [("client-id", 2, None)])) == 2
        assert _describe(raw, [("ip", 2, None)]) == INVALID_REQUEST
        assert _describe(raw, [("user", 0, "bob")]) == []  # its entry was refused: nothing stored
        assert _alter(raw, [({"client-id": None}, [("producer_byte_rate", 1, False)])], validate_only=True) \
            == [(NONE, None)]
        removed = _alter(raw, [({"user": "alice"}, [("request_percentage", 0, True)])], version=0)
        assert removed == [(NONE, None)]
    with served(tmp_path) as (_store, bootstrap), RawClient(bootstrap) as raw:
        assert _describe(raw, [], version=0) == sorted([
            ((("client-id", None),), {"producer_byte_rate": 4096.0}),
            ((("client-id", "app"), ("user", "alice")), {"consumer_byte_rate": 2048.0}),
            ((("user", "alice"),), {"producer_byte_rate": 1024.0})], key=repr)
        assert _alter(raw, [({"client-id": None}, [("producer_byte_rate", 0, True)])]) == [(NONE, None)]
        assert _describe(raw, [("client-id", 1, None)]) == []


def test_refused_alter_entries_say_why(tmp_path: Path) -> None:
    with served(tmp_path) as (_store, bootstrap), RawClient(bootstrap) as raw:
        (ip,), (key,) = (_alter(raw, [({"ip": "127.0.0.1"}, [("connection_creation_rate", 5, False)])]),
                         _alter(raw, [({"user": "bob"}, [("no_such_quota", 1, False)])]))
    assert ip[0] == INVALID_REQUEST and "entity" in (ip[1] or "")
    assert key[0] == INVALID_REQUEST and "no_such_quota" in (key[1] or "")


def _fetch(topic: str, offset: int) -> Any:
    cls = load_request_schema(1, 11)
    topic_cls = item_class(cls, "topics")
    part = entity(item_class(topic_cls, "partitions"), partition=0, fetch_offset=offset,
                  partition_max_bytes=1 << 20)
    return entity(cls, max_wait=0, min_bytes=0, max_bytes=1 << 20, forgotten_topics_data=(),
                  topics=(entity(topic_cls, topic=topic, partitions=(part,)),))


def test_throttle_time_is_answered_and_the_connection_waits(tmp_path: Path) -> None:
    with served(tmp_path, quota_default_consumer_bytes=50_000, **WINDOW) as (store, bootstrap), \
            RawClient(bootstrap) as raw:
        store.create_topic("t")
        for _ in range(100):
            store.append("t", b"x" * 1000)
        first = raw.call(_fetch("t", 0), correlation_id=1)  # about 107 kB of batches
        throttle_ms = first.throttle_time.total_seconds() * 1000
        # over the shortest window (4 samples of 0.2 s) that is 134 kB/s: (134 - 50) / 50 * 0.8 s
        assert 1200 <= throttle_ms <= 1500, throttle_ms
        started = time.monotonic()
        second = raw.call(_fetch("t", 100), correlation_id=2)
        waited = time.monotonic() - started
        assert waited >= throttle_ms / 1000 * 0.9  # the server read nothing before the throttle passed
        assert second.responses[0].partitions[0].records in (None, b"")


def test_max_connections_per_ip_refuses_the_extra_connection(tmp_path: Path) -> None:
    with served(tmp_path, max_connections_per_ip=2) as (_store, bootstrap), \
            RawClient(bootstrap) as first, RawClient(bootstrap) as second:
        for client in (first, second):
            client.request(API_VERSIONS, 0, 1, b"")
            assert client.response() is not None
        with RawClient(bootstrap) as third:
            assert third.closed_by_server()
        second.close()
        deadline = time.monotonic() + 5
        while True:  # the server learns of the close on its next read; bounded by the deadline
            with RawClient(bootstrap) as again:
                again.request(API_VERSIONS, 0, 2, b"")
                if again.response() is not None:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)


# --- real clients ----------------------------------------------------------------------------


def _polite_latencies(bootstrap: str, stop: threading.Event, out: list[float]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": "polite", "linger.ms": 0})
    try:
        while not stop.is_set():  # bounded by the caller's stop
            started = time.monotonic()
            producer.produce("polite", b"p" * 100)
            producer.flush(10)
            out.append(time.monotonic() - started)
            time.sleep(0.05)
    finally:
        producer.flush(5)


def test_greedy_producer_is_held_to_its_quota_and_another_client_is_not(tmp_path: Path) -> None:
    quota = 200_000
    with served(tmp_path, **LONG_WINDOW) as (store, bootstrap), RawClient(bootstrap) as raw:
        store.create_topic("greedy")
        store.create_topic("polite")
        set_ = _alter(raw, [({"client-id": "greedy"}, [("producer_byte_rate", quota, False)])])
        assert set_ == [(NONE, None)]
        acked: list[tuple[float, int]] = []
        producer = Producer({"bootstrap.servers": bootstrap, "client.id": "greedy", "linger.ms": 5,
                             "batch.size": 32 * 1024, "queue.buffering.max.kbytes": 1024, "acks": 1})
        latencies: list[float] = []
        stop = threading.Event()
        polite = threading.Thread(target=_polite_latencies, args=(bootstrap, stop, latencies))
        polite.start()
        try:
            started = time.monotonic()
            value = b"g" * 1000
            while time.monotonic() - started < 6:  # bounded: six seconds
                try:
                    producer.produce("greedy", value, on_delivery=lambda err, msg: acked.append(
                        (time.monotonic(), len(msg.value() or b""))) if err is None else None)
                except BufferError:
                    producer.poll(0.01)
                producer.poll(0)
        finally:
            stop.set()
            polite.join(20)
            producer.flush(15)
    window = [n for at, n in acked if started + 2 <= at < started + 6]
    measured = sum(window) / 4
    assert 0.8 * quota <= measured <= 1.2 * quota, measured
    assert latencies and statistics.median(latencies) < 0.2, latencies


def test_consumer_is_held_to_its_fetch_quota(tmp_path: Path) -> None:
    quota = 150_000
    with served(tmp_path, quota_default_consumer_bytes=quota, **LONG_WINDOW) as (store, bootstrap):
        store.create_topic("data")
        for _ in range(200):  # batches of 10 kB: a Fetch returns whole batches
            store.append_batch("data", [b"d" * 1000] * 10)
        consumer = KafkaConsumer("data", bootstrap_servers=bootstrap, client_id="reader",
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 max_partition_fetch_bytes=32 * 1024, fetch_max_wait_ms=100)
        got: list[tuple[float, int]] = []
        try:
            started = time.monotonic()
            while time.monotonic() - started < 6:  # bounded: six seconds
                for records in consumer.poll(timeout_ms=200).values():
                    got.extend((time.monotonic(), len(r.value)) for r in records)
        finally:
            consumer.close()
    window = [n for at, n in got if started + 2 <= at < started + 6]
    measured = sum(window) / 4
    assert 0.8 * quota <= measured <= 1.2 * quota, measured
