"""Dynamic consistency boundaries of a remote store: the DCB layer's calls over the extension
APIs AppendEvents, ReadEvents and PollEvents (docs/protocol.md, section 7.1).

:class:`RemoteDCB` has the calls of ``eventstore.sourcing.dcb.DCB`` the store makes
(``append``, ``read``, ``subscribe``); reads ask again after the last event while the
server cuts its answers (``cut``), until they hold what the embedded read returns.
A subscription is a client-side cursor advanced by PollEvents long polls on a connection
of its own. A failed condition comes back as ``ConditionFailedError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConditionFailedError, InvalidArgumentError
from ..sourcing.dcbtypes import (
    AppendCondition,
    Query,
    SequencedEvent,
    TaggedEvent,
    TaggedRead,
    check_after,
    check_condition,
    check_query,
    check_tagged,
)
from ..sourcing.subscriptions import PAGE_EVENTS, check_count
from .connection import Connection, ConnectionPool, raise_for
from .polling import PolledSubscription

__all__ = ["RemoteDCB", "RemoteTaggedSubscription"]

APPEND_EVENTS, READ_EVENTS, POLL_EVENTS = 20012, 20013, 20014
CONDITION_FAILED = 20005


def _items(query: Query) -> list[tuple[list[str], list[str]]]:
    return [(list(i.types), list(i.tags)) for i in query.items]


def _event(t: tuple[Any, ...]) -> SequencedEvent:
    position, type_, data, tags = t
    return SequencedEvent(position, type_, data, tuple(tags))


def _checked(response: dict[str, Any]) -> dict[str, Any]:
    if response["error_code"] == CONDITION_FAILED:
        raise ConditionFailedError(response["error_message"] or "the append condition failed")
    raise_for(response)
    return response


class RemoteDCB:
    """The DCB calls of a store served at ``connection``'s address."""

    def __init__(self, connection: ConnectionPool, max_bytes: int) -> None:
        self.connection = connection
        self.max_bytes = max_bytes

    def append(self, events: Sequence[TaggedEvent] | TaggedEvent,
               condition: AppendCondition | None = None) -> int:
        tagged = check_tagged(events)
        cond = check_condition(condition)
        fields = {"events": [(e.type, e.data, list(e.tags)) for e in tagged],
                  "conditional": cond is not None,
                  "fail_if_events_match": [] if cond is None else _items(cond.fail_if_events_match),
                  "after": -1 if cond is None or cond.after is None else cond.after}
        position: int = _checked(self.connection.call(APPEND_EVENTS, fields))["position"]
        return position

    def read(self, query: Query | None = None, after: int | None = None,
             limit: int | None = None) -> TaggedRead:
        """As the embedded read: pages until the server's answer is not cut."""
        query = check_query(query)
        cursor = check_after(after)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be an int >= 0 or None, got {limit!r}")
        events: list[SequencedEvent] = []
        items = _items(query)
        while True:  # bounded: each cut page holds at least one event
            remaining = -1 if limit is None else limit - len(events)
            r = _checked(self.connection.call(READ_EVENTS, {
                "query": items, "after": cursor, "limit": remaining, "max_bytes": self.max_bytes}))
            page = [_event(t) for t in r["events"]]
            events.extend(page)
            if not r["cut"] or not page:
                head = None if r["head"] < 0 else r["head"]
                break
            cursor = page[-1].position
        if limit is not None:
            head = events[-1].position if events else None
        return TaggedRead(events, head)

    def subscribe(self, query: Query | None = None, after: int | None = None,
                  page_events: int = PAGE_EVENTS) -> RemoteTaggedSubscription:
        query = check_query(query)
        start = check_after(after)
        check_count(page_events, "page_events")
        return RemoteTaggedSubscription(self.connection.open_one(), query, start, page_events, self.max_bytes)


class RemoteTaggedSubscription(PolledSubscription[SequencedEvent]):
    """``TaggedSubscription``'s API for a remote store: its cursor (the last DCB position
    delivered) kept here and advanced by PollEvents long polls."""

    POLL_API = POLL_EVENTS
    source = "$dcb"

    def __init__(self, connection: Connection, query: Query, after: int, page_events: int,
                 max_bytes: int) -> None:
        super().__init__(connection, after, page_events, max_bytes)
        self._items = _items(query)

    def checkpoint_of(self, event: SequencedEvent) -> int:
        return event.position

    def _poll_fields(self) -> dict[str, Any]:
        return {"query": self._items, "after": self._cursor}

    def _taken(self, response: dict[str, Any]) -> tuple[list[SequencedEvent], int]:
        _checked(response)
        return [_event(t) for t in response["events"]], response["next_after"]
