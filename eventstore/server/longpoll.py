"""The long poll of the extension APIs (PollSubscription and PollEvents, docs/protocol.md
sections 7 and 7.1): read once and, if nothing came, wait for the streams' watermark to move
(``Streams.watch``, a wake-up scheduled on the loop, no thread held) and read again, until
``max_wait_ms`` or the server stopping.

The two polls differ only in what one read is; that read runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.lowlevel

from ..sourcing.streams import Streams
from .context import Context

__all__ = ["long_poll"]

STOP_CHECK_S = 0.5  # a long poll looks this often whether the server is stopping

E = TypeVar("E")


async def long_poll(ctx: Context, streams: Streams, max_wait_ms: int, cursor: int,
                    read: Callable[[int], tuple[list[E], int]]) -> tuple[list[E], int]:
    """``read(cursor)`` (events, next cursor) again each time the watermark moves, until it
    finds events or ``max_wait_ms`` has passed: the last read's events and cursor."""
    deadline = time.monotonic() + max(0, max_wait_ms) / 1000
    waiter = _WatermarkWaiter(streams)
    try:
        while True:  # bounded by the deadline (each wait ends by it)
            waiter.clear()  # watermark moves from here on wake the wait below
            events, cursor = await ctx.blocking(read, cursor)
            if events or not await _woken(ctx, waiter, deadline):
                return events, cursor
    finally:
        waiter.close()


async def _woken(ctx: Context, waiter: _WatermarkWaiter, deadline: float) -> bool:
    """Wait for the watermark to move (True) or the deadline, or the server to stop (False);
    in slices, so that a server stopping answers a long poll at once."""
    while True:  # bounded by the deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.broker.stopping:
            return False
        if await waiter.wait(min(remaining, STOP_CHECK_S)):
            return True


class _WatermarkWaiter:
    """Woken on the loop when the streams' watermark moves; the appending thread only schedules."""

    def __init__(self, streams: Streams) -> None:
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        self._event = anyio.Event()
        self._watch = streams.watch(self._notify)

    def _notify(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._event.set()
            return
        token = self._token
        with contextlib.suppress(anyio.RunFinishedError, RuntimeError):  # the loop has ended
            token.backend_class.run_sync_soon(self._set, (), token.native_token)

    def _set(self) -> None:
        self._event.set()  # the current event: clear() may have replaced the one of the notify

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(self, timeout_s: float) -> bool:
        with anyio.move_on_after(timeout_s if math.isfinite(timeout_s) else None):
            await self._event.wait()
            return True
        return False

    def close(self) -> None:
        self._watch.cancel()
