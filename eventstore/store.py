"""The embedded store: one object over the log and the layers above it.

``open()`` opens the :class:`~eventstore.log.Log` (locks the directory,
recovers every partition), then the layers that keep state tied to it, and
returns a :class:`Store`: the public facade. Its log methods are the Log's own
bound methods; its group, stream and transaction methods hand over to those
layers. All methods are thread-safe.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .batches import BatchMetadata
from .client.consumer import Consumer
from .client.producer import Producer
from .errors import InvalidArgumentError, StoreNotFoundError
from .groups import GroupCoordinator, GroupDescription
from .log import DEFAULT_MAX_RECORDS, UNSET, Log, holds_store
from .metrics import StoreCollector, StoreMetrics, register_store_metrics, store_metrics
from .records import (
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
from .sourcing import index as stream_index
from .sourcing import subscriptions
from .sourcing.dcb import DCB, DCB_TOPIC, TaggedSubscription, dcb_of
from .sourcing.dcbcheck import check_tag_index
from .sourcing.dcbtypes import AppendCondition, Query, TaggedEvent, TaggedRead
from .sourcing.events import AppendResult, NewEvent, RecordedEvent, StreamMetadata, StreamState
from .sourcing.streams import Streams, open_streams
from .sourcing.subscriptions import Subscription
from .storage.check import CheckReport
from .transactions import Transaction, Transactions

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .server import ServerHandle

__all__ = ["DEFAULT_MAX_RECORDS", "DEFAULT_PATH", "BatchMetadata", "Store", "open"]

DEFAULT_PATH = "./es-data"
DURABILITY_MODES = ("fsync", "interval", "none", "replicated")
FSYNC_INTERVAL_MS_MAX = 2**31 - 1  # Kafka's bound for its millisecond settings (about 24 days)

#: The Store's methods that are the Log's, and the group coordinator's: each Store gets their
#: bound methods as attributes (a call costs no extra hop); the definitions below give the
#: signatures, and the docstrings are theirs.
_LOG_METHODS = (
    "create_topic", "alter_topic", "delete_topic", "topic", "topics", "append", "append_batch",
    "read", "offsets", "offset_for_time", "wait_for", "enforce_retention", "retention",
    "statistics",
)
_GROUP_METHODS = (
    "list_groups", "describe_group", "group_offsets", "lag", "reset_group_offsets", "delete_group",
)


def open(
    path: str | os.PathLike[str] = DEFAULT_PATH,
    *,
    durability: Durability = "fsync",
    fsync_interval_ms: int = 1000,
    stream_partitions: int = 4,
    create: bool = True,
) -> Store:
    """Open the store at ``path``, creating it if there is none.

    A missing directory is made, its missing parents too (as ``mkdir -p``);
    with ``create=False`` a path that holds no store raises
    ``StoreNotFoundError`` and nothing is made, so a mistyped path does not
    leave an empty store behind. ``durability``: ``"fsync"`` (append returns
    after fdatasync; concurrent appenders share one), ``"interval"`` (a
    background fsync at most every ``fsync_interval_ms``), ``"none"`` (page
    cache only), ``"replicated"`` (fsync, then the in-sync followers of the
    server serving the store; ``NotEnoughReplicasError`` without one).
    docs/format.md, section 11, gives each mode's loss window.
    ``stream_partitions`` is the partition count of topics created on first
    use by ``append_to_stream``.
    """
    if durability not in DURABILITY_MODES:
        raise InvalidArgumentError(
            f"durability must be one of {', '.join(DURABILITY_MODES)}, got {durability!r}"
        )
    if type(fsync_interval_ms) is not int or not 0 < fsync_interval_ms <= FSYNC_INTERVAL_MS_MAX:
        raise InvalidArgumentError(
            f"fsync_interval_ms must be an int in 1..{FSYNC_INTERVAL_MS_MAX}, got {fsync_interval_ms!r}"
        )
    if type(stream_partitions) is not int or not 1 <= stream_partitions <= 100_000:
        raise InvalidArgumentError(f"stream_partitions must be an int ≥ 1, got {stream_partitions!r}")
    if type(create) is not bool:
        raise InvalidArgumentError(f"create must be a bool, got {create!r}")
    if not create and not holds_store(os.fspath(path)):
        raise StoreNotFoundError(os.fspath(path))
    return Store(os.fspath(path), durability, fsync_interval_ms, stream_partitions)


class Store:
    """An open store. Use ``eventstore.open()`` to get one; close it (or use ``with``)."""

    def __init__(self, path: str, durability: Durability, fsync_interval_ms: int,
                 stream_partitions: int = 4) -> None:
        self.log = Log(path, durability, fsync_interval_ms)
        """The log under this store (``eventstore.log.Log``): topics, appends, reads, watches."""
        self.path = path
        self.durability: Durability = durability
        self.fsync_interval_ms = fsync_interval_ms
        self.stream_partitions = stream_partitions
        self.recovery_events: list[RecoveryEvent] = self.log.recovery_events
        for name in _LOG_METHODS:
            setattr(self, name, getattr(self.log, name))
        self._lock = threading.RLock()
        self._streams: Streams | None = None
        self._dcb: DCB | None = None
        self._servers: set[ServerHandle] = set()
        self._index_path = os.path.join(path, "index")
        made: Transactions | None = None
        try:
            self.groups = GroupCoordinator(self.log)
            """The consumer groups of this store (``eventstore.groups.GroupCoordinator``)."""
            for name in _GROUP_METHODS:
                setattr(self, name, getattr(self.groups, name))
            self.transactions = made = Transactions(self.log, self.groups)
            """Transactions (``eventstore.transactions.Transactions``); opening relays those
            the last run left committed but not relayed."""
            if self._needs_streams():
                self.streams  # noqa: B018 (opening it brings the stream index up to date)
            self.log.finish_deletions()  # of topics a crash cut the deletion of short
        except BaseException:
            if made is not None:
                made.close()
            stream_index.abandon(self._index_path)  # an index opened but not taken charge of, if any
            self.log.abandon()  # every file the open had opened, closed without syncing
            raise

    def _needs_streams(self) -> bool:
        """Whether open must bring the stream index up to date: a streams topic exists, or one
        whose deletion was cut short may have left entries in an index that exists."""
        return any(cfg.streams for cfg in self.log.topics()) or (
            any(cfg.streams for cfg in self.log.gone_topics()) and os.path.isdir(self._index_path))

    # --- open / close ------------------------------------------------------

    def close(self) -> None:
        """Stop the servers this store runs (``serve``), then fsync everything, write
        checkpoints and release the lock. Idempotent."""
        for handle in list(self._servers):  # bounded by the servers started
            handle.close()
        self.log.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.log.closed else self.durability
        return f"<eventstore.Store {self.path!r} ({state})>"

    @property
    def closed(self) -> bool:
        return self.log.closed

    def flush(self) -> None:
        """Make everything appended so far durable and checkpoint every partition.

        Transactions committed whose relay failed are relayed first; if one
        still cannot be, ``TransactionRelayPendingError`` says which.
        """
        self.log.check_open()
        self.transactions.retry()
        self.log.flush()

    def serve(self, address: str = "127.0.0.1:9092", **options: Any) -> ServerHandle:
        """Serve this store over the Kafka wire protocol on ``address`` (``HOST:PORT``; port 0
        picks a free one), on a thread of its own, while this process keeps using the store.

        Returns once listening (``ServerError`` if the address is in use); the handle
        has ``.address`` (as bound) and ``close()``, and is a context manager;
        ``close()`` of the store stops it first. ``options``: ``advertised_listener``
        (``HOST:PORT`` clients are told), ``auto_create_topics``, ``max_connections``,
        ``max_in_flight``, ``max_frame_bytes``, ``node_id``, ``fetch_cache_bytes``,
        ``group_initial_rebalance_delay_ms`` (default 3000, as Kafka's; docs/protocol.md);
        ``replica_of`` (``"HOST:PORT[,...]"``: follow that leader),
        ``min_insync_replicas``, ``replica_lag_ms`` (docs/replication.md: with
        ``min_insync_replicas=2``, appends in ``"replicated"`` durability wait for a
        follower); how a follower reaches its leader: ``replica_security_protocol``,
        ``replica_sasl_mechanism``, ``replica_username``, ``replica_password``,
        ``replica_ssl_cafile``, ``replica_ssl_certfile``, ``replica_ssl_keyfile``
        (docs/replication.md, section 4); ``listeners`` (more listeners besides ``address``, a PLAINTEXT one:
        ``["SASL_SSL://HOST:PORT", ...]``; ``.listeners`` of the handle has each one's
        address as bound), ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cafile``,
        ``sasl_mechanisms`` (docs/operations.md, section 1). Needs the ``server`` extra.
        """
        self.log.check_open()
        from .server import ServerHandle, server_factory

        make = server_factory(self.log, self.groups, lambda: self.streams, address, **options)
        handle = ServerHandle(make, on_close=self._servers.discard)
        self._servers.add(handle)
        return handle

    # --- topics (the Log's) --------------------------------------------------

    def create_topic(
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
        return self.log.create_topic(
            name, partitions, retention_ms=retention_ms, retention_bytes=retention_bytes,
            segment_bytes=segment_bytes, segment_ms=segment_ms, max_record_bytes=max_record_bytes,
            exist_ok=exist_ok, streams=streams, timestamp_type=timestamp_type)

    def alter_topic(
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
        return self.log.alter_topic(
            name, partitions=partitions, retention_ms=retention_ms, retention_bytes=retention_bytes,
            segment_bytes=segment_bytes, segment_ms=segment_ms, max_record_bytes=max_record_bytes,
            timestamp_type=timestamp_type)

    def delete_topic(self, name: str) -> None:
        return self.log.delete_topic(name)

    def topic(self, name: str) -> TopicConfig:
        return self.log.topic(name)

    def topics(self) -> list[TopicConfig]:
        return self.log.topics()

    # --- appending and reading (the Log's) -----------------------------------

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        return self.log.append(topic, value, key=key, headers=headers, partition=partition,
                               timestamp_ms=timestamp_ms)

    def append_batch(
        self,
        topic: str,
        items: Iterable[bytes | tuple[bytes | None, bytes | None] | Message | None],
        *,
        partition: int | None = None,
    ) -> Sequence[RecordMetadata]:
        return self.log.append_batch(topic, items, partition=partition)

    def read(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_bytes: int | None = None,
    ) -> list[Record]:
        return self.log.read(topic, partition, offset, max_records=max_records, max_bytes=max_bytes)

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        return self.log.offsets(topic, partition)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        return self.log.offset_for_time(topic, partition, timestamp_ms)

    def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        return self.log.wait_for(topic, partition, offset, timeout_s)

    # --- clients and groups --------------------------------------------------

    def consumer(self, *topics: str, **config: Any) -> Consumer:
        """A Kafka-style consumer (see ``eventstore.client.consumer.Consumer``)."""
        self.log.check_open()
        try:
            return Consumer(self.log, self.groups, self.transactions, *topics, **config)
        except TypeError as e:
            raise InvalidArgumentError(f"consumer(): {e}") from None

    def producer(self, **config: Any) -> Producer:
        """A Kafka-style producer (see ``eventstore.client.producer.Producer``)."""
        self.log.check_open()
        try:
            return Producer(self.log, **config)
        except TypeError as e:
            raise InvalidArgumentError(f"producer(): {e}") from None

    def transaction(self) -> Transaction:
        """Appends to any partitions that happen all together or not at all (``with`` commits)."""
        return self.transactions.begin()

    def pending_transactions(self) -> list[int]:
        """Ids of committed transactions whose records are not all in the log yet, in commit
        order: those the store is relaying (``TransactionRelayPendingError``), and those whose
        topic was deleted since (docs/format.md, section 13)."""
        return self.transactions.pending_ids()

    def list_groups(self) -> list[str]:
        return self.groups.list_groups()

    def describe_group(self, group: str) -> GroupDescription:
        return self.groups.describe_group(group)

    def group_offsets(self, group: str) -> dict[TopicPartition, int]:
        return self.groups.group_offsets(group)

    def lag(self, group: str) -> dict[TopicPartition, int]:
        return self.groups.lag(group)

    def reset_group_offsets(
        self, group: str, to: str | int | Mapping[TopicPartition, int] | Mapping[tuple[str, int], int],
        topics: list[str] | None = None,
    ) -> dict[TopicPartition, int]:
        return self.groups.reset_group_offsets(group, to, topics)

    def delete_group(self, group: str) -> int:
        return self.groups.delete_group(group)

    # --- streams (the event-sourcing layer) ---------------------------------------

    @property
    def streams(self) -> Streams:
        """The event-sourcing layer (``eventstore.sourcing.streams.Streams``), opened on
        first use (at open if a streams topic exists)."""
        streams = self._streams
        if streams is None:
            with self._lock:
                if self._streams is None:
                    self.log.check_open()
                    self._streams = open_streams(self.log, self._index_path, self.stream_partitions)
                streams = self._streams
        return streams

    def append_to_stream(
        self, stream_id: str, events: Sequence[NewEvent] | NewEvent,
        expected_version: int | StreamState = StreamState.ANY, *, topic: str | None = None,
    ) -> AppendResult:
        """Append events to a stream, atomically, if it is at ``expected_version``.

        ``expected_version``: an int (the stream's last version, -1 for none),
        ``StreamState.NO_STREAM``, ``STREAM_EXISTS`` or ``ANY``. A conflict
        raises ``WrongExpectedVersionError`` and writes nothing. Re-appending
        events with the same ids returns the original result and writes nothing.
        The stream lives in the topic named by its category (text before the
        first "-") unless ``topic`` says otherwise, partition murmur2(stream_id).
        """
        self.log.check_open()
        batch = [events] if isinstance(events, NewEvent) else events
        return self.streams.append(stream_id, batch, expected_version, topic)

    def read_stream(
        self, stream_id: str, from_version: int = 0, limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        """A stream's events from ``from_version`` (backwards: down from it; -1 = the end)."""
        self.log.check_open()
        if backwards and from_version == 0:
            from_version = -1
        return self.streams.read(stream_id, from_version, limit, backwards)

    def read_all(self, from_position: int = 0, limit: int | None = 1000) -> list[RecordedEvent]:
        """Every stream's events in global position order, from ``from_position``."""
        self.log.check_open()
        return self.streams.read_all(from_position, limit)

    def stream_version(self, stream_id: str) -> int | None:
        """The stream's last version, or None if it has no events."""
        self.log.check_open()
        return self.streams.stream_version(stream_id)

    def list_streams(self, category: str | None = None) -> list[str]:
        """Stream ids, all or of one category, sorted; deleted streams left out."""
        self.log.check_open()
        return self.streams.list_streams(category)

    def subscribe_to_all(self, from_position: int | None = 0, **options: Any) -> Subscription:
        """Every stream's events in position order: history from ``from_position``
        (None: only those of appends that begin after this call), then live."""
        self.log.check_open()
        return subscriptions.subscribe_to_all(self, from_position, **options)

    def subscribe_to_category(self, category: str, from_position: int | None = 0,
                              **options: Any) -> Subscription:
        """The events of streams ``<category>-*`` in position order, history then live."""
        self.log.check_open()
        return subscriptions.subscribe_to_category(self, category, from_position, **options)

    def subscribe_to_stream(self, stream_id: str, from_version: int | None = 0,
                            **options: Any) -> Subscription:
        """One stream's events in version order, history then live."""
        self.log.check_open()
        return subscriptions.subscribe_to_stream(self, stream_id, from_version, **options)

    def get_stream_metadata(self, stream_id: str) -> StreamMetadata:
        self.log.check_open()
        return self.streams.metadata(stream_id)

    def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> AppendResult:
        """Set max age, max count, truncate-before or custom metadata of a stream."""
        self.log.check_open()
        return self.streams.set_metadata(stream_id, metadata)

    def delete_stream(self, stream_id: str) -> AppendResult:
        """Soft-delete a stream: reading it raises ``StreamNotFoundError`` (``deleted`` set),
        ``list_streams`` leaves it out; appending again continues its versions."""
        self.log.check_open()
        return self.streams.delete(stream_id)

    def truncate_stream(self, stream_id: str, before_version: int) -> AppendResult:
        """Hide the stream's events below ``before_version`` (e.g. to remove personal data)."""
        self.log.check_open()
        return self.streams.truncate_before(stream_id, before_version)

    # --- dynamic consistency boundaries (docs/format.md section 18) ----------------

    @property
    def dcb(self) -> DCB:
        """Tagged events and conditional appends (``eventstore.sourcing.dcb.DCB``), opened on
        first use: its tag index catches up with the log then."""
        dcb = self._dcb
        if dcb is None:
            with self._lock:
                if self._dcb is None:
                    layer = dcb_of(self.streams)
                    self.log.add_check_hook(functools.partial(check_tag_index, layer))
                    self._dcb = layer
                dcb = self._dcb
        return dcb

    def append_events(self, events: Sequence[TaggedEvent] | TaggedEvent,
                      condition: AppendCondition | None = None) -> int:
        """Append tagged events atomically unless an event matching
        ``condition.fail_if_events_match`` exists after ``condition.after``
        (``ConditionFailedError``, nothing written). Returns the last event's DCB position."""
        self.log.check_open()
        return self.dcb.append(events, condition)

    def read_events(self, query: Query | None = None, *, after: int | None = None,
                    limit: int | None = None) -> TaggedRead:
        """The tagged events matching ``query`` (all if None) after DCB position ``after``,
        in order, up to ``limit``, and the read's ``head``."""
        self.log.check_open()
        return self.dcb.read(query, after, limit)

    def subscribe_events(self, query: Query | None = None, *, after: int | None = None,
                         page_events: int = subscriptions.PAGE_EVENTS) -> TaggedSubscription:
        """The tagged events matching ``query`` after ``after``: history, then live."""
        self.log.check_open()
        return self.dcb.subscribe(query, after, page_events)

    # --- maintenance (the Log's) ----------------------------------------------

    def enforce_retention(self, now_ms: int | None = None) -> int:
        return self.log.enforce_retention(now_ms)

    def retention(self, topics: Iterable[str] | None = None, *, now_ms: int | None = None,
                  dry_run: bool = False,
                  on_progress: Callable[[RetentionResult], object] | None = None) -> list[RetentionResult]:
        return self.log.retention(topics, now_ms=now_ms, dry_run=dry_run, on_progress=on_progress)

    def check(self, on_progress: Callable[[int], object] | None = None) -> CheckReport:
        """Read every byte of every partition and verify it; returns what was found.

        ``on_progress(nbytes)`` is called after each partition with the bytes it
        held. The stream index is compared with the log, and so is the DCB tag
        index of a store that has ``__dcb`` (its layer is opened for that).
        """
        if self.log.find_topic(DCB_TOPIC) is not None:
            self.dcb  # noqa: B018 (opening it registers the tag index check)
        return self.log.check(on_progress)

    def statistics(self) -> StoreStatistics:
        return self.log.statistics()

    def metrics(self, registry: CollectorRegistry | None = None) -> StoreMetrics:
        """Partition sizes and offsets, consumer-group lag, append and fsync histograms, now
        (docs/operations.md, 4); with ``registry`` (prometheus-client's), a collector of the
        same figures is registered with it first (``register_metrics``)."""
        if registry is not None:
            self.register_metrics(registry)
        return store_metrics(self.log, self.groups)

    def register_metrics(self, registry: CollectorRegistry) -> StoreCollector:
        """Register a Prometheus collector of ``metrics()`` with ``registry``, read at each
        scrape; returns it (``registry.unregister(collector)`` before the store closes)."""
        return register_store_metrics(self.log, self.groups, registry)


for _name in _LOG_METHODS:  # one docstring per method: the Log's
    getattr(Store, _name).__doc__ = getattr(Log, _name).__doc__
for _name in _GROUP_METHODS:  # and the group coordinator's
    getattr(Store, _name).__doc__ = getattr(GroupCoordinator, _name).__doc__
del _name
