"""What ``/metrics`` shows of a server (docs/operations.md, 4.1): one registry per server.

:class:`ServerMetrics` holds the server's counters and histograms in a
``CollectorRegistry`` of its own (never the process-wide one: two servers in one
process, or a test's, stay apart) with a collector of the replication state (role,
in-sync replicas, follower lag), and after them the store's figures (partitions, group
lag, append and fsync; ``eventstore.metrics``), read at scrape time and written as text
directly, so that a thousand partitions cost a few milliseconds per scrape.

What counts where:

* ``dispatch.answer``: requests, errors and latency per API (once per request);
* the Produce and Fetch handlers: bytes (and records) in and out per topic (once per
  partition of a request, never per record);
* ``Server``: connections open, opened, closed;
* authentication and quotas call :meth:`ServerMetrics.auth_failure` and
  :meth:`ServerMetrics.throttled`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.core import GaugeMetricFamily
except ImportError as e:  # pragma: no cover - depends on the installation
    from ..wire.errors import SERVER_EXTRA

    raise ImportError(f"{__name__}: {e.name} is missing; {SERVER_EXTRA}") from e

from ..errors import EventStoreError
from ..metrics import store_text
from ..storage.timings import LATENCY_BUCKETS_S
from ..wire import errors as wire_errors
from ..wire.apis import EXTENSION_APIS, KAFKA_API_NAMES
from ..wire.errors import KafkaError
from .replication.state import now_ms

if TYPE_CHECKING:
    from .context import Broker

__all__ = ["CONTENT_TYPE", "ServerMetrics", "api_name", "error_name"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""


@cache
def error_name(code: int) -> str:
    """Kafka's name of an error code (``UNKNOWN_TOPIC_OR_PARTITION``), or ``code_<n>``."""
    names = {e.code: e.name for e in vars(wire_errors).values() if isinstance(e, KafkaError)}
    return names.get(code, f"code_{code}")


def api_name(api_key: int) -> str:
    """Kafka's name of an API (``Produce``), the extension's, or ``api_<key>``."""
    return KAFKA_API_NAMES.get(api_key) or EXTENSION_APIS.get(api_key) or f"api_{api_key}"


class ServerMetrics:
    """One server's metrics; every method is cheap and safe from any thread."""

    def __init__(self, broker: Broker) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("eventstore_requests", "Requests answered (or failed), per API.",
                                ["api"], registry=r)
        self.errors = Counter("eventstore_request_errors",
                              "Requests answered with an error code or that closed the connection, "
                              "per API and error.", ["api", "error"], registry=r)
        self.latency = Histogram("eventstore_request_duration_seconds",
                                 "From a request read to its response ready, per API.", ["api"],
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.bytes_in = Counter("eventstore_topic_bytes_in", "Bytes of record batches produced, per topic.",
                                ["topic"], registry=r)
        self.records_in = Counter("eventstore_topic_records_in", "Records produced, per topic.",
                                  ["topic"], registry=r)
        self.bytes_out = Counter("eventstore_topic_bytes_out", "Bytes of record batches fetched, per topic.",
                                 ["topic"], registry=r)
        self.connections = Gauge("eventstore_connections", "Connections open, per listener.",
                                 ["listener"], registry=r)
        self.connections_opened = Counter("eventstore_connections_opened",
                                          "Connections accepted, per listener.", ["listener"], registry=r)
        self.auth_failures = Counter("eventstore_authentication_failures", "Failed authentications.",
                                     ["mechanism", "listener"], registry=r)
        self.throttles = Counter("eventstore_throttled", "Times a quota delayed a client, per kind.",
                                 ["kind"], registry=r)
        self.throttle_seconds = Counter("eventstore_throttle_seconds",
                                        "Seconds clients were delayed, per kind.", ["kind"], registry=r)
        r.register(ReplicationCollector(broker))
        self.broker = broker

    def request(self, api_key: int, seconds: float, error: str | None) -> None:
        """One request done: ``error`` names what failed it (a Kafka error, a closed connection)."""
        name = api_name(api_key)
        self.requests.labels(name).inc()
        self.latency.labels(name).observe(seconds)
        if error is not None:
            self.errors.labels(name, error).inc()

    def answered_error(self, api_key: int, code: int) -> None:
        """A response (or one partition of it) carried error ``code``; the request is counted
        by :meth:`request`."""
        self.errors.labels(api_name(api_key), error_name(code)).inc()

    def produced(self, topic: str, size: int, records: int) -> None:
        self.bytes_in.labels(topic).inc(size)
        self.records_in.labels(topic).inc(records)

    def fetched(self, topic: str, size: int) -> None:
        if size:
            self.bytes_out.labels(topic).inc(size)

    def connection_opened(self, listener: str) -> None:
        self.connections_opened.labels(listener).inc()
        self.connections.labels(listener).inc()

    def connection_closed(self, listener: str) -> None:
        self.connections.labels(listener).dec()

    def auth_failure(self, mechanism: str, listener: str) -> None:
        """A client failed to authenticate (SASL, or a TLS handshake refused)."""
        self.auth_failures.labels(mechanism, listener).inc()

    def throttled(self, kind: str, seconds: float) -> None:
        """A quota delayed a client by ``seconds`` (kind: produce, fetch, request, connection)."""
        self.throttles.labels(kind).inc()
        if seconds > 0:
            self.throttle_seconds.labels(kind).inc(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text of everything, now (reads the store: call it off the event loop):
        the registry's, then the store's families written directly (``store_text``)."""
        store = store_text(self.broker.log, self.broker.groups)
        return generate_latest(self.registry) + store.encode()


class ReplicationCollector:
    """Role, in-sync replicas per partition and each follower's lag, read at scrape time from
    the broker's replication state (docs/replication.md, 2)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Any]:
        rep = self.broker.replication
        role = GaugeMetricFamily("eventstore_replication_role", "1 for this node's role.", labels=["role"])
        role.add_metric(["leader" if rep.leads else "fenced" if rep.role == "leader" else "follower"], 1)
        yield role
        yield GaugeMetricFamily("eventstore_replication_epoch", "This node's leader epoch.", value=rep.epoch)
        if not rep.followers:
            return
        now = now_ms()
        isr = GaugeMetricFamily("eventstore_replication_in_sync_replicas",
                                "Replicas caught up within replica_lag_ms (this leader included).",
                                labels=["topic", "partition"])
        lag = GaugeMetricFamily("eventstore_replication_follower_lag_records",
                                "Records the follower's largest partition lag behind this leader's end.",
                                labels=["follower"])
        ends: dict[tuple[str, int], int] = {}
        for info in rep.followers.values():  # bounded by the followers and their partitions
            for key in info.positions:
                if key not in ends:
                    try:
                        ends[key] = self.broker.log.log_end(*key)
                    except EventStoreError:  # a partition deleted since the follower fetched it
                        continue
        for key in sorted(ends):  # bounded by the replicated partitions
            caught = sum(1 for info in rep.followers.values()
                         if now - info.caught_up_ms.get(key, -math.inf) <= rep.replica_lag_ms)
            isr.add_metric([key[0], str(key[1])], 1 + caught)
        for node, info in sorted(rep.followers.items()):
            worst = max((ends[key] - pos for key, pos in info.positions.items() if key in ends), default=0)
            lag.add_metric([str(node)], max(0, worst))
        yield isr
        yield lag
