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

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..wakeup import Wakeup

__all__ = ["Wakeup", "complete_in_thread", "wait_in_thread"]

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
