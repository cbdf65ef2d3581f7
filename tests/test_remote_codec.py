"""The extension APIs' codec (docs/protocol.md, section 7): round trips of every message, the
layouts' bytes where the spec fixes them, and arbitrary bytes → a value or ProtocolError."""

from __future__ import annotations

import contextlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.wire import ProtocolError, parse_request_header
from eventstore.wire import extensions as x
from eventstore.wire.apis import EXTENSION_APIS


def _value(kind: object) -> st.SearchStrategy[object]:
    if kind == "i8":
        return st.integers(-128, 127)
    if kind == "i16":
        return st.integers(-(2**15), 2**15 - 1)
    if kind == "i32":
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "i64":
        return st.integers(-(2**63), 2**63 - 1)
    if kind == "bool":
        return st.booleans()
    if kind == "uuid":
        return st.binary(min_size=16, max_size=16)
    if kind == "str":
        return st.text(max_size=20)
    if kind == "nstr":
        return st.none() | st.text(max_size=20)
    if kind == "bytes":
        return st.binary(max_size=30)
    assert isinstance(kind, tuple) and kind[0] == "array"
    item = kind[1]
    if isinstance(item[0], tuple):
        return st.lists(st.tuples(*[_value(k) for _, k in item]), max_size=3)
    return st.lists(_value(item), max_size=3)


def _message(layout: tuple[tuple[str, object], ...]) -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries({name: _value(kind) for name, kind in layout})


@pytest.mark.parametrize("api_key", sorted(EXTENSION_APIS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_request_round_trip(api_key: int, data: st.DataObject) -> None:
    fields = data.draw(_message(x.REQUESTS[api_key]))
    frame = x.encode_request(api_key, 12, fields, "client")
    assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
    header = parse_request_header(frame[4:])
    assert (header.api_key, header.api_version, header.correlation_id) == (api_key, 0, 12)
    assert header.header_version == 2
    assert x.decode_request_body(api_key, frame[4:], header.body_position) == fields


@pytest.mark.parametrize("api_key", sorted(EXTENSION_APIS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_response_round_trip(api_key: int, data: st.DataObject) -> None:
    fields = data.draw(_message(x.RESPONSES[api_key]))
    frame = x.encode_response(api_key, 99, fields)
    assert x.decode_response(api_key, frame[4:]) == (99, fields)


def test_append_request_bytes_follow_the_spec() -> None:
    """The spec's layout byte for byte: header v2, compact strings, int8 kind, NewEvent struct."""
    event_id = uuid.UUID(int=1)
    frame = x.encode_request(20000, 5, {
        "stream_id": "a-1", "topic": None, "expected_kind": 0, "expected_version": -1,
        "events": [(event_id.bytes, "T", b"d", b"")]}, None)
    expected = (
        struct.pack(">hhih", 20000, 0, 5, -1) + b"\x00"  # header v2, null client id, no tags
        + b"\x04a-1" + b"\x00" + b"\x00" + struct.pack(">q", -1)
        + b"\x02" + event_id.bytes + b"\x02T" + b"\x02d" + b"\x01" + b"\x00"  # one NewEvent
        + b"\x00"  # the request's tagged fields
    )
    assert frame == struct.pack(">i", len(expected)) + expected


def test_unknown_tagged_fields_are_skipped() -> None:
    body = x.encode_response(20009, 1, {"stream_ids": ["a"]})[4:]
    assert body.endswith(b"\x00")
    tagged = body[:-1] + b"\x01\x07\x02zz"  # one unknown tag (7) of 2 bytes
    assert x.decode_response(20009, tagged)[1]["stream_ids"] == ["a"]


@pytest.mark.parametrize("bad", [
    b"",  # nothing
    struct.pack(">i", 1) + b"\x00" + b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\x0f",  # lying count
    struct.pack(">i", 1) + b"\x00" + b"\x00" * 6 + b"\x02\xff" + b"\x00",  # non-UTF-8 id
])
def test_bad_responses_raise_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        x.decode_response(20009, bad)


def test_lying_array_count_costs_nothing() -> None:
    """A count of 2**32 events in a few bytes is refused before anything is built."""
    body = struct.pack(">ihh", 0, 0, 0) + b"\x00" + b"\xff\xff\xff\xff\x0f"
    with pytest.raises(ProtocolError, match="bytes left"):
        x.decode_response(20001, struct.pack(">i", 3) + b"\x00" + body[4:])


@pytest.mark.parametrize("api_key", sorted(EXTENSION_APIS))
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_decode_or_raise_protocol_error(api_key: int, data: bytes) -> None:
    for call in (lambda: x.decode_response(api_key, data),
                 lambda: x.decode_request_body(api_key, data, 0)):
        with contextlib.suppress(ProtocolError):
            call()


@pytest.mark.parametrize("api_key", sorted(EXTENSION_APIS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_mutated_valid_frames_decode_or_raise_protocol_error(api_key: int, data: st.DataObject) -> None:
    """Near-valid bytes reach deeper than random ones: flip, cut and extend real frames."""
    fields = data.draw(_message(x.RESPONSES[api_key]))
    body = bytearray(x.encode_response(api_key, 1, fields)[4:])
    for _ in range(data.draw(st.integers(1, 4))):
        if body:
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    with contextlib.suppress(ProtocolError):
        x.decode_response(api_key, bytes(body[:cut]) + data.draw(st.binary(max_size=8)))


def test_api_versions_v0_round_trip() -> None:
    frame = x.encode_api_versions_request(3, "c")
    header = parse_request_header(frame[4:])
    assert (header.api_key, header.api_version, header.correlation_id) == (18, 0, 3)
    response = struct.pack(">ihi", 3, 0, 2) + struct.pack(">hhh", 0, 3, 11) + struct.pack(">hhh", 20000, 0, 0)
    assert x.decode_api_versions_response(response) == (3, 0, {0: (3, 11), 20000: (0, 0)})
    with pytest.raises(ProtocolError):
        x.decode_api_versions_response(struct.pack(">ihi", 3, 0, 1000))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120))
def test_any_api_versions_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        x.decode_api_versions_response(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120))
def test_any_sasl_response_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    """The remote client's SASL answers come from the network too: any bytes give a value
    or ProtocolError, never another exception."""
    for decode in (x.decode_sasl_handshake_response, x.decode_sasl_authenticate_response):
        with contextlib.suppress(ProtocolError):
            decode(data)


@settings(max_examples=200, deadline=None)
@given(mechanisms=st.lists(st.text(max_size=20), max_size=5), flips=st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4), cut=st.integers(0, 400))
def test_mutated_sasl_handshake_answers_decode_or_raise_protocol_error(
        mechanisms: list[str], flips: list[tuple[int, int]], cut: int) -> None:
    """Near-valid SaslHandshake answers: a real one, bytes changed and cut."""
    body = bytearray(struct.pack(">ihi", 7, 0, len(mechanisms)))
    for name in mechanisms:
        raw = name.encode()
        body += struct.pack(">h", len(raw)) + raw
    assert x.decode_sasl_handshake_response(bytes(body)) == (7, 0, mechanisms)
    for position, value in flips:
        if position < len(body):
            body[position] = value
    with contextlib.suppress(ProtocolError):
        x.decode_sasl_handshake_response(bytes(body[:cut]))
