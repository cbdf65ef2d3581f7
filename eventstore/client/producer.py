"""A Kafka-style producer: ``send`` returns a future; a sender thread appends in batches.

``send`` validates the record at once (bad input raises there, nothing is
queued) and queues it. One sender thread drains everything queued, appends it
with one ``append_batch`` per topic (one durability barrier for all of it) and
resolves the futures. Under load, records that arrive while the sender is
busy form the next batch: batching without a linger delay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import EventStoreError, IllegalStateError
from ..records import Message, RecordMetadata
from ..validation import (
    as_bytes,
    check_headers,
    check_partition,
    check_plain_topic,
    check_size,
    check_timestamp,
    record_size,
)

if TYPE_CHECKING:
    from ..log import Log

log = logging.getLogger("eventstore.producer")
_DRAIN_RECORDS_MAX = 10_000
_callback_lock = threading.Lock()


class _Batch:
    """The outcome shared by every future of one drained batch."""

    __slots__ = ("done", "error", "metadata")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.metadata: Sequence[RecordMetadata] | None = None
        self.error: BaseException | None = None


class FutureRecordMetadata:
    """The pending result of one ``send``: ``result()``/``get()`` give its RecordMetadata."""

    __slots__ = ("_batch", "_callbacks", "_errbacks", "_index")

    def __init__(self) -> None:
        self._batch: _Batch | None = None
        self._index = 0
        self._callbacks: list[Callable[[RecordMetadata], object]] = []
        self._errbacks: list[Callable[[BaseException], object]] = []

    def is_done(self) -> bool:
        return self._batch is not None and self._batch.done.is_set()

    def done(self) -> bool:
        return self.is_done()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait (at most ``timeout`` seconds) and return the metadata, or raise the error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._batch is None:  # bounded by the timeout: the sender attaches a batch
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("record not sent within the timeout")
            time.sleep(0.0005)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._batch.done.wait(remaining):
            raise TimeoutError("record not acknowledged within the timeout")
        if self._batch.error is not None:
            raise self._batch.error
        assert self._batch.metadata is not None
        return self._batch.metadata[self._index]

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """kafka-python's name for ``result``."""
        return self.result(timeout)

    def exception(self) -> BaseException | None:
        return self._batch.error if self.is_done() and self._batch is not None else None

    def succeeded(self) -> bool:
        return self.is_done() and self.exception() is None

    def add_callback(self, fn: Callable[[RecordMetadata], object]) -> FutureRecordMetadata:
        """Call ``fn(metadata)`` once the record is appended (now, if it already is)."""
        with _callback_lock:
            done = self.is_done()
            if not done:
                self._callbacks.append(fn)
        if done and self.succeeded():
            fn(self.result())
        return self

    def add_errback(self, fn: Callable[[BaseException], object]) -> FutureRecordMetadata:
        """Call ``fn(exception)`` if the append fails (now, if it already did)."""
        with _callback_lock:
            done = self.is_done()
            if not done:
                self._errbacks.append(fn)
        error = self.exception() if done else None
        if error is not None:
            fn(error)
        return self

    def _resolve(self, batch: _Batch, index: int) -> None:
        self._batch, self._index = batch, index

    def _run_callbacks(self) -> None:
        """Run the callbacks; one that raises is logged and does not stop the others."""
        batch = self._batch
        assert batch is not None
        calls: list[tuple[Callable[[Any], object], object]] = []
        if batch.error is None and self._callbacks:
            assert batch.metadata is not None
            meta = batch.metadata[self._index]
            calls = [(fn, meta) for fn in self._callbacks]
        elif batch.error is not None:
            calls = [(eb, batch.error) for eb in self._errbacks]
        for fn, arg in calls:
            try:
                fn(arg)
            except Exception:
                log.exception("producer callback %r failed", fn)


class Producer:
    """Create with ``store.producer()``. Thread-safe: many threads may ``send``."""

    def __init__(self, log: Log, *, key_serializer: Callable[[Any], bytes] | None = None,
                 value_serializer: Callable[[Any], bytes] | None = None,
                 client_id: str = "eventstore-producer") -> None:
        self._log = log
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self.client_id = client_id
        self._queue: deque[tuple[str, Message, FutureRecordMetadata]] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._sender = threading.Thread(target=self._run, name=f"{client_id}-sender", daemon=True)
        self._sender.start()

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None,
             partition: int | None = None, timestamp_ms: int | None = None) -> FutureRecordMetadata:
        """Queue one record; the returned future resolves once it is appended (and durable)."""
        if self._closed:
            raise IllegalStateError("producer is closed")
        cfg = self._log.topic(topic)
        check_plain_topic(cfg)
        where = f"send to topic {topic!r}"
        if self._value_serializer is not None and value is not None:
            value = self._value_serializer(value)
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        value = as_bytes(value, "value", where)
        key = as_bytes(key, "key", where)
        hdrs = check_headers(headers, where) if headers is not None else None
        if partition is not None:
            check_partition(cfg, partition)
        if timestamp_ms is not None:
            check_timestamp(timestamp_ms, where)
        check_size(cfg, record_size(key, value, hdrs), None)
        future = FutureRecordMetadata()
        message = Message(value=value, key=key, headers=hdrs, partition=partition,
                          timestamp_ms=timestamp_ms)
        with self._cond:
            self._queue.append((topic, message, future))
            self._in_flight += 1
            self._cond.notify_all()
        return future

    def _run(self) -> None:
        while True:  # ends when the producer closes and its queue is empty
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                drained = [self._queue.popleft()
                           for _ in range(min(len(self._queue), _DRAIN_RECORDS_MAX))]
            try:
                self._append(drained)
            except BaseException as e:  # never leave futures pending or the sender dead
                self._fail(drained, e)
            with self._cond:
                self._in_flight -= len(drained)
                self._cond.notify_all()

    def _append(self, drained: list[tuple[str, Message, FutureRecordMetadata]]) -> None:
        by_topic: dict[str, list[tuple[Message, FutureRecordMetadata]]] = {}
        for topic, message, future in drained:  # one pass to group the drained records
            by_topic.setdefault(topic, []).append((message, future))
        for topic, entries in by_topic.items():
            batch = _Batch()
            try:
                batch.metadata = self._log.append_batch(topic, [m for m, _ in entries])
            except (EventStoreError, OSError) as e:
                batch.error = e
            for i, (_, future) in enumerate(entries):
                future._resolve(batch, i)
            with _callback_lock:  # callbacks added from now on run at once, in add_*
                batch.done.set()
            for _, future in entries:
                if future._callbacks or future._errbacks:
                    future._run_callbacks()

    @staticmethod
    def _fail(drained: list[tuple[str, Message, FutureRecordMetadata]], error: BaseException) -> None:
        batch = _Batch()
        batch.error = error
        for i, (_, _, future) in enumerate(drained):
            if future._batch is None:
                future._resolve(batch, i)
        batch.done.set()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is appended (or failed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._in_flight:  # bounded by the timeout
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{self._in_flight} records still pending after flush timeout")
                self._cond.wait(remaining)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then stop the sender thread. Idempotent."""
        if self._closed:
            return
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._sender.join(timeout)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self._log.topic(topic).partitions))
