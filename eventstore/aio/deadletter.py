"""The async dead-letter processor: an async (or plain) handler per record, retries that
sleep on the event loop, and the blocking processor's DLQ transaction."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator

import anyio

from ..client.deadletter import DLQ_SUFFIX, Parked, ProcessingStats, check_callable
from ..client.deadletter import DeadLetterProcessor as BlockingProcessor
from ..errors import InvalidArgumentError
from ..records import Record, TopicPartition
from .consumer import Consumer, call_serialized


def _unused(record: Record) -> None:  # pragma: no cover - the async class calls its own handler
    raise AssertionError("the async processor calls its handler itself")


class DeadLetterProcessor:
    """``eventstore.DeadLetterProcessor`` for an ``eventstore.aio`` consumer.

    ``handler(record)`` may be a coroutine function or a plain one. Retries,
    backoff, DLQ naming and headers, and the atomic park-and-commit are the
    blocking processor's; the waits between retries hold no thread.
    """

    def __init__(
        self,
        consumer: Consumer,
        handler: Callable[[Record], Awaitable[object] | object],
        *,
        retries: int = 3,
        backoff_ms: float = 100,
        backoff_multiplier: float = 2.0,
        max_backoff_ms: float = 10_000,
        dlq_suffix: str = DLQ_SUFFIX,
        dlq_partitions: int = 1,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    ) -> None:
        """As ``eventstore.DeadLetterProcessor``; ``sleep`` is awaited between retries."""
        if not isinstance(consumer, Consumer):
            raise InvalidArgumentError(
                "eventstore.aio.DeadLetterProcessor needs an eventstore.aio.Consumer, got "
                f"{type(consumer).__name__} (for a blocking consumer use eventstore.DeadLetterProcessor)"
            )
        check_callable(handler, "handler")
        check_callable(sleep, "sleep")
        self.consumer = consumer
        self.handler = handler
        self._sleep = sleep
        self.blocking = BlockingProcessor(
            consumer.blocking, _unused, retries=retries, backoff_ms=backoff_ms,
            backoff_multiplier=backoff_multiplier, max_backoff_ms=max_backoff_ms,
            dlq_suffix=dlq_suffix, dlq_partitions=dlq_partitions)
        """The blocking processor whose settings, statistics and DLQ transaction this uses."""

    @property
    def stats(self) -> ProcessingStats:
        return self.blocking.stats

    def attempts(self) -> Iterator[tuple[int, float | None]]:
        """(attempt, seconds to wait before the next one; None after the last), as the blocking one."""
        return self.blocking.attempts()

    async def park(self, parked: list[Parked]) -> None:
        """Append the records that kept failing to the DLQ and commit, in one transaction."""
        await call_serialized(self.consumer, self.blocking.park, parked)

    async def process(self, batch: dict[TopicPartition, list[Record]]) -> None:
        """Handle one polled batch, park what keeps failing, commit — all before returning."""
        parked: list[Parked] = []
        for records in batch.values():
            for record in records:  # the handler runs per record by nature
                failure = await self._handle(record)
                if failure is not None:
                    parked.append((record, *failure))
        await self.park(parked)

    async def _handle(self, record: Record) -> tuple[BaseException, int] | None:
        for attempt, wait_s in self.attempts():  # bounded: 1 try + retries
            try:
                result = self.handler(record)
                if inspect.isawaitable(result):
                    await result
                self.stats.processed += 1
                return None
            except Exception as e:  # the handler's failure is data here
                if wait_s is None:
                    return e, attempt
                self.stats.retried += 1
                await self._sleep(wait_s)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, *, stop: anyio.Event | None = None, max_polls: int | None = None,
                  poll_timeout_ms: int = 500) -> ProcessingStats:
        """Poll and process until ``stop`` is set or ``max_polls`` polls were made."""
        polls = 0
        while (stop is None or not stop.is_set()) and (max_polls is None or polls < max_polls):
            batch = await self.consumer.poll(timeout_ms=poll_timeout_ms)
            polls += 1
            if batch:
                await self.process(batch)
        return self.stats
