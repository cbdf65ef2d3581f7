"""One client connection: frames in, handlers run concurrently, responses out in order.

Three parts share a task group (docs/protocol.md, section 3):

* the reader takes bytes from the socket (no more than the frame being read needs,
  or 64 KiB), cuts frames (``FrameSplitter``), reads each header, and starts the
  request's handler in a task of its own: a client may have many requests in flight
  (pipelining), and a long-poll Fetch must not hold back the Metadata behind it;
* each request owns a :class:`Slot`, queued in arrival order, that its task fills
  with the response frame (or nothing, or "close");
* the writer takes the slots in order, waits for each to be filled and writes it:
  responses leave in request order whatever order the work finishes in.

Back-pressure: the reader takes one of ``max_in_flight`` tokens per request and the
writer gives it back once the response is written; with none left the reader stops
reading, and TCP slows the client down.

A frame that cannot be read (bad size, header) stops the reader: the requests before
it are still answered, then the connection closes, nothing of that frame written.
A request that cannot be answered (``CloseConnection``, or a handler that fails in
a way no error code says) closes the connection when its turn to be written comes.

On a SASL listener, until the client has authenticated, a request of any API but
ApiVersions, SaslHandshake and SaslAuthenticate stops the reader as a bad frame
does, and frames are bounded by ``PRE_AUTH_FRAME_BYTES`` (docs/operations.md, 1.3).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..wire import FrameSplitter, ProtocolError, RequestHeader, parse_request_header
from .config import Listener
from .context import ANONYMOUS, RAW_FRAMES, Broker, Context
from .dispatch import CloseConnection, Frame, answer
from .sockets import RawStream
from .tls import TlsStream

__all__ = ["Connection", "Slot"]

log = logging.getLogger("eventstore.server")

READ_BYTES = 65536
READ_BYTES_MAX = 1 << 20
_CLOSE = object()
PRE_AUTH_KEYS = frozenset((17, 18, 36))
"""SaslHandshake, ApiVersions, SaslAuthenticate: all a SASL listener serves before authentication."""
PRE_AUTH_FRAME_BYTES = 512 * 1024
"""Largest frame before authentication (Kafka's sasl.server.max.receive.size)."""
AUTH_TIMEOUT_S = 30.0
"""A client of a SASL listener not authenticated by then is disconnected: a connection
that never authenticates holds nothing for long."""


@dataclass(slots=True, eq=False)
class Slot:
    """One request's place in the answer order; filled once by its task."""

    done: anyio.Event = field(default_factory=anyio.Event)
    response: Frame | object | None = None
    last: bool = False
    """The connection closes once this response is written."""

    def fill(self, response: Frame | object | None) -> None:
        self.response = response
        self.done.set()


class Connection:
    """Serves one accepted socket until the client leaves, a frame is bad, or the server stops."""

    def __init__(self, broker: Broker, stream: RawStream | TlsStream, client: str,
                 listener: Listener | None = None, endpoint: tuple[str, int] | None = None,
                 principal: str = ANONYMOUS) -> None:
        self.broker = broker
        self.stream = stream
        self.ctx = Context(broker, client, listener.name if listener is not None else "PLAINTEXT", endpoint,
                           principal)
        config = broker.config
        self.splitter = FrameSplitter(config.max_frame_bytes if self.ctx.authenticated
                                      else min(config.max_frame_bytes, PRE_AUTH_FRAME_BYTES))
        self.tokens = anyio.Semaphore(config.max_in_flight)
        self.reading = anyio.CancelScope()
        self.closing = False

    def stop_reading(self) -> None:
        """Graceful stop: no new requests; those in flight are answered, then the socket closes."""
        self.reading.cancel()

    async def serve(self) -> None:
        send, receive = anyio.create_memory_object_stream[Slot](math.inf)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, receive, tg.cancel_scope)
                if not self.ctx.authenticated:
                    tg.start_soon(self._authenticated_in_time, tg.cancel_scope)
                async with send:
                    with self.reading:
                        if not await self._read(send, tg):
                            tg.cancel_scope.cancel()  # the client is gone: nobody to answer
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _read(self, send: MemoryObjectSendStream[Slot], tg: anyio.abc.TaskGroup) -> bool:
        """Read and start requests until the client leaves (False: its requests in flight are
        abandoned) or a frame cannot be read (True: those before it are still answered)."""
        splitter = self.splitter
        while True:  # one pass per chunk received; ends with the connection
            wanted = min(max(splitter.bytes_wanted, READ_BYTES), READ_BYTES_MAX)
            try:
                data = await self.stream.receive(wanted)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return False
            splitter = self._splitter_after_auth(splitter)  # before the bytes sent after the answer
            try:
                frames = splitter.feed(data)
            except ProtocolError as e:
                log.warning("closing the connection from %s: %s", self.ctx.client, e)
                return True
            for frame_bytes in frames:  # bounded by what one chunk holds
                if not await self._start(frame_bytes, send, tg):
                    return True
            if splitter.failed is not None:
                log.warning("closing the connection from %s: %s", self.ctx.client, splitter.failed)
                return True

    async def _authenticated_in_time(self, scope: anyio.CancelScope) -> None:
        """Close the connection if the client has not authenticated within ``AUTH_TIMEOUT_S``."""
        await anyio.sleep(AUTH_TIMEOUT_S)
        if not self.ctx.authenticated:
            log.warning("closing the connection from %s: not authenticated within %g s on %s",
                        self.ctx.client, AUTH_TIMEOUT_S, self.ctx.listener)
            scope.cancel()

    def _splitter_after_auth(self, splitter: FrameSplitter) -> FrameSplitter:
        """Once authenticated, frames up to ``max_frame_bytes`` (at a frame boundary)."""
        limit = self.broker.config.max_frame_bytes
        if splitter.max_frame_bytes < limit and self.ctx.authenticated and not splitter.buffered_bytes:
            self.splitter = splitter = FrameSplitter(limit)
        return splitter

    async def _start(self, frame_bytes: bytes, send: MemoryObjectSendStream[Slot],
                     tg: anyio.abc.TaskGroup) -> bool:
        """Start one request; False when its header cannot be read (the connection closes)."""
        if RAW_FRAMES in self.ctx.session:  # a frame without a header, for the handler that asked
            await self.tokens.acquire()
            slot = Slot()
            send.send_nowait(slot)
            tg.start_soon(self._run_raw, frame_bytes, slot)
            return True
        try:
            header = parse_request_header(frame_bytes)
        except ProtocolError as e:
            log.warning("closing the connection from %s: request header: %s", self.ctx.client, e)
            return False
        if not self.ctx.authenticated and header.api_key not in PRE_AUTH_KEYS:
            log.warning("closing the connection from %s: API %d before authentication on %s",
                        self.ctx.client, header.api_key, self.ctx.listener)
            return False
        delay = self.ctx.throttled_until - time.monotonic()
        if delay > 0:  # a quota's throttle: read nothing more of this client until it has passed
            await anyio.sleep(delay)
        await self.tokens.acquire()  # back-pressure: wait for a response to be written
        slot = Slot()
        send.send_nowait(slot)
        tg.start_soon(self._run, header, frame_bytes, slot)
        return True

    async def _run(self, header: RequestHeader, frame_bytes: bytes, slot: Slot) -> None:
        try:
            response = await answer(self.ctx, header, frame_bytes)
            slot.last = self.ctx.close_after_answer
            slot.fill(response)
        except CloseConnection as e:
            log.warning("closing the connection from %s: %s", self.ctx.client, e)
            slot.fill(_CLOSE)
        except Exception:  # a handler's bug: this connection ends, the server goes on
            log.exception("closing the connection from %s: API %d v%d (correlation id %d) failed",
                          self.ctx.client, header.api_key, header.api_version, header.correlation_id)
            slot.fill(_CLOSE)

    async def _run_raw(self, frame_bytes: bytes, slot: Slot) -> None:
        try:
            response = await self.ctx.session[RAW_FRAMES](self.ctx, frame_bytes)
        except Exception:  # a handler's bug: this connection ends, the server goes on
            log.exception("closing the connection from %s: a frame without a header failed", self.ctx.client)
            response = None
        slot.last = self.ctx.close_after_answer
        slot.fill(_CLOSE if response is None else response)

    async def _write(self, receive: MemoryObjectReceiveStream[Slot], scope: anyio.CancelScope) -> None:
        async with receive:
            async for slot in receive:  # one per request, in arrival order
                await slot.done.wait()
                if slot.response is _CLOSE:
                    break
                if isinstance(slot.response, bytes | list):
                    try:
                        await self._send(slot.response)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        break
                if slot.last:
                    break
                self.tokens.release()
        scope.cancel()  # the client is gone or the connection must close: stop reading too

    async def _send(self, response: Frame) -> None:
        """One response frame; a Fetch's comes as buffers (its stored batches among them),
        each handed to the transport as it is: no join, no copy of the batches."""
        if isinstance(response, bytes):
            await self.stream.send(response)
            return
        for part in response:  # a few per partition in the response
            await self.stream.send(part)
