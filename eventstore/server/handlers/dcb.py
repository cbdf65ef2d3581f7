"""The DCB extension APIs (keys 20012 to 20014, docs/protocol.md section 7.1): tagged events,
conditional appends and reads by query over the wire, on the store's one DCB layer.

AppendEvents and ReadEvents run in a worker thread; PollEvents is a long poll as
PollSubscription is: it reads once and, if nothing matched, waits for the streams'
watermark to move (a wake-up scheduled on the loop, no thread held) and reads again,
until ``max_wait_ms``. Every ``EventStoreError`` becomes the response's error code
(CONDITION_FAILED for a failed condition); bad bytes are answered INVALID_REQUEST.
"""

from __future__ import annotations

import functools
from typing import Any

from ...sourcing.dcb import DCB, dcb_of
from ...sourcing.dcbtypes import AppendCondition, Query, QueryItem, SequencedEvent, TaggedEvent
from ...wire import RequestHeader
from ...wire.apis import DCB_KEYS
from ..context import Context
from ..dispatch import handles_frames
from ..extension import answer_extension, open_streams
from ..longpoll import long_poll

__all__ = ["dcb_extension"]

APPEND_EVENTS, READ_EVENTS, POLL_EVENTS = DCB_KEYS
PAGE_EVENTS_MAX = 10_000  # the most events one answer holds, whatever max_bytes says
EVENT_OVERHEAD = 32  # bytes an event costs in a response besides its strings and bytes


@handles_frames(*DCB_KEYS)
async def dcb_extension(ctx: Context, header: RequestHeader, frame_bytes: bytes) -> bytes:
    """Answer one DCB request; every failure becomes the response's error code."""
    return await answer_extension(ctx, header, frame_bytes, functools.partial(_answer, ctx))


async def _answer(ctx: Context, key: int, request: dict[str, Any]) -> dict[str, Any]:
    if key == POLL_EVENTS:
        return await _poll(ctx, request)
    if key == APPEND_EVENTS:
        return await ctx.blocking(_append, ctx, request)
    return await ctx.blocking(_read, ctx, request)


def _dcb(ctx: Context) -> DCB:
    return dcb_of(open_streams(ctx))


def query_of(items: list[tuple[Any, ...]]) -> Query:
    """A query from the wire's items (types, tags); the values are checked as the API does."""
    return Query([QueryItem(list(types), list(tags)) for types, tags in items])


def _optional(value: int) -> int | None:
    return None if value == -1 else value


def _event_tuple(e: SequencedEvent) -> tuple[Any, ...]:
    return (e.position, e.type, e.data, list(e.tags))


def _sized(events: list[SequencedEvent], max_bytes: int) -> tuple[list[SequencedEvent], bool]:
    """The first events that fit in about ``max_bytes`` (at least one), and whether any was cut."""
    total = 0
    for i, e in enumerate(events):  # bounded by the events
        total += len(e.data) + len(e.type) + sum(len(t) for t in e.tags) + EVENT_OVERHEAD
        if total > max_bytes and i > 0:
            return events[:i], True
    return events, False


def _append(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    events = [TaggedEvent(t, d, tags) for t, d, tags in req["events"]]
    condition = AppendCondition(query_of(req["fail_if_events_match"]), _optional(req["after"])) \
        if req["conditional"] else None
    return {"position": _dcb(ctx).append(events, condition)}


def _read(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    """One page: at most ``PAGE_EVENTS_MAX`` events and about ``max_bytes``; ``cut`` tells the
    client to ask again after the last event (``head`` is then that event's position).

    Without a limit the head is the store's, taken before the read: every matching
    event up to the read's moment is in the answer, so the larger of the two is a head
    no matching event hides behind, as the embedded read's.
    """
    dcb = _dcb(ctx)
    limit, after, query = _optional(req["limit"]), _optional(req["after"]), query_of(req["query"])
    page = PAGE_EVENTS_MAX if limit is None else max(0, min(limit, PAGE_EVENTS_MAX))
    before = dcb.head() if limit is None else None
    got = dcb.read(query, after, page)
    events, cut = _sized(got.events, req["max_bytes"])
    cut = cut or (bool(events) and len(events) == page and (limit is None or limit > page))
    if cut:
        head: int | None = events[-1].position
    elif limit is None:
        head = max(before or 0, events[-1].position if events else 0) or None
    else:
        head = got.head
    return {"events": [_event_tuple(e) for e in events], "head": -1 if head is None else head, "cut": cut}


async def _poll(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    streams = await ctx.blocking(open_streams, ctx)
    query = query_of(req["query"])
    count = max(1, min(PAGE_EVENTS_MAX, req["max_events"]))

    def read(after: int) -> tuple[list[SequencedEvent], int]:
        """The matching events after ``after`` (the cursor stays where nothing came)."""
        events, _ = _sized(_dcb(ctx).read(query, after, count).events, req["max_bytes"])
        return events, (events[-1].position if events else after)

    events, nxt = await long_poll(ctx, streams, req["max_wait_ms"], req["after"], read)
    return {"events": [_event_tuple(e) for e in events], "next_after": nxt}
