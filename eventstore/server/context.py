"""What a handler sees: the engine seams, the server's configuration, its client.

A :class:`Broker` is made once per server: the :class:`~eventstore.log.Log`, the
:class:`~eventstore.groups.GroupCoordinator`, the streams (opened on first use),
the configuration, the cluster id, and what handler modules keep across requests
(``state``). A :class:`Context` is made once per connection over it, with the
client's address.

Handlers run on the event loop. The engine's calls block (disk, fsync, locks), so
a handler runs them with ``await ctx.blocking(fn, *args)`` in a worker thread, and
waits for records with ``ctx.watch(partitions)``: a wake-up the appending thread
schedules on the loop, no thread held while waiting (a long-poll Fetch costs none).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, TypeVarTuple

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..groups import GroupCoordinator
from ..log import Log, Watch
from ..records import TopicPartition
from ..sourcing.streams import Streams
from ..wakeup import Wakeup
from .config import ServerConfig
from .metrics import ServerMetrics
from .quotas import Quotas, charge_engine_time
from .replication.durable import initial_replication
from .replication.state import Replication

__all__ = ["ANONYMOUS", "RAW_FRAMES", "Broker", "Context", "RecordsWaiter"]

ANONYMOUS = "User:ANONYMOUS"
"""The principal of a client that has not authenticated (Kafka's name for it)."""
RAW_FRAMES = "raw_frames"
"""``Context.session`` key of ``async fn(ctx, frame_bytes) -> response frame | None`` that a
handler sets to take the connection's next frames as they are, with no request header (the
SASL messages after a SaslHandshake v0); None from it closes the connection."""

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

log = logging.getLogger("eventstore.server")

#: Worker threads the engine calls of one server may hold at once (appends wait for fsync).
BLOCKING_THREADS = 64


class Broker:
    """One server's shared state: the seams, the configuration, the advertised address."""

    def __init__(self, log: Log, groups: GroupCoordinator, streams: Streams | Callable[[], Streams] | None,
                 config: ServerConfig, cluster_id: str) -> None:
        self.log = log
        self.groups = groups
        self.config = config
        self.cluster_id = cluster_id
        self.advertised_host = config.advertised_host or config.host
        self.advertised_port = config.advertised_port or config.port
        """Set from the port actually bound when ``config.port`` is 0 (``Server.start``)."""
        self.state: dict[str, Any] = {}
        """What a handler module keeps across requests and connections, under its own key
        (e.g. its module name); set up lazily with ``state.setdefault``."""
        self.replication: Replication = initial_replication(log, config)
        """This node's role, epoch and followers (docs/replication.md)."""
        self.quotas = Quotas(config, log.catalog if isinstance(log, Log) else None)
        """Client quotas and connections per address (``quotas.py``)."""
        self.limiter = anyio.CapacityLimiter(BLOCKING_THREADS)
        self.metrics = ServerMetrics(self)
        """What ``/metrics`` shows (``metrics.py``): handlers, authentication and quotas count there."""
        self.stopping = False
        self._streams = streams
        self._waiters: set[RecordsWaiter] = set()

    @property
    def streams(self) -> Streams | None:
        """The event-sourcing layer, opened on first use; None on a server without one."""
        streams = self._streams
        if streams is None or isinstance(streams, Streams):
            return streams
        self._streams = opened = streams()
        return opened

    def stop_waiting(self) -> None:
        """At shutdown: every long poll returns now (with what it has)."""
        self.stopping = True
        for waiter in list(self._waiters):
            waiter.notify()

    def add_waiter(self, waiter: RecordsWaiter) -> None:
        self._waiters.add(waiter)

    def remove_waiter(self, waiter: RecordsWaiter) -> None:
        self._waiters.discard(waiter)


class Context:
    """One connection's view of the server, handed to every handler of its requests."""

    __slots__ = ("authenticated", "broker", "client", "close_after_answer", "endpoint", "listener",
                 "principal", "session", "throttled_until")

    def __init__(self, broker: Broker, client: str, listener: str = "PLAINTEXT",
                 endpoint: tuple[str, int] | None = None, principal: str = ANONYMOUS) -> None:
        self.broker = broker
        self.client = client
        """The client's address, ``host:port``, for log lines."""
        self.throttled_until = 0.0
        """Until when (``time.monotonic``) a quota throttles this client: its connection reads
        no request before then (``quotas.py``)."""
        self.listener = listener
        """The name of the listener the client came in on (``PLAINTEXT``, ``SASL_SSL``, ...)."""
        self.endpoint = endpoint
        """That listener's advertised ``(host, port)``; None: the broker's."""
        self.principal = principal
        """Who the client is: ``User:NAME`` once authenticated (SASL, or a TLS client
        certificate's CN), ``User:ANONYMOUS`` before or without authentication."""
        self.authenticated = not listener.startswith("SASL_")
        """False on a SASL listener until SaslAuthenticate succeeds: until then only
        ApiVersions, SaslHandshake and SaslAuthenticate are served (connection.py)."""
        self.close_after_answer = False
        """Set by a handler whose answer must be the connection's last (a failed authentication)."""
        self.session: dict[str, Any] = {}
        """What a handler module keeps for this connection (e.g. a SASL exchange in progress),
        under its own key."""

    @property
    def log(self) -> Log:
        return self.broker.log

    @property
    def groups(self) -> GroupCoordinator:
        return self.broker.groups

    @property
    def streams(self) -> Streams | None:
        return self.broker.streams

    @property
    def config(self) -> ServerConfig:
        return self.broker.config

    @property
    def node_id(self) -> int:
        return self.broker.config.node_id

    @property
    def host(self) -> str:
        """The advertised host of the client's listener: what clients are told to connect to."""
        return self.endpoint[0] if self.endpoint is not None else self.broker.advertised_host

    @property
    def port(self) -> int:
        """The advertised port of the client's listener."""
        return self.endpoint[1] if self.endpoint is not None else self.broker.advertised_port

    @property
    def cluster_id(self) -> str:
        return self.broker.cluster_id

    @property
    def state(self) -> dict[str, Any]:
        return self.broker.state

    async def blocking(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """``fn(*args)`` in a worker thread; once started it runs to its end even if the
        request is cancelled (a shutdown), so an append is never half-known."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        started = time.monotonic()
        with anyio.CancelScope(shield=True):
            result = await anyio.to_thread.run_sync(fn, *args, limiter=self.broker.limiter)
        charge_engine_time(time.monotonic() - started)
        return result

    def watch(self, partitions: Iterable[TopicPartition]) -> RecordsWaiter:
        """A wake-up for records made visible in ``partitions`` (use it with ``with``); raises
        as ``Log.watch`` does for a partition that does not exist."""
        return RecordsWaiter(self.broker, partitions)


class RecordsWaiter:
    """Woken when records become visible in the partitions it watches, or at shutdown.

    Make it before reading (so no append between the read and the wait is missed),
    read, then ``await wait(timeout_s)``. ``notify`` runs in the appending thread,
    inside the append: it only schedules an event's ``set`` on the loop, never blocks.
    """

    __slots__ = ("_broker", "_wakeup", "_watch")

    def __init__(self, broker: Broker, partitions: Iterable[TopicPartition]) -> None:
        self._broker = broker
        self._wakeup = Wakeup()
        self._watch: Watch | None = broker.log.watch(partitions, self.notify)
        broker.add_waiter(self)

    def notify(self) -> None:
        """Wake the waiting task; from any thread."""
        self._wakeup.notify()

    def clear(self) -> None:
        """Forget earlier wake-ups (on the loop thread, before reading again)."""
        self._wakeup.clear()

    async def wait(self, timeout_s: float) -> bool:
        """True when woken (records, or shutdown) before ``timeout_s`` passed."""
        if self._broker.stopping:
            return True
        with anyio.move_on_after(max(0.0, timeout_s) if math.isfinite(timeout_s) else None):
            await self._wakeup.wait()
            return True
        return False

    def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        self._broker.remove_waiter(self)

    def __enter__(self) -> RecordsWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
