"""The library's DCB recorder (``eventsourcing.dcb``) on the store's tagged events
(docs/format.md section 18): ``DCBEvent(type, data, tags)`` is a ``TaggedEvent``, a
sequenced event's position is the DCB position (global position + 1), and a read's
``head`` is the store's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from eventsourcing.dcb.api import (
    DCBAppendCondition,
    DCBEvent,
    DCBQuery,
    DCBReadResponse,
    DCBRecorder,
    DCBSequencedEvent,
)
from eventsourcing.dcb.persistence import DCBListenNotifySubscription
from eventsourcing.persistence import IntegrityError, ProgrammingError

from ..errors import EventStoreError
from ..sourcing.dcbtypes import AppendCondition, ConditionFailedError, Query, QueryItem, TaggedEvent
from ..store import Store
from .shared import SharedStore

__all__ = ["DCBConditionError", "EventStoreDCBRecorder", "EventStoreDCBSubscription"]


class DCBConditionError(IntegrityError, EventStoreError):
    """The append condition failed (the library expects its ``IntegrityError``)."""


def _query(query: DCBQuery | None) -> Query | None:
    if query is None:
        return None
    return Query([QueryItem(list(i.types), list(i.tags)) for i in query.items])


class _Response(DCBReadResponse):
    def __init__(self, events: Iterator[DCBSequencedEvent], head: int | None) -> None:
        self._events, self._head = events, head

    @property
    def head(self) -> int | None:
        return self._head

    def __next__(self) -> DCBSequencedEvent:
        return next(self._events)


class EventStoreDCBRecorder(DCBRecorder):
    """``DCBRecorder`` on the shared store's DCB layer: one recorder per factory."""

    def __init__(self, shared: SharedStore) -> None:
        self._shared = shared

    @property
    def store(self) -> Store:
        return self._shared.store

    def read(self, query: DCBQuery | None = None, *, after: int | None = None,
             limit: int | None = None) -> DCBReadResponse:
        got = self._shared.store.read_events(_query(query), after=after, limit=limit)
        events = (DCBSequencedEvent(DCBEvent(e.type, e.data, list(e.tags)), e.position)
                  for e in got.events)
        return _Response(events, got.head)

    def append(self, events: Sequence[DCBEvent], condition: DCBAppendCondition | None = None) -> int:
        if len(events) == 0:
            raise ProgrammingError("Should be at least one event. Avoid this elsewhere")
        tagged = [TaggedEvent(e.type, e.data, e.tags) for e in events]
        cond = None if condition is None else AppendCondition(
            _query(condition.fail_if_events_match) or Query(), condition.after)
        try:
            return self._shared.store.append_events(tagged, cond)
        except ConditionFailedError as e:
            raise DCBConditionError(str(e)) from e

    def subscribe(self, query: DCBQuery | None = None, *,
                  after: int | None = None) -> EventStoreDCBSubscription:
        return EventStoreDCBSubscription(self, query, after)


class EventStoreDCBSubscription(DCBListenNotifySubscription[EventStoreDCBRecorder]):
    """The library's pull thread, woken by the store's watermark watch."""

    def __init__(self, recorder: EventStoreDCBRecorder, query: DCBQuery | None = None,
                 after: int | None = None) -> None:
        super().__init__(recorder=recorder, query=query, after=after)
        self._watch = recorder.store.streams.watch(self._has_been_notified.set)
        self._has_been_notified.set()  # an append between the first pull and the watch

    def stop(self) -> None:
        super().stop()
        self._watch.cancel()
