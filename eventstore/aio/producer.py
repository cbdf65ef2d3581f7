"""The async producer: ``send`` queues at once; awaiting its future waits for durability.

The blocking producer's sender thread does the appending and batching;
``await future`` holds no thread: the future's callback wakes the task.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..client.producer import FutureRecordMetadata as BlockingFuture
from ..client.producer import Producer as BlockingProducer
from ..records import RecordMetadata
from .threads import Wakeup, wait_in_thread


class FutureRecordMetadata:
    """The pending result of one ``send``: ``await`` it for the record's metadata (or error)."""

    __slots__ = ("blocking",)

    def __init__(self, blocking: BlockingFuture) -> None:
        self.blocking = blocking
        """The underlying ``eventstore.FutureRecordMetadata``."""

    def done(self) -> bool:
        return self.blocking.done()

    def is_done(self) -> bool:
        return self.blocking.is_done()

    def exception(self) -> BaseException | None:
        return self.blocking.exception()

    def succeeded(self) -> bool:
        return self.blocking.succeeded()

    def add_callback(self, fn: Callable[[RecordMetadata], object]) -> FutureRecordMetadata:
        """Call ``fn(metadata)`` once the record is appended (in the producer's sender thread,
        or now if it already is); ``fn`` must not block."""
        self.blocking.add_callback(fn)
        return self

    def add_errback(self, fn: Callable[[BaseException], object]) -> FutureRecordMetadata:
        """Call ``fn(exception)`` if the append fails (in the sender thread, or now)."""
        self.blocking.add_errback(fn)
        return self

    async def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait until the record is appended (and durable); its metadata, or the append's error.

        ``TimeoutError`` if that takes more than ``timeout`` seconds (None: no limit).
        """
        future = self.blocking
        if future.done():
            await anyio.lowlevel.checkpoint()
        else:
            wakeup = Wakeup()
            future.add_callback(lambda _metadata: wakeup.notify())
            future.add_errback(lambda _error: wakeup.notify())
            with anyio.fail_after(timeout):
                await wakeup.wait()
        return future.result(0)  # done: does not wait

    async def get(self, timeout: float | None = None) -> RecordMetadata:
        """kafka-python's name for ``result``."""
        return await self.result(timeout)

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        return self.result().__await__()


class Producer:
    """Create with ``store.producer()`` on an ``eventstore.aio.Store``. Any task may ``send``."""

    def __init__(self, blocking: BlockingProducer) -> None:
        self.blocking = blocking
        """The underlying ``eventstore.Producer``."""

    async def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None,
                   partition: int | None = None, timestamp_ms: int | None = None) -> FutureRecordMetadata:
        """Queue one record (bad input raises here); ``await`` the future for its metadata."""
        await anyio.lowlevel.checkpoint()
        return FutureRecordMetadata(self.blocking.send(
            topic, value, key, headers, partition=partition, timestamp_ms=timestamp_ms
        ))

    async def send_and_wait(self, topic: str, value: Any = None, key: Any = None, headers: Any = None,
                            partition: int | None = None, timestamp_ms: int | None = None) -> RecordMetadata:
        """``send``, then wait for the record's metadata."""
        future = await self.send(topic, value, key, headers, partition, timestamp_ms)
        return await future

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is appended (or failed)."""
        await wait_in_thread(self.blocking.flush, timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then stop the sender thread. Idempotent; shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(functools.partial(self.blocking.close, timeout))

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def partitions_for(self, topic: str) -> set[int]:
        await anyio.lowlevel.checkpoint()
        return self.blocking.partitions_for(topic)
