"""Global positions: the store-wide counter every stream append takes a range from, and the
*watermark* below which every position is durable (or was abandoned, leaving a gap that never
fills), so that a reader of ``$all`` never skips a position that turns up later."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from ..log import Watch

__all__ = ["Positions"]


class Positions:
    """The position counter and the watermark. Thread-safe."""

    def __init__(self, last: int) -> None:
        """``last``: the highest position handed out so far (-1: none)."""
        self._lock = threading.Lock()
        self._next = last + 1
        self._pending: dict[int, int] = {}  # start -> end of ranges not yet durable
        self._done: set[int] = set()
        self.watermark = last + 1
        """The first position readers may not see yet."""
        self._listeners: dict[object, Callable[[], object]] = {}

    def reserve(self, count: int) -> int:
        """Hand out ``count`` consecutive positions; returns the first. ``complete`` it later."""
        with self._lock:
            start = self._next
            self._next += count
            self._pending[start] = start + count
            return start

    @property
    def next(self) -> int:
        """The position the next append will be given."""
        with self._lock:
            return self._next

    def complete(self, start: int) -> None:
        """Mark a reserved range durable (or abandoned); advance the watermark."""
        with self._lock:
            self._done.add(start)
            moved = False
            while self.watermark in self._done:  # bounded by the ranges in flight
                self._done.discard(self.watermark)
                self.watermark = self._pending.pop(self.watermark)
                moved = True
        if moved:
            self.wake()

    def advance_to(self, last: int) -> None:
        """Positions up to ``last`` were handed out elsewhere (a leader's appends a follower
        indexed): the counter and the watermark move past them; never back."""
        with self._lock:
            if last + 1 <= self._next:
                return
            self._next = last + 1
            if not self._pending:
                self.watermark = self._next
        self.wake()

    def wake(self) -> None:
        """Call every watcher (the watermark moved, or the store is closing)."""
        for listener in list(self._listeners.values()):  # bounded by the watchers
            listener()

    def watch(self, callback: Callable[[], object]) -> Watch:
        """Call ``callback()`` whenever the watermark moves (and once the store closes), until
        the returned ``Watch`` is cancelled. It runs in the appending thread: it must not block."""
        token = object()
        self._listeners[token] = callback
        return Watch([functools.partial(self._listeners.pop, token, None)])

    def watcher_count(self) -> int:
        """How many watches are registered (a leak shows here)."""
        return len(self._listeners)
