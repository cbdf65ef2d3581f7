"""The server's HTTP port (``--http HOST:PORT``): ``/metrics``, ``/healthz``, ``/readyz``
(docs/operations.md, 4), and whatever other modules add with :func:`add_route`.

A small HTTP/1.1 server on the Kafka server's event loop: requests with a
``Content-Length`` body (no chunked bodies), keep-alive, bounded heads and bodies, an
idle timeout. What a route does that blocks (reading the store for a scrape) runs in a
worker thread. The port is for operators and orchestrators: it listens on the loopback
unless told otherwise.

Routes match by method and path prefix, the longest prefix first; a handler is
``async def handler(request: HttpRequest) -> HttpResponse`` and reaches the server's
state through ``request.broker``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.abc
import anyio.to_thread
from anyio.abc import SocketAttribute

from ..errors import ServerError
from .config import format_address
from .context import Broker
from .metrics import CONTENT_TYPE

__all__ = ["HttpHandler", "HttpRequest", "HttpResponse", "HttpServer", "add_route", "add_task", "readiness",
           "route_for"]

log = logging.getLogger("eventstore.server")

HEAD_BYTES_MAX = 16 * 1024
BODY_BYTES_MAX = 1024 * 1024
IDLE_TIMEOUT_S = 30.0
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed",
           413: "Content Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    """Decoded, without the query."""
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    broker: Broker
    client: str = ""
    """The client's ``host:port`` (a route that authenticates delays failures per host)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def json(cls, value: Any, status: int = 200) -> HttpResponse:
        return cls(status, json.dumps(value).encode(), "application/json")


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
_ROUTES: dict[tuple[str, str], HttpHandler] = {}
HttpTask = Callable[[Broker], Coroutine[Any, Any, None]]
_TASKS: list[HttpTask] = []


def add_route(method: str, path_prefix: str, handler: HttpHandler) -> None:
    """Serve ``method`` requests for ``path_prefix`` (and the paths under it) with ``handler``;
    a second handler for the same method and prefix replaces the first."""
    if not path_prefix.startswith("/"):
        raise ValueError(f"a path prefix starts with '/', got {path_prefix!r}")
    _ROUTES[(method.upper(), path_prefix.rstrip("/") or "/")] = handler


def add_task(task: HttpTask) -> None:
    """Run ``task(broker)`` beside the HTTP listener while it serves (cancelled with it): a
    route that shows history samples it here, from before anyone asks."""
    if task not in _TASKS:
        _TASKS.append(task)


def route_for(method: str, path: str) -> tuple[HttpHandler | None, bool]:
    """The handler of the longest prefix matching ``path``, and whether any route (of any
    method) matches the path (for 405 against 404)."""
    best: tuple[int, HttpHandler] | None = None
    known = False
    for (m, prefix), handler in _ROUTES.items():  # bounded by the routes registered
        if not (path == prefix or prefix == "/" or path.startswith(prefix + "/")):
            continue
        known = True
        if m == method and (best is None or len(prefix) > best[0]):
            best = (len(prefix), handler)
    return (best[1] if best else None), known


class HttpServer:
    """The HTTP listener of one server; ``start`` binds, ``serve`` accepts until cancelled."""

    def __init__(self, broker: Broker, host: str, port: int) -> None:
        self.broker = broker
        self.host, self.port = host, port
        self._listener: anyio.abc.Listener[Any] | None = None

    async def start(self) -> None:
        try:
            self._listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        except OSError as e:
            raise ServerError(format_address(self.host, self.port), f"HTTP: {e.strerror or e}") from None
        log.info("HTTP on %s", format_address(*self.address))

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` as bound (port 0 resolved)."""
        if self._listener is None:
            raise ServerError(format_address(self.host, self.port), "HTTP not started")
        bound: Any = self._listener.extra(SocketAttribute.local_address)
        return str(bound[0]), int(bound[1])

    async def serve(self) -> None:
        assert self._listener is not None, "start() first"
        async with anyio.create_task_group() as tg, self._listener:
            for task in _TASKS:  # bounded by the tasks registered
                tg.start_soon(task, self.broker)
            await self._listener.serve(self._connection)

    async def aclose(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        buffer = bytearray()
        client = _peer(stream)
        async with stream:
            while True:  # one pass per request of a keep-alive connection
                with anyio.move_on_after(IDLE_TIMEOUT_S):
                    request, keep_alive, status = await self._read(stream, buffer, client)
                    if request is None:
                        if status:
                            await _write(stream, HttpResponse(status, REASONS[status].encode()), False)
                        return
                    response = await self._respond(request)
                    await _write(stream, response, keep_alive)
                    if keep_alive:
                        continue
                return

    async def _read(self, stream: anyio.abc.ByteStream, buffer: bytearray,
                    client: str) -> tuple[HttpRequest | None, bool, int]:
        """The next request (None: the client left, or ``status`` to answer before closing)."""
        while b"\r\n\r\n" not in buffer:  # bounded by HEAD_BYTES_MAX
            if len(buffer) > HEAD_BYTES_MAX:
                return None, False, 400
            try:
                buffer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return None, False, 0
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return None, False, 400
        method, target, version = parts
        headers = {}
        for line in lines[1:]:  # bounded by the head's size
            name, sep, value = line.partition(":")
            if not sep:
                return None, False, 400
            headers[name.strip().lower()] = value.strip()
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit() or "transfer-encoding" in headers:
            return None, False, 400
        length = int(length_text)
        if length > BODY_BYTES_MAX:
            return None, False, 413
        body = bytearray(rest)
        while len(body) < length:  # bounded by BODY_BYTES_MAX
            try:
                body += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return None, False, 0
        buffer[:] = body[length:]
        url = urlsplit(target)
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        request = HttpRequest(method.upper(), unquote(url.path) or "/", parse_qs(url.query), headers,
                              bytes(body[:length]), self.broker, client)
        return request, keep_alive, 0

    async def _respond(self, request: HttpRequest) -> HttpResponse:
        handler, known = route_for(request.method, request.path)
        if handler is None:
            status = 405 if known else 404
            return HttpResponse(status, f"{REASONS[status]}: {request.method} {request.path}\n".encode())
        try:
            return await handler(request)
        except Exception:  # a route's bug: that request fails, the server goes on
            log.exception("HTTP %s %s failed", request.method, request.path)
            return HttpResponse(500, b"Internal Server Error\n")


def _peer(stream: anyio.abc.ByteStream) -> str:
    """``host:port`` of the connection's client."""
    found: Any = stream.extra(SocketAttribute.remote_address, ("", 0))
    return format_address(str(found[0]), int(found[1])) if isinstance(found, tuple) else str(found)


async def _write(stream: anyio.abc.ByteStream, response: HttpResponse, keep_alive: bool) -> None:
    head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Status')}",
            f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *(f"{name}: {value}" for name, value in response.headers)]
    try:
        await stream.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        return


def readiness(broker: Broker) -> tuple[bool, str]:
    """Whether this node should get traffic: its store open (so recovered), not fenced, and a
    follower in sync with its leader (as the leader last told it)."""
    if broker.log.closed:
        return False, "store closed"
    rep = broker.replication
    if rep.fenced is not None:
        return False, f"fenced: {rep.fenced}"
    if rep.role == "follower":
        in_sync = any(node.node_id == rep.node_id and synced for node, synced in rep.replicas)
        if not in_sync:
            return False, "follower not caught up with its leader"
    return True, "ready"


async def _metrics(request: HttpRequest) -> HttpResponse:
    body = await anyio.to_thread.run_sync(request.broker.metrics.exposition)
    return HttpResponse(200, body, CONTENT_TYPE)


async def _healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, b"ok\n")


async def _readyz(request: HttpRequest) -> HttpResponse:
    ready, why = readiness(request.broker)
    return HttpResponse(200 if ready else 503, f"{why}\n".encode())


add_route("GET", "/metrics", _metrics)
add_route("GET", "/healthz", _healthz)
add_route("GET", "/readyz", _readyz)
