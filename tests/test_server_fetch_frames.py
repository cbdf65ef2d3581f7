"""Fetch responses are written around the stored batches (``FrameParts``), not through copies.

The frame built as buffers must be byte for byte what kio's writer gives into one
buffer, for every Fetch version served (4-16), and the large records values must be
the very objects the response holds (sent as they are, never copied).
"""

from __future__ import annotations

import io
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer
from serverkit import served

from eventstore.server.entities import entity, item_class
from eventstore.wire import response_header
from eventstore.wire.framing import SPLICE_BYTES, FrameParts, joined
from eventstore.wire.messages import encode_response, encode_response_parts, response_type

FETCH = 1
VERSIONS = range(4, 17)

records_values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.binary(min_size=SPLICE_BYTES, max_size=SPLICE_BYTES + 40),
)
partitions = st.lists(
    st.tuples(st.integers(0, 1000), st.sampled_from([0, 1, 3]), st.integers(-1, 2**40), records_values),
    min_size=0, max_size=3,
)
topics = st.lists(st.tuples(st.text(min_size=1, max_size=8), st.uuids(), partitions), min_size=0, max_size=3)


def fetch_response(version: int, session_id: int, listed: list[tuple[str, uuid.UUID, list[Any]]]) -> Any:
    cls = response_type(FETCH, version)
    topic_cls = item_class(cls, "responses")
    partition_cls = item_class(topic_cls, "partitions")
    responses = tuple(
        entity(topic_cls, topic=name, topic_id=topic_id, partitions=tuple(
            entity(partition_cls, partition_index=index, error_code=code, high_watermark=mark,
                   last_stable_offset=mark, log_start_offset=0, aborted_transactions=(),
                   preferred_read_replica=-1, records=records)
            for index, code, mark, records in parts))
        for name, topic_id, parts in listed)
    return entity(cls, error_code=0, session_id=session_id, responses=responses)


def plain_frame(correlation_id: int, response: Any) -> bytes:
    """kio's own encoding into one BytesIO, the size put in front afterwards."""
    out = io.BytesIO()
    out.write(response_header(FETCH, int(response.__version__), correlation_id))
    entity_writer(type(response))(out, response)
    body = out.getvalue()
    return struct.pack(">i", len(body)) + body


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from(VERSIONS), correlation_id=st.integers(-(2**31), 2**31 - 1),
       session_id=st.integers(0, 2**31 - 1), listed=topics)
def test_fetch_frame_in_parts_is_kio_encoding(version: int, correlation_id: int, session_id: int,
                                              listed: list[tuple[str, uuid.UUID, list[Any]]]) -> None:
    response = fetch_response(version, session_id, listed)
    expected = plain_frame(correlation_id, response)
    parts = encode_response_parts(correlation_id, response)
    assert b"".join(parts) == expected
    assert encode_response(correlation_id, response) == expected
    big = [p.records for t in response.responses for p in t.partitions
           if p.records is not None and len(p.records) >= SPLICE_BYTES]
    for records in big:  # the stored bytes themselves are sent, not a copy
        assert any(part is records for part in parts)
    assert len(parts) <= 1 + 2 * len(big)


def test_frame_parts_keeps_large_writes_and_fills_the_size() -> None:
    out = FrameParts(splice_bytes=8)
    large = bytes(range(10))
    for data in (b"ab", large, b"c", b"", memoryview(large)[2:], b"de"):
        out.write(data)
    parts = out.finish()
    body = b"ab" + large + b"c" + large[2:] + b"de"
    assert joined(parts) == struct.pack(">i", len(body)) + body
    assert parts[1] is large
    assert all(len(p) for p in parts)


def test_a_consumer_reads_large_fetches_byte_for_byte(tmp_path: Path) -> None:
    """Responses of several MB, sent as buffers, through librdkafka: every value back, in order."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    values = [bytes([i % 251]) * 1000 + i.to_bytes(4, "big") for i in range(6_000)]
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("big", partitions=3)
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i, value in enumerate(values):
            producer.produce("big", value, partition=i % 3)
        assert producer.flush(30) == 0
        consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                                             "enable.auto.commit": False, "fetch.max.bytes": 4 << 20,
                                             "max.partition.fetch.bytes": 2 << 20})
        consumer.assign([confluent_kafka.TopicPartition("big", p, 0) for p in range(3)])
        got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
        try:
            for _ in range(400):  # bounded: each poll waits at most 0.1 s
                if sum(map(len, got.values())) == len(values):
                    break
                for message in consumer.consume(1000, 0.1):
                    assert message.error() is None, message.error()
                    got[message.partition()].append(message.value())
        finally:
            consumer.close()
    for p in range(3):
        assert got[p] == values[p::3]
