"""The library's ``Subscription`` (catch-up, then live) over ``store.subscribe_to_all``."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventsourcing.persistence import Notification, Subscription

from .mapping import notifications

if TYPE_CHECKING:
    from .recorders import EventStoreApplicationRecorder

__all__ = ["EventStoreSubscription"]

_PAGE_EVENTS = 500


class EventStoreSubscription(Subscription["EventStoreApplicationRecorder"]):
    """Notifications with ids above ``gt`` (of ``topics``, if given): those recorded, then new ones.

    ``stop()`` (from any thread) ends the iteration, also one waiting for the next event.
    """

    def __init__(self, recorder: EventStoreApplicationRecorder, gt: int | None = None,
                 topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        # notification id n is position n - 1: ids above gt start at position gt
        self._events = recorder.store.subscribe_to_all(from_position=gt or 0, page_events=_PAGE_EVENTS)
        self._buffer: deque[Notification] = deque()

    def stop(self) -> None:
        super().stop()
        self._events.close()

    def __next__(self) -> Notification:
        recorder = self._recorder
        while not self._buffer:  # bounded by stop(): a closed subscription returns at once
            if self._has_been_stopped:
                raise StopIteration
            batch = self._events.next_batch(_PAGE_EVENTS, timeout_s=None)
            found, _ = notifications(batch, recorder.topic, self._topics, recorder.originator_ids,
                                     None, len(batch) or 1)
            self._buffer.extend(found)
        if self._has_been_stopped:
            raise StopIteration
        notification = self._buffer.popleft()
        self._last_notification_id = notification.id
        return notification
