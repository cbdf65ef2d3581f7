"""DeleteRecords moves the log start to exactly the offset asked (docs/format.md, section 10):
the embedded store, a reopened store, topic deletion, and real Kafka clients over the wire."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from serverkit import served

import eventstore

TIMEOUT_S = 10.0


def filled(store: eventstore.Store, topic: str = "t", records: int = 40) -> None:
    """``records`` records, a few segments of them (``value-<i>`` at offset i)."""
    store.create_topic(topic, segment_bytes=4096)
    for i in range(records):  # one batch each, about four to a segment
        store.append(topic, b"x" * 900 + f"value-{i}".encode(), timestamp_ms=1_700_000_000_000 + i)


def test_the_log_starts_exactly_where_delete_records_says(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        filled(store)
        first_base = store.log.partition("t", 0).segments()[1].base_offset
        at = first_base + 2  # inside a segment: its earlier records stay on disk, unread
        assert store.log.delete_records("t", 0, at) == at
        assert store.offsets("t", 0) == (at, 40)
        assert store.log.partition("t", 0).segments()[0].base_offset == first_base
        assert store.read("t", 0, at, max_records=1)[0].offset == at
        with pytest.raises(eventstore.OffsetOutOfRangeError):
            store.read("t", 0, at - 1)
        with pytest.raises(eventstore.OffsetOutOfRangeError):
            store.log.read_batches("t", 0, first_base, 1 << 20)
        assert store.log.offset_for_time("t", 0, 0) == at  # a time lookup never answers below it
        with pytest.raises(eventstore.OffsetOutOfRangeError):  # it never moves back
            store.log.delete_records("t", 0, at - 1)
        with pytest.raises(eventstore.OffsetOutOfRangeError):
            store.log.delete_records("t", 0, 41)


def test_the_log_start_survives_a_reopen_and_goes_with_the_topic(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        filled(store)
        store.log.delete_records("t", 0, 7)
    with eventstore.open(tmp_path / "s") as store:
        assert store.offsets("t", 0) == (7, 40)
        with pytest.raises(eventstore.OffsetOutOfRangeError):
            store.read("t", 0, 6)
        assert store.log.delete_records("t", 0, 40) == 40  # the end: every segment goes
        store.append("t", b"after")
        assert [r.value for r in store.read("t", 0, 40)] == [b"after"]
    with eventstore.open(tmp_path / "s") as store:
        assert store.offsets("t", 0) == (40, 41)
        store.delete_topic("t")
        filled(store, records=3)
        assert store.offsets("t", 0) == (0, 3)  # a topic made again starts at 0
    with eventstore.open(tmp_path / "s") as store:
        assert store.offsets("t", 0) == (0, 3)
        assert store.check().ok


def test_kafka_clients_see_the_exact_low_watermark(tmp_path: Path) -> None:
    """confluent-kafka: DeleteRecords answers the offset asked, the watermarks and a consumer
    from the beginning start there, and a fetch below it is out of range."""
    from confluent_kafka import KafkaError

    with served(tmp_path) as (store, bootstrap):
        filled(store)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = admin.delete_records([TopicPartition("t", 0, 13)], request_timeout=TIMEOUT_S)
        deleted = next(iter(futures.values())).result(TIMEOUT_S)
        assert deleted.low_watermark == 13
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "enable.auto.commit": False,
                             "auto.offset.reset": "error"})
        try:
            assert consumer.get_watermark_offsets(TopicPartition("t", 0), TIMEOUT_S) == (13, 40)
            consumer.assign([TopicPartition("t", 0, OFFSET_BEGINNING)])
            message = consumer.poll(TIMEOUT_S)
            assert message is not None and message.error() is None
            assert (message.offset(), message.value()[-8:]) == (13, b"value-13")
            consumer.assign([TopicPartition("t", 0, 5)])
            errors = []
            for _ in range(20):  # bounded: the out-of-range answer comes within a poll or two
                message = consumer.poll(0.5)
                if message is not None and message.error() is not None:
                    errors.append(message.error().code())
                    break
                assert message is None, "a record below the log start was fetched"
            assert errors == [KafkaError._AUTO_OFFSET_RESET]
        finally:
            consumer.close()
