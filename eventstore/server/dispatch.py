"""Which handler answers which API, and what a request gets when its handler cannot answer.

A handler module registers its functions with ``@handles(api_key)`` (or, for APIs kio
has no classes for, ``@handles_frames(api_key)``: frame in, response frame out)::

    @handles(3)  # Metadata
    async def metadata(ctx: Context, header: RequestHeader, body: Any) -> Any:
        ...  # return kio's response entity for header.api_version

``body`` is kio's request entity for ``header.api_version`` (decoded and checked by
``eventstore.wire.messages``); the handler returns kio's response entity of the
same API and version, or None for no response at all (Produce with acks = 0).
Modules are imported by ``handlers/__init__.py``; one API has one handler.

:func:`answer` runs one request: decode, handler, encode. What it cannot answer:

* an API version not served: UNSUPPORTED_VERSION in that API's response, when
  the API is served at other versions and kio has the classes of that version;
  ApiVersions above its range: its v0 form (KIP-511); anything else closes the
  connection (:class:`CloseConnection`), as Kafka does;
* a write on a node that does not lead (a follower, a fenced leader): the refusal
  ``refusals.py`` shapes, without the handler (docs/replication.md, section 4.5); a
  follower forwards InitProducerId without a transactional id to its leader;
* a handler that raises an ``EventStoreError``: that error's Kafka code
  (``kafka_error_for``) in the response's top-level ``error_code``, if the
  response has one; otherwise, and on any other exception, the connection closes.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import cache
from typing import Any, TypeVar

from ..errors import EventStoreError
from ..wire import RequestHeader, kafka_error_for, response_header
from ..wire import extensions as extension_codec
from ..wire.apis import API_VERSIONS_KEY, EXTENSION_KEYS, SERVED
from ..wire.errors import UNSUPPORTED_VERSION, ProtocolError, UnsupportedVersionError
from ..wire.framing import Buffer, frame
from ..wire.messages import api_versions_response, decode_request_body, encode_response, encode_response_frame

try:
    from kio.index import load_request_schema, load_response_schema
    from kio.serial import entity_writer
except ImportError as e:  # pragma: no cover - depends on the installation
    from ..wire.errors import SERVER_EXTRA

    raise ImportError(f"{__name__}: {e.name} is missing; {SERVER_EXTRA}") from e

from . import authorization
from .context import Context
from .entities import entity
from .metrics import api_name
from .quotas import charge_request, engine_timer, throttled
from .refusals import EXTENSION_WRITES, KAFKA_WRITES, MESSAGE, NOT_LEADER_OR_FOLLOWER, refused
from .replication.forward import forward_to_leader

__all__ = [
    "CloseConnection", "Frame", "Handler", "RawHandler", "answer", "error_response", "extensions_served",
    "handler_for", "handles", "handles_frames", "registered", "waiting",
]

_WAITED: contextvars.ContextVar[list[float]] = contextvars.ContextVar("eventstore_waited")
"""The seconds the request being answered spent in declared waits (``waiting``)."""


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Around a wait the request asked for (a Fetch's long poll up to ``max_wait_ms``, a
    ReplicaCatalog poll): its time is not the server's slowness, so the slow-request log
    leaves it out."""
    started = time.perf_counter()
    try:
        yield
    finally:
        waited = _WAITED.get(None)
        if waited is not None:
            waited[0] += time.perf_counter() - started

log = logging.getLogger("eventstore.server")

Handler = Callable[[Context, RequestHeader, Any], Awaitable[Any]]
"""``async def handler(ctx, header, body) -> response entity | None``."""

RawHandler = Callable[[Context, RequestHeader, bytes], Awaitable[bytes | None]]
"""``async def handler(ctx, header, frame_bytes) -> response frame | None``: for APIs kio has
no classes for (the extension APIs); it decodes the frame and encodes the whole answer
itself, and answers its own errors."""

Frame = bytes | list[Buffer]
"""A response frame: whole, or (a Fetch) buffers to send in turn (``wire.framing.FrameParts``)."""

H = TypeVar("H", bound=Handler)
R = TypeVar("R", bound=RawHandler)

_HANDLERS: dict[int, Handler] = {}
TRAILING = "bytes after the message"  # the end of the codec's reason for bytes after a body
_RAW_HANDLERS: dict[int, RawHandler] = {}
PRODUCE_KEY = 0
INIT_PRODUCER_ID_KEY = 22


class CloseConnection(Exception):
    """The request cannot be answered: the connection is closed (after the answers before it)."""


def handles(*api_keys: int) -> Callable[[H], H]:
    """Register the decorated coroutine function as the handler of ``api_keys``."""

    def register(fn: H) -> H:
        _register(_HANDLERS, api_keys, fn)
        return fn

    return register


def handles_frames(*api_keys: int) -> Callable[[R], R]:
    """Register the decorated coroutine function as the frame handler of ``api_keys``."""

    def register(fn: R) -> R:
        _register(_RAW_HANDLERS, api_keys, fn)
        return fn

    return register


def _register(registry: dict[int, Any], api_keys: tuple[int, ...], fn: Handler | RawHandler) -> None:
    """``fn`` into ``registry`` for each key; a key has one handler of either kind, so a
    second one (in either registry) is a defect, said at import."""
    for key in api_keys:
        known = handler_for(key)
        if known is not None and known is not fn:
            raise ValueError(f"API key {key} has a handler already: {known.__qualname__}")
        registry[key] = fn


def handler_for(api_key: int) -> Handler | RawHandler | None:
    """The handler registered for ``api_key`` (either kind), or None."""
    return _HANDLERS.get(api_key) or _RAW_HANDLERS.get(api_key)


def extensions_served() -> bool:
    """Whether the extension APIs are listed: only once every one of them has a handler."""
    return all(key in _HANDLERS or key in _RAW_HANDLERS for key in EXTENSION_KEYS)


def registered() -> dict[int, Handler]:
    """Every registered handler by API key (a copy)."""
    return dict(_HANDLERS)


async def answer(ctx: Context, header: RequestHeader, frame_bytes: bytes) -> Frame | None:
    """The response frame for one request (None: no response); :class:`CloseConnection`
    when the request cannot be answered at all. Counted in ``/metrics`` (requests, errors,
    latency per API), and logged when its handling time, declared waits (``waiting``) left
    out, is above ``slow_request_ms``."""
    started = time.perf_counter()
    waited = [0.0]
    token = _WAITED.set(waited)
    error: str | None = "CLOSED_CONNECTION"  # unless the answer comes back
    try:
        response = await _answer(ctx, header, frame_bytes)
        error = None
        return response
    finally:
        _WAITED.reset(token)
        elapsed = time.perf_counter() - started
        ctx.broker.metrics.request(header.api_key, elapsed, error)
        slow_ms = ctx.config.slow_request_ms
        if slow_ms and (elapsed - waited[0]) * 1000 >= slow_ms:
            _log_slow(ctx, header, elapsed - waited[0], error)


def _log_slow(ctx: Context, header: RequestHeader, elapsed: float, error: str | None) -> None:
    ms = round(elapsed * 1000, 1)
    log.warning("slow request: %s from %s (%s) took %.0f ms%s", _name(header), ctx.client, ctx.principal, ms,
                " (the connection closed)" if error else "",
                extra={"event": "slow_request", "client": ctx.client, "principal": ctx.principal,
                       "api": api_name(header.api_key), "ms": ms})


async def _answer(ctx: Context, header: RequestHeader, frame_bytes: bytes) -> Frame | None:
    raw = _RAW_HANDLERS.get(header.api_key)
    writes_refused = not ctx.broker.replication.accepts_writes
    if raw is not None:
        if writes_refused and header.api_key in EXTENSION_WRITES and header.api_version == 0:
            return extension_codec.error_response(header.api_key, header.correlation_id,
                                                  NOT_LEADER_OR_FOLLOWER, MESSAGE)
        refused_frame = authorization.check_extension(ctx, header, frame_bytes)
        if refused_frame is not None:
            log.info("%s from %s (%s) refused: not authorized", _name(header), ctx.client, ctx.principal)
            return refused_frame
        return await raw(ctx, header, frame_bytes)
    handler = _HANDLERS.get(header.api_key)
    try:
        body = _decode(header, frame_bytes)
    except UnsupportedVersionError:
        return unsupported_version(header)
    except ProtocolError as e:
        raise CloseConnection(f"request {_name(header)}: {e}") from None
    if handler is None:
        raise CloseConnection(f"no handler for {_name(header)}")
    if writes_refused and header.api_key in KAFKA_WRITES:
        if header.api_key == PRODUCE_KEY and body.acks == 0:
            return None  # acks=0: no answer; the client learns the leader from Metadata
        if header.api_key == INIT_PRODUCER_ID_KEY and body.transactional_id is None:
            forwarded = await forward_to_leader(ctx.broker.replication, frame_bytes)
            if forwarded is not None:
                return forwarded
        return encode_response_frame(header.correlation_id, refused(header, body))
    body, refusal, after = authorization.check(ctx, header, body)
    if refusal is not None:
        log.info("%s from %s (%s) refused: not authorized", _name(header), ctx.client, ctx.principal)
        if header.api_key == PRODUCE_KEY and body.acks == 0:
            return None
        return encode_response_frame(header.correlation_id, refusal)
    held = engine_timer()
    charged_ms = _throttle(ctx, charge_request(ctx.broker.quotas, ctx.principal, header, len(frame_bytes)))
    try:
        response = await handler(ctx, header, body)
    except EventStoreError as e:
        code = kafka_error_for(e).code
        response = error_response(header.api_key, header.api_version, code)
        if response is None:
            raise CloseConnection(f"{_name(header)} failed and its response has no error code: {e}") from e
        log.info("%s from %s answered %s: %s", _name(header), ctx.client, kafka_error_for(e).name, e)
    response, throttle_ms = throttled(ctx.broker.quotas, ctx.principal, header, body, response, held[0],
                                      charged_ms)
    _throttle(ctx, throttle_ms)
    if throttle_ms:
        ctx.broker.metrics.throttled(THROTTLE_KINDS.get(header.api_key, "request"), throttle_ms / 1000)
    if response is None:
        return None
    if after is not None:
        response = after(response)
    code = getattr(response, "error_code", 0)  # the top-level one; Produce counts its partitions'
    if code:
        ctx.broker.metrics.answered_error(header.api_key, int(code))
    return encode_response_frame(header.correlation_id, response)


THROTTLE_KINDS = {PRODUCE_KEY: "produce", 1: "fetch"}
"""The ``kind`` of a throttle in ``/metrics`` by API (any other: ``request``)."""


def _throttle(ctx: Context, throttle_ms: int) -> int:
    """Hold the client's next requests back for ``throttle_ms`` (its quotas': docs/operations.md,
    "Quotas"): its connection reads none before then. Returns ``throttle_ms``."""
    if throttle_ms:
        ctx.throttled_until = max(ctx.throttled_until, time.monotonic() + throttle_ms / 1000)
    return throttle_ms


def _decode(header: RequestHeader, frame_bytes: bytes) -> Any:
    """The request's body; bytes after a whole body are ignored, as Kafka's broker ignores
    them (librdkafka 2.x sends three after a Metadata v12 body): the codec refuses them,
    so the body is decoded again without them."""
    try:
        return decode_request_body(header, frame_bytes)
    except UnsupportedVersionError:
        raise
    except ProtocolError as e:
        stop = e.position
        trailing = e.reason.endswith(TRAILING) and stop is not None
        if not trailing or stop is None or not header.body_position <= stop < len(frame_bytes):
            raise
        log.debug("%s: %d bytes after the body ignored", _name(header), len(frame_bytes) - stop)
        return decode_request_body(header, frame_bytes[:stop])


def unsupported_version(header: RequestHeader) -> bytes:
    """The answer to a version not served (docs/protocol.md, section 4)."""
    if header.api_key == API_VERSIONS_KEY:
        response = api_versions_response(header.api_version, extensions=extensions_served())
        return encode_response(header.correlation_id, response)
    if header.api_key not in SERVED or _kio_response(header.api_key, header.api_version) is None:
        raise CloseConnection(f"{_name(header)} is not served")
    response = error_response(header.api_key, header.api_version, UNSUPPORTED_VERSION.code)
    if response is None:
        raise CloseConnection(f"{_name(header)} is not served (its response has no error code)")
    out = io.BytesIO()
    out.write(response_header(header.api_key, header.api_version, header.correlation_id))
    writer: Any = _writer
    writer(type(response))(out, response)
    return frame(out.getbuffer())


def _name(header: RequestHeader) -> str:
    return f"API {header.api_key} v{header.api_version}"


@cache
def _kio_response(api_key: int, api_version: int) -> Any:
    try:
        load_request_schema(api_key, api_version)
        return load_response_schema(api_key, api_version)
    except Exception:  # kio raises on a version it has no classes for
        return None


@cache
def _writer(entity_type: Any) -> Any:
    return entity_writer(entity_type)


def error_response(api_key: int, api_version: int, code: int) -> Any | None:
    """kio's response for ``api_key`` / ``api_version`` carrying ``code`` in its top-level
    ``error_code``, every other field empty or zero; None if it has no top-level
    ``error_code`` (or kio has no class for that version)."""
    cls = _kio_response(api_key, api_version)
    if cls is None or "error_code" not in cls.__dataclass_fields__:
        return None
    return entity(cls, error_code=code)
