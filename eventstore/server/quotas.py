"""Client quotas: byte rates and a request-time share per user and client id, and
connections per address (docs/operations.md, "Quotas").

Kafka's model. A quota is set on an **entity**: a user, a client id, a user and a
client id, or the default of either (``name`` None). The quota a request gets for
one key (``producer_byte_rate``, ``consumer_byte_rate``, ``request_percentage``) is
the first of these that has that key, Kafka's order of precedence::

    /users/U/clients/C, /users/U/clients/<default>, /users/U,
    /users/<default>/clients/C, /users/<default>/clients/<default>, /users/<default>,
    /clients/C, /clients/<default>, then the server's configured default

and the usage it is measured against is that entity's: a quota on ``/users/U`` is
shared by every client id of user U, one on ``/clients/<default>`` (and the
configured default) is had by each client id on its own.

Usage is a **windowed rate**: ``window_num`` samples of ``window_s`` each; the rate
is what the samples hold over the time they span, never less than ``window_num - 1``
samples (so a client's first burst is measured over the whole window, as Kafka's).
A request that takes the rate over its bound is answered at once, with
``throttle_time_ms = (rate - bound) / bound * window``, and its
connection reads nothing more for that long (``Connection``): the rate falls back to
the bound before the client's next request is read.

What is charged, once per request (never per record): a Produce its frame's bytes
(as it starts, so that a client's pipelined requests are held back from the first over);
a consumer's Fetch the bytes of the record batches it returns; every request the time
it held the engine (its ``ctx.blocking`` calls, ``charge_engine_time``) and its decode
and encode, as a percentage of one thread's time per second. Replication traffic
(a follower's Fetch, the replication extension APIs) is never charged.
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import datetime
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..catalog import quotas as quota_table
from ..catalog.env import Catalog
from ..wire import RequestHeader
from ..wire.apis import REPLICATION_KEYS
from .config import ServerConfig

try:
    from kio.static.primitive import i32Timedelta
except ImportError as e:  # pragma: no cover - depends on the installation
    from ..wire.errors import SERVER_EXTRA

    raise ImportError(f"{__name__}: {e.name} is missing; {SERVER_EXTRA}") from e

__all__ = [
    "ANONYMOUS", "CLIENT_ID", "ENTITY_TYPES", "QUOTA_KEYS", "USER", "Entity", "QuotaError", "Quotas", "Rate",
    "charge_engine_time", "charge_request", "check_entity", "engine_timer", "throttled", "user_of",
]

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
QUOTA_KEYS = (PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE)
USER = "user"
CLIENT_ID = "client-id"
ENTITY_TYPES = (USER, CLIENT_ID)
ANONYMOUS = "User:ANONYMOUS"
"""The principal of a connection that did not authenticate."""
IDLE_SENSOR_S = 3600.0
"""A usage not charged for this long is forgotten (Kafka expires its quota sensors after an hour)."""

Entity = quota_table.Entity
_ENGINE_TIME: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("engine_time", default=None)


class QuotaError(ValueError):
    """An entity or quota an AlterClientQuotas entry names that cannot be set (INVALID_REQUEST)."""


def user_of(principal: str) -> str:
    """The user name quotas are set on: the principal without its ``User:`` type."""
    return principal.removeprefix("User:")



def engine_timer() -> list[float]:
    """A one-item list that sums, for the rest of the calling task, the seconds it holds the
    engine (``charge_engine_time``): each request is answered in a task of its own."""
    held = [0.0]
    _ENGINE_TIME.set(held)
    return held


def charge_engine_time(seconds: float) -> None:
    """Count ``seconds`` of engine work to the request being answered (if any)."""
    held = _ENGINE_TIME.get()
    if held is not None:
        held[0] += seconds


class Rate:
    """A value per second over a sliding window of ``num`` samples of ``size_s`` each."""

    __slots__ = ("last", "num", "samples", "size_s")

    def __init__(self, num: int, size_s: float) -> None:
        self.num = num
        self.size_s = size_s
        self.samples: collections.deque[list[float]] = collections.deque()
        """``[start, total]`` of each sample, oldest first."""
        self.last = 0.0

    def record(self, value: float, now: float) -> None:
        self._expire(now)
        samples = self.samples
        if not samples or now >= samples[-1][0] + self.size_s:
            samples.append([now, 0.0])
        samples[-1][1] += value
        self.last = now

    def window(self, now: float) -> float:
        """The seconds the rate is taken over: those the samples span, at least ``num - 1`` samples'."""
        spanned = now - self.samples[0][0] if self.samples else 0.0
        return max(spanned, (self.num - 1) * self.size_s, self.size_s)

    def measure(self, now: float) -> float:
        self._expire(now)
        return sum(total for _, total in self.samples) / self.window(now)

    def _expire(self, now: float) -> None:
        samples = self.samples
        while samples and samples[0][0] + self.num * self.size_s <= now:  # bounded by num
            samples.popleft()


Bound = tuple[float, str, str]
"""A quota's bound and the (user, client id) its usage is kept under ("" for one not in the entity)."""


class Quotas:
    """One server's quotas, their usage, and its connections per address."""

    def __init__(self, config: ServerConfig, catalog: Catalog | None) -> None:
        self.window_num = config.quota_window_num
        self.window_s = config.quota_window_size_ms / 1000
        self.defaults: dict[str, float] = {key: float(value) for key, value in (
            (PRODUCER_BYTE_RATE, config.quota_default_producer_bytes),
            (CONSUMER_BYTE_RATE, config.quota_default_consumer_bytes),
            (REQUEST_PERCENTAGE, config.quota_default_request_percentage),
        ) if value is not None}
        """The configured defaults: below every stored quota, had by each client id."""
        self.catalog = catalog
        self.stored: dict[Entity, dict[str, float]] = quota_table.load(catalog) if catalog is not None else {}
        self.max_per_ip = config.max_connections_per_ip
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._rates: dict[tuple[str, str, str], Rate] = {}
        self._bounds: dict[tuple[str, str, str], Bound | None] = {}
        self._swept = time.monotonic()

    @property
    def active(self) -> bool:
        """Whether any quota is set (otherwise nothing is measured)."""
        return bool(self.stored or self.defaults)

    # -- connections per address

    def admit(self, host: str) -> bool:
        """Count one more connection from ``host``; False (not counted) when it has its maximum."""
        if self._per_ip[host] >= self.max_per_ip:
            return False
        self._per_ip[host] += 1
        return True

    def release(self, host: str) -> None:
        """One connection from ``host`` closed."""
        self._per_ip[host] -= 1
        if self._per_ip[host] <= 0:
            del self._per_ip[host]

    # -- usage and throttling

    def charge(self, principal: str, client_id: str, *, produced: int = 0, fetched: int = 0,
               seconds: float = 0.0, now: float | None = None) -> int:
        """Record one request's usage; the milliseconds its client is to be throttled (0: none)."""
        now = time.monotonic() if now is None else now
        user = user_of(principal)
        throttle = self._record(REQUEST_PERCENTAGE, user, client_id, seconds * 100, now)
        if produced:
            throttle = max(throttle, self._record(PRODUCER_BYTE_RATE, user, client_id, produced, now))
        if fetched:
            throttle = max(throttle, self._record(CONSUMER_BYTE_RATE, user, client_id, fetched, now))
        return math.ceil(throttle * 1000)

    def _record(self, key: str, user: str, client_id: str, value: float, now: float) -> float:
        """Seconds of throttle after recording ``value`` against the quota of ``key``."""
        bound = self.bound(key, user, client_id)
        if bound is None:
            return 0.0
        limit, user_tag, client_tag = bound
        rate = self._rates.get((key, user_tag, client_tag))
        if rate is None:
            self._sweep(now)
            rate = self._rates[(key, user_tag, client_tag)] = Rate(self.window_num, self.window_s)
        rate.record(value, now)
        observed = rate.measure(now)
        if observed <= limit:
            return 0.0
        return (observed - limit) / limit * rate.window(now)

    def bound(self, key: str, user: str, client_id: str) -> Bound | None:
        """The quota of ``key`` for ``user`` and ``client_id`` (Kafka's precedence), or None."""
        cache_key = (key, user, client_id)
        if cache_key in self._bounds:
            return self._bounds[cache_key]
        found: Bound | None = None
        for entity in _precedence(user, client_id):  # bounded: eight entities
            values = self.stored.get(entity)
            if values is not None and key in values:
                types = dict(entity)
                found = (values[key], user if USER in types else "", client_id if CLIENT_ID in types else "")
                break
        else:
            if key in self.defaults:
                found = (self.defaults[key], "", client_id)
        if len(self._bounds) > 100_000:  # bounded: many client ids come and go
            self._bounds.clear()
        self._bounds[cache_key] = found
        return found

    def _sweep(self, now: float) -> None:
        """Forget the usage of clients idle for ``IDLE_SENSOR_S`` (at most once a minute)."""
        if now - self._swept < 60:
            return
        self._swept = now
        for rate_key in [k for k, rate in self._rates.items() if now - rate.last > IDLE_SENSOR_S]:
            del self._rates[rate_key]

    # -- DescribeClientQuotas / AlterClientQuotas

    def describe(self, components: Sequence[tuple[str, int, str | None]],
                 strict: bool) -> list[tuple[Entity, dict[str, float]]]:
        """The stored quotas of the entities that match every ``(entity_type, match_type, match)``
        (match type 0: that name, 1: the default, 2: any); ``strict``: and have no other type."""
        seen = set()
        for entity_type, match_type, match in components:  # bounded by the request
            if entity_type not in ENTITY_TYPES:
                raise QuotaError(f"unknown entity type {entity_type!r}; known: {', '.join(ENTITY_TYPES)}")
            if entity_type in seen:
                raise QuotaError(f"entity type {entity_type!r} is filtered twice")
            if match_type not in (0, 1, 2) or (match_type == 0 and match is None):
                raise QuotaError(f"match type {match_type} with match {match!r} is not a filter")
            seen.add(entity_type)
        out = []
        for entity, values in sorted(self.stored.items(), key=lambda item: repr(item[0])):
            names = dict(entity)
            if all(_matches(names, *component) for component in components) and \
                    (not strict or set(names) == seen):
                out.append((entity, dict(values)))
        return out

    def altered(self, entity: Entity, ops: Sequence[tuple[str, float, bool]]) -> dict[str, float]:
        """``entity``'s quotas after ``ops`` (``(key, value, remove)``); ``QuotaError`` when the
        entity or an operation cannot be."""
        check_entity(entity)
        values = dict(self.stored.get(entity, {}))
        for key, value, remove in ops:  # bounded by the request
            if key not in QUOTA_KEYS:
                raise QuotaError(f"unknown quota key {key!r}; known: {', '.join(QUOTA_KEYS)}")
            if remove:
                values.pop(key, None)
                continue
            if not math.isfinite(value) or value <= 0:
                raise QuotaError(f"{key} must be a positive number, got {value!r}")
            if key != REQUEST_PERCENTAGE and value != int(value):
                raise QuotaError(f"{key} is bytes per second, a whole number, got {value!r}")
            values[key] = float(value)
        return values

    def save(self, changed: Mapping[Entity, Mapping[str, float]]) -> None:
        """Write ``changed`` to the catalog (blocking: run it in a worker thread)."""
        if self.catalog is None:
            raise QuotaError("this server has no catalog to keep quotas in")
        quota_table.replace(self.catalog, changed)

    def apply(self, changed: Mapping[Entity, Mapping[str, float]]) -> None:
        """Take ``changed`` (already saved) into effect for the next request."""
        for entity, values in changed.items():  # bounded by the request
            if values:
                self.stored[entity] = dict(values)
            else:
                self.stored.pop(entity, None)
        self._bounds.clear()


    def reload(self) -> None:
        """Take the catalog's quotas as they are now (a follower copied its leader's)."""
        if self.catalog is not None:
            self.stored = quota_table.load(self.catalog)
            self._bounds.clear()


def check_entity(entity: Entity) -> None:
    """``QuotaError`` unless ``entity`` names known types, each once, sorted."""
    types = [entity_type for entity_type, _ in entity]
    if not types or any(t not in ENTITY_TYPES for t in types) or len(set(types)) != len(types):
        raise QuotaError(f"an entity is one user and/or one client id, got {list(entity)!r}")
    if types != sorted(types):
        raise QuotaError(f"entity parts must be sorted by type, got {list(entity)!r}")


def _matches(names: dict[str, str | None], entity_type: str, match_type: int, match: str | None) -> bool:
    if entity_type not in names:
        return False
    if match_type == 0:
        return names[entity_type] == match
    if match_type == 1:
        return names[entity_type] is None
    return True


def _precedence(user: str, client_id: str) -> tuple[Entity, ...]:
    """The entities whose quotas apply to ``user`` and ``client_id``, most specific first
    (parts sorted by type: ``client-id`` before ``user``)."""
    return (
        ((CLIENT_ID, client_id), (USER, user)),
        ((CLIENT_ID, None), (USER, user)),
        ((USER, user),),
        ((CLIENT_ID, client_id), (USER, None)),
        ((CLIENT_ID, None), (USER, None)),
        ((USER, None),),
        ((CLIENT_ID, client_id),),
        ((CLIENT_ID, None),),
    )


# -- the dispatch seam

FETCH_KEY = 1
PRODUCE_KEY = 0


def charge_request(quotas: Quotas, principal: str, header: RequestHeader, request_bytes: int) -> int:
    """Charge a Produce's bytes as it starts, before it is handled: a client that pipelines
    requests is throttled from the first one over its quota, not after all it sent; the
    throttle in ms (0: none)."""
    if header.api_key != PRODUCE_KEY or not quotas.active:
        return 0
    return quotas.charge(principal, header.client_id or "", produced=request_bytes)


def throttled(quotas: Quotas, principal: str, header: RequestHeader, body: Any, response: Any,
              engine_s: float, charged_ms: int) -> tuple[Any, int]:
    """Charge an answered Kafka request's fetched bytes and engine time to its client's quotas;
    returns the response with its ``throttle_time`` set (when its version has the field) to
    the larger of that throttle and ``charged_ms`` (``charge_request``'s), and that throttle."""
    api_key = header.api_key
    if not quotas.active or api_key in REPLICATION_KEYS:
        return response, 0
    if api_key == FETCH_KEY and _replica_id(body) >= 0:
        return response, 0  # a follower copying the log
    fetched = _records_bytes(response) if api_key == FETCH_KEY and response is not None else 0
    charged = quotas.charge(principal, header.client_id or "", fetched=fetched, seconds=engine_s)
    throttle_ms = max(charged_ms, charged)
    if throttle_ms and response is not None and "throttle_time" in response.__dataclass_fields__:
        response = dataclasses.replace(
            response, throttle_time=i32Timedelta.parse(datetime.timedelta(milliseconds=throttle_ms)))
    return response, throttle_ms


def _replica_id(body: Any) -> int:
    state = getattr(body, "replica_state", None)
    if state is not None:
        return int(state.replica_id)
    return int(getattr(body, "replica_id", -1))


def _records_bytes(response: Any) -> int:
    return sum(len(p.records) for t in response.responses for p in t.partitions if p.records is not None)
