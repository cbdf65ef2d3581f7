"""LogAppendTime topics (docs/format.md, sections 5 and 17.3): every record gets the time it
was appended; a produced batch is marked LogAppendTime; Kafka clients set the topic config
``message.timestamp.type`` and read the append time back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from serverkit import served

import eventstore
from eventstore.wire import batch as kb

TIMEOUT_S = 10.0
OLD = 1_000_000  # a timestamp from 1970: never an append time


def now_ms() -> int:
    return int(time.time() * 1000)


def test_native_appends_get_the_append_time(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        cfg = store.create_topic("t", timestamp_type="LogAppendTime")
        assert cfg.timestamp_type == "LogAppendTime"
        before = now_ms()
        store.append("t", b"one", timestamp_ms=OLD)
        store.append_batch("t", [eventstore.Message(value=b"two", timestamp_ms=OLD), b"three"])
        after = now_ms()
        assert all(before <= r.timestamp_ms <= after for r in store.read("t", 0, 0))
        store.alter_topic("t", timestamp_type="CreateTime")  # appends from then on keep theirs
        store.append("t", b"four", timestamp_ms=OLD)
        assert store.read("t", 0, 3)[0].timestamp_ms == OLD
        with pytest.raises(eventstore.InvalidArgumentError):
            store.create_topic("u", timestamp_type="BrokerTime")
        with pytest.raises(eventstore.InvalidArgumentError):
            store.alter_topic("t", timestamp_type="")
    with eventstore.open(tmp_path / "s") as store:
        assert store.topic("t").timestamp_type == "CreateTime"
        store.alter_topic("t", timestamp_type="LogAppendTime")
    with eventstore.open(tmp_path / "s") as store:
        assert store.topic("t").timestamp_type == "LogAppendTime"


def test_a_produced_batch_is_marked_log_append_time(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t", timestamp_type="LogAppendTime")
        store.create_topic("c")
        batch = kb.encode_batch([(0, OLD, None, b"a", ()), (1, OLD + 5, b"k", b"b", ())])
        before = now_ms()
        result = store.log.append_kafka("t", 0, batch)
        assert before <= result.log_append_time_ms <= now_ms()
        assert store.log.append_kafka("c", 0, batch).log_append_time_ms == -1
        assert [r.timestamp_ms for r in store.read("t", 0, 0)] == [result.log_append_time_ms] * 2
        assert [r.timestamp_ms for r in store.read("c", 0, 0)] == [OLD, OLD + 5]
        stored, _ = store.log.read_batches("t", 0, 0, 1 << 20)
        header = kb.check_batch(stored)  # the CRC was computed again
        assert header.log_append_time and header.max_timestamp == result.log_append_time_ms
        assert store.offset_for_time("t", 0, result.log_append_time_ms) == 0
        assert store.check().ok


def test_kafka_clients_set_the_config_and_read_the_append_time(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = NewTopic("lat", 1, 1, config={"message.timestamp.type": "LogAppendTime"})
        for future in admin.create_topics([topic]).values():
            future.result(TIMEOUT_S)
        assert store.topic("lat").timestamp_type == "LogAppendTime"
        resource = ConfigResource(ConfigResource.Type.TOPIC, "lat")
        described = next(iter(admin.describe_configs([resource]).values())).result(TIMEOUT_S)
        assert described["message.timestamp.type"].value == "LogAppendTime"
        assert not described["message.timestamp.type"].is_read_only

        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        before = now_ms()
        acked: list[tuple[int, int]] = []
        producer.produce("lat", b"v", timestamp=OLD, on_delivery=lambda _e, m: acked.append(m.timestamp()))
        assert producer.flush(TIMEOUT_S) == 0
        after = now_ms()
        (ack_kind, ack_when), = acked  # the Produce response's log_append_time
        assert ack_kind == TIMESTAMP_LOG_APPEND_TIME and before <= ack_when <= after
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                             "auto.offset.reset": "earliest"})
        try:
            consumer.subscribe(["lat"])
            message = None
            for _ in range(20):  # bounded
                message = consumer.poll(1.0)
                if message is not None:
                    break
            assert message is not None and message.error() is None
            kind, when = message.timestamp()
            assert (kind, when) == (TIMESTAMP_LOG_APPEND_TIME, ack_when)
        finally:
            consumer.close()

        altered = ConfigResource(ConfigResource.Type.TOPIC, "lat",
                                 set_config={"message.timestamp.type": "CreateTime"})
        next(iter(admin.alter_configs([altered]).values())).result(TIMEOUT_S)
        assert store.topic("lat").timestamp_type == "CreateTime"
        bad = ConfigResource(ConfigResource.Type.TOPIC, "lat", set_config={"message.timestamp.type": "Never"})
        with pytest.raises(Exception, match="timestamp_type"):
            next(iter(admin.alter_configs([bad]).values())).result(TIMEOUT_S)
        assert TIMESTAMP_CREATE_TIME != TIMESTAMP_LOG_APPEND_TIME


def test_a_remote_store_sets_and_reads_the_timestamp_type(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        remote = eventstore.connect(bootstrap)
        try:
            assert remote.create_topic("r", timestamp_type="LogAppendTime").timestamp_type == "LogAppendTime"
            assert store.topic("r").timestamp_type == "LogAppendTime"
            remote.alter_topic("r", timestamp_type="CreateTime")
            assert (store.topic("r").timestamp_type, remote.topic("r").timestamp_type) == ("CreateTime",) * 2
        finally:
            remote.close()


def test_records_of_marked_batches_report_log_append_time(tmp_path: Path) -> None:
    lat, create = eventstore.Record.TIMESTAMP_LOG_APPEND_TIME, eventstore.Record.TIMESTAMP_CREATE_TIME
    assert (lat, create) == (1, 0)  # Kafka's numbers
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t", timestamp_type="LogAppendTime")
        store.create_topic("c")
        store.append("t", b"native", timestamp_ms=OLD)
        store.append_batch("t", [b"bare", eventstore.Message(value=b"message", timestamp_ms=OLD)])
        produced = kb.encode_batch([(0, OLD, None, b"a", ()), (1, OLD + 5, b"k", b"b", ())])
        store.log.append_kafka("t", 0, produced)
        store.log.append_kafka("c", 0, produced)
        store.append("c", b"native")
        assert [r.timestamp_type for r in store.read("t", 0, 0)] == [lat] * 5
        assert [r.timestamp_type for r in store.read("c", 0, 0)] == [create] * 3
        store.alter_topic("t", timestamp_type="CreateTime")  # the mark is the batch's, kept
        store.append("t", b"later", timestamp_ms=OLD)
        copied, _ = store.log.read_batches("t", 0, 0, 1)  # the first batch, marked, copied as it is
        store.log.append_encoded("c", 0, copied)
        assert [r.timestamp_type for r in store.read("c", 0, 3)] == [lat]
        assert store.check().ok
    with eventstore.open(tmp_path / "s") as store:  # as read back from the files
        assert [(r.timestamp_type, r.timestamp_ms == OLD) for r in store.read("t", 0, 0)] == [
            (lat, False)] * 5 + [(create, True)]
        (native,) = store.read("t", 0, 0, max_records=1)
        assert native == eventstore.Record(offset=0, timestamp_ms=native.timestamp_ms, key=None,
                                           value=b"native", topic="t", timestamp_type=lat)
        assert store.check().ok


def test_a_fetched_native_batch_keeps_its_mark(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("lat", timestamp_type="LogAppendTime")
        appended = store.append("lat", b"embedded", timestamp_ms=OLD)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "n",
                             "auto.offset.reset": "earliest"})
        try:
            consumer.subscribe(["lat"])
            message = None
            for _ in range(20):  # bounded
                message = consumer.poll(1.0)
                if message is not None:
                    break
            assert message is not None and message.error() is None
            assert message.timestamp() == (TIMESTAMP_LOG_APPEND_TIME, appended.timestamp_ms)
        finally:
            consumer.close()
        remote = eventstore.connect(bootstrap)
        try:
            (record,) = remote.read("lat", 0, 0)
            assert (record.timestamp_type, record.timestamp_ms) == (1, appended.timestamp_ms)
        finally:
            remote.close()
