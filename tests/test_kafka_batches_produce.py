"""Produce (0), InitProducerId (22) and DescribeProducers (61) with unmodified Kafka clients:
confluent-kafka (librdkafka: every codec, idempotence), kafka-python and aiokafka; what they
produce is read back through the embedded store (``store.read``, ``store.consumer``), headers
byte for byte. Requests no client sends (a transactional id, DescribeProducers) are made
with kio's request classes. Every server is in-process on 127.0.0.1:0, closed by its test.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kio.index import load_request_schema
from kio.serial import entity_reader, entity_writer
from serverkit import RawClient, served

import eventstore
from eventstore.server.entities import entity, item_class
from eventstore.wire.messages import response_type

DEADLINE_S = 20.0
HEADERS = [("trace", b"\x00\x01\xff"), ("dup", b"a"), ("dup", b"b"), ("empty", b""), ("null", None)]


def _confluent(bootstrap: str, **config: Any) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                     "message.timeout.ms": int(DEADLINE_S * 1000), **config})


def _produce_all(producer: Producer, topic: str, items: list[tuple[bytes | None, bytes | None, int]],
                 headers: list[tuple[str, bytes | None]]) -> dict[bytes | None, tuple[int, int]]:
    """Produce, flush, return each message's (partition, offset) by key; fail on any delivery
    error."""
    delivered: dict[bytes | None, tuple[int, int]] = {}
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.key()] = (msg.partition(), msg.offset())

    for key, value, partition in items:
        producer.produce(topic, value=value, key=key, partition=partition, headers=headers,
                         on_delivery=report)
    assert producer.flush(DEADLINE_S) == 0
    assert not errors, errors
    return delivered


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_kafka_every_codec_idempotent_headers_byte_for_byte(tmp_path: Path, codec: str) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("t", 3)
        producer = _confluent(bootstrap, **{"compression.type": codec})
        items = [(b"k%d" % i, b"value %d " % i * (i % 7), i % 3) for i in range(60)] + [(None, None, 1)]
        delivered = _produce_all(producer, "t", items, HEADERS)
        assert len(delivered) == len(items)
        got = {p: store.read("t", p, 0, max_records=1000) for p in range(3)}
        for key, value, partition in items:
            p, offset = delivered[key]
            assert p == partition
            record = got[p][offset]
            assert (record.offset, record.key, record.value) == (offset, key, value)
            assert list(record.headers) == HEADERS
        assert sum(len(v) for v in got.values()) == len(items)  # idempotence: nothing twice
        stored, _ = store.log.read_batches("t", 1, 0, 1 << 20)
        assert stored[16] == 2 and (struct.unpack_from(">h", stored, 21)[0] & 7) == \
            ["none", "gzip", "snappy", "lz4", "zstd"].index(codec)
        producers = store.log.describe_producers("t", 0)
        assert len(producers) == 1 and producers[0][1] == 0  # one producer id, epoch 0
        assert producers[0][2] == sum(1 for _, _, p in items if p == 0) - 1  # last sequence
        report = store.check()
        assert report.ok, report.problems


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_what_a_producer_wrote_a_kafka_consumer_fetches_back_as_sent(tmp_path: Path, codec: str) -> None:
    """The stored batch, base offset and leader epoch written by the store, passes a real
    consumer's checks (librdkafka verifies CRCs with check.crcs) next to native batches."""
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("t", 1)
        store.append("t", b"native before", partition=0, headers=[("n", b"1")])
        items = [(b"k%d" % i, b"v%d" % i, 0) for i in range(25)]
        _produce_all(_confluent(bootstrap, **{"compression.type": codec}), "t", items, HEADERS)
        store.append("t", b"native after", partition=0)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fetch-back", "check.crcs": True,
                             "enable.auto.commit": False})
        try:
            consumer.assign([TopicPartition("t", 0, 0)])
            got: list[Any] = []
            for _ in range(100):  # bounded polls
                for message in consumer.consume(100, 0.2):
                    assert message.error() is None, message.error()
                    got.append(message)
                if len(got) >= 27:
                    break
        finally:
            consumer.close()
        assert [m.offset() for m in got] == list(range(27))
        assert [m.value() for m in got] == [b"native before"] + [v for _, v, _ in items] + [b"native after"]
        assert [m.headers() for m in got[1:26]] == [HEADERS] * 25
        assert got[0].headers() == [("n", b"1")]


def test_kafka_python_gzip_acks_and_a_consumer_reads_back(tmp_path: Path) -> None:
    from kafka import KafkaProducer

    with served(tmp_path) as (store, bootstrap):
        store.create_topic("t", 1)
        producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", acks="all",
                                 linger_ms=5, request_timeout_ms=int(DEADLINE_S * 1000))
        futures = [producer.send("t", key=b"k", value=b"v%d" % i, headers=[("h", b"%d" % i)], partition=0)
                   for i in range(30)]
        offsets = [f.get(timeout=DEADLINE_S).offset for f in futures]
        assert offsets == list(range(30))
        fire_and_forget = KafkaProducer(bootstrap_servers=bootstrap, acks=0, linger_ms=0)
        fire_and_forget.send("t", value=b"acks=0", partition=0)
        fire_and_forget.flush(DEADLINE_S)
        assert store.log.wait_for("t", 0, 30, DEADLINE_S)
        producer.close(DEADLINE_S)
        fire_and_forget.close(DEADLINE_S)
        with store.consumer("t", group_id="g", auto_offset_reset="earliest") as consumer:
            got: list[eventstore.Record] = []
            for _ in range(50):  # bounded polls
                for records in consumer.poll(timeout_ms=100).values():
                    got += records
                if len(got) >= 31:
                    break
        want = [(b"v%d" % i, (("h", b"%d" % i),)) for i in range(30)]
        assert [(r.value, r.headers) for r in got[:30]] == want
        assert got[30].value == b"acks=0"


def test_aiokafka_idempotent_producer(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    async def produce(bootstrap: str) -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send("t", value=b"a%d" % i, key=b"x", partition=0,
                                        headers=[("n", b"%d" % i)]) for i in range(20)]
            return [(await asyncio.wait_for(f, DEADLINE_S)).offset for f in sent]
        finally:
            await producer.stop()

    with served(tmp_path) as (store, bootstrap):
        store.create_topic("t", 1)
        offsets = asyncio.run(produce(bootstrap))
        assert offsets == list(range(20))
        assert [(r.value, r.headers) for r in store.read("t", 0, 0)] == [
            (b"a%d" % i, (("n", b"%d" % i),)) for i in range(20)]
        [(producer_id, epoch, last_sequence, _)] = store.log.describe_producers("t", 0)
        assert producer_id >= 0 and (epoch, last_sequence) == (0, 19)


# --- hand-made requests --------------------------------------------------------------------------


def _request(bootstrap: str, api_key: int, version: int, **fields: Any) -> Any:
    """Send one request built with kio's classes; decode the response with them."""
    cls = load_request_schema(api_key, version)
    body = io.BytesIO()
    entity_writer(cls)(body, entity(cls, **fields))
    flexible = bool(cls.__flexible__)
    with RawClient(bootstrap) as client:
        client.request(api_key, version, 7, body.getvalue(), flexible=flexible)
        raw = client.response()
    assert raw is not None
    (correlation_id,) = struct.unpack_from(">i", raw)
    assert correlation_id == 7
    start = 5 if flexible else 4  # a flexible response header ends with its empty tagged fields
    value, size = entity_reader(response_type(api_key, version))(raw, start)
    assert start + size == len(raw)
    return value


def _produce_request(version: int, topic: str, records: bytes, **fields: Any) -> dict[str, Any]:
    cls = load_request_schema(0, version)
    topic_cls = item_class(cls, "topic_data")
    partition_cls = item_class(topic_cls, "partition_data")
    data = entity(topic_cls, name=topic, partition_data=(entity(partition_cls, index=0, records=records),))
    return {"acks": -1, "timeout": 5000, "topic_data": (data,), **fields}


#: Batches are stamped now: producer entries a day old expire at checkpoints (format.md section 19).
NOW = int(time.time() * 1000)


def _batch(producer: tuple[int, int, int] = (-1, -1, -1)) -> bytes:
    from eventstore.wire import batch as kb

    return kb.encode_batch([(0, NOW, b"k", b"v", ())], producer_id=producer[0], producer_epoch=producer[1],
                           base_sequence=producer[2])


@pytest.mark.parametrize("version", [3, 8, 9, 11])
def test_produce_versions_answer_per_partition(tmp_path: Path, version: int) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("t", 1)
        ok = _request(bootstrap, 0, version, **_produce_request(version, "t", _batch()))
        [answer] = ok.responses[0].partition_responses
        assert (int(answer.error_code), answer.base_offset) == (0, 0)
        bad = bytearray(_batch())
        bad[-1] ^= 1
        refused = _request(bootstrap, 0, version, **_produce_request(version, "t", bytes(bad)))
        [answer] = refused.responses[0].partition_responses
        assert int(answer.error_code) == 2  # CORRUPT_MESSAGE
        if version >= 8:
            assert "CRC-32C" in (answer.error_message or "")
        missing = _request(bootstrap, 0, version, **_produce_request(version, "nope", _batch()))
        assert int(missing.responses[0].partition_responses[0].error_code) == 3
        assert store.offsets("t", 0) == (0, 1)


def test_a_transactional_id_is_refused(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("t", 1)
        answer = _request(bootstrap, 0, 9, **_produce_request(9, "t", _batch(), transactional_id="tx"))
        assert int(answer.responses[0].partition_responses[0].error_code) == 53
        init = _request(bootstrap, 22, 4, transactional_id="tx", transaction_timeout=60000,
                        producer_id=-1, producer_epoch=-1)
        assert int(init.error_code) == 53
        assert store.offsets("t", 0) == (0, 0)


def test_init_producer_id_hands_out_new_ids_across_restarts_and_describe_producers(tmp_path: Path) -> None:
    ids = []
    for run in range(2):  # a restart keeps the counter, and the partitions their producers
        with served(tmp_path) as (store, bootstrap):
            store.create_topic("t", 2, exist_ok=True)
            for version in (0, 2, 5):
                init = _request(bootstrap, 22, version, transactional_id=None, transaction_timeout=60000,
                                producer_id=-1, producer_epoch=-1)
                assert (int(init.error_code), init.producer_epoch) == (0, 0)
                ids.append(int(init.producer_id))
            pid = ids[-1]
            for sequence in (0, 1):
                store.log.append_kafka("t", 1, _batch((pid, 0, sequence)))
            described = _request(bootstrap, 61, 0, topics=(entity(
                item_class(load_request_schema(61, 0), "topics"), name="t", partition_indexes=(0, 1, 5)),))
            p0, p1, p5 = described.topics[0].partitions
            assert (int(p0.error_code), p0.active_producers) == (0, ())
            assert len(p1.active_producers) == run + 1
            state = p1.active_producers[-1]  # by producer id: the newest
            assert (int(state.producer_id), state.producer_epoch, state.last_sequence) == (pid, 0, 1)
            assert state.last_timestamp == NOW
            assert (state.coordinator_epoch, state.current_txn_start_offset) == (-1, -1)
            assert int(p5.error_code) == 3
    assert len(set(ids)) == 6 and ids == sorted(ids)


def test_acks_zero_answers_nothing_even_when_refused_and_the_connection_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = bytearray(_batch())
    bad[-1] ^= 1
    with served(tmp_path) as (store, bootstrap), RawClient(bootstrap) as client:
        store.create_topic("t", 1)
        for correlation_id, records, acks in ((1, bytes(bad), 0), (2, _batch(), 0), (3, _batch(), -1)):
            cls = load_request_schema(0, 9)
            body = io.BytesIO()
            entity_writer(cls)(body, entity(cls, **_produce_request(9, "t", records, acks=acks)))
            client.request(0, 9, correlation_id, body.getvalue(), flexible=True)
        raw = client.response()  # the first answer on the connection is the acks=-1 request's
        assert raw is not None and struct.unpack_from(">i", raw) == (3,)
        answer, _ = entity_reader(response_type(0, 9))(raw, 5)
        assert answer.responses[0].partition_responses[0].base_offset == 1
        assert store.offsets("t", 0) == (0, 2)
    assert any("acks 0" in r.getMessage() and "CRC-32C" in r.getMessage() for r in caplog.records)
