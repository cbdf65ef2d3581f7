"""The extension APIs (keys 20000 to 20011, docs/protocol.md section 7): event sourcing over the wire.

Each request is decoded by ``eventstore.wire.extensions`` (kio has no classes for
these keys), run on the store's ``Streams`` in a worker thread, and answered in the
extension response, whose ``error_code`` carries any ``EventStoreError`` (the
extension codes 20001 to 20004 included). Bad bytes are answered INVALID_REQUEST;
nothing a client sends stops the server.

PollSubscription is a long poll, as Fetch is: it reads once, and if there is
nothing it waits for the streams' watermark to move (``Streams.watch``, a wake-up
scheduled on the loop, no thread held), then reads again, until ``max_wait_ms``.
The server keeps no state per subscription: the cursor is the client's.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from ...errors import (
    EventStoreError,
    InvalidArgumentError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from ...sourcing.events import NewEvent, RecordedEvent, StreamMetadata, StreamState
from ...sourcing.snapshots import Snapshot, Snapshots, hides_events
from ...sourcing.streams import Streams
from ...wire import RequestHeader, kafka_error_for
from ...wire.apis import EXTENSION_KEYS
from ...wire.errors import (
    STREAMS_TOPIC,
)
from ..context import Context
from ..dispatch import handles_frames
from ..extension import answer_extension, kafka_refusal, open_streams
from ..longpoll import long_poll

__all__ = ["EXPECTED_KINDS", "event_tuple", "extension"]

APPEND, READ_STREAM, READ_ALL, GET_META, SET_META, DELETE, TRUNCATE, POLL, VERSIONS, LIST, \
    LOAD_SNAPSHOT, SAVE_SNAPSHOT = EXTENSION_KEYS

#: ``expected_kind`` on the wire -> what ``append_to_stream`` takes (0: the version itself).
EXPECTED_KINDS: dict[int, StreamState] = {1: StreamState.ANY, 2: StreamState.NO_STREAM,
                                          3: StreamState.STREAM_EXISTS}
PAGE_EVENTS_MAX = 10_000  # the most events one read takes from the store, whatever max_bytes says
EVENT_OVERHEAD = 64  # bytes an event costs in a response besides its strings and bytes
ALL, CATEGORY, STREAM = 0, 1, 2

_meta_json = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(StreamMetadata)


@handles_frames(*EXTENSION_KEYS)
async def extension(ctx: Context, header: RequestHeader, frame_bytes: bytes) -> bytes:
    """Answer one extension request; every failure becomes the response's error code."""
    return await answer_extension(ctx, header, frame_bytes, functools.partial(_answer, ctx), _refusal)


async def _answer(ctx: Context, key: int, request: dict[str, Any]) -> dict[str, Any]:
    if key == POLL:
        return await _poll(ctx, await ctx.blocking(open_streams, ctx), request)
    # one trip to a worker thread: the streams (opened on first use), then the call
    return await ctx.blocking(_call, ctx, key, request)


def _refusal(e: EventStoreError) -> tuple[int, dict[str, Any]]:
    """A wrong expected version answers the stream's actual version too; an append to a topic
    of plain records is STREAMS_TOPIC."""
    if isinstance(e, WrongExpectedVersionError):
        return kafka_error_for(e).code, {"actual_version": e.actual}
    if isinstance(e, _StreamsTopic):
        return STREAMS_TOPIC.code, {}
    return kafka_refusal(e)


class _StreamsTopic(InvalidArgumentError):
    """An append naming a topic that holds plain records (answered STREAMS_TOPIC)."""


# --- the calls, each in a worker thread: (streams, request) -> response fields -------------------


def _call(ctx: Context, key: int, request: dict[str, Any]) -> dict[str, Any]:
    return _CALLS[key](open_streams(ctx), request)


def event_tuple(e: RecordedEvent) -> tuple[Any, ...]:
    """A ``RecordedEvent`` in the wire's field order (docs/protocol.md, section 7)."""
    return (e.stream_id, e.version, e.type, e.data, e.metadata, e.id_bytes, e.position,
            e.timestamp_ms, e.topic, e.partition, e.offset)


def _result(r: Any) -> dict[str, Any]:
    return {"stream_id": r.stream_id, "next_expected_version": r.next_expected_version,
            "position": r.position}


def _append(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    kind = req["expected_kind"]
    if kind == 0:
        expected: int | StreamState = req["expected_version"]
    elif kind in EXPECTED_KINDS:
        expected = EXPECTED_KINDS[kind]
    else:
        raise InvalidArgumentError(f"expected_kind must be 0..3, got {kind}")
    topic = req["topic"]
    if topic is not None:
        cfg = streams.log.find_topic(topic)
        if cfg is not None and not cfg.streams:
            raise _StreamsTopic(f"topic {topic!r} holds plain records, not streams; choose another topic=")
    events = [NewEvent(id=uuid.UUID(bytes=i), type=t, data=d, metadata=m) for i, t, d, m in req["events"]]
    return {**_result(streams.append(req["stream_id"], events, expected, topic)), "actual_version": -1}


def _sized(events: list[RecordedEvent], max_bytes: int) -> tuple[list[RecordedEvent], bool]:
    """The first events that fit in about ``max_bytes`` (at least one), and whether any was cut."""
    total = 0
    for i, e in enumerate(events):
        total += len(e.data) + len(e.metadata) + len(e.type) + len(e.stream_id) + EVENT_OVERHEAD
        if total > max_bytes and i > 0:
            return events[:i], True
    return events, False


def _page(limit: int, max_bytes: int) -> int:
    """Events one read takes: the limit, bounded by what ``max_bytes`` can hold."""
    cap = max(1, min(PAGE_EVENTS_MAX, max_bytes // EVENT_OVERHEAD))
    return cap if limit < 0 else max(0, min(limit, cap))


def _read_stream(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    stream_id, backwards = req["stream_id"], req["backwards"]
    page = _page(req["limit"], req["max_bytes"])
    events = streams.read(stream_id, req["from_version"], page, backwards)
    events, _ = _sized(events, req["max_bytes"])
    nxt = -1
    if events:
        last = events[-1].version
        if backwards:
            nxt = last - 1 if last > 0 else -1
        else:
            head = streams.stream_version(stream_id)
            nxt = last + 1 if head is not None and last < head else -1
    return {"events": [event_tuple(e) for e in events], "next_version": nxt}


def _read_all(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    start, limit = req["from_position"], req["limit"]
    watermark = streams.positions.watermark
    page = _page(limit, req["max_bytes"])
    events = streams.read_all(start, page)
    events, cut = _sized(events, req["max_bytes"])
    end = min(watermark, start + page)
    nxt = events[-1].position + 1 if cut else max(end, start)
    return {"events": [event_tuple(e) for e in events], "next_position": nxt, "watermark": watermark}


def _get_meta(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    stream_id = req["stream_id"]
    meta = streams.metadata(stream_id)
    version = streams.stream_version("$$" + stream_id)
    return {"metadata": _meta_json.encode(meta), "metadata_version": -1 if version is None else version}


def _set_meta(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = _meta_decoder.decode(req["metadata"])
    except msgspec.MsgspecError as e:
        raise InvalidArgumentError(f"stream metadata is not a StreamMetadata as JSON: {e}") from None
    return _result(streams.set_metadata(req["stream_id"], meta))


def _delete(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    return _result(streams.delete(req["stream_id"]))


def _truncate(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    return _result(streams.truncate_before(req["stream_id"], req["before_version"]))


def _versions(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    versions = [streams.stream_version(s) for s in req["stream_ids"]]
    return {"versions": [-1 if v is None else v for v in versions]}


def _list(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    return {"stream_ids": streams.list_streams(req["category"])}


def _load_snapshot(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    """The stream's snapshot; ``found`` is false too when the stream hides events (case S4),
    which only the server can tell (the head's metadata stays here)."""
    head, snapshot = Snapshots(streams).load(req["stream_id"])
    head_version = -1 if head is None else head.last_version
    if snapshot is None or head is None or hides_events(head):
        return {"found": False, "aggregate": "", "schema_version": 0, "version": -1, "state": b"",
                "head_version": head_version}
    return {"found": True, "aggregate": snapshot.name, "schema_version": snapshot.schema,
            "version": snapshot.version, "state": bytes(snapshot.state), "head_version": head_version}


def _save_snapshot(streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    """Store a snapshot (unless a newer valid one is there), or with version -1 delete it."""
    snapshots = Snapshots(streams)
    if req["version"] == -1:
        return {"written": snapshots.delete(req["stream_id"])}
    if req["version"] < 0:
        raise InvalidArgumentError(f"a snapshot's version is ≥ 0 (or -1 to delete), got {req['version']}")
    snapshot = Snapshot(req["aggregate"], req["schema_version"], req["version"], msgspec.Raw(req["state"]))
    return {"written": snapshots.put(req["stream_id"], snapshot)}


_CALLS: dict[int, Callable[[Streams, dict[str, Any]], dict[str, Any]]] = {
    APPEND: _append, READ_STREAM: _read_stream, READ_ALL: _read_all, GET_META: _get_meta,
    SET_META: _set_meta, DELETE: _delete, TRUNCATE: _truncate, VERSIONS: _versions, LIST: _list,
    LOAD_SNAPSHOT: _load_snapshot, SAVE_SNAPSHOT: _save_snapshot,
}


# --- PollSubscription: a long poll over the streams' watermark -----------------------------------


def _poll_once(streams: Streams, req: dict[str, Any], cursor: int) -> tuple[list[RecordedEvent], int]:
    """One read of the subscription's source from ``cursor``: (events, next cursor)."""
    kind, target = req["kind"], req["target"]
    count = max(1, min(PAGE_EVENTS_MAX, req["max_events"]))
    if kind in (ALL, CATEGORY):
        if kind == CATEGORY and not target:
            raise InvalidArgumentError("a category subscription needs a category")
        end = min(streams.positions.watermark, cursor + count)
        if end <= cursor:
            return [], cursor
        events = streams.read_all(cursor, end - cursor)
        if kind == CATEGORY:
            prefix = target + "-"
            events = [e for e in events if e.stream_id.startswith(prefix)]
        kept, cut = _sized(events, req["max_bytes"])
        return kept, (kept[-1].position + 1 if cut else end)
    if kind != STREAM or not target:
        raise InvalidArgumentError(f"subscription kind must be 0..2 (a stream needs its id), got {kind}")
    watermark = streams.positions.watermark  # before the read: every position below it is staged
    try:
        events = streams.read(target, cursor, count, False)
        if not events:
            version = streams.stream_version(target)
            if version is not None and version >= cursor and streams.metadata(target).max_age_ms is not None:
                events = streams.read(target, cursor, None, False)[:count]  # a whole page aged out
    except StreamNotFoundError:
        return [], cursor  # not yet created, or deleted: appending revives it
    durable = len(events)
    while durable and events[durable - 1].position >= watermark:
        durable -= 1
    kept, _ = _sized(events[:durable], req["max_bytes"])
    return kept, (kept[-1].version + 1 if kept else cursor)


async def _poll(ctx: Context, streams: Streams, req: dict[str, Any]) -> dict[str, Any]:
    events, cursor = await long_poll(ctx, streams, req["max_wait_ms"], req["from"],
                                     functools.partial(_poll_once, streams, req))
    return {"events": [event_tuple(e) for e in events], "next_from": cursor}

