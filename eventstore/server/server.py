"""The server: listeners, their accept loops, the connections, and a graceful stop.

``await Server(...).serve_forever()`` binds (unless ``start`` did), accepts until
``request_stop`` (or ``stop``), then stops gracefully: the listeners close, every
connection stops reading, long polls return at once, the requests in flight are
answered (for at most ``grace_s``), and the connections close. The store stays
open: its owner closes it after.

One client never stops the server: whatever a connection's task raises is logged
and ends that connection only.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from anyio.abc import SocketAttribute

from ..errors import CoordinatorError, EventStoreError, ServerError
from ..groups import GroupCoordinator
from ..log import Log
from ..sourcing.streams import Streams
from . import handlers  # noqa: F401 (registers every handler)
from .authorization import catalog_changed
from .cluster import cluster_id
from .config import Listener, ServerConfig, format_address, parse_address, server_config
from .connection import Connection
from .context import ANONYMOUS, Broker, Context
from .http import HttpServer
from .replication.catalog import close_tracker
from .replication.durable import remove_serving, write_serving
from .replication.run import run_replication
from .sockets import RawStream, accept
from .tls import TlsContexts, TlsStream, handshake, peer_common_name

__all__ = ["Server", "server_factory"]

log = logging.getLogger("eventstore.server")

GRACE_S = 10.0
"""How long a graceful stop waits for the requests in flight."""
REFUSED_LOG_INTERVAL_S = 10.0


class Server:
    """A Kafka wire protocol server over one store's seams; make it on its event loop."""

    def __init__(self, log: Log, groups: GroupCoordinator, streams: Streams | Callable[[], Streams] | None,
                 config: ServerConfig, cluster_id: str, *, grace_s: float = GRACE_S,
                 announce: bool = True) -> None:
        self.broker = Broker(log, groups, streams, config, cluster_id)
        self.config = config
        self.grace_s = grace_s
        self.announce = announce
        """Whether to write ``<store>/serving`` while serving (``es replicate`` writes nothing there)."""
        self._listeners: list[anyio.abc.SocketListener] = []
        self._specs: list[Listener] = []
        """The configured listener of each of ``_listeners`` (one host may bind several sockets)."""
        self.tls = TlsContexts(config) if any(m.tls for m in config.all_listeners) else None
        """The TLS context of the SSL and SASL_SSL listeners; ``reload_tls`` remakes it."""
        self.http = HttpServer(self.broker, *parse_address(config.http)) if config.http else None
        """The HTTP port (``/metrics``, ``/healthz``, ``/readyz``), when ``config.http`` names one."""
        self._connections: set[Connection] = set()
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._idle = anyio.Event()
        self._refused = 0
        self._refused_logged_at = 0.0

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listener, as bound (port 0 resolved)."""
        out = []
        for listener in self._listeners:
            bound: Any = listener.extra(SocketAttribute.local_address)
            out.append((str(bound[0]), int(bound[1])))
        return out

    @property
    def listeners(self) -> dict[str, tuple[str, int]]:
        """``(host, port)`` as bound by listener name, the first of each name."""
        out: dict[str, tuple[str, int]] = {}
        for spec, bound in zip(self._specs, self.addresses, strict=True):
            out.setdefault(spec.name, bound)
        return out

    @property
    def address(self) -> tuple[str, int]:
        """The first listener's ``(host, port)``."""
        if not self._listeners:
            raise ServerError(format_address(self.config.host, self.config.port), "not started")
        return self.addresses[0]

    async def start(self) -> None:
        """Bind the listeners; ``ServerError`` when the address is in use or cannot be bound."""
        if self._listeners:
            return
        for spec in self.config.all_listeners:  # bounded: the configured listeners
            try:
                multi = await anyio.create_tcp_listener(local_host=spec.host, local_port=spec.port)
            except OSError as e:
                await self.close_listeners()
                self._listeners, self._specs = [], []
                raise ServerError(format_address(spec.host, spec.port), _reason(e)) from None
            bound = [sock for sock in multi.listeners if isinstance(sock, anyio.abc.SocketListener)]
            self._listeners += bound
            self._specs += [spec] * len(bound)
        if self.http is not None:
            try:
                await self.http.start()
            except ServerError:
                await self.close_listeners()
                self._listeners = []
                raise
        broker = self.broker
        if self.config.advertised_port is None:
            broker.advertised_port = self.address[1]
        for spec, (bound_host, bound_port) in zip(self._specs, self.addresses, strict=True):
            host, port = self._endpoint(spec, bound_port)
            log.info("listening on %s (advertised %s) for %s", format_address(bound_host, bound_port),
                     format_address(host, port), spec.name)

    def _endpoint(self, spec: Listener, bound_port: int) -> tuple[str, int]:
        """What Metadata and FindCoordinator tell a client of ``spec``: the advertised address for
        the first listener, the listener's own (its host, else the advertised host) for the others."""
        broker = self.broker
        if spec is self.config.all_listeners[0]:
            return broker.advertised_host, broker.advertised_port
        wildcard = spec.host in ("0.0.0.0", "::", "")
        return (broker.advertised_host if wildcard else spec.host), bound_port

    def reload_tls(self) -> None:
        """Read the TLS certificate, key and CA files again (SIGHUP): new connections use them,
        the connections already made keep theirs; a file that cannot be read keeps the old ones."""
        if self.tls is None:
            return
        try:
            self.tls.reload()
        except EventStoreError as e:
            log.error("TLS files not reloaded (the old ones stay in use): %s", e)
            return
        log.info("TLS certificate reloaded: new connections use it")

    async def close_listeners(self) -> None:
        """Release the listeners of a server that was started but will not serve."""
        for listener in self._listeners:
            await listener.aclose()
        if self.http is not None:
            await self.http.aclose()

    def request_stop(self) -> None:
        """Begin the graceful stop (on the server's event loop)."""
        self._stop.set()

    async def stop(self) -> None:
        """Stop gracefully and return once every connection is closed."""
        self._stop.set()
        await self._stopped.wait()

    async def serve_forever(self) -> None:
        """Accept and serve until stopped; then stop gracefully and return."""
        await self.start()
        store_path = self.broker.log.path
        try:
            if self.announce:
                await anyio.to_thread.run_sync(write_serving, store_path, self._admin_address())
            async with anyio.create_task_group() as tg:
                self.broker.replication.on_catalog.append(functools.partial(catalog_changed, self.broker))
                tg.start_soon(run_replication, self.broker)
                if self.http is not None:
                    tg.start_soon(self.http.serve)
                if self.broker.config.coordinator is not None:
                    await tg.start(_run_coordinated, self.broker)
                async with anyio.create_task_group() as accepting:
                    for listener, spec in zip(self._listeners, self._specs, strict=True):
                        accepting.start_soon(self._accept, listener, spec, tg)
                    await self._stop.wait()
                    accepting.cancel_scope.cancel()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.close_listeners()
                close_tracker(self.broker.state)
                if self.announce:
                    remove_serving(store_path)
            self._stopped.set()

    def _admin_address(self) -> str:
        """Where a local ``es promote`` reaches this server (``<store>/serving``): the first
        listener, a wildcard host as the loopback."""
        host, port = self.address
        return format_address({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port)

    async def _drain(self) -> None:
        """Graceful stop of the connections: no new requests, the ones in flight answered."""
        self.broker.stop_waiting()
        for connection in list(self._connections):
            connection.stop_reading()
        with anyio.move_on_after(self.grace_s):
            while self._connections:  # each pass waits for the last connection to end
                self._idle = anyio.Event()
                await self._idle.wait()

    async def _accept(self, listener: anyio.abc.SocketListener, spec: Listener,
                      tg: anyio.abc.TaskGroup) -> None:
        endpoint = self._endpoint(spec, int(listener.extra(SocketAttribute.local_port)))
        while True:  # one pass per connection accepted; ends when the stop cancels it
            try:
                stream, peer = await accept(listener)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as e:  # out of file descriptors, a connection reset before accept
                log.warning("accepting a connection: %s", e)
                await anyio.sleep(0.1)
                continue
            host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            if len(self._connections) >= self.config.max_connections or not self.broker.quotas.admit(host):
                self.broker.metrics.throttled("connection", 0.0)
                self._refuse()
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                continue
            tg.start_soon(self._serve_counted, host, stream, peer, spec, endpoint)

    async def _serve_counted(self, host: str, *serve_args: Any) -> None:
        """``_serve``, then the connection from ``host`` no longer counts (``Quotas.admit``)."""
        try:
            await self._serve(*serve_args)
        finally:
            self.broker.quotas.release(host)

    def _refuse(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= REFUSED_LOG_INTERVAL_S:
            log.warning("%d connection(s) refused: max_connections (%d) or max_connections_per_ip (%d)"
                        " reached",
                        self._refused, self.config.max_connections, self.config.max_connections_per_ip)
            self._refused_logged_at = now
            self._refused = 0

    async def _serve(self, stream: RawStream, peer: object, spec: Listener,
                     endpoint: tuple[str, int]) -> None:
        client = format_address(str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else str(peer)
        principal = ANONYMOUS
        served: RawStream | TlsStream = stream
        if spec.tls and self.tls is not None:
            secured = await self._handshake(stream, client)
            if secured is None:
                return
            common_name = peer_common_name(secured)
            principal = f"User:{common_name}" if common_name is not None else ANONYMOUS
            if common_name is not None:
                log.info("%s authenticated as %s by its TLS certificate on %s", client, principal, spec.name)
            served = secured
        connection = Connection(self.broker, served, client, spec, endpoint, principal)
        self._connections.add(connection)
        if self._stop.is_set():
            connection.stop_reading()
        _log_connection("open", connection.ctx)
        self.broker.metrics.connection_opened(spec.name)
        try:
            await connection.serve()
        except Exception:  # a bug in the connection loop: that connection ends, the server goes on
            log.exception("the connection from %s failed", client)
        finally:
            self.broker.metrics.connection_closed(spec.name)
            _log_connection("closed", connection.ctx)
            self._connections.discard(connection)
            if not self._connections:
                self._idle.set()

    async def _handshake(self, stream: RawStream, client: str) -> TlsStream | None:
        """The TLS stream of a new connection, or None (logged, closed) when its handshake fails."""
        assert self.tls is not None
        try:
            return await handshake(stream, self.tls.current)
        except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError) as e:
            log.warning("TLS handshake with %s failed: %s", client, str(e) or type(e).__name__)
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        return None


def _log_connection(event: str, ctx: Context) -> None:
    """One line per connection opened and closed: the client, its listener, who it is (the
    principal it authenticated as, by the close)."""
    log.info("connection %s: %s on %s as %s", event, ctx.client, ctx.listener, ctx.principal,
             extra={"event": f"connection_{event}", "client": ctx.client, "listener": ctx.listener,
                    "principal": ctx.principal})


def _reason(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "address already in use (is another server running there?)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host ({error.strerror})"
    if error.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return error.strerror or str(error)


def server_factory(log: Log, groups: GroupCoordinator, streams: Streams | Callable[[], Streams] | None,
                   address: str | None, **options: Any) -> Callable[[], Server]:
    """Check the options and read (or make) the cluster id now, in the caller; the returned
    function makes the server on the loop that will run it."""
    config = server_config(address, **options)
    cluster = cluster_id(log.path)
    return functools.partial(Server, log, groups, streams, config, cluster)


async def _run_coordinated(broker: Broker, *,
                           task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """The etcd coordinator of a ``--coordinator`` server (docs/replication.md, section 7);
    its client is an optional dependency, imported only here."""
    try:
        from .replication.coordinated import run_coordinated
    except ImportError as exc:
        raise CoordinatorError(str(broker.config.coordinator), "the coordinator needs the cluster extra "
                               f"(pip install 'embedded-eventstore[cluster]'): {exc}") from None
    await run_coordinated(broker, task_status=task_status)
