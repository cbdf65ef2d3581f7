"""The web console on the HTTP port (docs/operations.md, 6): one static page (``/console``)
over a read-only JSON API (``/api/...``).

The API only reads: there is no route that writes, whatever the method. Every response is
bounded: at most :data:`RECORDS_MAX` records or events a page, :data:`STREAMS_MAX` stream
names, :data:`VALUE_BYTES_MAX` bytes of each key, value, header or event body shown (with its
real size and whether it was cut). Keys and values are the producers' bytes, so they are
never markup: the API returns them as JSON strings and the page puts them in the document as
text nodes only; its Content-Security-Policy forbids inline scripts besides.

Store reads run in a worker thread, as a scrape does.

**Access.** Once the store has a SCRAM user, every console path asks for HTTP Basic
credentials, checked against the stored SCRAM record as SASL PLAIN checks them (the password
salted and iterated as the record says, the keys compared in constant time); failures are
answered after the per-address delay SASL uses. What the API shows is filtered by the
principal's ACLs, as the Kafka APIs are: DESCRIBE to list or show a topic or group, READ to
browse a topic's messages or a stream's events (on its category topic), 403 otherwise. With no
user at all the principal is ``User:ANONYMOUS`` and the same ACLs apply.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import anyio.to_thread

from ..catalog import users
from ..catalog.acls import Operation
from ..errors import (
    EventStoreError,
    InvalidArgumentError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    StreamNotFoundError,
    TopicNotFoundError,
)
from ..metrics import GroupLag
from ..records import Record, RecordHeader, TopicConfig
from ..sourcing.rules import category_of
from . import console_history
from .auth import FailureDelays, plain_matches
from .authorization import Checker, authorizer_of, client_host
from .console_history import HISTORY_SAMPLES, history_of, sample_forever
from .context import Broker
from .http import HttpHandler, HttpRequest, HttpResponse, add_route, add_task

__all__ = ["ANONYMOUS", "FORMATS", "RECORDS_MAX", "STREAMS_MAX", "VALUE_BYTES_MAX", "Viewer", "shown"]

log = logging.getLogger("eventstore.server")

RECORDS_MAX = 100
"""Records (or stream events) one page of the browser holds at most."""
RECORDS_DEFAULT = 20
STREAMS_MAX = 500
"""Stream names one page of the stream list holds at most."""
VALUE_BYTES_MAX = 4096
"""Bytes of one key, value, header value or event body shown; the rest is cut."""
FORMATS = ("text", "json", "hex")

STATIC = {
    "": ("console.html", "text/html; charset=utf-8"),
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
     "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


ANONYMOUS = "User:ANONYMOUS"
CHALLENGE = (("WWW-Authenticate", 'Basic realm="eventstore", charset="UTF-8"'),)
_DELAYS = "console.delays"  # broker.state key: the FailureDelays of the HTTP console


class NotFound(EventStoreError):
    """What the API answers 404 for: no such topic, partition, group or stream."""


class Forbidden(EventStoreError):
    """What the API answers 403 for: the principal's ACLs do not allow it."""


class Viewer:
    """Who asks, and what its ACLs let it see (everything when no ACL exists)."""

    __slots__ = ("_checker", "principal")

    def __init__(self, principal: str, checker: Checker | None) -> None:
        self.principal = principal
        self._checker = checker

    @property
    def sees_all(self) -> bool:
        return self._checker is None

    def topic(self, operation: int, name: str) -> bool:
        return self._checker is None or self._checker.topic(operation, name)

    def group(self, operation: int, name: str) -> bool:
        return self._checker is None or self._checker.group(operation, name)

    def need_topic(self, operation: int, name: str) -> None:
        if not self.topic(operation, name):
            raise Forbidden(f"{self.principal} may not {Operation(operation).name} topic {name!r}")

    def need_group(self, operation: int, name: str) -> None:
        if not self.group(operation, name):
            raise Forbidden(f"{self.principal} may not {Operation(operation).name} group {name!r}")


def _basic(header: str) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic ...`` header (RFC 7617), or None."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def _principal(request: HttpRequest) -> tuple[str | None, bool]:
    """``(principal, tried)``: ``User:ANONYMOUS`` while the store has no user; else the Basic
    credentials' user when they match its SCRAM record, or None (``tried``: credentials were
    given). Blocking: the catalog and the key derivation."""
    catalog = request.broker.log.catalog
    if not users.names(catalog):
        return ANONYMOUS, False
    given = _basic(request.headers.get("authorization", ""))
    if given is None:
        return None, "authorization" in request.headers
    user, password = given
    if user and plain_matches(users.get(catalog, user), password):
        return f"User:{user}", True
    return None, True


def _viewer(broker: Broker, principal: str, client: str) -> Viewer:
    authorizer = authorizer_of(broker)
    if not authorizer.enforcing:
        return Viewer(principal, None)
    return Viewer(principal, Checker(authorizer, principal, client_host(client)))


def _guarded(serve: Callable[[HttpRequest, Viewer], Awaitable[HttpResponse]]) -> HttpHandler:
    """A console route: 404 when the console is off, 401 (after the address's failure delay
    when credentials were given) unless authenticated, else ``serve`` for the principal."""
    async def route(request: HttpRequest) -> HttpResponse:
        if not request.broker.config.console:
            return HttpResponse(404, f"Not Found: {request.method} {request.path}\n".encode())
        principal, tried = await anyio.to_thread.run_sync(_principal, request)
        if principal is None:
            if tried:
                delays: FailureDelays = request.broker.state.setdefault(_DELAYS, FailureDelays())
                await anyio.sleep(delays.failed(client_host(request.client)))
                log.info("console: authentication failed from %s", request.client)
            return HttpResponse(401, json.dumps({"error": "authentication required"}).encode(),
                                "application/json", SECURITY_HEADERS + CHALLENGE)
        return await serve(request, _viewer(request.broker, principal, request.client))
    return route


def shown(data: bytes | None, fmt: str) -> dict[str, Any] | None:
    """Bytes as the page shows them: ``text`` (UTF-8, undecodable bytes replaced), ``json``
    (indented; text when the bytes are not JSON) or ``hex``; cut at :data:`VALUE_BYTES_MAX`
    bytes (or characters), with the real size."""
    if data is None:
        return None
    cut = data[:VALUE_BYTES_MAX]
    used = fmt
    if fmt == "json":
        try:
            text = json.dumps(json.loads(data), indent=2, ensure_ascii=False)[:VALUE_BYTES_MAX]
        except ValueError:  # not JSON (or not UTF-8): shown as text, and said so
            used, text = "text", cut.decode("utf-8", errors="replace")
    elif fmt == "hex":
        text = cut.hex(" ")
    else:
        text = cut.decode("utf-8", errors="replace")
    return {"size": len(data), "truncated": len(data) > VALUE_BYTES_MAX, "format": used, "text": text}


# --- the page ----------------------------------------------------------------------------------

async def _page(request: HttpRequest, viewer: Viewer) -> HttpResponse:
    name = request.path.removeprefix("/console").strip("/")
    if name not in STATIC:
        return _error(404, f"no console file {name!r}")
    filename, content_type = STATIC[name]
    body = resources.files(__package__).joinpath("console_static", filename).read_bytes()
    return HttpResponse(200, body, content_type, SECURITY_HEADERS)


# --- the JSON API ------------------------------------------------------------------------------

def _error(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, json.dumps({"error": message}).encode(), "application/json",
                        SECURITY_HEADERS)


Reader = Callable[[HttpRequest, Viewer], dict[str, Any]]


def _api(read: Reader) -> HttpHandler:
    """A route that answers ``read(request, viewer)`` (run in a worker thread) as JSON: bad
    parameters 400, not allowed 403, unknown names 404."""
    async def route(request: HttpRequest, viewer: Viewer) -> HttpResponse:
        try:
            value = await anyio.to_thread.run_sync(read, request, viewer)
        except Forbidden as e:
            return _error(403, str(e))
        except (NotFound, TopicNotFoundError, PartitionNotFoundError, StreamNotFoundError) as e:
            return _error(404, str(e))
        except (InvalidArgumentError, OffsetOutOfRangeError) as e:
            return _error(400, str(e))
        return HttpResponse(200, json.dumps(value).encode(), "application/json", SECURITY_HEADERS)
    return _guarded(route)


def _param(request: HttpRequest, name: str, default: str | None = None) -> str | None:
    values = request.query.get(name)
    return values[-1] if values else default


def _int_param(request: HttpRequest, name: str, default: int | None = None, *,
               low: int = 0, high: int = 2**63 - 1) -> int | None:
    text = _param(request, name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _format(request: HttpRequest) -> str:
    fmt = _param(request, "format", "text") or "text"
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def _name(request: HttpRequest, prefix: str) -> str:
    name = request.path.removeprefix(prefix).strip("/")
    if not name:
        raise NotFound(f"a name after {prefix}/")
    return name


def overview(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    """The store's figures; for a principal ACLs filter, those of what it may describe."""
    broker = request.broker
    stats = broker.log.statistics()
    rep = broker.replication
    figures = {"topics": stats.topics, "partitions": stats.partitions, "records": stats.records,
               "size_bytes": stats.size_bytes, "groups": len(broker.groups.list_groups())}
    if not viewer.sees_all:
        seen = [p for p in stats.partition_stats if viewer.topic(Operation.DESCRIBE, p.topic)]
        figures = {"topics": len({p.topic for p in seen}), "partitions": len(seen),
                   "records": sum(p.end_offset - p.log_start_offset for p in seen),
                   "size_bytes": sum(p.size_bytes for p in seen),
                   "groups": len([g for g in broker.groups.list_groups()
                                  if viewer.group(Operation.DESCRIBE, g)])}
    return {
        "cluster_id": broker.cluster_id,
        "role": "leader" if rep.leads else rep.role,
        "epoch": rep.epoch,
        "durability": str(stats.durability),
        **figures,
        "read_only": True,
    }


def _topic(config: TopicConfig, partitions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": config.name,
        "partitions": partitions,
        "partition_count": config.partitions,
        "retention_ms": config.retention_ms,
        "retention_bytes": config.retention_bytes,
        "segment_bytes": config.segment_bytes,
        "timestamp_type": config.timestamp_type,
        "streams": config.streams,
        "size_bytes": sum(p["size_bytes"] for p in partitions),
        "records": sum(p["end_offset"] - p["log_start_offset"] for p in partitions),
    }


def topics(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    log = request.broker.log
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for p in log.statistics().partition_stats:  # bounded by the store's partitions
        by_topic.setdefault(p.topic, []).append({
            "partition": p.partition, "log_start_offset": p.log_start_offset, "end_offset": p.end_offset,
            "size_bytes": p.size_bytes, "segments": p.segments, "max_timestamp_ms": p.max_timestamp_ms})
    ordered = sorted((c for c in log.topics() if viewer.topic(Operation.DESCRIBE, c.name)),
                     key=lambda c: c.name)
    return {"topics": [_topic(c, by_topic.get(c.name, [])) for c in ordered]}


def topic(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    name = _name(request, "/api/topics")
    viewer.need_topic(Operation.DESCRIBE, name)
    for t in topics(request, viewer)["topics"]:  # bounded by the store's topics
        if t["name"] == name:
            return dict(t)
    raise NotFound(f"no topic {name!r}")


def groups(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    coordinator = request.broker.groups
    out = []
    for group in sorted(coordinator.list_groups()):  # bounded by the store's groups
        if not viewer.group(Operation.DESCRIBE, group):
            continue
        description = coordinator.describe_group(group)
        out.append({"group": group, "state": description.state, "members": len(description.members),
                    "lag": sum(coordinator.lag(group).values())})
    return {"groups": out}


def group(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    name = _name(request, "/api/groups")
    viewer.need_group(Operation.DESCRIBE, name)
    coordinator = request.broker.groups
    if name not in coordinator.list_groups():
        raise NotFound(f"no group {name!r}")
    description = coordinator.describe_group(name)
    committed = coordinator.group_offsets(name)
    lags = [GroupLag(name, tp.topic, tp.partition, lag) for tp, lag in sorted(coordinator.lag(name).items())]
    log = request.broker.log
    partitions = []
    for g in lags:  # bounded by the group's partitions
        tp = next(tp for tp in committed if (tp.topic, tp.partition) == (g.topic, g.partition))
        partitions.append({"topic": g.topic, "partition": g.partition, "committed": committed[tp],
                           "end_offset": log.offsets(g.topic, g.partition)[1], "lag": g.lag})
    return {
        "group": name, "state": description.state, "generation": description.generation,
        "protocol": description.protocol,
        "members": [{"member_id": m.member_id, "client_id": m.client_id, "host": m.client_host,
                     "kind": m.kind, "assignment": [f"{tp.topic}-{tp.partition}" for tp in m.assignment]}
                    for m in description.members],
        "partitions": partitions,
        "history": history_of(request.broker).group_lag(name),
    }


def _header(header: RecordHeader, fmt: str) -> dict[str, Any]:
    key, value = header
    return {"key": key[:VALUE_BYTES_MAX], "value": shown(value, fmt)}


def _record(record: Record, fmt: str) -> dict[str, Any]:
    return {"offset": record.offset, "timestamp_ms": record.timestamp_ms, "key": shown(record.key, fmt),
            "value": shown(record.value, fmt), "headers": [_header(h, fmt) for h in record.headers]}


def messages(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    """One page of a partition's records, from an offset or from a time."""
    log = request.broker.log
    name = _param(request, "topic")
    if not name:
        raise InvalidArgumentError("topic is required")
    viewer.need_topic(Operation.READ, name)
    partition = _int_param(request, "partition", 0, high=2**31 - 1)
    assert partition is not None
    limit = _int_param(request, "limit", RECORDS_DEFAULT, low=1, high=RECORDS_MAX)
    assert limit is not None
    fmt = _format(request)
    start, end = log.offsets(name, partition)
    at_time = _int_param(request, "time")
    if at_time is not None:
        found = log.offset_for_time(name, partition, at_time)
        offset = end if found is None else found
    else:
        requested = _int_param(request, "offset")
        offset = start if requested is None else min(max(requested, start), end)
    records = log.read(name, partition, offset, max_records=limit, max_bytes=limit * 64 * 1024)[:limit]
    return {"topic": name, "partition": partition, "log_start_offset": start, "end_offset": end,
            "from_offset": offset, "next_offset": records[-1].offset + 1 if records else offset,
            "format": fmt, "records": [_record(r, fmt) for r in records]}


def _category(stream_id: str) -> str:
    return stream_id.split("-", 1)[0]


def streams(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    """Categories with their stream counts, and one page of a category's streams (those whose
    category topic the principal may read)."""
    layer = request.broker.streams
    if layer is None:
        return {"categories": [], "category": None, "streams": [], "next_after": None}
    counts: dict[str, int] = {}
    every = [sid for sid in layer.list_streams(None) if viewer.topic(Operation.READ, category_of(sid))]
    for sid in every:  # bounded by the store's streams
        counts[_category(sid)] = counts.get(_category(sid), 0) + 1
    category = _param(request, "category")
    after = _param(request, "after") or ""
    limit = _int_param(request, "limit", STREAMS_MAX, low=1, high=STREAMS_MAX)
    assert limit is not None
    chosen = sorted(sid for sid in every if (category is None or _category(sid) == category) and sid > after)
    page = chosen[:limit]
    return {"categories": [{"name": c, "streams": n} for c, n in sorted(counts.items())],
            "category": category, "streams": page,
            "next_after": page[-1] if len(chosen) > limit else None}


def stream(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    """One page of a stream's events, from a version."""
    layer = request.broker.streams
    stream_id = _name(request, "/api/streams")
    viewer.need_topic(Operation.READ, category_of(stream_id))
    if layer is None:
        raise NotFound("this server has no streams")
    version = layer.stream_version(stream_id)
    if version is None:
        raise NotFound(f"no stream {stream_id!r}")
    start = _int_param(request, "from", 0)
    limit = _int_param(request, "limit", RECORDS_DEFAULT, low=1, high=RECORDS_MAX)
    assert start is not None and limit is not None
    fmt = _format(request)
    events = layer.read(stream_id, start, limit, False)
    return {
        "stream": stream_id, "version": version, "format": fmt,
        "next": events[-1].version + 1 if events and events[-1].version < version else None,
        "events": [{"version": e.version, "type": e.type, "position": e.position,
                    "timestamp_ms": e.timestamp_ms, "topic": e.topic, "partition": e.partition,
                    "offset": e.offset, "data": shown(e.data, fmt), "metadata": shown(e.metadata, fmt)}
                   for e in events],
    }


def throughput(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
    """The store's rates (totals, naming no topic or group: any authenticated principal)."""
    return {"interval_s": console_history.SAMPLE_INTERVAL_S, "samples_max": HISTORY_SAMPLES,
            "samples": history_of(request.broker).throughput()}


def _list_or_one(prefix: str, listing: Reader, one: Reader) -> Reader:
    """``prefix`` lists, ``prefix/NAME`` shows one (a route serves its prefix and below)."""
    def read(request: HttpRequest, viewer: Viewer) -> dict[str, Any]:
        return listing(request, viewer) if request.path.rstrip("/") == prefix else one(request, viewer)
    return read


ROUTES: dict[str, Reader] = {
    "/api/overview": overview,
    "/api/topics": _list_or_one("/api/topics", topics, topic),
    "/api/groups": _list_or_one("/api/groups", groups, group),
    "/api/messages": messages,
    "/api/streams": _list_or_one("/api/streams", streams, stream),
    "/api/throughput": throughput,
}
"""The JSON API: GET only (the console is read-only)."""

add_route("GET", "/console", _guarded(_page))
for _prefix, _read in ROUTES.items():  # bounded by the routes above
    add_route("GET", _prefix, _api(_read))
add_task(sample_forever)
