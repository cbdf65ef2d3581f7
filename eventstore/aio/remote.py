"""``eventstore.aio.connect(address)``: the async store's API on a remote store.

The facade is ``eventstore.aio.Store`` over ``eventstore.connect``'s
:class:`~eventstore.remote.RemoteStore`: every call that goes to the server
runs in a worker thread (``topic``, ``topics`` and ``offsets`` too, which an
embedded store answers from memory). Subscriptions wait in bounded long polls
(at most ``POLL_WAIT_S`` each) in a worker thread, so a cancelled wait ends
within that time and loses nothing: events a poll returned are buffered.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, cast

import anyio

from ..errors import EventStoreError
from ..records import Record, TopicConfig, TopicPartition
from ..remote import store as remote_store
from ..remote.streams import POLL_WAIT_S
from ..sourcing.dcbtypes import Query
from ..sourcing.subscriptions import PAGE_EVENTS
from .consumer import Consumer
from .producer import FutureRecordMetadata, Producer
from .store import Store
from .subscriptions import Subscription
from .threads import complete_in_thread, wait_in_thread

__all__ = ["RemoteConsumer", "RemoteProducer", "RemoteStore", "RemoteSubscription", "connect"]


async def connect(address: str, *, security_protocol: str = "PLAINTEXT", sasl_mechanism: str | None = None,
                  username: str | None = None, password: str | None = None, ssl_cafile: str | None = None,
                  ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                  ssl_check_hostname: bool = True, max_bytes: int = 4 * 1024 * 1024) -> RemoteStore:
    """A store served at ``address`` (``"host:port[,host:port...]"``), with the security
    settings of ``eventstore.connect`` (checked the same way, before anything connects).
    Use it as ``async with await eventstore.aio.connect(address) as store:``."""
    opener = functools.partial(
        remote_store.connect, address, security_protocol=security_protocol, sasl_mechanism=sasl_mechanism,
        username=username, password=password, ssl_cafile=ssl_cafile, ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile, ssl_check_hostname=ssl_check_hostname, max_bytes=max_bytes)
    return RemoteStore(await complete_in_thread(opener))


class RemoteStore(Store):
    """The async store's API on a remote store. Get one from ``await eventstore.aio.connect()``."""

    def __init__(self, remote: remote_store.RemoteStore) -> None:
        # the remote store has the blocking Store's methods (tests/test_remote_api.py holds them)
        super().__init__(cast(Any, remote))
        self.remote = remote
        """The underlying ``eventstore.remote.RemoteStore`` (its calls block)."""

    def __repr__(self) -> str:
        return f"<eventstore.aio.RemoteStore {self.remote.address!r}>"

    @property
    def durability(self) -> Any:
        raise EventStoreError("durability is a setting of the server's store, not of a connection")

    @property
    def recovery_events(self) -> Any:
        raise EventStoreError("recovery_events are the server's: its store recovered when it opened")

    async def serve(self, address: str = "127.0.0.1:9092", **options: Any) -> Any:
        return self.remote.serve(address, **options)  # raises: a store is served where it is

    async def topic(self, name: str) -> TopicConfig:
        return await complete_in_thread(self.remote.topic, name)

    async def topics(self) -> list[TopicConfig]:
        return await complete_in_thread(self.remote.topics)

    async def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        return await complete_in_thread(self.remote.offsets, topic, partition)

    async def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        return await wait_in_thread(self.remote.wait_for, topic, partition, offset, timeout_s)

    async def statistics(self) -> Any:
        return self.remote.statistics()

    def consumer(self, *topics: str, **config: Any) -> Consumer:
        """A Kafka-style consumer whose waits are bounded polls of librdkafka's in a worker thread."""
        return RemoteConsumer(self.remote.consumer(*topics, **config),
                              config.get("consumer_timeout_ms", float("inf")))

    def producer(self, **config: Any) -> Producer:
        """A Kafka-style producer over librdkafka's (sends queue at once; await the futures)."""
        return RemoteProducer(cast(Any, self.remote.producer(**config)))  # the same API

    def transaction(self) -> Any:
        return self.remote.transaction()

    def subscribe_to_all(self, from_position: int | None = 0, **options: Any) -> Subscription:
        return RemoteSubscription(self.remote.subscribe_to_all(from_position, **options))

    def subscribe_to_category(self, category: str, from_position: int | None = 0,
                              **options: Any) -> Subscription:
        return RemoteSubscription(self.remote.subscribe_to_category(category, from_position, **options))

    def subscribe_to_stream(self, stream_id: str, from_version: int | None = 0,
                            **options: Any) -> Subscription:
        return RemoteSubscription(self.remote.subscribe_to_stream(stream_id, from_version, **options))

    def subscribe_events(self, query: Query | None = None, *, after: int | None = None,
                         page_events: int = PAGE_EVENTS) -> Subscription:
        return RemoteSubscription(self.remote.subscribe_events(query, after=after, page_events=page_events))


class RemoteConsumer(Consumer):
    """The async consumer's API on a remote consumer: ``poll`` waits in a worker thread, at most
    ``POLL_WAIT_S`` at a time, so a cancelled or closed poll ends within that time."""

    def __init__(self, blocking: Any, consumer_timeout_ms: float = float("inf")) -> None:
        # no log to watch: the embedded facade's watches are replaced by polls in a thread
        self.blocking = blocking
        self._consumer_timeout_s = consumer_timeout_ms / 1000
        self._lock = anyio.Lock()
        self._waiting = set()

    async def poll(self, timeout_ms: float = 0, max_records: int | None = None,
                   update_offsets: bool = True) -> dict[TopicPartition, list[Record]]:
        deadline = anyio.current_time() + max(0.0, timeout_ms) / 1000
        open_at_start = not self.closed
        while True:  # bounded by the deadline
            remaining = max(0.0, deadline - anyio.current_time())
            async with self._lock:
                if open_at_start and self.closed:
                    return {}
                batch: dict[TopicPartition, list[Record]] = await complete_in_thread(
                    self.blocking.poll, min(remaining, POLL_WAIT_S) * 1000, max_records, update_offsets)
            if batch or anyio.current_time() >= deadline:
                return batch

    async def __anext__(self) -> Record:
        """The next record, one poll of one record at a time, so that a commit after it covers
        exactly the records handed out; stops after ``consumer_timeout_ms`` idle, or once closed."""
        deadline = anyio.current_time() + self._consumer_timeout_s
        while True:  # bounded by consumer_timeout_ms
            remaining = deadline - anyio.current_time()
            if remaining <= 0 or self.closed:
                raise StopAsyncIteration
            batch = await self.poll(timeout_ms=min(remaining, POLL_WAIT_S) * 1000, max_records=1)
            for records in batch.values():
                return records[0]

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return await complete_in_thread(self.blocking.beginning_offsets, partitions)

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return await complete_in_thread(self.blocking.end_offsets, partitions)

    async def highwater(self, tp: TopicPartition) -> int:
        return await complete_in_thread(self.blocking.highwater, tp)

    async def topics(self) -> set[str]:
        return await complete_in_thread(self.blocking.topics)

    async def partitions_for_topic(self, topic: str) -> set[int]:
        return await complete_in_thread(self.blocking.partitions_for_topic, topic)


class RemoteProducer(Producer):
    """The async producer's API on a remote producer: calls that may ask the server for a topic's
    metadata run in a worker thread."""

    async def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None,
                   partition: int | None = None, timestamp_ms: int | None = None) -> FutureRecordMetadata:
        future = await complete_in_thread(functools.partial(
            self.blocking.send, topic, value, key, headers, partition=partition, timestamp_ms=timestamp_ms))
        return FutureRecordMetadata(future)

    async def partitions_for(self, topic: str) -> set[int]:
        return await complete_in_thread(self.blocking.partitions_for, topic)


class RemoteSubscription(Subscription):
    """An async subscription of a remote store: its waits are long polls in a worker thread."""

    def __init__(self, blocking: Any) -> None:
        super().__init__(blocking)

    async def _fill(self, max_events: int, timeout_s: float | None) -> None:
        """Poll (in a thread, at most ``POLL_WAIT_S`` at a time) until events come, the
        subscription is closed or ``timeout_s`` has passed."""
        deadline = None if timeout_s is None else anyio.current_time() + max(0.0, timeout_s)
        while True:  # bounded by the deadline, or by close
            remaining = POLL_WAIT_S if deadline is None else deadline - anyio.current_time()
            async with self._lock:
                if self.closed:
                    return
                batch = await complete_in_thread(self.blocking.next_batch, max(max_events, PAGE_EVENTS),
                                                 max(0.0, min(remaining, POLL_WAIT_S)))
                self._buffer.extend(batch)  # before any checkpoint: cancelling loses nothing
            if batch or (deadline is not None and anyio.current_time() >= deadline):
                return
