"""Request headers, read from a frame; response headers, written in front of a body.

Request header (docs/protocol.md, section 2), big-endian:

====================  =====  =====================================================
field                 size   meaning
====================  =====  =====================================================
request_api_key       2      int16: the API (Produce = 0, Fetch = 1, ...)
request_api_version   2      int16
correlation_id        4      int32: echoed in the response
client_id             2 + n  nullable string: int16 length (-1 = null), UTF-8 bytes
tagged fields         ≥ 1    header v2 only (flexible versions): unsigned varint
                             count, then per field: tag, size (unsigned varints),
                             ``size`` bytes
====================  =====  =====================================================

``client_id`` keeps its int16 length even in header v2 (Kafka special-cases it).
The header is read here rather than by kio: it must be read before anyone knows
whether the version is served, and an unknown version still has to give its
correlation id so that it can be answered. Header tags are skipped (none is
defined).

Response header: ``correlation_id`` int32 (v0), then an empty tagged-field section
(v1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from .apis import request_header_version, response_header_version
from .errors import ProtocolError
from .primitives import Malformed, read_uvarint

__all__ = ["RequestHeader", "parse_request_header", "response_header"]

_fixed = struct.Struct(">hhih")  # api key, api version, correlation id, client id length
_correlation = struct.Struct(">i")
FIXED_BYTES: Final = _fixed.size  # 10


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """A request's header; ``body_position`` is where its body starts in the frame."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    header_version: int
    body_position: int


def parse_request_header(frame: bytes | bytearray | memoryview) -> RequestHeader:
    """The header at the start of ``frame`` (a frame's contents, without its size).

    The header version follows from the API and version (v2 for flexible versions
    the server knows, v1 otherwise). Raises :class:`ProtocolError` on bytes that
    are not a header.
    """
    end = len(frame)
    if end < FIXED_BYTES:
        raise ProtocolError(f"request header needs at least {FIXED_BYTES} bytes, frame has {end}", 0)
    api_key, api_version, correlation_id, client_id_length = _fixed.unpack_from(frame, 0)
    position = FIXED_BYTES
    client_id: str | None = None
    if client_id_length >= 0:
        stop = position + client_id_length
        if stop > end:
            raise ProtocolError(f"client_id of {client_id_length} bytes runs past the frame", 8)
        try:
            client_id = bytes(frame[position:stop]).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("client_id is not UTF-8", position) from None
        position = stop
    elif client_id_length != -1:
        raise ProtocolError(f"client_id length {client_id_length}", 8)
    version = request_header_version(api_key, api_version)
    if version == 2:
        position = _skip_tagged_fields(frame, position, end)
    return RequestHeader(api_key, api_version, correlation_id, client_id, version, position)


def _skip_tagged_fields(frame: bytes | bytearray | memoryview, position: int, end: int) -> int:
    try:
        count, position = read_uvarint(frame, position, end)
        for _ in range(count):  # each field takes at least two bytes: bounded by the frame
            _tag, position = read_uvarint(frame, position, end)
            size, position = read_uvarint(frame, position, end)
            if size > end - position:
                raise Malformed(f"tagged field of {size} bytes runs past the frame", position)
            position += size
    except Malformed as e:
        raise ProtocolError(f"request header tagged fields: {e.reason}", e.position) from None
    return position


def response_header(api_key: int, api_version: int, correlation_id: int) -> bytes:
    """The response header for a request of ``api_key`` / ``api_version``."""
    head = _correlation.pack(correlation_id)
    if response_header_version(api_key, api_version) == 1:
        return head + b"\x00"  # no tagged fields
    return head
