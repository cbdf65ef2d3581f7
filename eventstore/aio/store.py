"""The async store: ``eventstore.Store`` behind coroutines.

Each coroutine calls the blocking method of the same name and signature: in
a worker thread when it may touch the disk, fsync or wait for a lock (see
``threads``), on the loop thread when it only reads memory (``topic``,
``topics``, ``offsets``, ``statistics``). ``wait_for`` alone waits on the loop
instead, woken by the partition. The factories of consumers, producers,
transactions and subscriptions are plain methods that return async facades.
``tests/test_api_signatures.py`` holds the two APIs to the same parameters.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .. import store as sync_store
from ..groups import GroupDescription
from ..log import UNSET
from ..records import (
    Durability,
    Message,
    Record,
    RecordMetadata,
    RecoveryEvent,
    RetentionResult,
    StoreStatistics,
    TopicConfig,
    TopicPartition,
)
from ..sourcing.dcbtypes import AppendCondition, Query, TaggedEvent, TaggedRead
from ..sourcing.events import AppendResult, NewEvent, RecordedEvent, StreamMetadata, StreamState
from ..sourcing.subscriptions import PAGE_EVENTS
from ..storage.check import CheckReport
from ..validation import check_wait
from .consumer import Consumer
from .producer import Producer
from .subscriptions import Subscription
from .threads import Wakeup, complete_in_thread
from .transactions import Transaction

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from ..metrics import StoreCollector, StoreMetrics
    from ..server import AsyncServerHandle


async def open(
    path: str | os.PathLike[str] = sync_store.DEFAULT_PATH,
    *,
    durability: Durability = "fsync",
    fsync_interval_ms: int = 1000,
    stream_partitions: int = 4,
    create: bool = True,
) -> Store:
    """Open the store at ``path``, creating it if there is none; as ``eventstore.open``.

    A missing directory is made, parents too; ``create=False`` raises
    ``StoreNotFoundError`` instead. Use it as ``async with await
    eventstore.aio.open(path) as store:``.
    """
    opener = functools.partial(sync_store.open, path, durability=durability,
                               fsync_interval_ms=fsync_interval_ms,
                               stream_partitions=stream_partitions, create=create)
    return Store(await complete_in_thread(opener))


class Store:
    """An open store for async code. Get one from ``await eventstore.aio.open()``."""

    def __init__(self, blocking: sync_store.Store) -> None:
        self.blocking = blocking
        """The underlying ``eventstore.Store`` (its calls block)."""

    # --- open / close ------------------------------------------------------

    async def close(self) -> None:
        """Fsync everything, write checkpoints and release the lock. Idempotent.

        Shielded from cancellation, so leaving ``async with`` always closes.
        """
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.blocking.close)

    async def __aenter__(self) -> Store:
        return self  # no checkpoint: a cancelled task still reaches __aexit__ and closes

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<eventstore.aio.Store {self.path!r} ({'closed' if self.closed else self.durability})>"

    @property
    def path(self) -> str:
        return self.blocking.path

    @property
    def durability(self) -> Durability:
        return self.blocking.durability

    @property
    def closed(self) -> bool:
        return self.blocking.closed

    @property
    def recovery_events(self) -> list[RecoveryEvent]:
        return self.blocking.recovery_events

    async def flush(self) -> None:
        """Make everything appended so far durable and checkpoint every partition."""
        await complete_in_thread(self.blocking.flush)

    async def serve(self, address: str = "127.0.0.1:9092", **options: Any) -> AsyncServerHandle:
        """Serve this store over the Kafka wire protocol on the caller's event loop.

        Returns once listening (``ServerError`` if the address is in use), as
        ``Store.serve`` with the same options. Run it with ``async with await
        store.serve(...) as server:`` (leaving stops it gracefully), or start
        ``server.serve_forever`` in a task group and ``await server.close()``.
        Close it before the store.
        """
        self.blocking.log.check_open()
        from ..server import AsyncServerHandle, Server, server_factory

        blocking = self.blocking
        make = await complete_in_thread(functools.partial(
            server_factory, blocking.log, blocking.groups, lambda: blocking.streams, address, **options))
        server: Server = make()
        await server.start()
        return AsyncServerHandle(server)

    # --- topics ------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = UNSET,
        *,
        retention_ms: int | None = UNSET,
        retention_bytes: int | None = UNSET,
        segment_bytes: int = UNSET,
        segment_ms: int = UNSET,
        max_record_bytes: int = UNSET,
        exist_ok: bool = False,
        streams: bool = UNSET,
        timestamp_type: str = UNSET,
    ) -> TopicConfig:
        """Create a topic; ``TopicExistsError`` if it exists (unless ``exist_ok``).

        As ``eventstore.Store.create_topic``: with ``exist_ok`` an existing topic
        is returned when every setting given matches it, else refused.
        """
        return await complete_in_thread(functools.partial(
            self.blocking.create_topic, name, partitions, retention_ms=retention_ms,
            retention_bytes=retention_bytes, segment_bytes=segment_bytes, segment_ms=segment_ms,
            max_record_bytes=max_record_bytes, exist_ok=exist_ok, streams=streams,
            timestamp_type=timestamp_type,
        ))

    async def alter_topic(
        self,
        name: str,
        *,
        partitions: int = UNSET,
        retention_ms: int | None = UNSET,
        retention_bytes: int | None = UNSET,
        segment_bytes: int = UNSET,
        segment_ms: int = UNSET,
        max_record_bytes: int = UNSET,
        timestamp_type: str = UNSET,
    ) -> TopicConfig:
        """Change a topic's configuration; partitions can only grow (as in Kafka)."""
        return await complete_in_thread(functools.partial(
            self.blocking.alter_topic, name, partitions=partitions, retention_ms=retention_ms,
            retention_bytes=retention_bytes, segment_bytes=segment_bytes, segment_ms=segment_ms,
            max_record_bytes=max_record_bytes, timestamp_type=timestamp_type,
        ))

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and all its data."""
        await complete_in_thread(self.blocking.delete_topic, name)

    async def topic(self, name: str) -> TopicConfig:
        """The configuration of topic ``name``; ``TopicNotFoundError`` if there is none."""
        await anyio.lowlevel.checkpoint()
        return self.blocking.topic(name)

    async def topics(self) -> list[TopicConfig]:
        """Every topic's configuration, sorted by name."""
        await anyio.lowlevel.checkpoint()
        return self.blocking.topics()

    # --- appending ---------------------------------------------------------

    async def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Append one record; returns where it landed once it is durable per the mode."""
        return await complete_in_thread(functools.partial(
            self.blocking.append, topic, value, key=key, headers=headers, partition=partition,
            timestamp_ms=timestamp_ms,
        ))

    async def append_batch(
        self,
        topic: str,
        items: Iterable[bytes | tuple[bytes | None, bytes | None] | Message | None],
        *,
        partition: int | None = None,
    ) -> Sequence[RecordMetadata]:
        """Append many records, one atomic batch per partition (see ``Store.append_batch``)."""
        return await complete_in_thread(
            functools.partial(self.blocking.append_batch, topic, items, partition=partition)
        )

    # --- reading -----------------------------------------------------------

    async def read(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_records: int = sync_store.DEFAULT_MAX_RECORDS,
        max_bytes: int | None = None,
    ) -> list[Record]:
        """Records of one partition from ``offset`` on, at most ``max_records``."""
        return await complete_in_thread(functools.partial(
            self.blocking.read, topic, partition, offset, max_records=max_records, max_bytes=max_bytes,
        ))

    async def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, end offset): the first readable offset and the next to be written."""
        await anyio.lowlevel.checkpoint()
        return self.blocking.offsets(topic, partition)

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        """The first offset whose timestamp is ≥ ``timestamp_ms``, or None if there is none."""
        return await complete_in_thread(self.blocking.offset_for_time, topic, partition, timestamp_ms)

    async def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        """Wait until the partition's end offset passes ``offset`` (True) or the timeout (False).

        Holds no thread while waiting: the partition wakes the task when it
        publishes new records.
        """
        timeout_s = check_wait(offset, timeout_s)
        plog = self.blocking.log.partition(topic, partition)
        wakeup = Wakeup()
        with self.blocking.log.watch([TopicPartition(topic, partition)], wakeup.notify):
            with anyio.move_on_after(float("inf") if timeout_s is None else timeout_s):
                while True:  # bounded by the timeout
                    wakeup.clear()
                    if plog.offsets()[1] > offset:
                        break
                    await wakeup.wait()
            return plog.offsets()[1] > offset

    # --- clients and groups ------------------------------------------------

    def consumer(self, *topics: str, **config: Any) -> Consumer:
        """A consumer for async code (see ``eventstore.aio.Consumer``); same options as sync."""
        consumer_timeout_ms = config.get("consumer_timeout_ms", float("inf"))
        return Consumer(self.blocking, self.blocking.consumer(*topics, **config), consumer_timeout_ms)

    def producer(self, **config: Any) -> Producer:
        """A producer for async code (see ``eventstore.aio.Producer``); same options as sync."""
        return Producer(self.blocking.producer(**config))

    def transaction(self) -> Transaction:
        """Appends to any partitions that happen all together or not at all (``async with`` commits)."""
        return Transaction(self.blocking.transaction())

    async def pending_transactions(self) -> list[int]:
        """Ids of committed transactions whose records are not all in the log yet, in commit order."""
        return await complete_in_thread(self.blocking.pending_transactions)

    async def list_groups(self) -> list[str]:
        """Consumer groups with committed offsets or active members."""
        return await complete_in_thread(self.blocking.list_groups)

    async def describe_group(self, group: str) -> GroupDescription:
        """A group's state, generation, members and their assignments."""
        return await complete_in_thread(self.blocking.describe_group, group)

    async def group_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (next offsets to read)."""
        return await complete_in_thread(self.blocking.group_offsets, group)

    async def lag(self, group: str) -> dict[TopicPartition, int]:
        """Records the group has not committed past, per partition."""
        return await complete_in_thread(self.blocking.lag, group)

    async def reset_group_offsets(
        self, group: str, to: str | int | Mapping[TopicPartition, int] | Mapping[tuple[str, int], int],
        topics: list[str] | None = None,
    ) -> dict[TopicPartition, int]:
        """Move an inactive group's offsets: "earliest", "latest", a timestamp, or explicit ones.

        Explicit offsets are keyed by ``TopicPartition`` or ``(topic, partition)`` tuples.
        """
        return await complete_in_thread(self.blocking.reset_group_offsets, group, to, topics)

    async def delete_group(self, group: str) -> int:
        """Forget an inactive group's committed offsets."""
        return await complete_in_thread(self.blocking.delete_group, group)

    # --- streams (event sourcing) ----------------------------------------------

    async def append_to_stream(
        self, stream_id: str, events: Sequence[NewEvent] | NewEvent,
        expected_version: int | StreamState = StreamState.ANY, *, topic: str | None = None,
    ) -> AppendResult:
        """Append events to a stream, atomically, if it is at ``expected_version``
        (see ``eventstore.Store.append_to_stream``)."""
        return await complete_in_thread(functools.partial(
            self.blocking.append_to_stream, stream_id, events, expected_version, topic=topic))

    async def read_stream(
        self, stream_id: str, from_version: int = 0, limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        """A stream's events from ``from_version`` (backwards: down from it; -1 = the end)."""
        return await complete_in_thread(
            self.blocking.read_stream, stream_id, from_version, limit, backwards)

    async def read_all(self, from_position: int = 0, limit: int | None = 1000) -> list[RecordedEvent]:
        """Every stream's events in global position order, from ``from_position``."""
        return await complete_in_thread(self.blocking.read_all, from_position, limit)

    async def stream_version(self, stream_id: str) -> int | None:
        """The stream's last version, or None if it has no events."""
        return await complete_in_thread(self.blocking.stream_version, stream_id)

    async def list_streams(self, category: str | None = None) -> list[str]:
        """Stream ids, all or of one category, sorted; deleted streams left out."""
        return await complete_in_thread(self.blocking.list_streams, category)

    async def append_events(self, events: Sequence[TaggedEvent] | TaggedEvent,
                            condition: AppendCondition | None = None) -> int:
        """Append tagged events atomically unless ``condition`` fails (``ConditionFailedError``)."""
        return await complete_in_thread(self.blocking.append_events, events, condition)

    async def read_events(self, query: Query | None = None, *, after: int | None = None,
                          limit: int | None = None) -> TaggedRead:
        """The tagged events matching ``query`` after ``after``, up to ``limit``, and the head."""
        return await complete_in_thread(functools.partial(
            self.blocking.read_events, query, after=after, limit=limit))

    def subscribe_events(self, query: Query | None = None, *, after: int | None = None,
                         page_events: int = PAGE_EVENTS) -> Subscription:
        """The tagged events matching ``query`` after ``after``, history then live; its events
        are ``SequencedEvent`` (``async for``)."""
        made = self.blocking.subscribe_events(query, after=after, page_events=page_events)
        return Subscription(made.subscription)

    def subscribe_to_all(self, from_position: int | None = 0, **options: Any) -> Subscription:
        """Every stream's events in position order, history then live (``async for``)."""
        return Subscription(self.blocking.subscribe_to_all(from_position, **options))

    def subscribe_to_category(self, category: str, from_position: int | None = 0,
                              **options: Any) -> Subscription:
        """The events of streams ``<category>-*`` in position order, history then live."""
        return Subscription(self.blocking.subscribe_to_category(category, from_position, **options))

    def subscribe_to_stream(self, stream_id: str, from_version: int | None = 0,
                            **options: Any) -> Subscription:
        """One stream's events in version order, history then live."""
        return Subscription(self.blocking.subscribe_to_stream(stream_id, from_version, **options))

    async def get_stream_metadata(self, stream_id: str) -> StreamMetadata:
        return await complete_in_thread(self.blocking.get_stream_metadata, stream_id)

    async def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> AppendResult:
        """Set max age, max count, truncate-before or custom metadata of a stream."""
        return await complete_in_thread(self.blocking.set_stream_metadata, stream_id, metadata)

    async def delete_stream(self, stream_id: str) -> AppendResult:
        """Soft-delete a stream: reads find nothing; appending again continues its versions."""
        return await complete_in_thread(self.blocking.delete_stream, stream_id)

    async def truncate_stream(self, stream_id: str, before_version: int) -> AppendResult:
        """Hide the stream's events below ``before_version`` (e.g. to remove personal data)."""
        return await complete_in_thread(self.blocking.truncate_stream, stream_id, before_version)

    # --- maintenance -------------------------------------------------------

    async def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply every topic's retention now; returns the number of segments deleted."""
        return await complete_in_thread(self.blocking.enforce_retention, now_ms)

    async def retention(self, topics: Iterable[str] | None = None, *, now_ms: int | None = None,
                        dry_run: bool = False,
                        on_progress: Callable[[RetentionResult], object] | None = None,
                        ) -> list[RetentionResult]:
        """Apply (or with ``dry_run`` preview) retention now; per partition what goes.

        ``on_progress`` is called after each partition, in the worker thread.
        """
        return await complete_in_thread(functools.partial(
            self.blocking.retention, topics, now_ms=now_ms, dry_run=dry_run, on_progress=on_progress))

    async def check(self, on_progress: Callable[[int], object] | None = None) -> CheckReport:
        """Read every byte of every partition and verify it; returns what was found.

        ``on_progress(nbytes)`` is called after each partition, in the worker thread.
        """
        return await complete_in_thread(self.blocking.check, on_progress)

    async def statistics(self) -> StoreStatistics:
        """A frozen snapshot of sizes, offsets and counters."""
        await anyio.lowlevel.checkpoint()
        return self.blocking.statistics()

    async def metrics(self, registry: CollectorRegistry | None = None) -> StoreMetrics:
        """The store's figures now (see ``eventstore.Store.metrics``); group lag reads the
        catalog, so it runs in a worker thread."""
        return await complete_in_thread(self.blocking.metrics, registry)

    async def register_metrics(self, registry: CollectorRegistry) -> StoreCollector:
        """Register a Prometheus collector of the store's figures (``eventstore.Store.register_metrics``)."""
        await anyio.lowlevel.checkpoint()
        return self.blocking.register_metrics(registry)
