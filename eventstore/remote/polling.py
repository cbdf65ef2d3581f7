"""What a remote subscription is, whatever it follows: a client-side cursor advanced by long
polls on a connection of its own, with the events of each poll buffered until ``next`` takes them.

The stream subscription (PollSubscription, ``remote.streams``) and the tagged-event
subscription (PollEvents, ``remote.dcb``) share this cursor, buffer, wait and close;
each says only what it polls (:meth:`PolledSubscription._poll_fields`), how it reads
an answer (:meth:`PolledSubscription._taken`) and how a checkpoint is taken
(:meth:`PolledSubscription.checkpoint_of`).
"""

from __future__ import annotations

import abc
import collections
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

from ..errors import InvalidArgumentError
from ..sourcing.subscriptions import PAGE_EVENTS, check_count
from .connection import Connection

__all__ = ["POLL_WAIT_S", "PolledSubscription"]

POLL_WAIT_S = 1.0  # the longest one long poll waits: a closed subscription notices this often

E = TypeVar("E")


class PolledSubscription(abc.ABC, Generic[E]):
    """A subscription's API (``next``, ``next_batch``, iteration, ``close``) over long polls of
    ``POLL_API``; one lock, so that concurrent ``next`` calls never poll from the same cursor."""

    POLL_API: ClassVar[int]
    """The extension API key each long poll calls."""

    def __init__(self, connection: Connection, cursor: int, page_events: int, max_bytes: int) -> None:
        self._connection = connection
        self._cursor = cursor
        self._page_events = page_events
        self._max_bytes = max_bytes
        self._buffer: collections.deque[E] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False
        self.checkpoint: int | None = None
        """``checkpoint_of`` the last event delivered; None before any."""
        self.caught_up = False
        """True once a poll found nothing more (the subscription is live)."""

    @abc.abstractmethod
    def _poll_fields(self) -> dict[str, Any]:
        """The request's leading fields: what is followed, from ``self._cursor``."""

    @abc.abstractmethod
    def _taken(self, response: dict[str, Any]) -> tuple[list[E], int]:
        """A poll's answer, its error code raised as the embedded store's exception:
        its events and the cursor the next poll starts from."""

    @abc.abstractmethod
    def checkpoint_of(self, event: E) -> int:
        """The checkpoint a delivered ``event`` leaves, from which a new subscription resumes."""

    @property
    def closed(self) -> bool:
        return self._closed

    def visible(self, events: list[E]) -> list[E]:
        """Every event is shown as polled: the server filters hidden ones at each poll."""
        return events

    def next(self, timeout_s: float | None = None) -> E | None:
        batch = self.next_batch(1, timeout_s)
        return batch[0] if batch else None

    def next_batch(self, max_events: int = PAGE_EVENTS, timeout_s: float | None = None) -> list[E]:
        """Up to ``max_events`` next events, waiting up to ``timeout_s`` for the first."""
        check_count(max_events, "max_events")
        if timeout_s is not None and (not isinstance(timeout_s, (int, float)) or timeout_s != timeout_s):
            raise InvalidArgumentError(f"timeout_s must be a number or None, got {timeout_s!r}")
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            while not self._buffer:  # bounded by the deadline, or by close
                if self._closed:
                    return []
                remaining = POLL_WAIT_S if deadline is None else deadline - time.monotonic()
                self._poll(max(0.0, min(remaining, POLL_WAIT_S)))
                if not self._buffer and deadline is not None and time.monotonic() >= deadline:
                    return []
            if self._closed:
                return []
            count = min(max_events, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            self.checkpoint = self.checkpoint_of(batch[-1])
            return batch

    def _poll(self, wait_s: float) -> None:
        """One long poll of at most ``wait_s``: its events buffered, the cursor moved past them."""
        fields = {**self._poll_fields(), "max_events": self._page_events, "max_bytes": self._max_bytes,
                  "max_wait_ms": int(wait_s * 1000)}
        try:
            response = self._connection.call(self.POLL_API, fields, wait_s)
        except Exception:
            if self._closed:
                return  # close() shut the socket under a waiting poll
            raise
        events, self._cursor = self._taken(response)
        if not events:
            self.caught_up = True
        self._buffer.extend(events)

    def close(self) -> None:
        """Stop: wakes a waiting ``next``; later calls return nothing. Idempotent."""
        self._closed = True
        self._connection.close()

    def __iter__(self) -> Iterator[E]:
        return self

    def __next__(self) -> E:
        event = self.next(None)
        if event is None:
            raise StopIteration
        return event

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
