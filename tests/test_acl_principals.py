"""Two principals through SASL PLAIN with real clients (kafka-python): ACLs decide per user
(docs/operations.md, section 2). alice may write and read topic ``t``; bob may not: his
producer is refused TOPIC_AUTHORIZATION_FAILED, so is a Produce request he sends anyway, nothing
of his is written, and his Metadata does not list ``t``. Loopback only; the server is closed by
its handle, every client by the test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAuthorizationFailedError
from kafka.net.compat import KafkaNetClient
from kafka.protocol.producer import ProduceRequest
from kafka.record.memory_records import MemoryRecordsBuilder

import eventstore
from eventstore.catalog import acls as acl_rows
from eventstore.catalog import users
from eventstore.catalog.acls import Operation, PatternType, Permission, ResourceType
from eventstore.server.auth import credential

TIMEOUT_S = 20.0
TOPIC_AUTHORIZATION_FAILED = 29
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@contextmanager
def served(tmp_path: Path) -> Iterator[tuple[eventstore.Store, str]]:
    """Topic ``t`` with one record; users alice and bob; alice may WRITE and READ ``t``."""
    with eventstore.open(tmp_path / "store") as store:
        store.create_topic("t")
        store.append("t", b"before")
        for name, password in PASSWORDS.items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                users.put(store.log.catalog, name, mechanism, credential(mechanism, password))
        acl_rows.add(store.log.catalog, [
            acl_rows.binding(ResourceType.TOPIC, "t", PatternType.LITERAL, "User:alice", "*", operation,
                             Permission.ALLOW) for operation in (Operation.WRITE, Operation.READ)])
        with store.serve("127.0.0.1:0", listeners=["SASL_PLAINTEXT://127.0.0.1:0"]) as handle:
            host, port = handle.listeners["SASL_PLAINTEXT"]
            yield store, f"{host}:{port}"


def as_user(name: str, bootstrap: str) -> dict[str, Any]:
    return {"bootstrap_servers": bootstrap, "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_plain_username": name, "sasl_plain_password": PASSWORDS[name], "request_timeout_ms": 10_000}


def produce(name: str, bootstrap: str, value: bytes) -> KafkaError | None:
    producer = KafkaProducer(**as_user(name, bootstrap), max_block_ms=10_000, retries=0)
    try:
        producer.send("t", value).get(timeout=TIMEOUT_S)
        return None
    except KafkaError as e:
        return e
    finally:
        producer.close(timeout=5)


def read_all(name: str, bootstrap: str) -> list[bytes]:
    consumer = KafkaConsumer(**as_user(name, bootstrap), group_id=None, consumer_timeout_ms=3_000)
    try:
        consumer.assign([TopicPartition("t", 0)])
        consumer.seek_to_beginning()
        return [m.value for m in consumer]
    finally:
        consumer.close()


def listed_topics(name: str, bootstrap: str) -> list[str]:
    admin = KafkaAdminClient(**as_user(name, bootstrap))
    try:
        return sorted(admin.list_topics())
    finally:
        admin.close()


def raw_produce_codes(name: str, bootstrap: str, topics: tuple[str, ...] = ("t",)) -> dict[str, int]:
    """One Produce request of a record to partition 0 of each of ``topics``, sent without asking
    Metadata first: each topic's error code."""
    client = KafkaNetClient(**as_user(name, bootstrap))
    try:
        batch = MemoryRecordsBuilder(2, 0, 1 << 16)
        batch.append(0, None, b"raw", [])
        batch.close()
        records = batch.buffer()
        topic = ProduceRequest.TopicProduceData
        request = ProduceRequest(transactional_id=None, acks=1, timeout_ms=5_000, topic_data=[
            topic(name=n, partition_data=[topic.PartitionProduceData(index=0, records=records)])
            for n in topics],
            min_version=3, max_version=9)
        response = client.send_and_receive("bootstrap-0", request, timeout_ms=int(TIMEOUT_S * 1000))
        codes = {}
        for answered in response.responses:
            (partition,) = answered.partition_responses
            codes[answered.name] = int(partition.error_code)
        return codes
    finally:
        client.close()


def test_acls_decide_per_sasl_principal(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        assert produce("alice", bootstrap, b"from alice") is None
        assert read_all("alice", bootstrap) == [b"before", b"from alice"]
        assert listed_topics("alice", bootstrap) == ["t"]

        refused = produce("bob", bootstrap, b"from bob")
        assert isinstance(refused, TopicAuthorizationFailedError), refused
        assert raw_produce_codes("bob", bootstrap) == {"t": TOPIC_AUTHORIZATION_FAILED}
        assert listed_topics("bob", bootstrap) == []
        assert read_all("bob", bootstrap) == []
        assert store.offsets("t", 0) == (0, 2)
        assert [r.value for r in store.read("t", 0, 0)] == [b"before", b"from alice"]
        assert raw_produce_codes("alice", bootstrap) == {"t": 0}
        assert store.offsets("t", 0) == (0, 3)


def test_produce_is_refused_per_topic(tmp_path: Path) -> None:
    """As Kafka: the topics alice may write are written, the others answered
    TOPIC_AUTHORIZATION_FAILED, in one request (both refused: nothing written)."""
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("u")
        assert raw_produce_codes("alice", bootstrap, ("u", "t")) == {"t": 0, "u": TOPIC_AUTHORIZATION_FAILED}
        assert store.offsets("t", 0) == (0, 2) and store.offsets("u", 0) == (0, 0)
        assert raw_produce_codes("bob", bootstrap, ("t", "u")) == {"t": TOPIC_AUTHORIZATION_FAILED,
                                                                   "u": TOPIC_AUTHORIZATION_FAILED}
        assert store.offsets("t", 0) == (0, 2) and store.offsets("u", 0) == (0, 0)
