"""What every extension API's frame handler does around its call (docs/protocol.md, section 7):
kio has no classes for these keys, so the frame is decoded by ``eventstore.wire.extensions``
and the whole response frame encoded here, every failure in its ``error_code``.

Only v0 is served; bad bytes are answered INVALID_REQUEST; an ``EventStoreError``
becomes its Kafka error code (or what the handler's ``refusal`` says); anything
else is a defect, logged and answered UNKNOWN_SERVER_ERROR: nothing a client sends
stops the server.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import EventStoreError, StoreClosedError
from ..sourcing.streams import Streams
from ..wire import RequestHeader, kafka_error_for
from ..wire import extensions as codec
from ..wire.errors import INVALID_REQUEST, UNKNOWN_SERVER_ERROR, UNSUPPORTED_VERSION, ProtocolError
from .context import Context

__all__ = ["Refusal", "answer_extension", "open_streams"]

log = logging.getLogger("eventstore.server")

Refusal = Callable[[EventStoreError], tuple[int, dict[str, Any]]]
"""An error's code in the response, and any response fields it fills besides the message."""


def kafka_refusal(e: EventStoreError) -> tuple[int, dict[str, Any]]:
    """The error's Kafka code, nothing more."""
    return kafka_error_for(e).code, {}


async def answer_extension(ctx: Context, header: RequestHeader, frame_bytes: bytes,
                           call: Callable[[int, dict[str, Any]], Awaitable[dict[str, Any]]],
                           refusal: Refusal = kafka_refusal) -> bytes:
    """The response frame to one extension request: ``call(key, request)``'s fields, or the
    error every failure becomes."""
    key, cid = header.api_key, header.correlation_id
    if header.api_version != 0:
        return codec.error_response(key, cid, UNSUPPORTED_VERSION.code,
                                    f"{key} v{header.api_version} is not served (only v0)")
    try:
        request = codec.decode_request_body(key, frame_bytes, header.body_position)
    except ProtocolError as e:
        return codec.error_response(key, cid, INVALID_REQUEST.code, str(e))
    try:
        fields = await call(key, request)
    except EventStoreError as e:
        code, extra = refusal(e)
        return codec.error_response(key, cid, code, str(e), **extra)
    except Exception as e:  # a defect: logged, answered, and the server stays up
        log.exception("%s from %s failed", key, ctx.client)
        return codec.error_response(key, cid, UNKNOWN_SERVER_ERROR.code, f"{type(e).__name__}: {e}")
    return codec.encode_response(key, cid, fields)


def open_streams(ctx: Context) -> Streams:
    """The served store's streams (opened on first use); StoreClosedError when there are none."""
    streams = ctx.streams
    if streams is None:
        raise StoreClosedError("this server has no event streams")
    streams.check_open()
    return streams
