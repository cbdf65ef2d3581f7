"""Requests decoded and responses encoded: golden bytes, a real client's bytes, every
served (API, version) through encode and decode, the ApiVersions answer."""

from __future__ import annotations

import contextlib
import datetime
import io
import struct
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import Records, i16, i32, i32Timedelta, i64Timedelta

from eventstore.wire import ProtocolError, UnsupportedVersionError
from eventstore.wire.apis import (
    EXTENSION_APIS,
    SERVED,
    advertised,
    is_flexible,
    request_header_version,
    response_header_version,
)
from eventstore.wire.header import parse_request_header
from eventstore.wire.messages import (
    api_versions_response,
    decode_request,
    encode_response,
    request_type,
    response_type,
)

# kio registers strategies for its primitives but not for the opaque record bytes
st.register_type_strategy(Records, st.binary(max_size=64))  # type: ignore[arg-type]
# kio writes int64 durations its reader cannot read back past ~292,000 years (it overflows
# microseconds): docs/protocol.md, section 1. Real clients send -1 or days.
st.register_type_strategy(i64Timedelta, st.integers(-(2**50), 2**50).map(  # type: ignore[arg-type]
    lambda ms: datetime.timedelta(milliseconds=ms)))

SERVED_VERSIONS = [(key, v) for key, (low, high) in sorted(SERVED.items()) for v in range(low, high + 1)]


# --- the encodings of the protocol guide, by hand ------------------------------


def i16b(n: int) -> bytes:
    return struct.pack(">h", n)


def i32b(n: int) -> bytes:
    return struct.pack(">i", n)


def string(s: str | None) -> bytes:  # legacy: int16 length
    return i16b(-1) if s is None else i16b(len(s.encode())) + s.encode()


def compact(s: str | bytes) -> bytes:  # compact: unsigned varint length + 1 (all short here)
    raw = s.encode() if isinstance(s, str) else s
    assert len(raw) < 127
    return bytes([len(raw) + 1]) + raw


NO_TAGS = b"\x00"


def header(api_key: int, version: int, correlation_id: int, client_id: str | None) -> bytes:
    head = i16b(api_key) + i16b(version) + i32b(correlation_id) + string(client_id)
    return head + NO_TAGS if request_header_version(api_key, version) == 2 else head


# --- golden requests --------------------------------------------------------------


def test_golden_api_versions_v3_request() -> None:
    frame = header(18, 3, 7, "es") + compact("eventstore") + compact("0.1") + NO_TAGS
    request = decode_request(frame)
    assert (request.header.api_key, request.header.api_version, request.header.correlation_id) == (18, 3, 7)
    assert request.header.client_id == "es" and request.header.header_version == 2
    assert request.body.client_software_name == "eventstore"
    assert request.body.client_software_version == "0.1"


def test_golden_metadata_v1_request_with_a_topic_and_with_null_topics() -> None:
    one = header(3, 1, 1, None) + i32b(1) + string("orders")
    request = decode_request(one)
    assert request.header.client_id is None and request.header.header_version == 1
    assert [t.name for t in request.body.topics] == ["orders"]
    every = decode_request(header(3, 1, 2, None) + i32b(-1))
    assert every.body.topics is None


def test_golden_produce_v3_request() -> None:
    frame = (header(0, 3, 9, "p") + string(None) + i16b(-1) + i32b(1500)
             + i32b(1) + string("t") + i32b(1) + i32b(0) + i32b(3) + b"abc")
    body = decode_request(frame).body
    assert body.transactional_id is None and body.acks == -1
    assert body.timeout == datetime.timedelta(milliseconds=1500)
    [topic] = body.topic_data
    assert topic.name == "t"
    assert [(p.index, bytes(p.records)) for p in topic.partition_data] == [(0, b"abc")]


def test_golden_find_coordinator_v4_request_batched_keys() -> None:
    frame = header(10, 4, 3, "c") + b"\x00" + b"\x03" + compact("g1") + compact("g2") + NO_TAGS
    body = decode_request(frame).body
    assert body.key_type == 0 and body.coordinator_keys == ("g1", "g2")


def test_golden_metadata_v12_request_flexible_with_a_topic_id() -> None:
    topic_id = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    frame = (header(3, 12, 5, "c") + b"\x02" + topic_id.bytes + compact("orders") + NO_TAGS
             + b"\x00" + b"\x01" + NO_TAGS)
    body = decode_request(frame).body
    [topic] = body.topics
    assert topic.topic_id == topic_id and topic.name == "orders"
    assert body.allow_auto_topic_creation is False and body.include_topic_authorized_operations is True


# --- golden responses -------------------------------------------------------------


def test_golden_find_coordinator_v0_response() -> None:
    cls = response_type(10, 0)
    response = cls(error_code=ErrorCode.none, node_id=i32(1), host="localhost", port=i32(9092))
    contents = i32b(42) + i16b(0) + i32b(1) + string("localhost") + i32b(9092)
    assert encode_response(42, response) == i32b(len(contents)) + contents


def test_golden_heartbeat_v4_response_has_header_v1() -> None:
    cls = response_type(12, 4)
    response = cls(throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
                   error_code=ErrorCode.rebalance_in_progress)
    contents = i32b(5) + NO_TAGS + i32b(0) + i16b(27) + NO_TAGS
    assert encode_response(5, response) == i32b(len(contents)) + contents


def test_golden_api_versions_v0_and_v3_responses_list_the_served_table() -> None:
    table = advertised()
    v0 = i32b(1) + i16b(0) + i32b(len(table)) + b"".join(i16b(k) + i16b(lo) + i16b(hi) for k, lo, hi in table)
    assert encode_response(1, api_versions_response(0)) == i32b(len(v0)) + v0
    items = b"".join(i16b(k) + i16b(lo) + i16b(hi) + NO_TAGS for k, lo, hi in table)
    assert len(table) + 1 < 0x80  # the compact count is one byte
    v3 = i32b(2) + i16b(0) + bytes([len(table) + 1]) + items + i32b(0) + NO_TAGS  # header v0 always
    assert encode_response(2, api_versions_response(3)) == i32b(len(v3)) + v3


def test_an_unknown_api_versions_version_is_answered_in_v0_with_unsupported_version() -> None:
    response = api_versions_response(99)
    assert response.__version__ == 0
    assert response.error_code == ErrorCode.unsupported_version
    assert {k.api_key for k in response.api_keys} == {k for k, _, _ in advertised()}
    frame = header(18, 99, 11, "newer") + b"\x00"  # whatever body a newer client sends
    parsed = parse_request_header(frame)
    assert parsed.correlation_id == 11
    with pytest.raises(UnsupportedVersionError):
        decode_request(frame)


def test_the_extension_apis_are_advertised_and_kafka_clients_only_see_unknown_keys() -> None:
    listed = {k: (lo, hi) for k, lo, hi in advertised()}
    for key in EXTENSION_APIS:
        assert listed[key] == (0, 0)
        assert key > 10_000
    assert not any(k in EXTENSION_APIS for k in SERVED)


def test_unserved_versions_and_keys_are_unsupported() -> None:
    for key, version in [(0, 2), (0, 12), (1, 3), (1, 17), (19, 1), (71, 0), (7, 0), (20000, 1)]:
        with pytest.raises(UnsupportedVersionError):
            decode_request(header(key, version, 1, "c") + b"\x00" * 8)


# --- bytes from a real client (kafka-python's generated protocol classes) --------


def kafka_python_frame(request: Any, correlation_id: int = 17) -> bytes:
    request.with_header(correlation_id=correlation_id, client_id="kafka-python-test")
    return bytes(request.encode(header=True))


@pytest.mark.parametrize("version", [3, 7, 9, 11])
def test_a_produce_request_from_kafka_python(version: int) -> None:
    from kafka.protocol.producer import ProduceRequest

    data = ProduceRequest.TopicProduceData
    request = ProduceRequest[version](
        transactional_id=None, acks=1, timeout_ms=30_000,
        topic_data=[data(name="orders", partition_data=[
            data.PartitionProduceData(index=p, records=bytes([p]) * (10 + p)) for p in range(3)])])
    decoded = decode_request(kafka_python_frame(request))
    assert decoded.header.correlation_id == 17 and decoded.header.client_id == "kafka-python-test"
    assert decoded.header.header_version == (2 if version >= 9 else 1)
    [topic] = decoded.body.topic_data
    assert topic.name == "orders"
    assert [(p.index, bytes(p.records)) for p in topic.partition_data] == [
        (p, bytes([p]) * (10 + p)) for p in range(3)]
    assert decoded.body.acks == 1 and decoded.body.timeout == datetime.timedelta(seconds=30)


@pytest.mark.parametrize("version", [4, 11, 12, 16])
def test_a_fetch_request_from_kafka_python(version: int) -> None:
    from kafka.protocol.consumer.fetch import FetchRequest

    topic = FetchRequest.FetchTopic
    part = topic.FetchPartition
    topic_id = uuid.uuid4()
    request = FetchRequest[version](
        replica_id=-1, max_wait_ms=500, min_bytes=1, max_bytes=52_428_800, isolation_level=1,
        session_id=0, session_epoch=-1,
        topics=[topic(topic="orders", topic_id=topic_id, partitions=[
            part(partition=2, current_leader_epoch=-1, fetch_offset=1234, last_fetched_epoch=-1,
                 log_start_offset=-1, partition_max_bytes=1_048_576)])],
        forgotten_topics_data=[], rack_id="")
    body = decode_request(kafka_python_frame(request)).body
    assert body.max_wait == datetime.timedelta(milliseconds=500)
    assert body.min_bytes == 1 and body.max_bytes == 52_428_800 and body.isolation_level == 1
    [fetched] = body.topics
    if version >= 13:
        assert fetched.topic_id == topic_id
    else:
        assert fetched.topic == "orders"
    [p] = fetched.partitions
    assert (p.partition, p.fetch_offset, p.partition_max_bytes) == (2, 1234, 1_048_576)


@pytest.mark.parametrize("version", [0, 5, 6, 9])
def test_a_join_group_request_from_kafka_python(version: int) -> None:
    from kafka.protocol.consumer.group import JoinGroupRequest

    protocol = JoinGroupRequest.JoinGroupRequestProtocol
    request = JoinGroupRequest[version](
        group_id="billing", session_timeout_ms=10_000, rebalance_timeout_ms=30_000,
        member_id="", group_instance_id="static-1" if version >= 5 else None, protocol_type="consumer",
        protocols=[protocol(name="range", metadata=b"\x00\x01meta"),
                   protocol(name="roundrobin", metadata=b"")],
        reason="joining" if version >= 8 else None)
    body = decode_request(kafka_python_frame(request)).body
    assert body.group_id == "billing" and body.protocol_type == "consumer"
    assert body.session_timeout == datetime.timedelta(seconds=10)
    assert [(p.name, p.metadata) for p in body.protocols] == [("range", b"\x00\x01meta"), ("roundrobin", b"")]
    if version >= 5:
        assert body.group_instance_id == "static-1"


@pytest.mark.parametrize("version", [0, 4, 9, 12])
def test_a_metadata_request_from_kafka_python(version: int) -> None:
    from kafka.protocol.metadata import MetadataRequest

    topic = MetadataRequest.MetadataRequestTopic
    request = MetadataRequest[version](topics=[topic(name="a"), topic(name="b")],
                                       allow_auto_topic_creation=False)
    body = decode_request(kafka_python_frame(request)).body
    assert [t.name for t in body.topics] == ["a", "b"]


def test_an_api_versions_request_from_kafka_python() -> None:
    from kafka.protocol.metadata import ApiVersionsRequest

    for version in range(5):
        request = ApiVersionsRequest[version](client_software_name="kafka-python",
                                              client_software_version="3")
        decoded = decode_request(kafka_python_frame(request, correlation_id=version))
        assert decoded.header.correlation_id == version
        if version >= 3:
            assert decoded.body.client_software_name == "kafka-python"


# --- every served (API, version) through encode and decode ---------------------


def encode_request(body: Any, correlation_id: int = 3) -> bytes:
    key, version = int(body.__api_key__), int(body.__version__)
    out = io.BytesIO()
    out.write(header(key, version, correlation_id, "round-trip"))
    entity_writer(type(body))(out, body)
    return out.getvalue()


def decode_response(frame: bytes, api_key: int, api_version: int) -> tuple[int, Any]:
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    (correlation_id,) = struct.unpack_from(">i", frame, 4)
    position = 8
    if response_header_version(api_key, api_version) == 1:
        assert frame[position] == 0
        position += 1
    cls = response_type(api_key, api_version)
    value, used = entity_reader(cls)(frame, position)
    assert position + used == len(frame)
    return correlation_id, value


@pytest.mark.parametrize(("api_key", "version"), SERVED_VERSIONS)
def test_every_served_version_round_trips(api_key: int, version: int) -> None:
    request_cls = request_type(api_key, version)
    response_cls = response_type(api_key, version)
    assert bool(request_cls.__flexible__) == is_flexible(api_key, version)
    assert bool(response_cls.__flexible__) == is_flexible(api_key, version)

    @settings(max_examples=8, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.from_type(request_cls), st.from_type(response_cls), st.integers(-(2**31), 2**31 - 1))
    def round_trip(request: Any, response: Any, correlation_id: int) -> None:
        decoded = decode_request(encode_request(request, correlation_id))
        assert decoded.header.correlation_id == correlation_id
        assert decoded.body == request
        assert decode_response(encode_response(correlation_id, response), api_key, version) == (
            correlation_id, response)

    round_trip()


def test_the_served_table_is_the_documented_one() -> None:
    assert SERVED[0] == (3, 11) and SERVED[1] == (4, 16) and SERVED[2] == (1, 9)
    assert SERVED[3] == (0, 12) and SERVED[18] == (0, 4) and SERVED[22] == (0, 5)
    assert SERVED[11] == (0, 9) and SERVED[14] == (0, 5) and SERVED[12] == (0, 4) and SERVED[13] == (0, 5)
    assert SERVED[8] == (2, 9) and SERVED[9] == (1, 9) and SERVED[21] == (0, 2) and SERVED[10] == (0, 6)
    assert SERVED[23] == (2, 4)  # OffsetForLeaderEpoch, for followers (docs/replication.md, 4)
    assert SERVED[17] == (0, 1) and SERVED[36] == (0, 2)  # SASL (docs/operations.md, 1.2)
    for not_served in (7, 24, 25, 26, 27, 28, 71, 72):
        assert not_served not in SERVED
    # ApiVersions is answered in header v0 at every version
    assert all(response_header_version(18, v) == 0 for v in range(10))


# --- bad bytes: only ProtocolError ----------------------------------------------


def lying_counts() -> st.SearchStrategy[bytes]:
    # counts and lengths near the limits of int32 and of a 5-byte unsigned varint
    pieces = st.sampled_from([
        b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\x00\x00",
        b"\xff\xff\xff\xff\x0f", b"\x81\x80\x80\x80\x10", b"\xff\xff", b"\x7f\xff", b"\x00", b"\x01",
    ])
    return st.lists(pieces | st.binary(max_size=6), max_size=12).map(b"".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SERVED_VERSIONS), lying_counts() | st.binary(max_size=200), st.binary(max_size=3))
def test_bodies_that_lie_give_protocol_errors_only(
    key_version: tuple[int, int], body: bytes, tail: bytes
) -> None:
    api_key, version = key_version
    with contextlib.suppress(ProtocolError):
        decode_request(header(api_key, version, 1, "fuzz") + body + tail)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_headers_give_protocol_errors_only(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_request_header(data)


@pytest.mark.parametrize(("api_key", "version", "body"), [
    (3, 9, b"\x81\x80\x80\x80\x10"),  # compact topics count 2**32 - 1: kio alone aborts the process
    (3, 9, b"\xff\xff\xff\xff\x0f"),
    (3, 1, b"\x7f\xff\xff\xff"),  # legacy count 2**31 - 1
    (0, 9, b"\x00\xff\xff\x00\x00\x75\x30\xff\xff\xff\xff\x0f"),
    (1, 16, b"\x00" * 20 + b"\xff\xff\xff\xff\x0f"),
    (1, 4, b"\x00" * 17 + b"\x00\x00\x00\x01" + b"\x00\x01t" + b"\x7f\xff\xff\xff"),  # fixed-size items
])
def test_a_huge_array_count_is_refused_before_anything_is_allocated(
    api_key: int, version: int, body: bytes
) -> None:
    with pytest.raises(ProtocolError, match=r"cannot fit|bytes declared|truncated|runs past"):
        decode_request(header(api_key, version, 1, "fuzz") + body)


def test_unknown_tagged_fields_are_skipped() -> None:
    # FindCoordinator v4 with an unknown tag (99, 3 bytes) in the body's tagged fields
    frame = header(10, 4, 3, "c") + b"\x00" + b"\x02" + compact("g1") + b"\x01" + b"\x63\x03abc"
    assert decode_request(frame).body.coordinator_keys == ("g1",)
    # and one in a nested struct: Metadata v12's topic
    frame = (header(3, 12, 5, "c") + b"\x02" + bytes(16) + compact("t") + b"\x01\x20\x01z"
             + b"\x00\x00" + b"\x01\x21\x00")
    assert [t.name for t in decode_request(frame).body.topics] == ["t"]


def test_trailing_bytes_after_a_body_are_refused() -> None:
    with pytest.raises(ProtocolError, match="after"):
        decode_request(header(3, 1, 2, None) + i32b(-1) + b"x")


def test_a_response_of_an_unserved_version_is_not_encoded() -> None:
    from kio.index import load_response_schema

    cls = load_response_schema(15, 6)  # DescribeGroups v6: kio has it, the server does not serve it
    with pytest.raises(ValueError):
        encode_response(1, cls(throttle_time=i32Timedelta.parse(datetime.timedelta(0)), groups=()))


def test_header_versions_follow_the_flexible_versions() -> None:
    assert request_header_version(0, 8) == 1 and request_header_version(0, 9) == 2
    assert response_header_version(0, 8) == 0 and response_header_version(0, 9) == 1
    assert request_header_version(18, 3) == 2 and response_header_version(18, 3) == 0
    assert request_header_version(20000, 0) == 2 and response_header_version(20000, 0) == 1
    assert i16(0) == 0
