"""Records cross between the embedded API and Kafka clients, both ways.

A record appended in-process is fetched by every client (by assignment and as a group
member, under the client's default group settings and with short session timeouts); a
record produced by every client is read by ``store.read``, an embedded group consumer and
``es consume`` beside the server. Category topics (event streams) are written only by
the stream API: a Kafka Produce there is refused with INVALID_RECORD, and the events the
stream API appends are fetched by Kafka clients as records keyed by the stream id.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import entry_points
import pytest
from interopkit import CLIENTS, SESSIONS, TIMEOUT_S, Got, Rec, client, unique
from serverkit import served

import eventstore
from eventstore import NewEvent

Pair = tuple[eventstore.Store, str]
DATA: list[Path] = [Path()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("interop-embedded")
    DATA[0] = root / "store"  # where served() opens the store: es consume reads it there
    with served(root) as pair:
        yield pair
        report = pair[0].check()
        assert report.ok, report.problems


def messages(count: int) -> list[eventstore.Message]:
    """Keys, values and headers of every shape: a tombstone, no key, binary bytes."""
    out = [eventstore.Message(value=f"v{i}".encode(), key=f"k{i % 4}".encode(),
                              headers=[("i", str(i).encode()), ("bin", bytes([i, 0, 255]))])
           for i in range(count - 2)]
    out.append(eventstore.Message(value=None, key=b"k-tombstone"))
    out.append(eventstore.Message(value=b"no key", key=None))
    return out


def as_tuples(records: list[Got] | list[eventstore.Record]) -> list[tuple[int, int, object, object, object]]:
    return sorted((r.partition, r.offset, r.key, r.value, [(k, bytes(v)) for k, v in r.headers])
                  for r in records)


@pytest.mark.parametrize("session", list(SESSIONS))
@pytest.mark.parametrize("name", CLIENTS)
def test_an_embedded_append_is_fetched_by_every_client(name: str, session: str, server: Pair) -> None:
    store, bootstrap = server
    topic = unique("embedded")
    store.create_topic(topic, partitions=3)
    for m in messages(20):
        store.append(topic, m.value, key=m.key, headers=m.headers)
    expected = as_tuples([r for p in range(3) for r in store.read(topic, p, 0)])
    assert len(expected) == 20
    kafka = client(name, bootstrap, session)
    assert as_tuples(kafka.consume(topic, 20)) == expected
    assert as_tuples(kafka.consume(topic, 20, group=unique("g"))) == expected


@pytest.mark.parametrize("name", CLIENTS)
def test_a_produced_record_is_read_embedded_and_by_es_consume(name: str, server: Pair) -> None:
    store, bootstrap = server
    topic = unique("produced")
    store.create_topic(topic, partitions=2)
    records = [Rec(f"value-{i}".encode(), f"key-{i % 3}".encode(), [("n", str(i).encode())])
               for i in range(12)]
    answered = client(name, bootstrap).produce(topic, records)
    read = [r for p in range(2) for r in store.read(topic, p, 0)]
    assert sorted((r.partition, r.offset) for r in read) == sorted(answered)
    by_value = {r.value: r for r in read}
    for rec in records:
        assert by_value[rec.value].key == rec.key
        assert [(k, bytes(v)) for k, v in by_value[rec.value].headers] == rec.headers

    consumer = store.consumer(topic, group_id=unique("embedded"), auto_offset_reset="earliest")
    try:
        polled: list[eventstore.Record] = []
        for _ in range(50):  # bounded: each poll waits at most 200 ms
            if len(polled) >= len(records):
                break
            for batch in consumer.poll(timeout_ms=200).values():
                polled += batch
    finally:
        consumer.close()
    assert as_tuples(polled) == as_tuples(read)

    for where in ([], ["--bootstrap", bootstrap]):  # the directory beside the server; the server
        lines = es_consume(DATA[0], topic, *where)
        assert sorted(line["value"] for line in lines) == sorted(r.value.decode() for r in records)
        assert {(line["partition"], line["offset"]) for line in lines} == set(answered)


def es_consume(data: Path, topic: str, *where: str) -> list[dict[str, object]]:
    """``es consume TOPIC --from-beginning --json`` on the served store's directory, or
    through the server with ``--bootstrap``."""
    command = [*entry_points.es_command(), "consume", topic, "--from-beginning", "--json", *where]
    done = subprocess.run(command, capture_output=True, timeout=TIMEOUT_S, env=entry_points.environment(data),
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]


@pytest.mark.parametrize("name", CLIENTS)
def test_category_topics_take_events_from_the_stream_api_only(name: str, server: Pair) -> None:
    store, bootstrap = server
    category = unique("order").replace("-", "")
    stream = f"{category}-1"
    store.append_to_stream(stream, [NewEvent(type="Placed", data=b'{"n": 1}'),
                                    NewEvent(type="Paid", data=b'{"n": 2}')])
    kafka = client(name, bootstrap)
    got = kafka.consume(category, 2)
    assert [g.key for g in got] == [stream.encode()] * 2
    assert [g.offset for g in got] == [e.offset for e in store.read_stream(stream)]

    with pytest.raises(Exception) as refused:
        kafka.produce(category, [Rec(b"not an event", stream.encode())])
    if name == "aiokafka":  # it has no class for code 87: any code it does not know is UnknownError
        assert type(refused.value).__name__ == "UnknownError"
    else:
        assert "INVALID_RECORD" in str(refused.value).upper().replace(" ", "_").replace("INVALIDRECORD",
                                                                                     "INVALID_RECORD")
    assert [e.type for e in store.read_stream(stream)] == ["Placed", "Paid"]
    assert sum(store.offsets(category, p)[1] for p in range(store.topic(category).partitions)) == 2
