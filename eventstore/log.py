"""The log: topics and their partitions, over the segment files and the LMDB catalog.

A :class:`Log` is the one door to records. It opens (locks the directory,
recovers every partition), creates and deletes topics, appends (records, or
batches already encoded), reads (records, or stored batch bytes), tells
watchers when records become visible, and waits for durability with one
barrier. The embedded ``Store`` delegates its log methods here; a network
Produce or Fetch handler and a replica would call the same methods.

Layers above the log (groups, transactions, streams) keep state derived from
it or tied to its topics. They register hooks (``add_delete_hook``,
``add_close_hook``, ``add_check_hook``) so that the log's own operations keep
them consistent whoever calls them. All methods are thread-safe.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import difflib
import functools
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import msgspec

from .batches import BatchMetadata, Group, check_encoded_batch, check_kafka_batch, group_items
from .catalog import Catalog, checkpoints, log_starts, producer_ids
from .catalog import topics as topic_cache
from .errors import (
    EventStoreError,
    InvalidArgumentError,
    InvalidTopicError,
    NotEnoughReplicasError,
    NotLeaderError,
    OffsetOutOfRangeError,
    StorageError,
    StoreClosedError,
    TopicExistsError,
    TopicNotFoundError,
)
from .partitioner import partition_for_key
from .records import (
    LOG_APPEND_TIME,
    NO_TOPIC_ID,
    Durability,
    Message,
    PartitionStatistics,
    Record,
    RecordMetadata,
    RecoveryEvent,
    RetentionResult,
    StoreStatistics,
    TopicConfig,
    TopicPartition,
)
from .storage import faults, topicdir
from .storage import format as fmt
from .storage.check import CheckReport, check_partition
from .storage.lock import DirectoryLock
from .storage.names import is_valid_topic_name
from .storage.partition import Durability as LocalDurability
from .storage.partition import PartitionLog, Prepared
from .storage.recovery import Checkpoint
from .storage.timings import LogTimings
from .validation import (
    NO_HEADERS,
    as_bytes,
    check_headers,
    check_int64,
    check_plain_topic,
    check_size,
    check_timestamp,
    check_topic_settings,
    check_wait,
    record_size,
)
from .validation import (
    check_partition as valid_partition,
)

__all__ = ["DEFAULT_MAX_RECORDS", "UNSET", "BatchMetadata", "KafkaAppendResult", "Log", "Prepared",
           "ReplicationWaiter", "Watch"]

log = logging.getLogger("eventstore")

DEFAULT_MAX_RECORDS = 500
#: Threads that wait for fsyncs at once in one barrier over several partitions.
_WAIT_THREADS = 8
#: The default of ``alter_topic``'s parameters: "leave this setting as it is".
UNSET: Any = object()

DeleteHook = Callable[[TopicConfig], object]
CloseHook = Callable[[], object]
CheckHook = Callable[[TopicConfig, int, CheckReport], object]


class KafkaAppendResult(msgspec.Struct, frozen=True):
    """Where a Kafka batch landed (``Log.append_kafka``), as a Produce response says it."""

    base_offset: int  # the offset of its first record
    record_count: int
    log_append_time_ms: int  # -1: the topic keeps the producers' timestamps (CreateTime)
    log_start_offset: int  # the partition's first offset, after the append
    duplicate: bool  # a retried batch of an idempotent producer: nothing was written


class ReplicationWaiter(Protocol):
    """What a server serving the store with followers registers (``Log.set_replication``)
    so that appends in ``"replicated"`` durability wait for the in-sync replicas
    (docs/replication.md, section 3)."""

    def check(self, partitions: Iterable[TopicPartition]) -> None:
        """Before writing: raise ``NotEnoughReplicasError`` if too few replicas are in sync."""

    def wait(self, ends: Mapping[TopicPartition, int]) -> None:
        """After the local fsync: return once the high watermark of each partition reaches
        its end, or raise ``NotEnoughReplicasError`` (written, not known replicated)."""


class Watch:
    """A registration made by ``Log.watch``: ``cancel()`` (or ``close()``, or leaving
    ``with``) ends it. Cancelling twice does nothing."""

    __slots__ = ("_cancels",)

    def __init__(self, cancels: list[Callable[[], object]]) -> None:
        self._cancels = cancels

    def cancel(self) -> None:
        cancels, self._cancels = self._cancels, []
        for cancel in cancels:  # bounded by the partitions watched
            cancel()

    close = cancel

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Log:
    """An open log. ``eventstore.open()`` makes one inside the ``Store`` it returns."""

    def __init__(self, path: str, durability: Durability, fsync_interval_ms: int) -> None:
        self.path = path
        self.durability: Durability = durability
        self.fsync_interval_ms = fsync_interval_ms
        self.recovery_events: list[RecoveryEvent] = []
        self.timings = LogTimings()
        """Append and fsync latencies, batches and records per fsync (``eventstore.metrics``)."""
        self._fsync = durability in ("fsync", "replicated")
        self._replicated = durability == "replicated"  # fsync, then the replicas (set_replication)
        self._replication: ReplicationWaiter | None = None
        self._leader_epoch = 0
        self._gated = False  # enable_high_watermark
        self._refusal: str | None = None  # set_writable(False, reason): why local writes are refused
        self._replica_thread = threading.local()  # replica_writes(): this thread applies a leader's state
        self._lock = threading.RLock()
        self._closed = False
        self._configs: dict[str, TopicConfig] = {}
        self._by_id: dict[uuid.UUID, TopicConfig] = {}
        self._partitions: dict[str, list[PartitionLog]] = {}
        self._round_robin = itertools.count()
        self._gone: dict[str, TopicConfig] = {}
        self._delete_hooks: list[DeleteHook] = []
        self._close_hooks: list[CloseHook] = []
        self._check_hooks: list[CheckHook] = []
        self._flusher: threading.Thread | None = None
        self._wait_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise StorageError(path, f"cannot create store directory: {e.strerror}") from e
        self._dir_lock = DirectoryLock(path)
        self._dir_lock.acquire()
        try:
            self.catalog = Catalog(os.path.join(path, "catalog"))
            """The LMDB catalog (``eventstore.catalog``): the layers above keep their state in it."""
            self._root = topicdir.topics_root(path)
            os.makedirs(self._root, exist_ok=True)
            self._load_topics()
        except BaseException:
            self.abandon()
            raise
        if durability == "interval":
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"eventstore-fsync:{path}", daemon=True
            )
            self._flusher.start()

    # --- open / close ------------------------------------------------------

    def _load_topics(self) -> None:
        for name in topicdir.sweep_transient(self._root):
            self.report(RecoveryEvent(case="R7", path=os.path.join(self._root, name), position=0,
                                      detail="removed an unfinished topic creation or deletion"))
        configs = {name: self._with_topic_id(cfg) for name, cfg in topicdir.load_configs(self._root).items()}
        cached = topic_cache.cached(self.catalog)
        for name, cfg in configs.items():
            if cached.get(name) != topic_cache.encode(cfg):
                topic_cache.put(self.catalog, cfg)
        for name, cfg in configs.items():
            self._configs[name] = cfg
            self._partitions[name] = self._open_partitions(cfg, range(cfg.partitions))
        self._by_id = {cfg.topic_id: cfg for cfg in self._configs.values()}
        self._gone = {name: topic_cache.decode(name, raw) for name, raw in cached.items()
                      if name not in configs}
        plogs = [plog for partitions in self._partitions.values() for plog in partitions]
        self._leader_epoch = max((plog.leader_epoch for plog in plogs), default=0)
        for plog in plogs:  # bounded by the partitions
            if plog.leader_epoch != self._leader_epoch:
                plog.set_leader_epoch(self._leader_epoch)

    def _with_topic_id(self, cfg: TopicConfig) -> TopicConfig:
        """A topic whose ``topic.json`` was written before topics had ids gets one now, written
        back before the topic is used, so that it is the same at every later open."""
        if cfg.topic_id != NO_TOPIC_ID:
            return cfg
        cfg = msgspec.structs.replace(cfg, topic_id=_new_topic_id())
        topicdir.write_config(os.path.join(self._root, cfg.name), cfg)
        return cfg

    def _open_partitions(self, cfg: TopicConfig, partitions: range) -> list[PartitionLog]:
        """Open (recover) these partitions of a topic; if one fails, those opened are closed."""
        opened: list[PartitionLog] = []
        try:
            for p in partitions:  # bounded by the topic's partitions
                opened.append(self._open_partition(cfg, p))
        except BaseException:
            for plog in opened:
                plog.abandon()
            raise
        return opened

    def _open_partition(self, cfg: TopicConfig, p: int) -> PartitionLog:
        directory = topicdir.partition_dir(self.path, cfg.name, p)
        os.makedirs(directory, exist_ok=True)
        fields = checkpoints.get(self.catalog, cfg.name, p)
        catalog, topic = self.catalog, cfg.name

        def save(checkpoint: Checkpoint) -> None:
            checkpoints.put(catalog, topic, p, msgspec.structs.astuple(checkpoint))

        def save_log_start(offset: int) -> None:
            log_starts.put(catalog, topic, p, offset)

        cp = None if fields is None else Checkpoint(*fields)
        plog = PartitionLog(directory, cfg.name, p, cfg, self.local_durability, cp, self.report, save,
                            log_start=log_starts.get(catalog, topic, p) or 0, on_log_start=save_log_start,
                            timings=self.timings)
        if self._leader_epoch > plog.leader_epoch:
            plog.set_leader_epoch(self._leader_epoch)
        if self._gated:
            plog.enable_high_watermark()
        return plog

    def gone_topics(self) -> list[TopicConfig]:
        """Topics whose deletion a crash cut short (their directory is gone, their cached
        configuration is not), until ``finish_deletions``; one whose cached configuration does
        not decode is given as a streams topic with default settings."""
        return list(self._gone.values())

    def finish_deletions(self) -> None:
        """Finish the deletions a crash cut short (on open, once the layers above registered
        their delete hooks): the hooks of each topic that is gone, the checkpoints of every
        name that is no topic, and last the cached configuration (while it is there, a
        deletion is still to be finished; docs/format.md, section 6)."""
        for cfg in self._gone.values():
            for hook in self._delete_hooks:  # bounded by the layers
                hook(cfg)
        checkpoints.delete_except(self.catalog, self._configs)
        log_starts.delete_except(self.catalog, self._configs)
        for name in list(self._gone):
            topic_cache.delete(self.catalog, name)
            del self._gone[name]

    def report(self, event: RecoveryEvent) -> None:
        """Record what recovery did (``recovery_events``) and log it; layers above report here too."""
        self.recovery_events.append(event)
        log.warning("recovery %s: %s at %s:%d", event.case, event.detail, event.path, event.position)

    def add_delete_hook(self, hook: DeleteHook) -> None:
        """Call ``hook(config)`` when the topic of ``config`` is deleted, under the log's lock,
        past the point of no return (its files and checkpoints are gone), before its cached
        configuration goes; and on open for a deletion a crash cut short
        (``finish_deletions``). A hook that raises leaves the configuration cached, so the
        next open finishes the deletion; the other hooks run all the same."""
        self._delete_hooks.append(hook)

    def add_close_hook(self, hook: CloseHook) -> None:
        """Call ``hook()`` when the log closes, before the partitions close (errors are
        raised after everything is closed)."""
        self._close_hooks.append(hook)

    def add_check_hook(self, hook: CheckHook) -> None:
        """Call ``hook(config, partition, report)`` in ``check`` after each partition whose
        bytes checked clean, to check what the layer above keeps in it."""
        self._check_hooks.append(hook)

    def close(self) -> None:
        """Run the close hooks, fsync everything, write checkpoints and release the lock.
        Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        if self._wait_pool is not None:
            self._wait_pool.shutdown(wait=True)
        first_error: BaseException | None = None
        for hook in self._close_hooks:  # bounded by the layers
            try:
                hook()
            except Exception as e:  # keep closing the rest
                first_error = first_error or e
        for partitions in self._partitions.values():
            for plog in partitions:
                try:
                    plog.close()
                except Exception as e:  # every partition gets closed; the first error is raised
                    first_error = first_error or e
        self._release()
        if first_error is not None:
            raise first_error

    def _release(self) -> None:
        catalog = getattr(self, "catalog", None)
        if catalog is not None:
            catalog.close()
        self._dir_lock.release()

    def abandon(self) -> None:
        """After a failed open: close every file the open had opened, without syncing, and
        release the lock."""
        self._closed = True
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        if self._wait_pool is not None:
            self._wait_pool.shutdown(wait=False)
        for partitions in self._partitions.values():
            for plog in partitions:
                plog.abandon()
        self._release()

    def __enter__(self) -> Log:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.durability
        return f"<eventstore.Log {self.path!r} ({state})>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def local_durability(self) -> LocalDurability:
        """The mode of the local disk: ``"fsync"`` for ``"replicated"`` (which fsyncs, then
        waits for the replicas), else ``durability`` itself."""
        return "fsync" if self.durability == "replicated" else self.durability

    def check_open(self) -> None:
        """Raise ``StoreClosedError`` if the log is closed."""
        if self._closed:
            raise StoreClosedError(self.path)

    def _flush_loop(self) -> None:
        interval_s = self.fsync_interval_ms / 1000
        while not self._stop.wait(interval_s):  # ends when the log closes
            try:
                self._sync_all()
            except Exception:  # keep flushing; the error is logged
                log.exception("background fsync failed")

    def _sync_all(self) -> None:
        for partitions in list(self._partitions.values()):
            for plog in partitions:
                plog.wait_durable(plog.end_written)

    def flush(self) -> None:
        """Make everything appended so far durable and checkpoint every partition."""
        self.check_open()
        for partitions in list(self._partitions.values()):
            for plog in partitions:
                plog.checkpoint()

    # --- topics ------------------------------------------------------------

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
        """Create a topic; ``TopicExistsError`` if it exists (unless ``exist_ok``).

        A setting not given takes its default: 1 partition, no retention limits,
        ``segment_bytes`` 128 MiB, ``segment_ms`` 7 days, ``max_record_bytes``
        1 MiB, not a streams topic. With ``exist_ok`` an existing topic is
        returned as it is when every setting given matches it; one that differs
        raises ``TopicExistsError`` naming the differences (``alter_topic``
        changes a topic).
        """
        self.check_open()
        self._check_writable()
        if not is_valid_topic_name(name):
            raise InvalidTopicError(
                f"invalid topic name {name!r}: use 1-249 of [A-Za-z0-9._-], not '.' or '..'"
            )
        given = {"partitions": partitions, "retention_ms": retention_ms, "retention_bytes": retention_bytes,
                 "segment_bytes": segment_bytes, "segment_ms": segment_ms,
                 "max_record_bytes": max_record_bytes, "streams": streams, "timestamp_type": timestamp_type}
        asked = check_topic_settings({k: v for k, v in given.items() if v is not UNSET})
        cfg = TopicConfig(name=name, created_ms=_now_ms(), topic_id=_new_topic_id(),
                          **{"partitions": 1, **asked})
        return self._make_topic(cfg, asked, exist_ok)

    def adopt_topic(self, config: TopicConfig) -> TopicConfig:
        """Create a topic with exactly ``config``: its id, creation time, partitions and
        settings (a follower applying its leader's catalog, docs/replication.md section 5).

        The settings are checked as ``create_topic`` checks them. A topic of that name with
        the same configuration is returned as it is; one that differs raises
        ``TopicExistsError`` naming the differences (the caller deletes or alters it).
        """
        self.check_open()
        if not isinstance(config, TopicConfig):
            raise InvalidArgumentError(f"config must be a TopicConfig, got {type(config).__name__}")
        if not is_valid_topic_name(config.name):
            raise InvalidTopicError(
                f"invalid topic name {config.name!r}: use 1-249 of [A-Za-z0-9._-], not '.' or '..'")
        settings = {k: getattr(config, k) for k in _TOPIC_SETTINGS}
        check_topic_settings(settings)
        check_int64(config.created_ms, "created_ms")
        if config.topic_id == NO_TOPIC_ID:
            raise InvalidArgumentError(f"topic {config.name!r}: a topic id is needed, got the null id")
        fields = {**settings, "created_ms": config.created_ms, "topic_id": config.topic_id}
        return self._make_topic(config, fields, exist_ok=True)

    def _make_topic(self, cfg: TopicConfig, asked: Mapping[str, Any], exist_ok: bool) -> TopicConfig:
        """Create ``cfg``'s topic; an existing one is returned if ``exist_ok`` and every field
        of ``asked`` matches it, else ``TopicExistsError``."""
        name = cfg.name
        with self._lock:
            self.check_open()
            existing = self._configs.get(name)
            if existing is not None:
                differences = {k: (getattr(existing, k), v) for k, v in asked.items()
                               if getattr(existing, k) != v}
                if exist_ok and not differences:
                    return existing
                raise TopicExistsError(name, differences if exist_ok else None)
            if cfg.topic_id in self._by_id:
                raise TopicExistsError(self._by_id[cfg.topic_id].name)
            topicdir.create(self._root, cfg)
            try:
                topic_cache.put(self.catalog, cfg)
                faults.point("create-topic.cached")
                opened = self._open_partitions(cfg, range(cfg.partitions))
                faults.point("create-topic.opened")
            except BaseException:
                self._unmake_topic(name)
                raise
            self._configs = {**self._configs, name: cfg}
            self._by_id = {**self._by_id, cfg.topic_id: cfg}
            self._partitions = {**self._partitions, name: opened}
        return cfg

    def _unmake_topic(self, name: str) -> None:
        """Take back a topic whose creation failed half-way, step by step (best effort: the
        disk may be full; what is left is an empty topic, or entries open drops)."""
        steps: list[Callable[[], object]] = [
            lambda: topicdir.delete(self._root, name),
            lambda: topic_cache.delete(self.catalog, name),
            lambda: checkpoints.delete_topic(self.catalog, name),
            lambda: log_starts.delete_topic(self.catalog, name),
        ]
        for step in steps:
            try:
                step()
            except EventStoreError:
                log.warning("removing the topic %r whose creation failed", name, exc_info=True)

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
        """Change a topic's configuration; partitions can only grow (as in Kafka)."""
        self.check_open()
        self._check_writable()
        with self._lock:
            old = self.topic(name)
            given = {"partitions": partitions, "retention_ms": retention_ms,
                     "retention_bytes": retention_bytes, "segment_bytes": segment_bytes,
                     "segment_ms": segment_ms, "max_record_bytes": max_record_bytes,
                     "timestamp_type": timestamp_type}
            changes = check_topic_settings({k: v for k, v in given.items() if v is not UNSET},
                                           partitions_min=old.partitions)
            cfg = msgspec.structs.replace(old, **changes)
            directory = os.path.join(self._root, name)
            if cfg.partitions > old.partitions:
                topicdir.add_partitions(self._root, cfg, old.partitions)
            else:
                topicdir.write_config(directory, cfg)
            topic_cache.put(self.catalog, cfg)
            grown = list(self._partitions[name])
            for plog in grown:
                plog.config = cfg
            grown += self._open_partitions(cfg, range(old.partitions, cfg.partitions))
            self._configs = {**self._configs, name: cfg}
            self._by_id = {**self._by_id, cfg.topic_id: cfg}
            self._partitions = {**self._partitions, name: grown}
        return cfg

    def delete_topic(self, name: str) -> None:
        """Delete a topic and all its data (the delete hooks of the layers above included)."""
        self.check_open()
        self._check_writable()
        with self._lock:
            cfg = self.topic(name)
            configs, all_partitions, gone = self._configs, self._partitions, self._partitions[name]
            by_id = self._by_id
            self._configs = {k: v for k, v in configs.items() if k != name}
            self._by_id = {k: v for k, v in by_id.items() if v.name != name}
            self._partitions = {k: v for k, v in all_partitions.items() if k != name}
            try:
                doomed = topicdir.retire(self._root, name)  # the point of no return
            except BaseException:
                self._configs, self._partitions, self._by_id = configs, all_partitions, by_id
                raise
            for plog in gone:  # no sync for data that is gone: a full disk cannot stop a delete
                plog.abandon(TopicNotFoundError(name))
            faults.point("delete-topic.closed")
            topicdir.remove(self._root, doomed)
            # what is keyed by the name, and last the cached configuration: open finishes
            # these steps for a topic whose directory is gone but which is still cached
            checkpoints.delete_topic(self.catalog, name)
            log_starts.delete_topic(self.catalog, name)
            faults.point("delete-topic.checkpoints-dropped")
            first_error: BaseException | None = None
            for hook in self._delete_hooks:  # bounded by the layers
                try:
                    hook(cfg)
                except Exception as e:  # finish the deletion; raise it after
                    first_error = first_error or e
            faults.point("delete-topic.offsets-dropped")
            if first_error is not None:
                raise first_error
            topic_cache.delete(self.catalog, name)
            faults.point("delete-topic.uncached")

    def topic(self, name: str) -> TopicConfig:
        """The configuration of topic ``name``; ``TopicNotFoundError`` if there is none."""
        self.check_open()
        if not isinstance(name, str):
            raise InvalidTopicError(f"topic name must be a str, got {type(name).__name__}")
        cfg = self._configs.get(name)
        if cfg is None:
            close = difflib.get_close_matches(name, list(self._configs), n=1)
            raise TopicNotFoundError(name, close[0] if close else None)
        return cfg

    def topics(self) -> list[TopicConfig]:
        """Every topic's configuration, sorted by name."""
        self.check_open()
        return [self._configs[k] for k in sorted(self._configs)]

    def find_topic(self, name: str) -> TopicConfig | None:
        """The configuration of topic ``name``, or None: no error, no lock, for hot paths."""
        return self._configs.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicConfig | None:
        """The configuration of the topic whose id is ``topic_id``, or None (a topic deleted, or
        deleted and made again, has another id): no lock, for the Kafka requests that name
        topics by id."""
        if topic_id == NO_TOPIC_ID:
            return None
        return self._by_id.get(topic_id)

    def topic_configs(self) -> Mapping[str, TopicConfig]:
        """Every topic's configuration by name, as of now (do not change it)."""
        return self._configs

    def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """The partition count of each of ``topics`` that exists."""
        configs = self._configs
        return {t: configs[t].partitions for t in topics if t in configs}

    def partition(self, topic: str, partition: object) -> PartitionLog:
        """The storage object of one partition (``storage.partition``), for tools and tests."""
        self.check_open()
        cfg = self.topic(topic)
        return self._partitions[topic][valid_partition(cfg, partition)]

    def partition_path(self, topic: str, partition: int) -> str:
        """The directory of one partition's segment files."""
        return topicdir.partition_dir(self.path, topic, partition)

    # --- appending ---------------------------------------------------------

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
        """Append one record; returns where it landed once it is durable per the mode."""
        started = time.perf_counter()
        if self._closed:
            raise StoreClosedError(self.path)
        if self._refusal is not None:
            self._check_writable()
        cfg = (self._configs.get(topic) if type(topic) is str else None) or self.topic(topic)
        if cfg.streams:
            check_plain_topic(cfg)
        if type(value) is not bytes and value is not None:
            value = as_bytes(value, "value", f"append to topic {topic!r}")
        if key is not None and type(key) is not bytes:
            key = as_bytes(key, "key", f"append to topic {topic!r}")
        if headers is None:
            hdrs: Any = NO_HEADERS
            size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
        else:
            hdrs = check_headers(headers, f"append to topic {topic!r}")
            size = record_size(key, value, hdrs)
        if size > cfg.max_record_bytes:
            check_size(cfg, size, None)
        if partition is None:
            if key is not None:
                partition = partition_for_key(key, cfg.partitions)
            else:
                partition = next(self._round_robin) % cfg.partitions
        elif type(partition) is not int or not 0 <= partition < cfg.partitions:
            valid_partition(cfg, partition)
        if timestamp_ms is not None:
            ts = check_timestamp(timestamp_ms, f"append to topic {topic!r}")
        if timestamp_ms is None or cfg.timestamp_type == LOG_APPEND_TIME:  # the append time
            ts = time.time_ns() // 1_000_000
        if self._replicated:
            self._check_replicas((TopicPartition(topic, partition),))
        plog = self._partitions[topic][partition]
        base = plog.append_one(ts, key, value, hdrs, _attributes(cfg))
        if self._fsync:
            plog.wait_durable(base + 1)
            if self._replicated:
                self._wait_replicas({TopicPartition(topic, partition): base + 1})
        self.timings.append_seconds.observe(time.perf_counter() - started)
        return RecordMetadata(topic, partition, base, ts)

    def append_batch(
        self,
        topic: str,
        items: Iterable[bytes | tuple[bytes | None, bytes | None] | Message | None],
        *,
        partition: int | None = None,
    ) -> Sequence[RecordMetadata]:
        """Append many records: values, ``(key, value)`` pairs or ``Message`` objects.

        Items are grouped by partition; each partition's group is written as one
        atomic batch, and one durability barrier covers the whole call. Returns
        the metadata in input order (a read-only sequence). Invalid input raises
        before anything is written.
        """
        started = time.perf_counter()
        self.check_open()
        self._check_writable()
        cfg = self.topic(topic)
        check_plain_topic(cfg)
        if isinstance(items, (bytes, str, Message)) or not isinstance(items, Iterable):
            raise InvalidArgumentError(
                f"append_batch needs a list of records, got {type(items).__name__}"
            )
        items = items if isinstance(items, list) else list(items)
        if not items:
            return []
        fixed = None if partition is None else valid_partition(cfg, partition)
        groups = group_items(cfg, items, fixed, _now_ms(), self._round_robin)
        partitions = self._partitions[topic]
        attributes = _attributes(cfg)
        if self._replicated:
            self._check_replicas([TopicPartition(topic, g.partition) for g in groups])
        bases = [
            partitions[g.partition].append(g.timestamps, g.keys, g.values, g.headers, g.base_ts, g.max_ts,
                                           attributes)
            for g in groups
        ]
        if self._fsync:
            for g, base in zip(groups, bases, strict=True):
                partitions[g.partition].wait_durable(base + len(g.values))
            if self._replicated:
                self._wait_replicas({TopicPartition(topic, g.partition): base + len(g.values)
                                     for g, base in zip(groups, bases, strict=True)})
        self.timings.append_seconds.observe(time.perf_counter() - started)
        if len(groups) == 1:
            g = groups[0]
            return BatchMetadata(topic, g.partition, bases[0], len(g.values), g.ts_list)
        return _in_input_order(topic, groups, bases, len(items))

    def append_prepared(self, topic: str, partition: int,
                        prepare: Callable[[int], Prepared | None]) -> tuple[int, int]:
        """Append the batch ``prepare(base_offset)`` decides under the partition's write lock.

        For layers that must decide what to write knowing where it lands (the
        stream appends check expected versions there): ``prepare`` may raise
        (nothing is written) or return None (nothing to write); its
        ``on_written`` runs under the lock after the write (see
        ``PartitionLog.append_prepared``). Returns ``(base offset, end offset)``
        once the records are durable per the mode; no validation of the records
        is done here.
        """
        started = time.perf_counter()
        plog = self.partition(topic, partition)
        self._check_writable()
        if self._replicated:
            self._check_replicas((TopicPartition(topic, plog.partition),))
        base, end = plog.append_prepared(prepare)
        if self._fsync and end > base:
            plog.wait_durable(end)
            if self._replicated:
                self._wait_replicas({TopicPartition(topic, plog.partition): end})
        self.timings.append_seconds.observe(time.perf_counter() - started)
        return base, end

    def append_encoded(self, topic: str, partition: int, batch: bytes | bytearray | memoryview, *,
                       replica: bool = False) -> tuple[int, int]:
        """Append one batch already encoded in the native format (docs/format.md, section 2).

        What a network Produce handler and a replica fetcher call. The batch is
        checked as untrusted bytes before anything is written: framing, checksum,
        record count, offsets, timestamps, each record's size against the
        topic's ``max_record_bytes``; a streams topic refuses it (only the stream
        API writes there). The log assigns the offsets: a batch whose base
        offset is not the partition's end is re-encoded at the end (its
        checksum covers the offsets). With ``replica`` the batch must start
        exactly at the end instead, and is stored byte for byte. Kafka
        RecordBatch v2 (magic 2) is refused. Returns ``(base offset, end
        offset)`` once the records are durable per the mode.
        """
        started = time.perf_counter()
        self.check_open()
        if not replica:
            self._check_writable()
        cfg = self.topic(topic)
        check_plain_topic(cfg)
        p = valid_partition(cfg, partition)
        data, info, records = check_encoded_batch(cfg, batch)
        plog = self._partitions[topic][p]
        if replica:
            end = plog.append_replica(data)
            if self._fsync:
                plog.wait_durable(end)
            return info.base_offset, end

        def rebase(base: int, epoch: int) -> bytes | bytearray:
            rows = [(base + i, r.timestamp_ms, r.key, r.value, r.headers) for i, r in enumerate(records)]
            marked = records[0].timestamp_type == Record.TIMESTAMP_LOG_APPEND_TIME  # the mark is kept
            return fmt.encode_batch(base, rows, records[0].timestamp_ms, info.max_timestamp,
                                    fmt.LOG_APPEND_TIME if marked else 0, epoch)

        if self._replicated:
            self._check_replicas((TopicPartition(topic, p),))
        base = plog.append_encoded(data, info.base_offset, info.record_count, records[0].timestamp_ms,
                                   info.max_timestamp, rebase)
        end = base + info.record_count
        if self._fsync:
            plog.wait_durable(end)
            if self._replicated:
                self._wait_replicas({TopicPartition(topic, p): end})
        self.timings.append_seconds.observe(time.perf_counter() - started)
        return base, end

    def append_kafka(self, topic: str, partition: int, batch: bytes | bytearray | memoryview, *,
                     durable: bool = True) -> KafkaAppendResult:
        """Append one Kafka RecordBatch v2 as it was produced (docs/format.md, section 17).

        The batch is checked before anything is written (rules K1-K5: framing,
        magic, CRC-32C, header, every record decoded once); a streams topic
        refuses it (``StreamsTopicError``: its records would be no event
        envelopes). Under the partition's write lock an idempotent producer's
        sequence is checked (section 19): a retried batch is answered with the
        offset it was first written at and nothing is written. Only the base
        offset and the leader epoch, both outside the CRC, are written into the
        batch; it is never re-encoded or recompressed.

        Returns once the batch is durable per the mode, or at once with
        ``durable=False``: the caller then ends with ``barrier`` over every
        partition it appended to, so one Produce shares its waits.
        """
        started = time.perf_counter()
        self.check_open()
        self._check_writable()
        cfg = self.topic(topic)
        check_plain_topic(cfg)
        p = valid_partition(cfg, partition)
        data, header = check_kafka_batch(cfg, batch)
        plog = self._partitions[topic][p]
        append_time = _now_ms() if cfg.timestamp_type == LOG_APPEND_TIME else None
        if durable and self._replicated:
            self._check_replicas((TopicPartition(topic, p),))
        base, duplicate = plog.append_kafka(data, header, append_time)
        if durable and self._fsync:
            plog.wait_durable(base + header.record_count)
            if self._replicated:
                self._wait_replicas({TopicPartition(topic, p): base + header.record_count})
        append_time_ms = -1 if append_time is None or duplicate else append_time
        self.timings.append_seconds.observe(time.perf_counter() - started)
        return KafkaAppendResult(base, header.record_count, append_time_ms, plog.offsets()[0], duplicate)

    def allocate_producer_id(self) -> int:
        """A Kafka producer id never handed out before by this store, durably (InitProducerId;
        docs/format.md, section 19)."""
        self.check_open()
        return producer_ids.allocate(self.catalog)

    def describe_producers(self, topic: str, partition: int) -> list[tuple[int, int, int, int]]:
        """``(producer_id, epoch, last_sequence, last_timestamp)`` of each idempotent producer
        the partition knows, by producer id (docs/format.md, section 19)."""
        return self.partition(topic, partition).describe_producers()

    def barrier(self, ends: Mapping[TopicPartition, int]) -> None:
        """Return once, in each partition of ``ends``, every record before its end offset is
        fsynced, whatever the durability mode.

        Concurrent callers share each ``fdatasync`` (group commit). Appends end
        with this barrier in ``fsync`` mode; in the others, a caller that needs
        its records on disk now (a transaction before its outbox entry goes, a
        replica before it acknowledges) calls it.
        """
        failed = self.wait_durable_each(ends)
        if failed:
            raise next(iter(failed.values()))

    def wait_durable_each(self, ends: Mapping[TopicPartition, int]) -> dict[TopicPartition, EventStoreError]:
        """``barrier`` that tells each partition's outcome: the partitions whose wait failed
        (a failed fsync, a deleted topic), each with its error; the others are durable.

        The partitions are waited for at once, one worker thread each but the first
        (which this thread waits for), so a Produce over N partitions costs the
        slowest fsync, not N of them in a row; each wait still joins the group
        commit of its partition.
        """
        waits: list[tuple[TopicPartition, PartitionLog, int]] = []
        failed: dict[TopicPartition, EventStoreError] = {}
        for tp, end in ends.items():  # bounded by the caller's partitions
            try:
                plog = self.partition(tp.topic, tp.partition)
            except EventStoreError as e:
                failed[tp] = e
                continue
            if not plog.is_durable(end):
                waits.append((tp, plog, end))
        others = [(tp, self._waiters().submit(plog.wait_durable, end)) for tp, plog, end in waits[1:]]
        if waits:
            tp, plog, end = waits[0]
            try:
                plog.wait_durable(end)
            except EventStoreError as e:
                failed[tp] = e
        for tp, future in others:  # bounded by the caller's partitions
            error = future.exception()
            if isinstance(error, EventStoreError):
                failed[tp] = error
            elif error is not None:
                raise error
        return failed

    def _waiters(self) -> concurrent.futures.ThreadPoolExecutor:
        """The threads that wait for the fsyncs of a barrier's partitions but the first."""
        pool = self._wait_pool
        if pool is None:
            with self._lock:
                if self._wait_pool is None:
                    self._wait_pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=_WAIT_THREADS, thread_name_prefix=f"eventstore-wait:{self.path}")
                pool = self._wait_pool
        return pool

    # --- replication (docs/replication.md) ----------------------------------

    def set_replication(self, waiter: ReplicationWaiter | None) -> None:
        """Register the waiter appends in ``"replicated"`` durability go through (None: none;
        such appends then raise ``NotEnoughReplicasError`` before writing)."""
        self._replication = waiter

    def set_writable(self, writable: bool, reason: str = "") -> None:
        """Accept local writes (``True``) or refuse them with ``NotLeaderError`` saying
        ``reason`` (a follower, a fenced leader: a local write would fork the leader's
        history; docs/replication.md, section 4).

        Refused: ``append``, ``append_batch``, ``append_prepared`` (the stream and DCB
        appends), ``append_encoded`` (but with ``replica``), ``append_kafka``,
        ``create_topic``, ``alter_topic``, ``delete_topic``, ``delete_records``. Never
        refused: what copies the leader (``append_replica``, ``truncate``,
        ``reset_partition``, ``adopt_topic``), and within ``replica_writes`` the calling
        thread's topic changes and ``delete_records`` (the leader's catalog applied)."""
        if not writable and not (isinstance(reason, str) and reason):
            raise InvalidArgumentError("refusing local writes needs a reason (a non-empty str)")
        self._refusal = None if writable else reason

    @property
    def writable(self) -> bool:
        """Whether local writes are accepted (``set_writable``)."""
        return self._refusal is None

    @contextlib.contextmanager
    def replica_writes(self) -> Iterator[None]:
        """Within it, the calling thread's writes pass ``set_writable(False)``: for a follower
        applying what its leader did (topics, log starts), never for local writes."""
        outer = getattr(self._replica_thread, "active", False)
        self._replica_thread.active = True
        try:
            yield
        finally:
            self._replica_thread.active = outer

    def _check_writable(self) -> None:
        refusal = self._refusal
        if refusal is not None and not getattr(self._replica_thread, "active", False):
            raise NotLeaderError(f"{self.path}: local writes are refused ({refusal}); write to the leader")

    def _check_replicas(self, partitions: Iterable[TopicPartition]) -> None:
        waiter = self._replication
        if waiter is None:
            raise NotEnoughReplicasError(
                f"durability 'replicated' needs the store served with followers "
                f"({self.path}: no replication registered); nothing was written")
        waiter.check(partitions)

    def _wait_replicas(self, ends: Mapping[TopicPartition, int]) -> None:
        waiter = self._replication
        if waiter is None:
            raise NotEnoughReplicasError(
                "the records are written but not known replicated: replication stopped")
        waiter.wait(ends)

    @property
    def leader_epoch(self) -> int:
        """The leader epoch stamped into new batches: at open the largest last epoch of the
        partitions' epoch files (0 if none)."""
        return self._leader_epoch

    def set_leader_epoch(self, epoch: int) -> None:
        """Raise the leader epoch (a promotion); each partition notes it in its epoch file
        before its first batch of it. A lower epoch raises ``InvalidArgumentError``."""
        if type(epoch) is not int or not 0 <= epoch <= 0x7FFFFFFF:
            raise InvalidArgumentError(f"leader epoch must be an int in 0..2**31-1, got {epoch!r}")
        with self._lock:
            self.check_open()
            if epoch < self._leader_epoch:
                raise InvalidArgumentError(
                    f"leader epoch {epoch} is below the current one, {self._leader_epoch}")
            self._leader_epoch = epoch
            for partitions in self._partitions.values():
                for plog in partitions:
                    plog.set_leader_epoch(epoch)

    def last_epoch(self, topic: str, partition: int) -> int:
        """The last epoch of the partition's epoch file (-1 if it has none)."""
        return self.partition(topic, partition).epochs.last_epoch

    def epoch_end_offset(self, topic: str, partition: int, epoch: int) -> tuple[int, int]:
        """(the largest epoch ≤ ``epoch`` in the partition's epoch file, the offset where it
        ended: the next entry's start, or the written end for the last); (-1, -1) if none
        (Kafka's OffsetForLeaderEpoch; docs/replication.md, 1.1)."""
        return self.partition(topic, partition).epoch_end_offset(epoch)

    def log_end(self, topic: str, partition: int) -> int:
        """The partition's local durable end (fsync mode: fsynced; the written end in modes
        ``interval`` and ``none``): a leader's own position, whatever the high watermark."""
        return self.partition(topic, partition).log_end()

    def append_replica(self, topic: str, partition: int, data: bytes | bytearray | memoryview) -> int:
        """Write a leader's stored batches (either kind, one or more, the first starting at the
        partition's written end) byte for byte at the same offsets; returns the new written
        end, not waited durable (``wait_durable_each`` is the follower's barrier).

        Every batch is checked first (framing, checksum or CRC, contiguous offsets, epochs
        never going back); any mismatch raises ``InvalidArgumentError`` or
        ``CorruptRecordError`` with nothing written. Streams topics take them too.
        """
        plog = self.partition(topic, partition)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"replica data must be bytes, got {type(data).__name__}")
        return plog.append_replica(data)

    def read_replica(self, topic: str, partition: int, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """``read_batches`` up to the durable end rather than the high watermark: what a
        leader serves a follower's fetch."""
        plog = self.partition(topic, partition)
        if type(offset) is not int:
            raise InvalidArgumentError(f"offset must be an int, got {type(offset).__name__}")
        if type(max_bytes) is not int or max_bytes < 1:
            raise InvalidArgumentError(f"max_bytes must be a positive int, got {max_bytes!r}")
        return plog.read_batches(offset, max_bytes, to_log_end=True)

    def truncate(self, topic: str, partition: int, offset: int) -> int:
        """Cut the partition so that it ends at ``offset`` rounded down to a batch boundary;
        returns the new end (the end itself if ``offset`` is at or past it). Below the log
        start: ``InvalidArgumentError``. Crash-safe (docs/format.md, "Truncation and reset"):
        epoch-file entries from the new end on go, producers' state, indexes and checkpoint
        follow; the visible end and high watermark come down to it."""
        plog = self.partition(topic, partition)
        check_int64(offset, "offset")
        return plog.truncate(offset)

    def reset_partition(self, topic: str, partition: int, start_offset: int) -> None:
        """Delete every segment of the partition and restart it empty at ``start_offset``
        (log start = end = ``start_offset``); crash-safe. For a follower whose leader
        deleted what it still lacked."""
        plog = self.partition(topic, partition)
        check_int64(start_offset, "start_offset")
        plog.reset(start_offset)

    def enable_high_watermark(self, from_start: bool = False) -> None:
        """From now on every partition's visible end (reads, fetches, ``offsets``,
        subscriptions, ``watch``) is min(durable end, high watermark); each high watermark
        starts at the visible end, or at the log start with ``from_start`` (a follower: what
        it holds may be a tail its leader lacks, until the leader's high watermark covers
        it). Partitions of topics created later are gated too."""
        with self._lock:
            self.check_open()
            self._gated = True
            for partitions in self._partitions.values():
                for plog in partitions:
                    plog.enable_high_watermark(from_start)

    def set_high_watermark(self, topic: str, partition: int, offset: int) -> None:
        """Raise the partition's high watermark (a lower one is ignored); readers and
        watchers wake when its visible end moves."""
        self.partition(topic, partition).set_high_watermark(offset)

    def high_watermark(self, topic: str, partition: int) -> int:
        """The partition's visible end: its high watermark once gated, else its durable end."""
        return self.partition(topic, partition).offsets()[1]

    def watch_log_end(self, partitions: Iterable[TopicPartition], callback: Callable[[], object]) -> Watch:
        """``watch`` for the durable end (``log_end``) instead of the visible end: the leader's
        replica long-poll and its high-watermark recomputation. ``callback`` may also run
        when only the visible end moved."""
        plogs = [self.partition(tp.topic, tp.partition) for tp in partitions]
        cancels: list[Callable[[], object]] = []
        for plog in plogs:  # bounded by the caller's partitions
            cancels.append(functools.partial(plog.remove_listener, plog.add_end_listener(callback)))
        return Watch(cancels)

    # --- reading -----------------------------------------------------------

    def read(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_bytes: int | None = None,
    ) -> list[Record]:
        """Records of one partition from ``offset`` on, at most ``max_records``.

        ``max_bytes`` bounds the bytes read (the first batch is returned whole,
        so progress is always made). Reading at the end offset returns ``[]``;
        below the log start or past the end raises ``OffsetOutOfRangeError``.
        """
        plog = self.partition(topic, partition)
        if type(offset) is not int:
            raise InvalidArgumentError(f"offset must be an int, got {type(offset).__name__}")
        if type(max_records) is not int or max_records < 1:
            raise InvalidArgumentError(f"max_records must be a positive int, got {max_records!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise InvalidArgumentError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        return plog.read(offset, max_records, max_bytes)

    def fetch(self, topic: str, partition: int, offset: int, max_records: int) -> tuple[list[Record], int]:
        """Records from ``offset`` in whole batches, and the bytes of those batches: at least
        ``max_records`` records if there are as many, the last batch not cut (a consumer's
        fetch buffer keeps the rest, so no batch is decoded twice). Arguments are not checked:
        for clients that check their own."""
        return self.partition(topic, partition).read_sized(offset, max_records, None, whole_batches=True)

    def read_batches(self, topic: str, partition: int, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """The stored batches from the one holding ``offset``, byte for byte, and the offset
        after the last of them: what a Fetch serves without decoding anything.

        At most ``max_bytes`` (but the first batch whole, so a reader always
        makes progress); each batch's checksum is verified. The first batch may
        start before ``offset``. At the end offset: ``(b"", end)``.
        """
        plog = self.partition(topic, partition)
        if type(offset) is not int:
            raise InvalidArgumentError(f"offset must be an int, got {type(offset).__name__}")
        if type(max_bytes) is not int or max_bytes < 1:
            raise InvalidArgumentError(f"max_bytes must be a positive int, got {max_bytes!r}")
        return plog.read_batches(offset, max_bytes)

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, end offset): the first readable offset and the next to be written."""
        return self.partition(topic, partition).offsets()

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        """The first offset whose timestamp is ≥ ``timestamp_ms``, or None if there is none."""
        plog = self.partition(topic, partition)
        check_timestamp(timestamp_ms, f"offset_for_time on topic {topic!r}")
        return plog.offset_for_time(timestamp_ms)

    def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        """Block until the partition's end offset passes ``offset`` (True) or the timeout (False)."""
        timeout_s = check_wait(offset, timeout_s)
        return self.partition(topic, partition).wait_for(offset, timeout_s)

    def watch(self, partitions: Iterable[TopicPartition], callback: Callable[[], object]) -> Watch:
        """Call ``callback()`` whenever records become visible in any of ``partitions``, until
        the returned ``Watch`` is cancelled.

        The callback runs in the appending thread, inside the append: it must
        only set a flag or schedule a wake-up, never block. A partition that
        does not exist raises (``TopicNotFoundError``, ``PartitionNotFoundError``)
        and nothing is watched. A deleted topic's partitions simply stop
        calling.
        """
        plogs = [self.partition(tp.topic, tp.partition) for tp in partitions]
        cancels: list[Callable[[], object]] = []
        for plog in plogs:  # bounded by the caller's partitions
            cancels.append(functools.partial(plog.remove_listener, plog.add_listener(callback)))
        return Watch(cancels)

    # --- maintenance -------------------------------------------------------

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Delete the records of one partition below ``before_offset`` (Kafka's DeleteRecords);
        returns the new log start offset: ``before_offset`` exactly.

        The log start is recorded durably first (docs/format.md, section 10); from then on
        ``offsets``, reads and fetches start there. Every segment whose records are all
        below it is deleted (the active one is rolled first when ``before_offset`` is the
        end offset); the records of a segment that also holds later ones stay on disk,
        unread, until retention or a later call removes that segment. An offset outside
        log start .. end raises ``OffsetOutOfRangeError``.
        """
        plog = self.partition(topic, partition)
        self._check_writable()
        if type(before_offset) is not int:
            raise InvalidArgumentError(f"before_offset must be an int, got {type(before_offset).__name__}")
        start, end = plog.offsets()
        if not start <= before_offset <= end:
            raise OffsetOutOfRangeError(topic, partition, before_offset, start, end)
        plog.delete_before(before_offset)
        return plog.offsets()[0]

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply every topic's retention now; returns the number of segments deleted."""
        self.check_open()
        check_int64(now_ms, "now_ms (ms since the epoch)", optional=True)
        return sum(r.segments for r in self.retention(now_ms=now_ms))

    def retention(self, topics: Iterable[str] | None = None, *, now_ms: int | None = None,
                  dry_run: bool = False,
                  on_progress: Callable[[RetentionResult], object] | None = None) -> list[RetentionResult]:
        """Apply retention now to ``topics`` (default: all) and report, per partition with
        something to remove, the segments, records and bytes removed.

        Retention also runs at every roll; this is for limits just lowered, or a
        topic that no longer receives appends. ``dry_run`` removes nothing and
        reports what would go. ``on_progress`` is called after each partition.
        """
        self.check_open()
        check_int64(now_ms, "now_ms (ms since the epoch)", optional=True)
        if isinstance(topics, str):
            raise InvalidArgumentError("topics must be a list of topic names, not one str")
        names = sorted(self._partitions) if topics is None else [self.topic(t).name for t in topics]
        out = []
        for name in names:
            for plog in list(self._partitions.get(name, ())):
                gone = plog.enforce_retention(now_ms, dry_run)
                start = plog.offsets()[0]
                new_start = gone[-1].next_offset if gone else start
                result = RetentionResult(
                    topic=name, partition=plog.partition, segments=len(gone),
                    records=(new_start - gone[0].base_offset) if gone else 0,
                    bytes=sum(s.size for s in gone), log_start_offset=new_start)
                if on_progress is not None:
                    on_progress(result)
                if gone:
                    out.append(result)
        return out

    def check(self, on_progress: Callable[[int], object] | None = None) -> CheckReport:
        """Read every byte of every partition and verify it; returns what was found.

        ``on_progress(nbytes)`` is called after each partition with the bytes it
        held, for a progress bar over ``statistics().size_bytes``. The check
        hooks of the layers above run on each partition that checked clean.
        """
        self.check_open()
        report = CheckReport()
        for partitions in list(self._partitions.values()):
            for plog in partitions:
                problems = len(report.problems)
                check_partition(plog, report)
                if len(report.problems) == problems:
                    for hook in self._check_hooks:  # bounded by the layers
                        hook(plog.config, plog.partition, report)
                if on_progress is not None:
                    on_progress(plog.size_bytes())
        return report

    def statistics(self) -> StoreStatistics:
        """A frozen snapshot of sizes, offsets and counters."""
        self.check_open()
        parts = []
        for name in sorted(self._partitions):
            for plog in self._partitions[name]:
                start, end = plog.offsets()
                segments = plog.segments()
                max_ts = plog.max_timestamp()
                parts.append(PartitionStatistics(
                    topic=name, partition=plog.partition, log_start_offset=start, end_offset=end,
                    size_bytes=sum(s.size for s in segments), segments=len(segments),
                    max_timestamp_ms=max_ts if max_ts >= 0 else None,
                ))
        all_logs = [plog for partitions in self._partitions.values() for plog in partitions]
        return StoreStatistics(
            path=self.path, durability=self.durability, topics=len(self._configs),
            partitions=len(parts), records=sum(p.end_offset - p.log_start_offset for p in parts),
            size_bytes=sum(p.size_bytes for p in parts),
            appended_batches=sum(p.appended_batches for p in all_logs),
            appended_records=sum(p.appended_total for p in all_logs),
            fsyncs=sum(p.fsyncs for p in all_logs), partition_stats=parts,
        )


#: The settings of a topic that ``create_topic`` takes (``adopt_topic`` checks them the same way).
_TOPIC_SETTINGS = ("partitions", "retention_ms", "retention_bytes", "segment_bytes", "segment_ms",
                   "max_record_bytes", "streams", "timestamp_type")


def _in_input_order(topic: str, groups: list[Group], bases: list[int], count: int) -> list[Any]:
    out: list[Any] = [None] * count
    for g, base in zip(groups, bases, strict=True):
        metas = BatchMetadata(topic, g.partition, base, len(g.values), g.ts_list)
        for i, meta in zip(g.indexes, metas, strict=True):
            out[i] = meta
    return out


def _new_topic_id() -> uuid.UUID:
    """A new topic's id: 16 random bytes (a version-4 UUID, as Kafka makes them)."""
    return uuid.uuid4()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _attributes(cfg: TopicConfig) -> int:
    """A native batch's attributes in this topic: marked LogAppendTime in such a topic, so
    that its records read as such even once the topic's setting changes (format.md 5)."""
    return fmt.LOG_APPEND_TIME if cfg.timestamp_type == LOG_APPEND_TIME else 0


def holds_store(path: str) -> bool:
    """Whether ``path`` holds a store: the ``catalog`` and ``topics`` directories ``open`` makes."""
    return os.path.isdir(os.path.join(path, "catalog")) and os.path.isdir(topicdir.topics_root(path))
