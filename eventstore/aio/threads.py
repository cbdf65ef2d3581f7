"""Crossing between the event loop and other threads: worker-thread calls and wake-ups.

Two kinds of blocking call leave the event loop for a worker thread:

* ``complete_in_thread`` for the others: appends, commits, reads. Once
  started, the call runs to its end and its result is returned even if the
  task is cancelled meanwhile; the cancellation takes effect at the task's
  next checkpoint. So ``Cancelled`` means the call did not happen, as trio's
  rule for cancellation asks.
* ``wait_in_thread`` for calls that only wait (``Producer.flush``): a cancelled
  task abandons the thread at once and the thread finishes on its own.

Waiting for records uses no thread at all: a ``Wakeup`` registered as a
partition listener is notified by whichever thread makes records visible.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.lowlevel
import anyio.to_thread

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


async def complete_in_thread(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """Run ``fn(*args)`` in a worker thread, to completion once it has started."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    with anyio.CancelScope(shield=True):
        result = await anyio.to_thread.run_sync(fn, *args)
    return result


async def wait_in_thread(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """Run ``fn(*args)``, which only waits, in a worker thread; cancelling abandons it."""
    return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


class Wakeup:
    """Wakes the task that created it; ``notify`` may be called from any thread.

    ``notify`` never blocks: partitions call their listeners while holding
    their write lock (or, after an fsync, the group-commit mutex), so a
    listener that waited for a busy event loop would stall every appender of
    the partition, and deadlock if the loop thread itself were appending
    there. It therefore schedules ``Event.set`` on the loop without waiting
    for it (``anyio.from_thread.run_sync`` would wait), or sets the event
    directly when it is called on the loop thread itself.
    """

    __slots__ = ("_event", "_loop_thread", "_scheduled", "_token")

    def __init__(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        self._event = anyio.Event()
        self._scheduled = False  # a set is queued on the loop; more notifies add nothing

    def notify(self) -> None:
        """Wake the waiting task (now if on its loop thread, else as soon as its loop runs)."""
        if threading.get_ident() == self._loop_thread:
            self._event.set()
            return
        if self._scheduled:
            return
        self._scheduled = True
        token = self._token
        with contextlib.suppress(anyio.RunFinishedError):  # the loop has ended: nobody waits
            token.backend_class.run_sync_soon(self._set, (), token.native_token)

    def _set(self) -> None:
        self._scheduled = False
        self._event.set()

    def clear(self) -> None:
        """Forget earlier notifications (call on the loop thread, before checking for work)."""
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(self) -> None:
        """Return once ``notify`` was called after the last ``clear``."""
        await self._event.wait()
