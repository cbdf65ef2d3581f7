"""The async consumer: a blocking ``eventstore.Consumer`` driven from async code.

Group membership, rebalancing, fencing, heartbeats, positions and the fetch
buffer are all the blocking consumer's: this class calls it and adapts only
the waiting. ``poll`` asks the blocking consumer for records without waiting
(``poll(0)``, in a worker thread, since a poll may commit offsets and so
fsync); when there are none it waits on the event loop, holding no thread, to
be woken by a listener on each assigned partition, by ``close`` or by the
heartbeat slice, then asks again.

A consumer is meant for one task at a time (``close`` may come from any
task). Calls into the blocking consumer are serialised, and one that has
started completes: records it returned are never dropped by a cancellation.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..client.consumer import Consumer as BlockingConsumer
from ..client.consumer import ConsumerRebalanceListener, IterationBuffer, OffsetAndTimestamp
from ..errors import TopicNotFoundError
from ..log import Watch
from ..records import OffsetAndMetadata, Record, TopicPartition
from .threads import Wakeup, complete_in_thread
from .transactions import Transaction

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..store import Store as BlockingStore

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
_ITERATION_POLL_S_MAX = 3600.0


class Consumer:
    """Create with ``store.consumer(*topics, group_id=..., ...)`` on an ``eventstore.aio.Store``."""

    def __init__(self, store: BlockingStore, blocking: BlockingConsumer,
                 consumer_timeout_ms: float = float("inf")) -> None:
        self.blocking = blocking
        """The underlying ``eventstore.Consumer`` (its calls block)."""
        self._log = store.log
        self._consumer_timeout_s = consumer_timeout_ms / 1000
        self._lock = anyio.Lock()
        self._waiting: set[Wakeup] = set()
        self._iteration = IterationBuffer(blocking)

    async def _call(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        async with self._lock:
            return await complete_in_thread(fn, *args)

    @property
    def group_id(self) -> str | None:
        return self.blocking.group_id

    @property
    def closed(self) -> bool:
        return self.blocking.closed

    # --- subscription and assignment -------------------------------------------

    async def subscribe(self, topics: Iterable[str] = (), listener: ConsumerRebalanceListener | None = None,
                        *, pattern: str | None = None) -> None:
        """Join the group for ``topics`` (or every topic matching ``pattern``).

        ``listener`` is called from a worker thread, inside ``poll``.
        """
        await self._call(functools.partial(self.blocking.subscribe, topics, listener, pattern=pattern))

    def subscription(self) -> set[str] | None:
        return self.blocking.subscription()

    async def unsubscribe(self) -> None:
        await self._call(self.blocking.unsubscribe)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Take ``partitions`` by hand: no group membership, no rebalancing."""
        self.blocking.assign(partitions)

    def assignment(self) -> set[TopicPartition]:
        return self.blocking.assignment()

    # --- positions ----------------------------------------------------------------

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` will return for ``tp``."""
        return await self._call(self.blocking.position, tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.blocking.seek(tp, offset)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        await self._call(self.blocking.seek_to_beginning, *partitions)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        await self._call(self.blocking.seek_to_end, *partitions)

    def pause(self, *partitions: TopicPartition) -> None:
        self.blocking.pause(*partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.blocking.resume(*partitions)

    def paused(self) -> set[TopicPartition]:
        return self.blocking.paused()

    # --- fetching -------------------------------------------------------------------

    async def poll(self, timeout_ms: float = 0, max_records: int | None = None,
                   update_offsets: bool = True) -> dict[TopicPartition, list[Record]]:
        """Records from the assigned partitions, waiting up to ``timeout_ms`` for some.

        As ``eventstore.Consumer.poll``; the wait holds no thread and wakes as
        soon as a record is appended to an assigned partition. A poll waiting
        when the consumer is closed returns ``{}`` at once.
        """
        deadline = anyio.current_time() + max(0.0, timeout_ms) / 1000
        open_at_start = not self.closed  # closed before the call: poll raises, as sync
        wakeup = Wakeup()
        watched: dict[TopicPartition, Watch] = {}
        self._waiting.add(wakeup)
        try:
            while True:  # bounded by the deadline
                assignment = self._watch(watched, wakeup, self.blocking.assignment())
                wakeup.clear()  # records published from here on notify it
                async with self._lock:
                    if open_at_start and self.closed:
                        return {}
                    batch = await complete_in_thread(self.blocking.poll, 0, max_records, update_offsets)
                if batch:
                    return batch
                if self.blocking.assignment() != assignment:
                    continue  # the poll rebalanced: watch the new partitions, then look again
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    return {}
                with anyio.move_on_after(min(remaining, self.blocking.heartbeat_slice_s)):
                    await wakeup.wait()
        finally:
            self._waiting.discard(wakeup)
            self._watch(watched, wakeup, set())

    def _watch(self, watched: dict[TopicPartition, Watch], wakeup: Wakeup,
               wanted: set[TopicPartition]) -> set[TopicPartition]:
        """Make ``wakeup`` watch exactly the ``wanted`` partitions; returns ``wanted``."""
        for tp in watched.keys() - wanted:
            watched.pop(tp).cancel()
        for tp in wanted - watched.keys():
            with contextlib.suppress(TopicNotFoundError):  # deleted: nothing to wait for
                watched[tp] = self._log.watch([tp], wakeup.notify)
        return wanted

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Record:
        """The next record; stops after ``consumer_timeout_ms`` idle, or once the consumer is closed.

        Only the records handed out move the positions, as in the blocking iterator.
        """
        record = self._iteration.next()
        if record is not None:
            return record
        deadline = anyio.current_time() + self._consumer_timeout_s
        while True:  # bounded by consumer_timeout_ms
            remaining = deadline - anyio.current_time()
            if remaining <= 0 or self.closed:
                raise StopAsyncIteration
            batch = await self.poll(timeout_ms=min(remaining, _ITERATION_POLL_S_MAX) * 1000,
                                    update_offsets=False)
            self._iteration.fill(batch)
            record = self._iteration.next()
            if record is not None:
                return record

    # --- offsets and metadata ---------------------------------------------------------

    async def commit(self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None) -> None:
        """Commit ``offsets``, or the positions of all records returned (fenced, as sync)."""
        await self._call(self.blocking.commit, offsets)

    async def commit_async(self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None,
                           callback: Any = None) -> None:
        """``commit``, then ``callback(offsets, exception_or_None)`` (as ``eventstore.Consumer``)."""
        await self._call(self.blocking.commit_async, offsets, callback)

    def transaction(self) -> Transaction:
        """A transaction that also commits this consumer's positions, atomically with its appends."""
        return Transaction(self.blocking.transaction())

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp`` (None if it has none)."""
        return await self._call(self.blocking.committed, tp)

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        await anyio.lowlevel.checkpoint()
        return self.blocking.beginning_offsets(partitions)

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        await anyio.lowlevel.checkpoint()
        return self.blocking.end_offsets(partitions)

    async def highwater(self, tp: TopicPartition) -> int:
        await anyio.lowlevel.checkpoint()
        return self.blocking.highwater(tp)

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        return await self._call(self.blocking.offsets_for_times, timestamps)

    async def topics(self) -> set[str]:
        """The names of every topic of the store."""
        await anyio.lowlevel.checkpoint()
        return self.blocking.topics()

    async def partitions_for_topic(self, topic: str) -> set[int]:
        await anyio.lowlevel.checkpoint()
        return self.blocking.partitions_for_topic(topic)

    def metrics(self) -> dict[str, Any]:
        """What this consumer did since it was made (see ``eventstore.Consumer.metrics``)."""
        return self.blocking.metrics()

    # --- lifecycle ---------------------------------------------------------------------

    async def close(self, autocommit: bool = True) -> None:
        """Commit (if auto-commit is on), leave the group and stop; wakes a waiting poll.

        Idempotent, and shielded from cancellation.
        """
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await anyio.to_thread.run_sync(self.blocking.close, autocommit)
        for wakeup in list(self._waiting):  # bounded by the tasks polling
            wakeup.notify()

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def call_serialized(consumer: Consumer, fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """Run ``fn(*args)`` in a worker thread as one of ``consumer``'s own calls: after the one in
    progress, and completed even if the task is cancelled (for helpers such as dead letters)."""
    return await consumer._call(fn, *args)
