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

import eventstore
from eventstore.server.batches import ConvertedBatches, NotConverted, as_kafka_batches
from eventstore.server.entities import entity, item_class
from eventstore.wire import response_header
from eventstore.wire.framing import SPLICE_BYTES, FrameParts, FrameSplitter, joined
from eventstore.wire.messages import (
    encode_response,
    encode_response_frame,
    encode_response_parts,
    response_type,
)

confluent_kafka = pytest.importorskip("confluent_kafka")

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


@pytest.mark.parametrize("version", [4, 11, 16])
def test_only_a_fetch_with_large_records_is_sent_in_parts(version: int) -> None:
    large, small = bytes(SPLICE_BYTES), bytes(SPLICE_BYTES - 1)
    with_large = fetch_response(version, 0, [("t", uuid.uuid4(), [(0, 0, 5, large), (1, 0, 5, None)])])
    with_small = fetch_response(version, 0, [("t", uuid.uuid4(), [(0, 0, 5, small)])])
    parts = encode_response_frame(3, with_large)
    assert isinstance(parts, list) and any(p is large for p in parts)
    assert joined(parts) == plain_frame(3, with_large)
    whole = encode_response_frame(3, with_small)
    assert isinstance(whole, bytes) and whole == plain_frame(3, with_small)


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


@pytest.mark.parametrize("partition_bytes", [2 << 20, 4 << 20], ids=["on-the-loop", "in-a-thread"])
def test_a_consumer_reads_large_fetches_byte_for_byte(tmp_path: Path, partition_bytes: int) -> None:
    """Responses of several MB, sent as buffers, through librdkafka: every value back, in order;
    read on the event loop (3 x 2 MiB at most) or, above LOOP_READ_BYTES, in a worker thread."""
    values = [bytes([i % 251]) * 1000 + i.to_bytes(4, "big") for i in range(6_000)]
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("big", partitions=3)
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i, value in enumerate(values):
            producer.produce("big", value, partition=i % 3)
        assert producer.flush(30) == 0
        got = _consume(bootstrap, "big", 3, len(values), {"fetch.max.bytes": 4 * partition_bytes,
                                                          "max.partition.fetch.bytes": partition_bytes})
    for p in range(3):
        assert got[p] == values[p::3]


def test_native_batches_are_converted_off_the_loop_then_served_from_the_cache(tmp_path: Path) -> None:
    values = [f"event {i}".encode() * 20 for i in range(3_000)]
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("native", partitions=1)
        for start in range(0, len(values), 100):  # native batches of 100 records
            store.append_batch("native", [(None, v) for v in values[start:start + 100]], partition=0)
        first = _consume(bootstrap, "native", 1, len(values), {})
        again = _consume(bootstrap, "native", 1, len(values), {})
    assert first[0] == values and again[0] == values


def _consume(bootstrap: str, topic: str, partitions: int, count: int,
             settings: dict[str, Any]) -> dict[int, list[bytes]]:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                                         "enable.auto.commit": False} | settings)
    consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
    got: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    try:
        for _ in range(400):  # bounded: each poll waits at most 0.1 s
            if sum(map(len, got.values())) == count:
                break
            for message in consumer.consume(1000, 0.1):
                assert message.error() is None, message.error()
                got[message.partition()].append(message.value())
    finally:
        consumer.close()
    return got


def test_a_read_that_must_not_convert_stops_at_a_native_batch_not_cached(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "store") as store:
        cfg = store.create_topic("native", partitions=1)
        store.append_batch("native", [(None, b"v%d" % i) for i in range(10)], partition=0)
        stored, _next = store.log.read_batches("native", 0, 0, 1 << 20)
    cache = ConvertedBatches(1 << 20)
    with pytest.raises(NotConverted):
        as_kafka_batches(stored, cfg.topic_id, 0, cache, convert=False)
    converted = as_kafka_batches(stored, cfg.topic_id, 0, cache)
    assert as_kafka_batches(stored, cfg.topic_id, 0, cache, convert=False) == converted != stored


def test_a_frame_in_chunks_is_joined_once_and_a_reused_input_buffer_does_not_change_it() -> None:
    payload = bytes(range(256)) * 40
    data = bytearray(struct.pack(">i", len(payload)) + payload)
    splitter = FrameSplitter()
    chunk = bytearray(1000)
    frames: list[bytes] = []
    for start in range(0, len(data), 1000):  # one buffer reused for every read, as a socket reader might
        piece = data[start:start + 1000]
        chunk[:len(piece)] = piece
        frames += splitter.feed(memoryview(chunk)[:len(piece)])
        chunk[:] = bytes(1000)
        assert splitter.buffered_bytes == (0 if frames else start + len(piece))
    assert frames == [payload]
