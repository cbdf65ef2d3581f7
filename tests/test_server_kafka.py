"""The server's own APIs against real Kafka clients (kafka-python, aiokafka, confluent-kafka),
and, where a client hides a field, exact requests built with kio's classes.

Records are appended embedded and read over the wire: headers, null keys and values,
timestamps must come back byte for byte.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaTP
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kio.index import load_request_schema
from serverkit import RawClient, served

import eventstore
from eventstore.server.entities import entity, item_class
from eventstore.wire.batch import decode_records, encode_batch, parse_header

TIMEOUT_S = 10.0
NONE, OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION = 0, 1, 3
TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR, INVALID_CONFIG = 36, 37, 38, 40
FETCH_SESSION_ID_NOT_FOUND, UNKNOWN_TOPIC_ID = 70, 100

ROWS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int]] = [
    (b"k1", b"v1", [("trace", b"\x00\x01"), ("trace", b"dup")], 1_700_000_000_000),
    (None, b"no key", [], 1_700_000_000_005),
    (b"tombstone", None, [("h", b"")], 1_700_000_000_003),  # timestamps need not grow
    (b"", b"", [], 1_700_000_000_010),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[eventstore.Store, str]]:
    with served(tmp_path) as pair:
        yield pair


def _request(api_key: int, version: int, **fields: Any) -> Any:
    return entity(load_request_schema(api_key, version), **fields)


def _fill(store: eventstore.Store, topic: str = "orders") -> None:
    store.create_topic(topic, partitions=2)
    for key, value, headers, ts in ROWS:
        store.append(topic, value, key=key, headers=headers, partition=0, timestamp_ms=ts)


def _fetch_request(version: int, topic: str | uuid.UUID, offset: int = 0, partition: int = 0,
                   max_wait_ms: int = 0, min_bytes: int = 0, max_bytes: int = 50 << 20,
                   partition_max_bytes: int = 1 << 20, **extra: Any) -> Any:
    cls = load_request_schema(1, version)
    topic_cls = item_class(cls, "topics")
    partition_cls = item_class(topic_cls, "partitions")
    part = entity(partition_cls, partition=partition, fetch_offset=offset,
                  partition_max_bytes=partition_max_bytes)
    named = {"topic_id": topic} if isinstance(topic, uuid.UUID) else {"topic": topic}
    return entity(cls, max_wait=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
                  topics=(entity(topic_cls, partitions=(part,), **named),), forgotten_topics_data=(), **extra)


# --- metadata, cluster, coordinator ------------------------------------------------------------


def test_metadata_and_cluster_name_this_broker(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("orders", partitions=3)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        assert admin.list_topics() == ["orders"]
        (described,) = admin.describe_topics(["orders"])
        assert [p["leader_id"] for p in described["partitions"]] == [0, 0, 0]
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    port = int(bootstrap.rsplit(":", 1)[1])
    assert cluster["brokers"] == [{"broker_id": 0, "host": "127.0.0.1", "port": port, "rack": None}]
    assert cluster["controller_id"] == 0
    assert cluster["cluster_id"] == (Path(store.path) / "cluster.id").read_text().strip()
    with RawClient(bootstrap) as raw:
        answer = raw.call(_request(3, 12, topics=None, allow_auto_topic_creation=False))
    (topic,) = answer.topics
    assert topic.topic_id == store.topic("orders").topic_id and len(topic.partitions) == 3


def test_metadata_by_id_and_unknown_names(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("orders")
    cls = load_request_schema(3, 12)
    item = item_class(cls, "topics")
    asked = (entity(item, name=None, topic_id=store.topic("orders").topic_id),
             entity(item, name=None, topic_id=uuid.uuid4()),
             entity(item, name="missing", topic_id=None))
    with RawClient(bootstrap) as raw:
        answer = raw.call(entity(cls, topics=asked, allow_auto_topic_creation=True))
    assert [(t.name, t.error_code) for t in answer.topics] == [
        ("orders", NONE), (None, UNKNOWN_TOPIC_ID), ("missing", UNKNOWN_TOPIC_OR_PARTITION)]
    assert store.log.find_topic("missing") is None  # the server does not auto-create by default


def test_auto_create_topics_when_enabled(tmp_path: Path) -> None:
    with served(tmp_path, auto_create_topics=True) as (store, bootstrap), RawClient(bootstrap) as raw:
        cls = load_request_schema(3, 9)
        item = item_class(cls, "topics")
        refused = raw.call(entity(cls, topics=(entity(item, name="quiet"),), allow_auto_topic_creation=False))
        made = raw.call(entity(cls, topics=(entity(item, name="made"),), allow_auto_topic_creation=True))
        assert refused.topics[0].error_code == UNKNOWN_TOPIC_OR_PARTITION
        assert made.topics[0].error_code == NONE and len(made.topics[0].partitions) == 1
        assert store.log.find_topic("made") is not None and store.log.find_topic("quiet") is None


@pytest.mark.parametrize("version", [0, 3, 4, 6])
def test_find_coordinator_is_this_node(server: tuple[eventstore.Store, str], version: int) -> None:
    _store, bootstrap = server
    port = int(bootstrap.rsplit(":", 1)[1])
    with RawClient(bootstrap) as raw:
        if version >= 4:
            answer = raw.call(_request(10, version, key_type=0, coordinator_keys=("g1", "g2")))
            assert [(c.key, c.node_id, c.port, c.error_code) for c in answer.coordinators] == [
                ("g1", 0, port, NONE), ("g2", 0, port, NONE)]
        else:
            answer = raw.call(_request(10, version, key="g1"))
            got = (answer.node_id, answer.host, answer.port, answer.error_code)
            assert got == (0, "127.0.0.1", port, NONE)


# --- topics and configs -------------------------------------------------------------------------


def test_create_topics_maps_configs_and_refuses_what_one_broker_cannot(
        server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        admin.create_topics([NewTopic("orders", 3, 1, topic_configs={
            "retention.ms": "60000", "segment.bytes": "1048576", "max.message.bytes": "2000",
            "retention.bytes": "-1"})])
        admin.create_topics([NewTopic("checked", 2, 1)], validate_only=True)
        admin.create_partitions({"orders": NewPartitions(5)})
    finally:
        admin.close()
    cfg = store.topic("orders")
    got = (cfg.partitions, cfg.retention_ms, cfg.segment_bytes, cfg.max_record_bytes, cfg.retention_bytes)
    assert got == (5, 60000, 1048576, 2000, None)
    assert store.log.find_topic("checked") is None
    cls = load_request_schema(19, 7)
    item = item_class(cls, "topics")
    config = item_class(item, "configs")
    asked = (entity(item, name="orders", num_partitions=1, replication_factor=1, assignments=(), configs=()),
             entity(item, name="wide", num_partitions=1, replication_factor=3, assignments=(), configs=()),
             entity(item, name="none", num_partitions=0, replication_factor=1, assignments=(), configs=()),
             entity(item, name="odd", num_partitions=1, replication_factor=1, assignments=(),
                    configs=(entity(config, name="compression.type", value="zstd"),)),
             entity(item, name="low", num_partitions=1, replication_factor=1, assignments=(),
                    configs=(entity(config, name="segment.bytes", value="12"),)))
    with RawClient(bootstrap) as raw:
        answer = raw.call(entity(cls, topics=asked, validate_only=False))
    assert [(t.name, t.error_code) for t in answer.topics] == [
        ("orders", TOPIC_ALREADY_EXISTS), ("wide", INVALID_REPLICATION_FACTOR), ("none", INVALID_PARTITIONS),
        ("odd", INVALID_CONFIG), ("low", INVALID_CONFIG)]
    assert [c.name for c in store.topics()] == ["orders"]


def test_delete_topics_by_name_and_id_and_shrinking_partitions(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("a", partitions=2)
    b = store.create_topic("b")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        admin.delete_topics(["a"])
    finally:
        admin.close()
    assert store.log.find_topic("a") is None
    cls = load_request_schema(20, 6)
    item = item_class(cls, "topics")
    with RawClient(bootstrap) as raw:
        by_id = raw.call(entity(cls, topics=(entity(item, name=None, topic_id=b.topic_id),
                                             entity(item, name=None, topic_id=uuid.uuid4()),
                                             entity(item, name="gone", topic_id=None)), timeout=1000))
        assert [(r.name, r.error_code) for r in by_id.responses] == [
            ("b", NONE), (None, UNKNOWN_TOPIC_ID), ("gone", UNKNOWN_TOPIC_OR_PARTITION)]
        store.create_topic("c", partitions=3)
        grow = load_request_schema(37, 3)
        grow_item = item_class(grow, "topics")
        answer = raw.call(entity(grow, topics=(entity(grow_item, name="c", count=2, assignments=None),
                                               entity(grow_item, name="c", count=3, assignments=None)),
                                 timeout=1000, validate_only=False))
        assert [r.error_code for r in answer.results] == [INVALID_PARTITIONS, INVALID_PARTITIONS]
    assert store.topic("c").partitions == 3 and store.topics() == [store.topic("c")]


def test_describe_and_alter_configs(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("orders", retention_ms=1000, segment_bytes=2 << 20)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "orders")],
                                           config_filter="all")
        topic = described["topic"]["orders"]
        assert topic["retention.ms"]["value"] == "1000"
        assert topic["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert topic["max.message.bytes"]["config_source"] == "DEFAULT_CONFIG"
        assert topic["cleanup.policy"]["read_only"] is True
        broker = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "0")], config_filter="all")
        assert broker["broker"]["0"]["auto.create.topics.enable"]["value"] == "false"
        # AlterConfigs: the client sends the other dynamic configs along, as the set is replaced
        resource = ConfigResource(ConfigResourceType.TOPIC, "orders", configs={"segment.ms": "60000"})
        admin.alter_configs([resource], incremental=False)
    finally:
        admin.close()
    cfg = store.topic("orders")
    assert (cfg.segment_ms, cfg.retention_ms, cfg.segment_bytes) == (60000, 1000, 2 << 20)
    replace = load_request_schema(33, 2)
    replaced = item_class(replace, "resources")
    setting = item_class(replaced, "configs")
    with RawClient(bootstrap) as raw:  # what is not named goes back to its default
        answer = raw.call(entity(replace, validate_only=False, resources=(entity(
            replaced, resource_type=2, resource_name="orders",
            configs=(entity(setting, name="retention.bytes", value="9000000"),)),)))
    assert answer.responses[0].error_code == NONE
    cfg = store.topic("orders")
    assert (cfg.retention_bytes, cfg.segment_ms, cfg.retention_ms, cfg.segment_bytes) == (
        9000000, 7 * 24 * 3600 * 1000, None, 128 << 20)
    inc = load_request_schema(44, 1)
    resource = item_class(inc, "resources")
    change = item_class(resource, "configs")
    with RawClient(bootstrap) as raw:
        answer = raw.call(entity(inc, validate_only=False, resources=(
            entity(resource, resource_type=2, resource_name="orders", configs=(
                entity(change, name="retention.bytes", config_operation=0, value="5000000"),
                entity(change, name="retention.ms", config_operation=0, value="70000"),
                entity(change, name="segment.ms", config_operation=1, value=None))),
            entity(resource, resource_type=2, resource_name="orders", configs=(
                entity(change, name="cleanup.policy", config_operation=2, value="compact"),)),
            entity(resource, resource_type=4, resource_name="0", configs=(
                entity(change, name="num.partitions", config_operation=0, value="3"),)),
        )))
    assert [r.error_code for r in answer.responses] == [NONE, INVALID_CONFIG, INVALID_CONFIG]
    cfg = store.topic("orders")
    assert (cfg.retention_bytes, cfg.retention_ms, cfg.segment_ms) == (5000000, 70000, 7 * 24 * 3600 * 1000)


def test_describe_log_dirs(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    _fill(store)
    with RawClient(bootstrap) as raw:
        answer = raw.call(_request(35, 4, topics=None))
    (result,) = answer.results
    assert result.log_dir == str(Path(store.path).resolve()) and result.total_bytes > 0
    (topic,) = result.topics
    sizes = {p.partition_index: p.partition_size for p in topic.partitions}
    assert sizes[0] == store.log.partition("orders", 0).size_bytes() > 0 and sizes[1] == 0


# --- offsets -------------------------------------------------------------------------------------


def test_list_offsets_ends_times_and_max_timestamp(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    _fill(store)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        tp = KafkaTP("orders", 0)
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 4}
        found = consumer.offsets_for_times({tp: 1_700_000_000_004})[tp]
        assert found is not None and (found.offset, found.timestamp) == (1, 1_700_000_000_005)
        assert consumer.offsets_for_times({tp: 1_800_000_000_000})[tp] is None
    finally:
        consumer.close()
    cls = load_request_schema(2, 9)
    topic = item_class(cls, "topics")
    part = item_class(topic, "partitions")
    with RawClient(bootstrap) as raw:
        answer = raw.call(entity(cls, replica_id=-1, isolation_level=1, topics=(
            entity(topic, name="orders", partitions=(
                entity(part, partition_index=0, timestamp=-3), entity(part, partition_index=1, timestamp=-3),
                entity(part, partition_index=7, timestamp=-1))),)))
    got = [(p.partition_index, p.error_code, p.offset, p.timestamp) for p in answer.topics[0].partitions]
    assert got == [(0, NONE, 3, 1_700_000_000_010), (1, NONE, -1, -1),
                   (7, UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]


def test_log_delete_records_deletes_whole_segments_below_the_log_start(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t", segment_bytes=4096)
        for _ in range(20):  # one batch each, four to a segment
            store.append("t", b"x" * 1000)
        bases = [s.base_offset for s in store.log.partition("t", 0).segments()]
        assert len(bases) > 2
        assert store.log.delete_records("t", 0, bases[2]) == bases[2]
        assert store.log.delete_records("t", 0, bases[2] + 1) == bases[2] + 1  # mid-segment: exactly there
        assert store.log.partition("t", 0).segments()[0].base_offset == bases[2]  # that segment stays
        with pytest.raises(eventstore.OffsetOutOfRangeError):
            store.log.delete_records("t", 0, 21)
        assert store.log.delete_records("t", 0, 20) == 20  # the end: the active segment rolls and goes
        assert store.offsets("t", 0) == (20, 20) and store.read("t", 0, 20) == []
        store.append("t", b"after")
        assert [r.value for r in store.read("t", 0, 20)] == [b"after"]
        assert store.check().ok


def test_delete_records_over_the_wire(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("t", segment_bytes=4096)
        for _ in range(12):
            store.append("t", b"x" * 1000)
        cls = load_request_schema(21, 2)
        topic = item_class(cls, "topics")
        part = item_class(topic, "partitions")
        with RawClient(bootstrap) as raw:
            answer = raw.call(entity(cls, timeout=1000, topics=(
                entity(topic, name="t", partitions=(entity(part, partition_index=0, offset=-1),
                                                    entity(part, partition_index=3, offset=0))),
                entity(topic, name="nope", partitions=(entity(part, partition_index=0, offset=0),)))))
        got = [(t.name, p.partition_index, p.low_watermark, p.error_code)
               for t in answer.topics for p in t.partitions]
        assert got == [("t", 0, 12, NONE), ("t", 3, -1, UNKNOWN_TOPIC_OR_PARTITION),
                       ("nope", 0, -1, UNKNOWN_TOPIC_OR_PARTITION)]
        assert store.offsets("t", 0) == (12, 12)


# --- fetch ---------------------------------------------------------------------------------------


def _records(data: bytes) -> list[Any]:
    """Every record of every v2 batch in ``data``."""
    out: list[Any] = []
    position = 0
    while position < len(data):  # one batch per pass
        size = parse_header(data, position).size
        out += decode_records(data[position:position + size])
        position += size
    return out


def _expected() -> list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    return [(i, ts, key, value, headers) for i, (key, value, headers, ts) in enumerate(ROWS)]


def test_kafka_python_reads_embedded_records_byte_for_byte(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    _fill(store)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=3000, request_timeout_ms=5000)
    try:
        consumer.assign([KafkaTP("orders", 0)])
        consumer.seek_to_beginning()
        got = [(m.offset, m.timestamp, m.key, m.value, list(m.headers)) for m in consumer]
    finally:
        consumer.close()
    assert got == _expected()


def test_aiokafka_reads_embedded_records_byte_for_byte(server: tuple[eventstore.Store, str]) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as AioTP

    store, bootstrap = server
    _fill(store)

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = AioTP("orders", 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            out: list[Any] = []
            deadline = time.monotonic() + TIMEOUT_S
            while len(out) < len(ROWS) and time.monotonic() < deadline:  # bounded by the deadline
                batch = await consumer.getmany(tp, timeout_ms=500)
                out += batch.get(tp, [])
            return [(m.offset, m.timestamp, m.key, m.value, list(m.headers)) for m in out]
        finally:
            await consumer.stop()

    assert asyncio.run(read()) == _expected()


def test_confluent_kafka_reads_embedded_records_byte_for_byte(server: tuple[eventstore.Store, str]) -> None:
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as ConfluentTP

    store, bootstrap = server
    _fill(store)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 200})
    try:
        consumer.assign([ConfluentTP("orders", 0, 0)])
        got: list[Any] = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < len(ROWS) and time.monotonic() < deadline:  # bounded by the deadline
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message)
        rows = [(m.offset(), m.timestamp()[1], m.key(), m.value(), list(m.headers() or [])) for m in got]
        assert rows == _expected()
        assert consumer.get_watermark_offsets(ConfluentTP("orders", 0), timeout=5) == (0, 4)
    finally:
        consumer.close()


def test_long_poll_is_woken_by_an_embedded_append(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("orders")
    timer = threading.Timer(0.3, lambda: store.append("orders", b"late"))
    with RawClient(bootstrap, timeout_s=TIMEOUT_S) as raw:
        started = time.monotonic()
        timer.start()
        try:
            answer = raw.call(_fetch_request(12, "orders", max_wait_ms=8000, min_bytes=1))
        finally:
            timer.join()
        waited = time.monotonic() - started
        part = answer.responses[0].partitions[0]
        assert part.error_code == NONE and part.high_watermark == 1
        assert [r[3] for r in decode_records(part.records)] == [b"late"]
        assert 0.25 <= waited < 5, waited
        started = time.monotonic()  # nothing comes: the wait ends at max_wait_ms
        answer = raw.call(_fetch_request(12, "orders", offset=1, max_wait_ms=300, min_bytes=1))
        assert answer.responses[0].partitions[0].records in (b"", None)
        assert 0.25 <= time.monotonic() - started < 5


def test_fetch_byte_bounds_give_the_first_partition_one_batch_whole(
        server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("big", partitions=2)
    for p in (0, 1):
        store.append_batch("big", [b"a" * 3000, b"b" * 3000], partition=p)  # one batch of ~6 KB each
        store.append_batch("big", [b"c" * 3000], partition=p)
    cls = load_request_schema(1, 11)
    topic = item_class(cls, "topics")
    part = item_class(topic, "partitions")
    request = entity(cls, max_wait=0, min_bytes=0, max_bytes=100, forgotten_topics_data=(), topics=(
        entity(topic, topic="big", partitions=(
            entity(part, partition=0, fetch_offset=0, partition_max_bytes=10),
            entity(part, partition=1, fetch_offset=0, partition_max_bytes=10))),))
    with RawClient(bootstrap) as raw:
        answer = raw.call(request)
        first, second = answer.responses[0].partitions
        assert [r[0] for r in decode_records(first.records)] == [0, 1]  # one batch, over both bounds
        assert second.records in (b"", None) and second.error_code == NONE and second.high_watermark == 3
        roomy = raw.call(_fetch_request(11, "big", partition_max_bytes=1 << 20))
        records = roomy.responses[0].partitions[0].records
        header = parse_header(records)
        assert header.magic == 2 and header.record_count == 2
        assert [r[0] for r in decode_records(records[header.size:])] == [2]


def test_fetch_errors(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    _fill(store)
    with RawClient(bootstrap) as raw:
        too_far = raw.call(_fetch_request(16, store.topic("orders").topic_id, offset=99))
        assert too_far.responses[0].partitions[0].error_code == OFFSET_OUT_OF_RANGE
        unknown_id = raw.call(_fetch_request(13, uuid.uuid4()))
        assert unknown_id.responses[0].partitions[0].error_code == UNKNOWN_TOPIC_ID
        unknown = raw.call(_fetch_request(12, "nope"))
        assert unknown.responses[0].partitions[0].error_code == UNKNOWN_TOPIC_OR_PARTITION
        no_partition = raw.call(_fetch_request(4, "orders", partition=5))
        assert no_partition.responses[0].partitions[0].error_code == UNKNOWN_TOPIC_OR_PARTITION
        session = raw.call(_fetch_request(12, "orders", session_id=12, session_epoch=1))
        assert session.error_code == FETCH_SESSION_ID_NOT_FOUND and session.responses == ()
        by_id = raw.call(_fetch_request(16, store.topic("orders").topic_id))
        assert [r[3] for r in _records(by_id.responses[0].partitions[0].records)] == [r[1] for r in ROWS]


def test_fetch_serves_produced_kafka_batches_as_stored(server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    store.create_topic("k")
    store.append("k", b"native first")
    batch = encode_batch([(0, 1_700_000_000_000, b"key", b"kafka", (("h", None),)),
                          (1, 1_700_000_000_001, None, b"second", ())], partition_leader_epoch=-1)
    store.log.append_kafka("k", 0, batch)
    with RawClient(bootstrap) as raw:
        answer = raw.call(_fetch_request(12, "k"))
    records = answer.responses[0].partitions[0].records
    first = parse_header(records)
    stored = records[first.size:]
    assert parse_header(stored).base_offset == 1
    assert stored == store.log.read_batches("k", 0, 1, 1 << 20)[0]  # the stored bytes, as they are
    assert stored[16:] == batch[16:]  # past base offset, length and leader epoch: the producer's bytes
    assert [r[2:] for r in decode_records(stored)] == [
        (b"key", b"kafka", (("h", None),)), (None, b"second", ())]
