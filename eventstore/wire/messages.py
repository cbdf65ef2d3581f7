"""Kafka requests from frames, responses to frames: the bodies are kio's classes.

The server's whole view of a message goes through three calls:

* :func:`parse_request_header` (``header.py``) on a frame from the splitter;
* :func:`decode_request_body`: the body as kio's request class for that API and
  version, after :func:`~eventstore.wire.bounds.check_body` has checked every
  length and count (kio's reader would abort the process on a lying one);
* :func:`encode_response`: kio's response entity behind the right response header,
  with the frame's size in front; :func:`encode_response_parts` the same frame as a
  list of buffers in which every large ``bytes``/``records`` value (a Fetch's stored
  batches) is the caller's object itself, not a copy (``framing.FrameParts``).

Decoding raises :class:`ProtocolError` (or its subclass
:class:`UnsupportedVersionError`) and nothing else, whatever the bytes.
"""

from __future__ import annotations

import datetime
import io
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from .errors import SERVER_EXTRA

try:
    from kio.index import load_request_schema, load_response_schema
    from kio.schema.errors import ErrorCode
    from kio.serial import entity_reader, entity_writer
    from kio.static.primitive import i16, i32Timedelta
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(f"{__name__}: {e.name} is missing; {SERVER_EXTRA}") from e

from .apis import API_VERSIONS_KEY, EXTENSION_APIS, SERVED, advertised, is_served
from .bounds import check_body
from .errors import ProtocolError, UnsupportedVersionError
from .framing import SIZE_BYTES, SPLICE_BYTES, Buffer, FrameParts
from .header import RequestHeader, parse_request_header, response_header

__all__ = [
    "Request",
    "api_versions_response",
    "decode_request",
    "decode_request_body",
    "encode_response",
    "encode_response_frame",
    "encode_response_parts",
    "request_type",
    "response_type",
]


_size = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request: its header and its body (an instance of kio's request class)."""

    header: RequestHeader
    body: Any


def request_type(api_key: int, api_version: int) -> Any:
    """kio's request class for a served Kafka API and version."""
    if api_key in EXTENSION_APIS or not is_served(api_key, api_version):
        raise UnsupportedVersionError(api_key, api_version)
    return _request_type(api_key, api_version)


def response_type(api_key: int, api_version: int) -> Any:
    """kio's response class for a served Kafka API and version."""
    if api_key in EXTENSION_APIS or not is_served(api_key, api_version):
        raise UnsupportedVersionError(api_key, api_version)
    return _response_type(api_key, api_version)


@cache
def _request_type(api_key: int, api_version: int) -> Any:
    return load_request_schema(api_key, api_version)


@cache
def _response_type(api_key: int, api_version: int) -> Any:
    return load_response_schema(api_key, api_version)


@cache
def _reader(entity_type: Any) -> Any:
    return entity_reader(entity_type)


@cache
def _writer(entity_type: Any) -> Any:
    return entity_writer(entity_type)


def decode_request(frame_bytes: bytes | bytearray | memoryview) -> Request:
    """Header and body of a frame; :class:`UnsupportedVersionError` for what is not served."""
    header = parse_request_header(frame_bytes)
    return Request(header, decode_request_body(header, frame_bytes))


def decode_request_body(header: RequestHeader, frame_bytes: bytes | bytearray | memoryview) -> Any:
    """The body of ``frame_bytes`` (whose header is ``header``) as kio's request class."""
    entity_type = request_type(header.api_key, header.api_version)
    body = check_body(entity_type, frame_bytes, header.body_position)
    if not isinstance(body, bytes):  # kio reads only read-only buffers
        body = bytes(body)
    try:
        value, size = _reader(entity_type)(body, header.body_position)
    except Exception as e:  # kio's errors on bad bytes: DecodeError, ValueError, KeyError, ...
        raise ProtocolError(f"{entity_type.__name__}: {type(e).__name__}: {e}") from None
    if header.body_position + size != len(body):
        raise ProtocolError(f"{entity_type.__name__}: bytes left after the body", header.body_position + size)
    return value


def encode_response(correlation_id: int, response: Any) -> bytes:
    """``response`` (kio's response entity) as a whole frame: size, header, body.

    The size is reserved in front and filled in at the end, so the frame is copied
    once (out of the BytesIO), not once more to put the size in front."""
    out = io.BytesIO()
    out.write(bytes(SIZE_BYTES))
    _write(out, correlation_id, response)
    view = out.getbuffer()
    _size.pack_into(view, 0, len(view) - SIZE_BYTES)
    view.release()
    return out.getvalue()


def encode_response_parts(correlation_id: int, response: Any) -> list[Buffer]:
    """The same frame as :func:`encode_response`, as buffers to send one after the other:
    a large field value (≥ ``SPLICE_BYTES``: the records of a Fetch) is not copied into
    the frame but is one of the buffers, the object the response holds."""
    out = FrameParts()
    _write(out, correlation_id, response)
    return out.finish()


FETCH_KEY = 1


def encode_response_frame(correlation_id: int, response: Any) -> bytes | list[Buffer]:
    """The frame of ``response`` as the server sends it: in parts around the records when
    it is a Fetch response carrying at least ``SPLICE_BYTES`` of them, else whole (kio's
    writes into a ``BytesIO`` cost less than into a ``FrameParts``)."""
    if int(response.__api_key__) == FETCH_KEY and _records_bytes(response) >= SPLICE_BYTES:
        return encode_response_parts(correlation_id, response)
    return encode_response(correlation_id, response)


def _records_bytes(response: Any) -> int:
    return sum(len(p.records) for t in response.responses for p in t.partitions if p.records is not None)


def _write(out: Any, correlation_id: int, response: Any) -> None:
    api_key = int(response.__api_key__)
    api_version = int(response.__version__)
    if api_key != API_VERSIONS_KEY and not is_served(api_key, api_version):
        raise ValueError(f"{type(response).__name__} v{api_version} is not a served response")
    out.write(response_header(api_key, api_version, correlation_id))
    entity_type: Any = type(response)
    _writer(entity_type)(out, response)


def api_versions_response(api_version: int, error_code: int = 0, extensions: bool = True) -> Any:
    """The ApiVersions response listing every API served.

    ``api_version`` above the served range (a newer client) is answered in v0 form,
    with UNSUPPORTED_VERSION (35) unless ``error_code`` says otherwise, as KIP-511
    asks: the client retries with the highest version listed.
    """
    low, high = SERVED[API_VERSIONS_KEY]
    if not low <= api_version <= high:
        api_version = 0
        error_code = error_code or int(ErrorCode.unsupported_version)
    cls = _response_type(API_VERSIONS_KEY, api_version)
    item = cls.__dataclass_fields__["api_keys"].type
    entry = _item_class(cls, item)
    keys = tuple(entry(api_key=i16(key), min_version=i16(lo), max_version=i16(hi))
                 for key, lo, hi in advertised(extensions))
    fields: dict[str, Any] = {"error_code": ErrorCode(error_code), "api_keys": keys}
    if "throttle_time" in cls.__dataclass_fields__:
        fields["throttle_time"] = i32Timedelta.parse(datetime.timedelta(0))
    return cls(**fields)


def _item_class(response_cls: type[Any], annotation: Any) -> type[Any]:
    # kio annotates arrays as tuple[Item, ...]; the annotation may be a string under
    # postponed evaluation, so resolve the item class from the response's module.
    import sys
    from typing import get_args

    if isinstance(annotation, str):
        name = annotation.removeprefix("tuple[").split(",")[0].strip()
        return getattr(sys.modules[response_cls.__module__], name)  # type: ignore[no-any-return]
    return get_args(annotation)[0]  # type: ignore[no-any-return]
