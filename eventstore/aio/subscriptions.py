"""Subscriptions for async code: a blocking ``Subscription`` driven from anyio (asyncio or trio).

::

    async with subscribe_to_category(store, "order", from_position=0) as subscription:
        async for event in subscription:
            ...

Reading a page may touch the disk, so it runs in a worker thread
(``complete_in_thread``) and never waits there: the blocking subscription is
asked with ``timeout_s=0``. When it has nothing, the task waits on the event
loop, holding no thread, for a ``Wakeup`` the subscription's watch calls
when the store's position watermark moves, then asks again. The listener only schedules a
wake-up on the loop, so appending threads never wait for it.

A page read returns whole even if the task is cancelled meanwhile; its events
stay in this facade's buffer for the next call, so a cancelled ``next`` loses
nothing. ``checkpoint`` is that of the last event this facade handed out.
"""

from __future__ import annotations

import collections
import math
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from ..sourcing import subscriptions as sync_subscriptions
from ..sourcing.events import RecordedEvent
from ..sourcing.subscriptions import PAGE_EVENTS
from .threads import Wakeup, complete_in_thread

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Subscription", "subscribe_to_all", "subscribe_to_category", "subscribe_to_stream"]


class Subscription:
    """Events of one source, history first, then live; ``async for`` or ``await next()``."""

    def __init__(self, blocking: sync_subscriptions.Subscription) -> None:
        self.blocking = blocking
        """The underlying ``Subscription`` (its calls block)."""
        self.checkpoint: int | None = blocking.checkpoint
        """Position (stream subscription: version) of the last event handed out; None before any."""
        self._buffer: collections.deque[RecordedEvent] = collections.deque()
        self._lock = anyio.Lock()
        self._waiting: set[Wakeup] = set()

    @property
    def source(self) -> str:
        return self.blocking.source

    @property
    def closed(self) -> bool:
        return self.blocking.closed

    @property
    def caught_up(self) -> bool:
        return self.blocking.caught_up

    async def next(self, timeout_s: float | None = None) -> RecordedEvent | None:
        """The next event, waiting up to ``timeout_s`` (None: until one comes or ``close``)."""
        batch = await self.next_batch(1, timeout_s)
        return batch[0] if batch else None

    async def next_batch(self, max_events: int = PAGE_EVENTS,
                         timeout_s: float | None = None) -> list[RecordedEvent]:
        """Up to ``max_events`` next events; ``[]`` on timeout or once closed."""
        sync_subscriptions.check_count(max_events, "max_events")
        deadline = None if timeout_s is None else anyio.current_time() + max(0.0, timeout_s)
        while True:  # bounded by the deadline, or by close
            if self._buffer and not self.closed:
                await anyio.lowlevel.checkpoint()
            else:
                remaining = None if deadline is None else max(0.0, deadline - anyio.current_time())
                await self._fill(max(max_events, PAGE_EVENTS), remaining)
            had = bool(self._buffer)
            batch = self._take(max_events)
            if batch or not had or self.closed:
                return batch  # else all it took was hidden (deleted, truncated) since: read on

    async def _fill(self, max_events: int, timeout_s: float | None) -> None:
        """Wait (up to ``timeout_s``) until the buffer has events or the subscription is closed."""
        deadline = math.inf if timeout_s is None else anyio.current_time() + max(0.0, timeout_s)
        wakeup = Wakeup()
        watch = self.blocking.watch(wakeup.notify)
        self._waiting.add(wakeup)
        try:
            while True:  # bounded by the deadline, or by close
                wakeup.clear()  # watermark moves from here on notify it
                async with self._lock:
                    if self.closed:
                        return
                    batch = await complete_in_thread(self.blocking.next_batch, max_events, 0)
                    self._buffer.extend(batch)  # before any checkpoint: cancelling loses nothing
                if batch:
                    return
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    return
                with anyio.move_on_after(min(remaining, sync_subscriptions.CLOSED_CHECK_S)):
                    await wakeup.wait()
        finally:
            watch.cancel()
            self._waiting.discard(wakeup)

    def _take(self, max_events: int) -> list[RecordedEvent]:
        if self.closed or not self._buffer:
            return []
        buffer = self._buffer
        batch = self.blocking.visible([buffer.popleft() for _ in range(min(max_events, len(buffer)))])
        if batch:
            self.checkpoint = self.blocking.checkpoint_of(batch[-1])
        return batch

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> RecordedEvent:
        """The next event; stops once the subscription is closed."""
        batch = await self.next_batch(1, None)
        if not batch:
            raise StopAsyncIteration
        return batch[0]

    async def close(self) -> None:
        """Stop and wake every waiting task. Idempotent; not cancellable."""
        self.blocking.close()
        for wakeup in list(self._waiting):  # bounded by the tasks waiting
            wakeup.notify()
        await anyio.lowlevel.cancel_shielded_checkpoint()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<aio.Subscription {self.source!r} checkpoint={self.checkpoint}>"


# --- opening (plain functions, as the other factories of the async API) -------------------


def subscribe_to_all(store: Store, from_position: int | None = 0, *,
                     page_events: int = PAGE_EVENTS) -> Subscription:
    """Every event in position order from ``from_position`` (None: only those of appends that
    begin after this call)."""
    return Subscription(store.blocking.subscribe_to_all(from_position, page_events=page_events))


def subscribe_to_category(store: Store, category: str, from_position: int | None = 0, *,
                          page_events: int = PAGE_EVENTS) -> Subscription:
    """Events of the streams ``<category>-*`` in position order, from ``from_position``."""
    return Subscription(store.blocking.subscribe_to_category(category, from_position,
                                                             page_events=page_events))


def subscribe_to_stream(store: Store, stream_id: str, from_version: int | None = 0, *,
                        page_events: int = PAGE_EVENTS) -> Subscription:
    """One stream's events in version order from ``from_version`` (None: only events to come)."""
    return Subscription(store.blocking.subscribe_to_stream(stream_id, from_version,
                                                           page_events=page_events))
