"""The extension APIs' messages (docs/protocol.md, section 7), encoded and decoded by hand.

kio has no classes for keys 20000 to 20011, so their layouts are written here once,
as tables (``REQUESTS``, ``RESPONSES``) read by one encoder and one decoder. Every
message is flexible from version 0: request header v2, response header v1, compact
strings, bytes and arrays, a tagged-field section at the end of every struct.

Values are plain Python: a message is a ``dict`` of its fields, a struct in an
array (NewEvent, RecordedEvent) is a ``tuple`` in its field order, an array is a
``list``. This module imports nothing above the codec, so the server and the
remote client share it.

Decoding is bounded and total: every length and count is checked against the
bytes left before anything is built, unknown tagged fields are skipped, and any
bytes give either a value or :class:`ProtocolError`, never another exception
(held by a fuzz test). The ApiVersions v0 request and response the remote client
opens with are here too, and SaslHandshake v1 and SaslAuthenticate v1 it authenticates
with, so that it needs no kio.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from typing import Any, Final

from .apis import API_VERSIONS_KEY, EXTENSION_APIS
from .errors import ProtocolError
from .framing import frame
from .primitives import Malformed, read_uvarint, write_uvarint

__all__ = [
    "NEW_EVENT",
    "QUERY_ITEM",
    "REPLICA",
    "RECORDED_EVENT",
    "REQUESTS",
    "RESPONSES",
    "SEQUENCED_EVENT",
    "TAGGED_EVENT",
    "decode_api_versions_response",
    "decode_metadata_leader",
    "decode_request_body",
    "decode_response",
    "decode_sasl_authenticate_response",
    "decode_sasl_handshake_response",
    "encode_api_versions_request",
    "encode_metadata_request",
    "encode_request",
    "encode_response",
    "encode_sasl_authenticate_request",
    "encode_sasl_handshake_request",
]

# A field type is a primitive's name, a struct (a tuple of (name, type) pairs, ending in
# tagged fields), or ("array", item type).
FieldType = Any
Fields = tuple[tuple[str, FieldType], ...]

NEW_EVENT: Final[Fields] = (("id", "uuid"), ("type", "str"), ("data", "bytes"), ("metadata", "bytes"))
RECORDED_EVENT: Final[Fields] = (
    ("stream_id", "str"), ("version", "i64"), ("type", "str"), ("data", "bytes"),
    ("metadata", "bytes"), ("id", "uuid"), ("position", "i64"), ("timestamp_ms", "i64"),
    ("topic", "str"), ("partition", "i32"), ("offset", "i64"),
)
_EVENTS: Final = ("array", RECORDED_EVENT)
_APPEND_RESULT: Final[Fields] = (
    ("stream_id", "str"), ("next_expected_version", "i64"), ("position", "i64"))
COMMON_RESPONSE: Final[Fields] = (
    ("throttle_time_ms", "i32"), ("error_code", "i16"), ("error_message", "nstr"))

TAGGED_EVENT: Final[Fields] = (("type", "str"), ("data", "bytes"), ("tags", ("array", "str")))
SEQUENCED_EVENT: Final[Fields] = (("position", "i64"), ("type", "str"), ("data", "bytes"),
                                  ("tags", ("array", "str")))
QUERY_ITEM: Final[Fields] = (("types", ("array", "str")), ("tags", ("array", "str")))
_QUERY: Final = ("array", QUERY_ITEM)
REPLICA: Final[Fields] = (("node_id", "i32"), ("host", "str"), ("port", "i32"), ("in_sync", "bool"))

REQUESTS: Final[dict[int, Fields]] = {
    20000: (("stream_id", "str"), ("topic", "nstr"), ("expected_kind", "i8"),
            ("expected_version", "i64"), ("events", ("array", NEW_EVENT))),
    20001: (("stream_id", "str"), ("from_version", "i64"), ("limit", "i32"), ("backwards", "bool"),
            ("max_bytes", "i32")),
    20002: (("from_position", "i64"), ("limit", "i32"), ("max_bytes", "i32")),
    20003: (("stream_id", "str"),),
    20004: (("stream_id", "str"), ("metadata", "bytes")),
    20005: (("stream_id", "str"),),
    20006: (("stream_id", "str"), ("before_version", "i64")),
    20007: (("kind", "i8"), ("target", "nstr"), ("from", "i64"), ("max_events", "i32"),
            ("max_bytes", "i32"), ("max_wait_ms", "i32")),
    20008: (("stream_ids", ("array", "str")),),
    20009: (("category", "nstr"),),
    20010: (("stream_id", "str"),),
    20011: (("stream_id", "str"), ("aggregate", "str"), ("schema_version", "i32"), ("version", "i64"),
            ("state", "bytes")),
    20012: (("events", ("array", TAGGED_EVENT)), ("conditional", "bool"), ("fail_if_events_match", _QUERY),
            ("after", "i64")),
    20013: (("query", _QUERY), ("after", "i64"), ("limit", "i32"), ("max_bytes", "i32")),
    20014: (("query", _QUERY), ("after", "i64"), ("max_events", "i32"), ("max_bytes", "i32"),
            ("max_wait_ms", "i32")),
    20015: (("node_id", "i32"), ("host", "str"), ("port", "i32"), ("leader_epoch", "i32"),
            ("instance", "uuid"), ("applied_version", "i64"), ("max_wait_ms", "i32")),
    20016: (("epoch", "i32"),),
}

RESPONSES: Final[dict[int, Fields]] = {
    20000: (*COMMON_RESPONSE, *_APPEND_RESULT, ("actual_version", "i64")),
    20001: (*COMMON_RESPONSE, ("events", _EVENTS), ("next_version", "i64")),
    20002: (*COMMON_RESPONSE, ("events", _EVENTS), ("next_position", "i64"), ("watermark", "i64")),
    20003: (*COMMON_RESPONSE, ("metadata", "bytes"), ("metadata_version", "i64")),
    20004: (*COMMON_RESPONSE, *_APPEND_RESULT),
    20005: (*COMMON_RESPONSE, *_APPEND_RESULT),
    20006: (*COMMON_RESPONSE, *_APPEND_RESULT),
    20007: (*COMMON_RESPONSE, ("events", _EVENTS), ("next_from", "i64")),
    20008: (*COMMON_RESPONSE, ("versions", ("array", "i64"))),
    20009: (*COMMON_RESPONSE, ("stream_ids", ("array", "str"))),
    20010: (*COMMON_RESPONSE, ("found", "bool"), ("aggregate", "str"), ("schema_version", "i32"),
            ("version", "i64"), ("state", "bytes"), ("head_version", "i64")),
    20011: (*COMMON_RESPONSE, ("written", "bool")),
    20012: (*COMMON_RESPONSE, ("position", "i64")),
    20013: (*COMMON_RESPONSE, ("events", ("array", SEQUENCED_EVENT)), ("head", "i64"), ("cut", "bool")),
    20014: (*COMMON_RESPONSE, ("events", ("array", SEQUENCED_EVENT)), ("next_after", "i64")),
    20015: (*COMMON_RESPONSE, ("leader_id", "i32"), ("leader_host", "str"), ("leader_port", "i32"),
            ("leader_epoch", "i32"), ("instance", "uuid"), ("version", "i64"), ("full", "bool"),
            ("state", "bytes"), ("replicas", ("array", REPLICA))),
    20016: (*COMMON_RESPONSE, ("node_id", "i32"), ("epoch", "i32")),
}

_i8 = struct.Struct(">b")
_i16 = struct.Struct(">h")
_i32 = struct.Struct(">i")
_i64 = struct.Struct(">q")
_FIXED: Final = {"i8": _i8, "i16": _i16, "i32": _i32, "i64": _i64}
_RANGES: Final = {"i8": 7, "i16": 15, "i32": 31, "i64": 63}
_header = struct.Struct(">hhih")  # api key, version, correlation id, client id length


# --- encoding ----------------------------------------------------------------------------------


def encode_request(api_key: int, correlation_id: int, fields: dict[str, Any],
                   client_id: str | None = None) -> bytes:
    """A whole request frame (size, header v2, body) of extension API ``api_key``."""
    out = bytearray()
    client = None if client_id is None else client_id.encode()
    out += _header.pack(api_key, 0, correlation_id, -1 if client is None else len(client))
    if client is not None:
        out += client
    out.append(0)  # header tagged fields
    _write_struct(out, _layout(REQUESTS, api_key), fields)
    return frame(out)


def encode_response(api_key: int, correlation_id: int, fields: dict[str, Any]) -> bytes:
    """A whole response frame (size, header v1, body); missing common fields default to 0/None."""
    values = {"throttle_time_ms": 0, "error_code": 0, "error_message": None, **fields}
    out = bytearray(_i32.pack(correlation_id))
    out.append(0)  # response header v1: no tagged fields
    _write_struct(out, _layout(RESPONSES, api_key), values)
    return frame(out)


def error_response(api_key: int, correlation_id: int, error_code: int, message: str | None,
                   **fields: Any) -> bytes:
    """A response carrying an error: every field not given takes its empty value."""
    values = {name: _empty(kind) for name, kind in _layout(RESPONSES, api_key)}
    values.update(fields, throttle_time_ms=0, error_code=error_code, error_message=message)
    return encode_response(api_key, correlation_id, values)


_EMPTY: Final[dict[str, Any]] = {
    "i8": 0, "i16": 0, "i32": -1, "i64": -1, "bool": False, "uuid": bytes(16), "str": "",
    "nstr": None, "bytes": b"",
}


def _empty(kind: FieldType) -> Any:
    """A field's value in an error response: -1 for versions and positions, empty otherwise."""
    return _EMPTY[kind] if isinstance(kind, str) else []


def _layout(table: dict[int, Fields], api_key: int) -> Fields:
    layout = table.get(api_key)
    if layout is None:
        raise ValueError(f"{api_key} is not an extension API key")
    return layout


def _write_struct(out: bytearray, layout: Fields, values: dict[str, Any] | Sequence[Any]) -> None:
    if isinstance(values, dict):
        for name, kind in layout:
            _write(out, kind, values[name])
    else:
        for (_, kind), value in zip(layout, values, strict=True):
            _write(out, kind, value)
    out.append(0)  # tagged fields: none in version 0


def _write(out: bytearray, kind: FieldType, value: Any) -> None:
    fixed = _FIXED.get(kind) if isinstance(kind, str) else None
    if fixed is not None:
        out += fixed.pack(value)
    elif kind == "str" or kind == "nstr":
        if value is None:
            if kind == "str":
                raise ValueError("a non-nullable string is None")
            out.append(0)
            return
        data = value.encode()
        write_uvarint(out, len(data) + 1)
        out += data
    elif kind == "bytes":
        write_uvarint(out, len(value) + 1)
        out += value
    elif kind == "bool":
        out.append(1 if value else 0)
    elif kind == "uuid":
        out += value.bytes if isinstance(value, uuid.UUID) else bytes(value)
    elif isinstance(kind, tuple) and kind[0] == "array":
        item = kind[1]
        if item is RECORDED_EVENT:
            _write_recorded_events(out, value)
            return
        write_uvarint(out, len(value) + 1)
        for element in value:
            if isinstance(item, tuple) and item and isinstance(item[0], tuple):
                _write_struct(out, item, element)
            else:
                _write(out, item, element)
    else:  # pragma: no cover - the tables above use only the kinds handled here
        raise ValueError(f"unknown field kind {kind!r}")


# --- decoding ----------------------------------------------------------------------------------


class _Reader:
    """A position in a buffer, and the checked reads of each field kind."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def need(self, size: int, what: str) -> int:
        start = self.pos
        if size > self.end - start:
            raise ProtocolError(f"{what} of {size} bytes runs past the frame", start)
        self.pos = start + size
        return start

    def uvarint(self) -> int:
        try:
            value, self.pos = read_uvarint(self.buf, self.pos, self.end)
        except Malformed as e:
            raise ProtocolError(e.reason, e.position) from None
        return value

    def length(self, what: str) -> int:
        """A compact length (varint n + 1; 0 = null → -1), bounded by the bytes left."""
        n = self.uvarint() - 1
        if n > self.end - self.pos:
            raise ProtocolError(f"{what} says {n} items or bytes, {self.end - self.pos} bytes left",
                                self.pos)
        return n

    def skip_tags(self) -> None:
        count = self.length("tagged fields") + 1  # a plain uvarint count, bounded the same way
        for _ in range(count):  # each tag takes at least two bytes: bounded by the frame
            self.uvarint()
            size = self.uvarint()
            self.need(size, "tagged field")


    def string(self, what: str) -> str:
        """A compact non-null string."""
        n = self.length(what)
        if n < 0:
            raise ProtocolError(f"{what} is null", self.pos)
        start = self.need(n, what)
        try:
            return self.buf[start:start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{what} is not UTF-8", start) from None

    def blob(self, what: str, size: int | None = None) -> bytes:
        """Compact non-null bytes (``size`` given: that many bytes, a uuid)."""
        n = self.length(what) if size is None else size
        if n < 0:
            raise ProtocolError(f"{what} is null", self.pos)
        start = self.need(n, what)
        return self.buf[start:start + n]

    def fixed(self, fmt: struct.Struct, what: str) -> int:
        return int(fmt.unpack_from(self.buf, self.need(fmt.size, what))[0])


def _read_recorded_events(r: _Reader, count: int) -> list[tuple[Any, ...]]:
    """An array of RecordedEvent, read without the table walk: a read of 10,000 events spends
    most of its time here. Strings that repeat (stream ids, types, topics) are decoded once.
    Every length is checked against the bytes left, as in ``_Reader``."""
    buf, end, pos = r.buf, r.end, r.pos
    texts: dict[bytes, str] = {}
    q, i = _i64.unpack_from, _i32.unpack_from

    def length(at: int, what: str) -> tuple[int, int]:
        byte = buf[at] if at < end else 0x80
        if byte < 0x80:
            n, at = byte - 1, at + 1
        else:
            try:
                n, at = read_uvarint(buf, at, end)
            except Malformed as e:
                raise ProtocolError(e.reason, e.position) from None
            n -= 1
        if not 0 <= n <= end - at:
            raise ProtocolError(f"{what} of {n} bytes does not fit in the {end - at} left", at)
        return n, at

    def text(at: int, what: str) -> tuple[str, int]:
        n, at = length(at, what)
        raw = buf[at:at + n]
        value = texts.get(raw)
        if value is None:
            try:
                value = texts[raw] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(f"{what} is not UTF-8", at) from None
        return value, at + n

    out = []
    for _ in range(count):  # count ≤ bytes left: bounded
        sid, pos = text(pos, "stream_id")
        if end - pos < 8:
            raise ProtocolError("version runs past the frame", pos)
        version = q(buf, pos)[0]
        etype, pos = text(pos + 8, "type")
        n, pos = length(pos, "data")
        data = buf[pos:pos + n]
        n, pos = length(pos + n, "metadata")
        meta = buf[pos:pos + n]
        pos += n
        if end - pos < 32:
            raise ProtocolError("id, position and timestamp run past the frame", pos)
        eid = buf[pos:pos + 16]
        position, timestamp = q(buf, pos + 16)[0], q(buf, pos + 24)[0]
        topic, pos = text(pos + 32, "topic")
        if end - pos < 13:
            raise ProtocolError("partition and offset run past the frame", pos)
        partition, offset = i(buf, pos)[0], q(buf, pos + 4)[0]
        pos += 12
        if buf[pos] == 0:  # no tagged fields: the usual case
            pos += 1
        else:
            r.pos = pos
            r.skip_tags()
            pos = r.pos
        out.append((sid, version, etype, data, meta, eid, position, timestamp, topic, partition, offset))
    r.pos = pos
    return out


def _write_recorded_events(out: bytearray, events: Sequence[Sequence[Any]]) -> None:
    """An array of RecordedEvent (count included), strings that repeat encoded once."""
    write_uvarint(out, len(events) + 1)
    texts: dict[str, bytes] = {}
    pack_q, pack_i = _i64.pack, _i32.pack

    def text(value: str) -> bytes:
        encoded = texts.get(value)
        if encoded is None:
            raw = value.encode()
            head = bytearray()
            write_uvarint(head, len(raw) + 1)
            encoded = texts[value] = bytes(head) + raw
        return encoded

    for sid, version, etype, data, meta, eid, position, timestamp, topic, partition, offset in events:
        raw_id = eid.bytes if isinstance(eid, uuid.UUID) else bytes(eid)
        if len(raw_id) != 16:
            raise ValueError(f"an event id is 16 bytes, got {len(raw_id)}")
        out += text(sid)
        out += pack_q(version)
        out += text(etype)
        write_uvarint(out, len(data) + 1)
        out += data
        write_uvarint(out, len(meta) + 1)
        out += meta
        out += raw_id
        out += pack_q(position)
        out += pack_q(timestamp)
        out += text(topic)
        out += pack_i(partition)
        out += pack_q(offset)
        out.append(0)  # the struct's tagged fields


def _read_struct(r: _Reader, layout: Fields) -> list[Any]:
    values = [_read(r, kind, name) for name, kind in layout]
    r.skip_tags()
    return values


def _read(r: _Reader, kind: FieldType, name: str) -> Any:
    fixed = _FIXED.get(kind) if isinstance(kind, str) else None
    if fixed is not None:
        return fixed.unpack_from(r.buf, r.need(fixed.size, name))[0]
    if kind == "str" or kind == "nstr":
        n = r.length(name)
        if n < 0:
            if kind == "str":
                raise ProtocolError(f"{name} is null", r.pos)
            return None
        start = r.need(n, name)
        try:
            return r.buf[start:start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{name} is not UTF-8", start) from None
    if kind == "bytes":
        n = r.length(name)
        if n < 0:
            raise ProtocolError(f"{name} is null", r.pos)
        start = r.need(n, name)
        return r.buf[start:start + n]
    if kind == "bool":
        byte = r.buf[r.need(1, name)]
        if byte > 1:
            raise ProtocolError(f"{name}: boolean byte {byte}", r.pos - 1)
        return byte == 1
    if kind == "uuid":
        start = r.need(16, name)
        return r.buf[start:start + 16]
    item = kind[1]
    n = r.length(name)
    if n < 0:
        raise ProtocolError(f"{name} is a null array", r.pos)
    if item is RECORDED_EVENT:
        return _read_recorded_events(r, n)
    if isinstance(item, tuple):
        return [tuple(_read_struct(r, item)) for _ in range(n)]  # n ≤ bytes left: bounded
    return [_read(r, item, name) for _ in range(n)]


def _read_message(buf: bytes, position: int, layout: Fields, what: str) -> dict[str, Any]:
    r = _Reader(buf, position)
    values = _read_struct(r, layout)
    if r.pos != r.end:
        raise ProtocolError(f"{what}: {r.end - r.pos} bytes left after the body", r.pos)
    return {name: value for (name, _), value in zip(layout, values, strict=True)}


def decode_request_body(api_key: int, frame_bytes: bytes | bytearray | memoryview,
                        position: int) -> dict[str, Any]:
    """The body of an extension request whose header ends at ``position`` of ``frame_bytes``."""
    layout = REQUESTS.get(api_key)
    if layout is None:
        raise ProtocolError(f"API key {api_key} is not an extension API")
    return _read_message(bytes(frame_bytes), position, layout, EXTENSION_APIS[api_key])


def decode_response(api_key: int, frame_bytes: bytes | bytearray | memoryview) -> tuple[int, dict[str, Any]]:
    """``(correlation_id, fields)`` of an extension response frame (without its size)."""
    layout = RESPONSES.get(api_key)
    if layout is None:
        raise ProtocolError(f"API key {api_key} is not an extension API")
    buf = bytes(frame_bytes)
    r = _Reader(buf, 0)
    correlation_id = _i32.unpack_from(buf, r.need(4, "correlation id"))[0]
    r.skip_tags()
    return correlation_id, _read_message(buf, r.pos, layout, EXTENSION_APIS[api_key])


# --- ApiVersions v0, the first request of a remote client --------------------------------------


def encode_api_versions_request(correlation_id: int, client_id: str | None = None) -> bytes:
    """An ApiVersions v0 request frame (header v1, empty body): every server answers it."""
    client = None if client_id is None else client_id.encode()
    out = bytearray(_header.pack(API_VERSIONS_KEY, 0, correlation_id, -1 if client is None else len(client)))
    if client is not None:
        out += client
    return frame(out)


_api_range = struct.Struct(">hhh")


def decode_api_versions_response(frame_bytes: bytes | bytearray | memoryview
                                 ) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """``(correlation_id, error_code, {api_key: (min, max)})`` of an ApiVersions v0 response."""
    buf = bytes(frame_bytes)
    r = _Reader(buf, 0)
    correlation_id = _i32.unpack_from(buf, r.need(4, "correlation id"))[0]
    error_code = _i16.unpack_from(buf, r.need(2, "error code"))[0]
    count = _i32.unpack_from(buf, r.need(4, "api count"))[0]
    if not 0 <= count <= (r.end - r.pos) // _api_range.size:
        raise ProtocolError(f"ApiVersions lists {count} APIs in {r.end - r.pos} bytes", r.pos)
    apis: dict[int, tuple[int, int]] = {}
    for _ in range(count):  # bounded by the check above
        key, low, high = _api_range.unpack_from(buf, r.need(_api_range.size, "api range"))
        apis[key] = (low, high)
    return correlation_id, error_code, apis  # v0 has no more fields; later versions' extra are ignored


METADATA_KEY: Final = 3


def encode_metadata_request(correlation_id: int, client_id: str | None = None) -> bytes:
    """A Metadata v1 request frame for no topic (an empty array): the brokers and the
    controller, which on eventstore's server is the leader (docs/replication.md, 4.5)."""
    client = None if client_id is None else client_id.encode()
    out = bytearray(_header.pack(METADATA_KEY, 1, correlation_id, -1 if client is None else len(client)))
    if client is not None:
        out += client
    out += _i32.pack(0)
    return frame(out)


def decode_metadata_leader(frame_bytes: bytes | bytearray | memoryview
                           ) -> tuple[int, int, dict[int, tuple[str, int]]]:
    """``(correlation_id, controller_id, {node_id: (host, port)})`` of a Metadata v1 response
    (its topics, none asked, are not read)."""
    buf = bytes(frame_bytes)
    r = _Reader(buf, 0)
    correlation_id = _i32.unpack_from(buf, r.need(4, "correlation id"))[0]
    count = _i32.unpack_from(buf, r.need(4, "broker count"))[0]
    if not 0 <= count <= (r.end - r.pos) // 12:  # a broker takes at least 12 bytes
        raise ProtocolError(f"Metadata lists {count} brokers in {r.end - r.pos} bytes", r.pos)
    brokers: dict[int, tuple[str, int]] = {}
    for _ in range(count):  # bounded by the check above
        node_id = _i32.unpack_from(buf, r.need(4, "node id"))[0]
        host = _short_string(r, buf, "host")
        port = _i32.unpack_from(buf, r.need(4, "port"))[0]
        _short_string(r, buf, "rack")
        brokers[node_id] = (host or "", port)
    controller_id = _i32.unpack_from(buf, r.need(4, "controller id"))[0]
    return correlation_id, controller_id, brokers


# --- SaslHandshake v1 and SaslAuthenticate v1, the remote client's authentication -----------

SASL_HANDSHAKE_KEY: Final = 17
SASL_AUTHENTICATE_KEY: Final = 36


def _v1_request(api_key: int, correlation_id: int, client_id: str | None, body: bytes) -> bytes:
    """A version 1 request frame of ``api_key`` (header v1, not flexible) carrying ``body``."""
    client = None if client_id is None else client_id.encode()
    out = bytearray(_header.pack(api_key, 1, correlation_id, -1 if client is None else len(client)))
    if client is not None:
        out += client
    out += body
    return frame(out)


def encode_sasl_handshake_request(correlation_id: int, mechanism: str,
                                  client_id: str | None = None) -> bytes:
    """A SaslHandshake v1 request frame: the mechanism (an int16-length string)."""
    name = mechanism.encode()
    return _v1_request(SASL_HANDSHAKE_KEY, correlation_id, client_id, _i16.pack(len(name)) + name)


def decode_sasl_handshake_response(frame_bytes: bytes | bytearray | memoryview
                                   ) -> tuple[int, int, list[str]]:
    """``(correlation_id, error_code, mechanisms offered)`` of a SaslHandshake v1 response."""
    buf = bytes(frame_bytes)
    r = _Reader(buf, 0)
    correlation_id = _i32.unpack_from(buf, r.need(4, "correlation id"))[0]
    error_code = _i16.unpack_from(buf, r.need(2, "error code"))[0]
    count = _i32.unpack_from(buf, r.need(4, "mechanism count"))[0]
    if not 0 <= count <= (r.end - r.pos) // 2:  # a string takes at least its two length bytes
        raise ProtocolError(f"SaslHandshake lists {count} mechanisms in {r.end - r.pos} bytes", r.pos)
    mechanisms = [_short_string(r, buf, "mechanism") or "" for _ in range(count)]  # bounded above
    return correlation_id, error_code, mechanisms


def encode_sasl_authenticate_request(correlation_id: int, message: bytes,
                                     client_id: str | None = None) -> bytes:
    """A SaslAuthenticate v1 request frame: one message of the mechanism (int32-length bytes)."""
    return _v1_request(SASL_AUTHENTICATE_KEY, correlation_id, client_id, _i32.pack(len(message)) + message)


def decode_sasl_authenticate_response(frame_bytes: bytes | bytearray | memoryview
                                      ) -> tuple[int, int, str | None, bytes]:
    """``(correlation_id, error_code, error_message, the server's message)`` of a
    SaslAuthenticate v1 response (its session lifetime is not read)."""
    buf = bytes(frame_bytes)
    r = _Reader(buf, 0)
    correlation_id = _i32.unpack_from(buf, r.need(4, "correlation id"))[0]
    error_code = _i16.unpack_from(buf, r.need(2, "error code"))[0]
    error_message = _short_string(r, buf, "error message")
    size = _i32.unpack_from(buf, r.need(4, "auth bytes length"))[0]
    if size < 0:
        return correlation_id, error_code, error_message, b""
    start = r.need(size, "auth bytes")
    return correlation_id, error_code, error_message, buf[start:start + size]


def _short_string(r: _Reader, buf: bytes, what: str) -> str | None:
    """A nullable string with an int16 length (the non-flexible encoding)."""
    n = _i16.unpack_from(buf, r.need(2, what))[0]
    if n < 0:
        return None
    start = r.need(n, what)
    try:
        return buf[start:start + n].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8", start) from None


def check_int(kind: str, value: int) -> bool:
    """Whether ``value`` fits the signed integer field ``kind`` ("i8" to "i64")."""
    bits = _RANGES[kind]
    return -(1 << bits) <= value < (1 << bits)
