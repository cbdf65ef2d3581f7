"""Waking a task on its event loop from any thread, without blocking that thread.

The async facades (``eventstore.aio``) and the server's long polls both wait on the
loop for records that another thread makes visible; this is their one waker.
"""

from __future__ import annotations

import contextlib
import threading

import anyio
import anyio.lowlevel

__all__ = ["Wakeup"]


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
        with contextlib.suppress(anyio.RunFinishedError, RuntimeError):  # the loop has ended: nobody waits
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
