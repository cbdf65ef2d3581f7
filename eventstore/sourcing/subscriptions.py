"""Catch-up subscriptions: a stream, a category or ``$all``, from a checkpoint, then live.

A subscription is one cursor over one ordered source, and a loop that reads
the source from the cursor in pages:

1. Read the next page below the *watermark* (``Streams.positions``): for
   ``$all`` and categories ``read_all(cursor, limit)`` with the limit cut at
   the watermark read just before, for a stream ``read_stream(cursor, limit)``
   with events at or above the watermark dropped from the end. Positions below
   the watermark are all durable (or were abandoned, leaving a gap that never
   fills), so no reader ever skips a position that turns up later. Their
   stream-index updates may still be staged in memory: the read first waits
   until those are in LMDB (``Streams.flush``).
2. Advance the cursor past what the page covered, and deliver its events
   (those of the category only, for a category).
3. When a page is empty the subscription has caught up: it waits on an
   event set by the watermark's listener, then reads again.

Catching up and following live are the same loop, so there is no switch at
which an event could be missed or delivered twice: the cursor only moves over
ranges that were read. Waking cannot be missed either: the event is cleared
before each read, so an append that completes after the read sets it again.
The listener only sets a ``threading.Event``; it never blocks the appending
thread. A waiting subscription also wakes every ``_CLOSED_CHECK_S`` to notice a
closed store (the store does not notify on close).

Order and checkpoints:

=================  ==========================  ========================================
source             order                       ``checkpoint`` (last event delivered)
=================  ==========================  ========================================
``$all``           position                    its position; resume ``from_position=checkpoint + 1``
category ``c``     position, streams ``c-*``   its position; resume as for ``$all``
stream ``s``       version                     its version; resume ``from_version=checkpoint + 1``
=================  ==========================  ========================================

``$all`` includes the events of metadata streams (``$$<stream>``, type
``$metadata``); a category does not. A checkpoint is the position of an event
that was delivered, never of a range merely scanned: positions abandoned at
the end of the log may be handed out again after a restart.

A subscription is meant for one consumer thread at a time; ``close`` may be
called from any thread and wakes a waiting ``next``.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from ..errors import InvalidArgumentError, StreamNotFoundError
from ..validation import check_int64
from .events import RecordedEvent
from .rules import check_stream_id

if TYPE_CHECKING:
    from ..log import Watch
    from .streams import Streams, StreamsOwner

__all__ = [
    "ALL",
    "PAGE_EVENTS",
    "Subscription",
    "subscribe_to_all",
    "subscribe_to_category",
    "subscribe_to_stream",
]

ALL = "$all"
CATEGORY_PREFIX = "$ce-"  # the source name of a category subscription: "$ce-<category>"
PAGE_EVENTS = 500
PAGE_EVENTS_MAX = 100_000
CLOSED_CHECK_S = 1.0  # a waiting subscription looks for a closed store this often


class _Reader(Protocol):
    source: str

    def read(self, streams: Streams, cursor: int, page_events: int) -> tuple[list[RecordedEvent], int]:
        """The events of one page from ``cursor``, and the cursor after the page."""
        ...

    def checkpoint_of(self, event: RecordedEvent) -> int: ...

    def visible(self, streams: Streams, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Those of ``events``, read earlier, that readers may still see."""
        ...


class _AllReader:
    """``$all`` (``category`` None) or one category, in position order; the cursor is a position."""

    def __init__(self, category: str | None) -> None:
        self.prefix = None if category is None else category + "-"
        self.source = ALL if category is None else CATEGORY_PREFIX + category

    def read(self, streams: Streams, cursor: int, page_events: int) -> tuple[list[RecordedEvent], int]:
        end = min(streams.positions.watermark, cursor + page_events)
        if end <= cursor:
            return [], cursor
        # read_all flushes the index first, and stops at min(its own watermark, cursor +
        # limit) = end: the watermark only grows
        events = streams.read_all(cursor, end - cursor)
        prefix = self.prefix
        if prefix is not None:
            events = [e for e in events if e.stream_id.startswith(prefix)]
        return events, end

    def checkpoint_of(self, event: RecordedEvent) -> int:
        return event.position

    def visible(self, streams: Streams, events: list[RecordedEvent]) -> list[RecordedEvent]:
        return events  # $all and categories keep every event of the log


class _StreamReader:
    """One stream in version order; the cursor is the next version."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = self.source = stream_id

    def read(self, streams: Streams, cursor: int, page_events: int) -> tuple[list[RecordedEvent], int]:
        watermark = streams.positions.watermark  # before the read: every position below it is staged
        events = self._page(streams, cursor, page_events)  # the read flushes what is staged first
        if not events and self._expired_page(streams, cursor):
            events = self._page(streams, cursor, None)  # a whole page had aged out: look past it
        cut = len(events)
        while cut and events[cut - 1].position >= watermark:  # positions grow with versions
            cut -= 1
        del events[cut:]
        return events, (events[-1].version + 1 if events else cursor)

    def _page(self, streams: Streams, cursor: int, limit: int | None) -> list[RecordedEvent]:
        try:
            return streams.read(self.stream_id, cursor, limit, False)
        except StreamNotFoundError:
            return []  # not yet created, or deleted: appending revives it

    def _expired_page(self, streams: Streams, cursor: int) -> bool:
        version = streams.stream_version(self.stream_id)
        if version is None or version < cursor:
            return False
        return streams.metadata(self.stream_id).max_age_ms is not None

    def checkpoint_of(self, event: RecordedEvent) -> int:
        return event.version

    def visible(self, streams: Streams, events: list[RecordedEvent]) -> list[RecordedEvent]:
        return streams.visible(self.stream_id, events)  # deleted or truncated since


class Subscription:
    """Events of one source, history first, then live. Use ``subscribe_to_*`` to get one.

    ``next(timeout_s)`` returns the next event (None on timeout or once
    closed), ``next_batch`` up to ``max_events`` of them, iteration yields
    events until ``close()``. ``checkpoint`` is the position (stream: version)
    of the last event delivered, None before the first.
    """

    def __init__(self, streams: Streams, reader: _Reader, cursor: int, page_events: int) -> None:
        self._streams = streams
        self._reader = reader
        self._cursor = cursor
        self._page_events = page_events
        self._buffer: collections.deque[RecordedEvent] = collections.deque()
        self._lock = threading.Lock()  # one reader at a time
        self._closed = False
        self.checkpoint: int | None = None
        """Position (stream subscription: version) of the last event delivered; None before any."""
        self.caught_up = False
        """True once a read found nothing more below the watermark (the subscription is live)."""
        self._ready = threading.Event()
        watch = streams.watch(self._ready.set)
        # a subscription dropped without close() stops being notified when it is collected
        self._unlisten = weakref.finalize(self, watch.cancel)

    @property
    def source(self) -> str:
        """``"$all"``, ``"$ce-<category>"`` or the stream id."""
        return self._reader.source

    @property
    def closed(self) -> bool:
        return self._closed

    def next(self, timeout_s: float | None = None) -> RecordedEvent | None:
        """The next event, waiting up to ``timeout_s`` (None: until one comes or ``close``)."""
        batch = self.next_batch(1, timeout_s)
        return batch[0] if batch else None

    def next_batch(self, max_events: int = PAGE_EVENTS,
                   timeout_s: float | None = None) -> list[RecordedEvent]:
        """Up to ``max_events`` next events, waiting up to ``timeout_s`` for the first.

        Returns ``[]`` on timeout or once the subscription is closed; raises
        ``StoreClosedError`` if the store is closed.
        """
        check_count(max_events, "max_events")
        deadline = _deadline(timeout_s)
        with self._lock:
            while True:  # bounded by the deadline, or by close
                while not self._buffer:  # bounded by the deadline, or by close
                    if self._closed:
                        return []
                    self._streams.check_open()
                    self._ready.clear()  # watermark moves from here on set it again
                    if self._fill():
                        continue
                    remaining = CLOSED_CHECK_S if deadline is None else deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    self._ready.wait(min(remaining, CLOSED_CHECK_S))
                if self._closed:
                    return []
                batch = self._take(max_events)
                if batch:
                    return batch  # else everything taken was hidden since it was read: read on

    def _fill(self) -> bool:
        """Read the next page into the buffer; True if the cursor moved."""
        events, cursor = self._reader.read(self._streams, self._cursor, self._page_events)
        moved = cursor != self._cursor
        self._cursor = cursor
        self._buffer.extend(events)
        if not moved:
            self.caught_up = True
        return moved

    def _take(self, max_events: int) -> list[RecordedEvent]:
        buffer = self._buffer
        count = min(max_events, len(buffer))
        batch = self.visible([buffer.popleft() for _ in range(count)])
        if batch:
            self.checkpoint = self._reader.checkpoint_of(batch[-1])
        return batch

    def visible(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Those of ``events``, read ahead, that a delete or truncation since has not hidden."""
        return self._reader.visible(self._streams, events)

    def checkpoint_of(self, event: RecordedEvent) -> int:
        """What ``checkpoint`` becomes once ``event`` is delivered (its position; a stream
        subscription: its version)."""
        return self._reader.checkpoint_of(event)

    def watch(self, callback: Callable[[], object]) -> Watch:
        """Call ``callback()`` whenever there may be more to read (the watermark moved, or the
        store is closing), until the returned ``Watch`` is cancelled; for waiters that hold no
        thread. It runs in the appending thread: it must not block."""
        return self._streams.watch(callback)

    def close(self) -> None:
        """Stop: wakes a waiting ``next``; later calls return nothing. Idempotent."""
        self._closed = True
        self._unlisten()
        self._ready.set()

    def __iter__(self) -> Iterator[RecordedEvent]:
        return self

    def __next__(self) -> RecordedEvent:
        event = self.next(None)
        if event is None:
            raise StopIteration
        return event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("live" if self.caught_up else "catching up")
        return f"<Subscription {self.source!r} ({state}) checkpoint={self.checkpoint}>"


# --- opening ---------------------------------------------------------------------------------


def subscribe_to_all(store: StreamsOwner, from_position: int | None = 0, *,
                     page_events: int = PAGE_EVENTS) -> Subscription:
    """Every event of ``store``'s streams in position order from ``from_position``.

    None: only the events of appends that begin after this call.
    """
    return _subscribe_positions(store.streams, _AllReader(None), from_position, page_events)


def subscribe_to_category(store: StreamsOwner, category: str, from_position: int | None = 0, *,
                          page_events: int = PAGE_EVENTS) -> Subscription:
    """Events of the streams ``<category>-*`` in position order, from ``from_position``."""
    if not isinstance(category, str) or not category or "-" in category or "\x00" in category:
        raise InvalidArgumentError(
            f"category must be a non-empty str without '-' or NUL characters, got {category!r}"
        )
    return _subscribe_positions(store.streams, _AllReader(category), from_position, page_events)


def subscribe_to_stream(store: StreamsOwner, stream_id: str, from_version: int | None = 0, *,
                        page_events: int = PAGE_EVENTS) -> Subscription:
    """One stream's events in version order from ``from_version`` (None: only events to come).

    The stream need not exist yet; while it is deleted nothing is delivered.
    """
    check_stream_id(stream_id)
    _check_start(from_version, "from_version")
    check_count(page_events, "page_events")
    streams = store.streams
    streams.check_open()
    if from_version is None:
        version = streams.stream_version(stream_id)
        from_version = 0 if version is None else version + 1
    return Subscription(streams, _StreamReader(stream_id), from_version, page_events)


def _subscribe_positions(streams: Streams, reader: _AllReader, from_position: int | None,
                         page_events: int) -> Subscription:
    _check_start(from_position, "from_position")
    check_count(page_events, "page_events")
    streams.check_open()
    if from_position is None:  # from the next append to begin: none that already returned
        from_position = streams.positions.next
    return Subscription(streams, reader, from_position, page_events)


def _check_start(value: object, what: str) -> None:
    check_int64(value, what, optional=True)


def check_count(value: object, what: str) -> None:
    """A count of events (a page, a batch): an int in 1..``PAGE_EVENTS_MAX``."""
    if type(value) is not int or not 1 <= value <= PAGE_EVENTS_MAX:
        raise InvalidArgumentError(f"{what} must be an int in 1..{PAGE_EVENTS_MAX}, got {value!r}")


def _deadline(timeout_s: float | None) -> float | None:
    if timeout_s is None:
        return None
    if not isinstance(timeout_s, (int, float)) or timeout_s != timeout_s:
        raise InvalidArgumentError(f"timeout_s must be a number or None, got {timeout_s!r}")
    return time.monotonic() + max(0.0, timeout_s)
