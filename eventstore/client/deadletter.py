"""Dead-letter topics: retry a handler per record, then park poison records in ``<topic>.dlq``.

A record whose handler still fails after ``retries`` retries (with exponential
backoff) is appended to ``<topic>.dlq`` with headers naming where it came from
and why it failed; the DLQ appends and the consumer's offsets commit in one
transaction, so a poison record is parked exactly once and never blocks its
partition. ``replay_dead_letters`` sends parked records back to their topic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import msgspec

from ..errors import InvalidArgumentError, TopicNotFoundError
from ..records import Record, TopicConfig, TopicPartition
from ..transactions import TXN_HEADER
from .consumer import Consumer, log_of


class ConsumerSource(Protocol):
    """What ``replay_dead_letters`` needs of a store: its topics and consumers."""

    def topic(self, name: str) -> TopicConfig: ...

    def consumer(self, *topics: str, **config: Any) -> Consumer: ...

DLQ_SUFFIX = ".dlq"
H_TOPIC = "es.dlq.topic"
H_PARTITION = "es.dlq.partition"
H_OFFSET = "es.dlq.offset"
H_TIMESTAMP = "es.dlq.timestamp"
H_EXCEPTION = "es.dlq.exception"
H_MESSAGE = "es.dlq.message"
H_ATTEMPTS = "es.dlq.attempts"
DLQ_HEADERS = (H_TOPIC, H_PARTITION, H_OFFSET, H_TIMESTAMP, H_EXCEPTION, H_MESSAGE, H_ATTEMPTS)
_MESSAGE_BYTES_MAX = 4096

#: A record that kept failing: the record, the last exception, how many attempts were made.
Parked = tuple[Record, BaseException, int]


class ProcessingStats(msgspec.Struct, kw_only=True):
    """What a ``DeadLetterProcessor`` did so far."""

    processed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    batches: int = 0


def check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise InvalidArgumentError(f"{what} must be callable, got {fn!r} ({type(fn).__name__})")


class DeadLetterProcessor:
    """Runs ``handler(record)`` for every record a consumer polls, with retries and a DLQ."""

    def __init__(
        self,
        consumer: Consumer,
        handler: Callable[[Record], object],
        *,
        retries: int = 3,
        backoff_ms: float = 100,
        backoff_multiplier: float = 2.0,
        max_backoff_ms: float = 10_000,
        dlq_suffix: str = DLQ_SUFFIX,
        dlq_partitions: int = 1,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not isinstance(consumer, Consumer):
            raise InvalidArgumentError(
                f"a DeadLetterProcessor needs an eventstore.Consumer, got {type(consumer).__name__} "
                "(for an eventstore.aio.Consumer use eventstore.aio.DeadLetterProcessor)"
            )
        check_callable(handler, "handler")
        check_callable(sleep, "sleep")
        if type(retries) is not int or retries < 0:
            raise InvalidArgumentError(f"retries must be an int ≥ 0, got {retries!r}")
        if backoff_ms < 0 or backoff_multiplier < 1 or max_backoff_ms < 0:
            raise InvalidArgumentError("backoff_ms ≥ 0, backoff_multiplier ≥ 1, max_backoff_ms ≥ 0")
        if consumer.group_id is None:
            raise InvalidArgumentError("a dead-letter processor needs a consumer with a group_id")
        self.consumer = consumer
        self.handler = handler
        self.retries = retries
        self.backoff_ms = backoff_ms
        self.backoff_multiplier = backoff_multiplier
        self.max_backoff_ms = max_backoff_ms
        self.dlq_suffix = dlq_suffix
        self.dlq_partitions = dlq_partitions
        self.stats = ProcessingStats()
        self._sleep = sleep

    def process(self, batch: dict[TopicPartition, list[Record]]) -> None:
        """Handle one polled batch, park what keeps failing, commit — all before returning."""
        parked: list[Parked] = []
        for records in batch.values():
            for record in records:  # the handler runs per record by nature
                failure = self._handle(record)
                if failure is not None:
                    parked.append((record, *failure))
        self.park(parked)

    def park(self, parked: list[Parked]) -> None:
        """Append ``parked`` records to their DLQs and commit the consumer's positions, atomically."""
        store = log_of(self.consumer)
        with self.consumer.transaction() as tx:
            for record, error, attempts in parked:
                dlq = record.topic + self.dlq_suffix
                try:
                    store.topic(dlq)  # one made beforehand is used as it is
                except TopicNotFoundError:
                    store.create_topic(dlq, partitions=self.dlq_partitions, exist_ok=True)
                tx.append(dlq, record.value, key=record.key,
                          headers=[*record.headers, *_dlq_headers(record, error, attempts)])
        self.stats.batches += 1
        self.stats.dead_lettered += len(parked)

    def attempts(self) -> Iterator[tuple[int, float | None]]:
        """(attempt number, seconds to wait before the next one, or None after the last)."""
        delay_ms = self.backoff_ms
        for attempt in range(1, self.retries + 1):  # bounded by retries
            yield attempt, delay_ms / 1000
            delay_ms = min(delay_ms * self.backoff_multiplier, self.max_backoff_ms)
        yield self.retries + 1, None

    def _handle(self, record: Record) -> tuple[BaseException, int] | None:
        for attempt, wait_s in self.attempts():  # bounded: 1 try + retries
            try:
                self.handler(record)
                self.stats.processed += 1
                return None
            except Exception as e:  # the handler's failure is data here
                if wait_s is None:
                    return e, attempt
                self.stats.retried += 1
                self._sleep(wait_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def run(self, *, stop: threading.Event | None = None, max_polls: int | None = None,
            poll_timeout_ms: int = 500) -> ProcessingStats:
        """Poll and process until ``stop`` is set or ``max_polls`` polls were made."""
        polls = 0
        while (stop is None or not stop.is_set()) and (max_polls is None or polls < max_polls):
            batch = self.consumer.poll(timeout_ms=poll_timeout_ms)
            polls += 1
            if batch:
                self.process(batch)
        return self.stats


def _dlq_headers(record: Record, error: BaseException, attempts: int) -> list[tuple[str, bytes]]:
    message = str(error).encode("utf-8", "replace")[:_MESSAGE_BYTES_MAX]
    return [
        (H_TOPIC, record.topic.encode()),
        (H_PARTITION, str(record.partition).encode()),
        (H_OFFSET, str(record.offset).encode()),
        (H_TIMESTAMP, str(record.timestamp_ms).encode()),
        (H_EXCEPTION, type(error).__qualname__.encode()),
        (H_MESSAGE, message),
        (H_ATTEMPTS, str(attempts).encode()),
    ]


def replay_dead_letters(store: ConsumerSource, dlq_topic: str, *, group_id: str | None = None,
                        max_records: int | None = None, timeout_ms: int = 0) -> int:
    """Append parked records back to their original topic; returns how many.

    Progress is the committed offset of ``group_id`` (default ``<dlq>.replay``)
    on the DLQ, committed atomically with the re-appends, so running it twice
    does not replay a record twice. The DLQ headers are removed; the record's
    own key, value and headers are kept.
    """
    store.topic(dlq_topic)
    group = group_id or f"{dlq_topic}.replay"
    replayed = 0
    with store.consumer(dlq_topic, group_id=group, auto_offset_reset="earliest",
                        enable_auto_commit=False) as consumer:
        while max_records is None or replayed < max_records:  # bounded by the DLQ's end
            limit = None if max_records is None else max_records - replayed
            batch = consumer.poll(timeout_ms=timeout_ms, max_records=limit)
            if not batch:
                break
            with consumer.transaction() as tx:
                for records in batch.values():
                    for r in records:
                        headers = dict(r.headers)
                        topic = (headers.get(H_TOPIC) or b"").decode() or dlq_topic.removesuffix(DLQ_SUFFIX)
                        kept = [(k, v) for k, v in r.headers
                                if k not in DLQ_HEADERS and k != TXN_HEADER]
                        tx.append(topic, r.value, key=r.key, headers=kept)
                        replayed += 1
    return replayed
