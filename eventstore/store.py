"""The embedded store: composes the log engine (``storage``) and the LMDB catalog.

``open()`` locks the directory, recovers every partition and returns a
:class:`Store`. All methods are thread-safe.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

import msgspec

from .catalog import Catalog
from .catalog import keys as ck
from .errors import (
    CorruptionError,
    EventStoreError,
    InvalidArgumentError,
    InvalidTopicError,
    StoreClosedError,
    StoreNotFoundError,
    TopicExistsError,
    TopicNotFoundError,
)
from .partitioner import partition_for_key
from .records import (
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
from .sourcing.events import AppendResult, NewEvent, RecordedEvent, StreamMetadata, StreamState
from .storage import faults, topicdir
from .storage.check import CheckProblem, CheckReport, check_partition
from .storage.lock import DirectoryLock
from .storage.names import is_valid_topic_name
from .storage.partition import PartitionLog
from .storage.recovery import Checkpoint
from .validation import (
    NO_HEADERS,
    as_bytes,
    check_headers,
    check_int64,
    check_plain_topic,
    check_size,
    check_timestamp,
    check_wait,
    normalize_item,
    record_size,
)
from .validation import (
    check_partition as valid_partition,
)

if TYPE_CHECKING:
    from .client.consumer import Consumer
    from .client.coordinator import Coordinator, GroupDescription
    from .client.producer import Producer
    from .sourcing.streams import Streams
    from .sourcing.subscriptions import Subscription
    from .transactions import Transaction

log = logging.getLogger("eventstore")

DEFAULT_PATH = "./es-data"
DEFAULT_MAX_RECORDS = 500
DURABILITY_MODES = ("fsync", "interval", "none")
FSYNC_INTERVAL_MS_MAX = 2**31 - 1  # Kafka's bound for its millisecond settings (about 24 days)
_UNSET: Any = object()


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
    cache only). docs/format.md, section 11, gives each mode's loss window.
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


def holds_store(path: str) -> bool:
    """Whether ``path`` holds a store: the ``catalog`` and ``topics`` directories ``open`` makes."""
    return os.path.isdir(os.path.join(path, "catalog")) and os.path.isdir(topicdir.topics_root(path))


class Store:
    """An open store. Use ``eventstore.open()`` to get one; close it (or use ``with``)."""

    def __init__(self, path: str, durability: Durability, fsync_interval_ms: int,
                 stream_partitions: int = 4) -> None:
        self.path = path
        self.durability: Durability = durability
        self.fsync_interval_ms = fsync_interval_ms
        self.recovery_events: list[RecoveryEvent] = []
        self._lock = threading.RLock()
        self._closed = False
        self._configs: dict[str, TopicConfig] = {}
        self._logs: dict[str, list[PartitionLog]] = {}
        self._round_robin = itertools.count()
        self._group_coordinator: Coordinator | None = None
        self._stream_store: Streams | None = None
        self.stream_partitions = stream_partitions
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            from .errors import StorageError

            raise StorageError(path, f"cannot create store directory: {e.strerror}") from e
        self._dir_lock = DirectoryLock(path)
        self._dir_lock.acquire()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        try:
            self._catalog = Catalog(os.path.join(path, "catalog"))
            self._root = topicdir.topics_root(path)
            os.makedirs(self._root, exist_ok=True)
            gone = self._load_topics()
            from . import transactions

            self._relays = transactions.recover(self)
            if any(cfg.streams for cfg in self._configs.values()):
                self._streams()  # brings the stream index up to date with the log
            self._forget_gone_topics(gone)
        except BaseException:
            self._abandon()
            raise
        if durability == "interval":
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"eventstore-fsync:{path}", daemon=True
            )
            self._flusher.start()

    # --- open / close ------------------------------------------------------

    def _load_topics(self) -> dict[str, bytes]:
        """Load every topic; returns the cached configurations of topics that are gone."""
        for name in topicdir.sweep_transient(self._root):
            self._report(RecoveryEvent(case="R7", path=os.path.join(self._root, name), position=0,
                                       detail="removed an unfinished topic creation or deletion"))
        configs = topicdir.load_configs(self._root)
        cached = {k.decode(): v for k, v in self._catalog.items(ck.DB_TOPICS)}
        for name, cfg in configs.items():
            encoded = msgspec.msgpack.encode(cfg)
            if cached.get(name) != encoded:
                self._catalog.put(ck.DB_TOPICS, ck.topic_key(name), encoded)
        for name, cfg in configs.items():
            self._configs[name] = cfg
            self._logs[name] = self._open_partitions(cfg, range(cfg.partitions))
        return {name: raw for name, raw in cached.items() if name not in configs}

    def _forget_gone_topics(self, gone: dict[str, bytes]) -> None:
        """Drop what is keyed by the name of a topic that is gone (a deletion cut short, or a
        store written before deletions dropped it all): its stream index entries, checkpoints
        and group offsets, then its cached configuration, last: while that is there, a
        deletion is still to be finished (docs/format.md, section 6)."""
        from .catalog import cursors

        for name, raw in gone.items():
            try:
                streams = msgspec.msgpack.decode(raw, type=TopicConfig).streams
            except (msgspec.DecodeError, msgspec.ValidationError):
                streams = os.path.isdir(self._index_path())
            if streams:
                self._streams().index.drop_topic(name)
        checkpointed = {ck.parse_partition_key(k)[0] for k, _ in self._catalog.items(ck.DB_CHECKPOINTS)}
        for name in sorted(checkpointed - set(self._configs)):
            self._catalog.delete_prefix(ck.DB_CHECKPOINTS, ck.topic_prefix(name))
        cursors.drop_gone(self._catalog, self._configs)
        for name in gone:
            self._catalog.delete(ck.DB_TOPICS, ck.topic_key(name))

    def _open_partitions(self, cfg: TopicConfig, partitions: range) -> list[PartitionLog]:
        """Open (recover) these partitions of a topic; if one fails, those opened are closed."""
        logs: list[PartitionLog] = []
        try:
            for p in partitions:  # bounded by the topic's partitions
                logs.append(self._open_partition(cfg, p))
        except BaseException:
            for plog in logs:
                plog.abandon()
            raise
        return logs

    def _open_partition(self, cfg: TopicConfig, p: int) -> PartitionLog:
        directory = topicdir.partition_dir(self.path, cfg.name, p)
        os.makedirs(directory, exist_ok=True)
        key = ck.partition_key(cfg.name, p)
        raw = self._catalog.get(ck.DB_CHECKPOINTS, key)
        cp = None
        if raw is not None:
            try:
                cp = msgspec.msgpack.decode(raw, type=Checkpoint)
            except (msgspec.DecodeError, msgspec.ValidationError):
                cp = None  # derived data: recover from the start of the last segment

        def save(checkpoint: Checkpoint) -> None:
            self._catalog.put(ck.DB_CHECKPOINTS, key, msgspec.msgpack.encode(checkpoint))

        return PartitionLog(directory, cfg.name, p, cfg, self.durability, cp, self._report, save)

    def _report(self, event: RecoveryEvent) -> None:
        self.recovery_events.append(event)
        log.warning("recovery %s: %s at %s:%d", event.case, event.detail, event.path, event.position)

    def close(self) -> None:
        """Fsync everything, write checkpoints and release the lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self._relays.join()  # a pending relay stays in the outbox for the next open
        first_error: BaseException | None = None
        try:
            if self._stream_store is not None:
                self._stream_store.close()
        except Exception as e:  # keep closing the rest
            first_error = e
        for logs in self._logs.values():
            for plog in logs:
                try:
                    plog.close()
                except Exception as e:  # every partition gets closed; the first error is raised
                    first_error = first_error or e
        self._release()
        if first_error is not None:
            raise first_error

    def _release(self) -> None:
        catalog = getattr(self, "_catalog", None)
        if catalog is not None:
            catalog.close()
        self._dir_lock.release()

    def _abandon(self) -> None:
        """After a failed open: close every file the open had opened, without syncing."""
        self._stop.set()
        relays = getattr(self, "_relays", None)
        if relays is not None:
            relays.join()
        if self._stream_store is not None:
            self._stream_store.index.abandon()
        else:
            from .sourcing import index

            index.abandon(self._index_path())  # an index whose Streams never came to be
        for logs in self._logs.values():
            for plog in logs:
                plog.abandon()
        self._release()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.durability
        return f"<eventstore.Store {self.path!r} ({state})>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(self.path)

    def _flush_loop(self) -> None:
        interval_s = self.fsync_interval_ms / 1000
        while not self._stop.wait(interval_s):  # ends when the store closes
            try:
                self._sync_all()
            except Exception:  # keep flushing; the error is logged
                log.exception("background fsync failed")

    def _sync_all(self) -> None:
        for logs in list(self._logs.values()):
            for plog in logs:
                plog.wait_durable(plog.end_written)

    def flush(self) -> None:
        """Make everything appended so far durable and checkpoint every partition.

        Transactions committed whose relay failed are relayed first; if one
        still cannot be, ``TransactionRelayPendingError`` says which.
        """
        self._check_open()
        self._relays.retry()
        for logs in list(self._logs.values()):
            for plog in logs:
                plog.checkpoint()

    # --- topics ------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = _UNSET,
        *,
        retention_ms: int | None = _UNSET,
        retention_bytes: int | None = _UNSET,
        segment_bytes: int = _UNSET,
        segment_ms: int = _UNSET,
        max_record_bytes: int = _UNSET,
        exist_ok: bool = False,
        streams: bool = _UNSET,
    ) -> TopicConfig:
        """Create a topic; ``TopicExistsError`` if it exists (unless ``exist_ok``).

        A setting not given takes its default: 1 partition, no retention limits,
        ``segment_bytes`` 128 MiB, ``segment_ms`` 7 days, ``max_record_bytes``
        1 MiB, not a streams topic. With ``exist_ok`` an existing topic is
        returned as it is when every setting given matches it; one that differs
        raises ``TopicExistsError`` naming the differences (``alter_topic``
        changes a topic).
        """
        self._check_open()
        if not is_valid_topic_name(name):
            raise InvalidTopicError(
                f"invalid topic name {name!r}: use 1-249 of [A-Za-z0-9._-], not '.' or '..'"
            )
        given = {"partitions": partitions, "retention_ms": retention_ms, "retention_bytes": retention_bytes,
                 "segment_bytes": segment_bytes, "segment_ms": segment_ms,
                 "max_record_bytes": max_record_bytes, "streams": streams}
        asked = _topic_settings({k: v for k, v in given.items() if v is not _UNSET})
        cfg = TopicConfig(name=name, created_ms=_now_ms(), **{"partitions": 1, **asked})
        with self._lock:
            self._check_open()
            existing = self._configs.get(name)
            if existing is not None:
                differences = {k: (getattr(existing, k), v) for k, v in asked.items()
                               if getattr(existing, k) != v}
                if exist_ok and not differences:
                    return existing
                raise TopicExistsError(name, differences if exist_ok else None)
            topicdir.create(self._root, cfg)
            try:
                self._catalog.put(ck.DB_TOPICS, ck.topic_key(name), msgspec.msgpack.encode(cfg))
                faults.point("create-topic.cached")
                logs = self._open_partitions(cfg, range(cfg.partitions))
                faults.point("create-topic.opened")
            except BaseException:
                self._unmake_topic(name)
                raise
            self._configs = {**self._configs, name: cfg}
            self._logs = {**self._logs, name: logs}
        return cfg

    def _unmake_topic(self, name: str) -> None:
        """Take back a topic whose creation failed half-way, step by step (best effort: the
        disk may be full; what is left is an empty topic, or entries open drops)."""
        steps: list[Callable[[], object]] = [
            lambda: topicdir.delete(self._root, name),
            lambda: self._catalog.delete(ck.DB_TOPICS, ck.topic_key(name)),
            lambda: self._catalog.delete_prefix(ck.DB_CHECKPOINTS, ck.topic_prefix(name)),
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
        partitions: int = _UNSET,
        retention_ms: int | None = _UNSET,
        retention_bytes: int | None = _UNSET,
        segment_bytes: int = _UNSET,
        segment_ms: int = _UNSET,
        max_record_bytes: int = _UNSET,
    ) -> TopicConfig:
        """Change a topic's configuration; partitions can only grow (as in Kafka)."""
        self._check_open()
        with self._lock:
            old = self.topic(name)
            changes: dict[str, Any] = {}
            if partitions is not _UNSET:
                changes["partitions"] = _positive(partitions, "partitions", old.partitions, 100_000)
            if retention_ms is not _UNSET:
                changes["retention_ms"] = _optional_positive(retention_ms, "retention_ms")
            if retention_bytes is not _UNSET:
                changes["retention_bytes"] = _optional_positive(retention_bytes, "retention_bytes")
            if segment_bytes is not _UNSET:
                changes["segment_bytes"] = _positive(segment_bytes, "segment_bytes", 1024, 0x7FFFFFFF)
            if segment_ms is not _UNSET:
                changes["segment_ms"] = _positive(segment_ms, "segment_ms", 1, 2**62)
            if max_record_bytes is not _UNSET:
                changes["max_record_bytes"] = _positive(
                    max_record_bytes, "max_record_bytes", 1, 0x7FFFFFFF - 1024
                )
            cfg = msgspec.structs.replace(old, **changes)
            directory = os.path.join(self._root, name)
            if cfg.partitions > old.partitions:
                topicdir.add_partitions(self._root, cfg, old.partitions)
            else:
                topicdir.write_config(directory, cfg)
            self._catalog.put(ck.DB_TOPICS, ck.topic_key(name), msgspec.msgpack.encode(cfg))
            logs = list(self._logs[name])
            for plog in logs:
                plog.config = cfg
            logs += self._open_partitions(cfg, range(old.partitions, cfg.partitions))
            self._configs = {**self._configs, name: cfg}
            self._logs = {**self._logs, name: logs}
        return cfg

    def delete_topic(self, name: str) -> None:
        """Delete a topic and all its data."""
        self._check_open()
        with self._lock:
            cfg = self.topic(name)
            configs, all_logs, logs = self._configs, self._logs, self._logs[name]
            self._configs = {k: v for k, v in configs.items() if k != name}
            self._logs = {k: v for k, v in all_logs.items() if k != name}
            try:
                doomed = topicdir.retire(self._root, name)  # the point of no return
            except BaseException:
                self._configs, self._logs = configs, all_logs  # nothing was deleted
                raise
            for plog in logs:  # no sync for data that is gone: a full disk cannot stop a delete
                plog.abandon(TopicNotFoundError(name))
            if cfg.streams:
                streams = self._streams()
                streams.flush()
                streams.index.drop_topic(name)
            faults.point("delete-topic.closed")
            topicdir.remove(self._root, doomed)
            # what is keyed by the name, and last the cached configuration: open finishes
            # these steps for a topic whose directory is gone but which is still cached
            self._catalog.delete_prefix(ck.DB_CHECKPOINTS, ck.topic_prefix(name))
            faults.point("delete-topic.checkpoints-dropped")
            from .catalog import cursors

            cursors.delete_topic(self._catalog, name)
            faults.point("delete-topic.offsets-dropped")
            self._catalog.delete(ck.DB_TOPICS, ck.topic_key(name))
            faults.point("delete-topic.uncached")

    def topic(self, name: str) -> TopicConfig:
        """The configuration of topic ``name``; ``TopicNotFoundError`` if there is none."""
        self._check_open()
        if not isinstance(name, str):
            raise InvalidTopicError(f"topic name must be a str, got {type(name).__name__}")
        cfg = self._configs.get(name)
        if cfg is None:
            close = difflib.get_close_matches(name, list(self._configs), n=1)
            raise TopicNotFoundError(name, close[0] if close else None)
        return cfg

    def topics(self) -> list[TopicConfig]:
        """Every topic's configuration, sorted by name."""
        self._check_open()
        return [self._configs[k] for k in sorted(self._configs)]

    def _partition_log(self, topic: str, partition: object) -> PartitionLog:
        self._check_open()
        cfg = self.topic(topic)
        return self._logs[topic][valid_partition(cfg, partition)]

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
        if self._closed:
            raise StoreClosedError(self.path)
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
        if timestamp_ms is None:
            ts = time.time_ns() // 1_000_000
        else:
            ts = check_timestamp(timestamp_ms, f"append to topic {topic!r}")
        plog = self._logs[topic][partition]
        base = plog.append_one(ts, key, value, hdrs)
        if self.durability == "fsync":
            plog.wait_durable(base + 1)
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
        self._check_open()
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
        groups = self._group(cfg, items, fixed, _now_ms())
        logs = self._logs[topic]
        bases = [
            logs[g.partition].append(g.timestamps, g.keys, g.values, g.headers, g.base_ts, g.max_ts)
            for g in groups
        ]
        if self.durability == "fsync":
            for g, base in zip(groups, bases, strict=True):
                logs[g.partition].wait_durable(base + len(g.values))
        if len(groups) == 1:
            g = groups[0]
            return BatchMetadata(topic, g.partition, bases[0], len(g.values), g.ts_list)
        out: list[Any] = [None] * len(items)
        for g, base in zip(groups, bases, strict=True):
            metas = BatchMetadata(topic, g.partition, base, len(g.values), g.ts_list)
            for i, meta in zip(g.indexes, metas, strict=True):
                out[i] = meta
        return out

    def _group(
        self, cfg: TopicConfig, items: list[Any], fixed: int | None, now: int
    ) -> list[_Group]:
        """Validate every item and group them by partition (nothing is written here)."""
        n = len(items)
        if set(map(type, items)) == {bytes}:  # fast path: bare values, checked in C
            biggest = max(map(len, items))
            if biggest > cfg.max_record_bytes:
                check_size(cfg, biggest, next(i for i, v in enumerate(items) if len(v) == biggest))
            p = fixed if fixed is not None else next(self._round_robin) % cfg.partitions
            return [_Group(p, None, repeat(now, n), repeat(None, n), items, repeat(NO_HEADERS, n),
                           now, now, None)]
        sticky = next(self._round_robin) % cfg.partitions if fixed is None else fixed
        groups: dict[int, _Group] = {}
        for i, item in enumerate(items):  # validation needs each item once
            key, value, headers, part, ts = normalize_item(cfg, item, i)
            if part is None:
                part = fixed if fixed is not None else (
                    partition_for_key(key, cfg.partitions) if key is not None else sticky
                )
            g = groups.get(part)
            if g is None:
                g = groups[part] = _Group(part, [], [], [], [], [], now, now, [])
            g.add(i, now if ts is None else ts, key, value, headers)
        return list(groups.values())

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
        plog = self._partition_log(topic, partition)
        if type(offset) is not int:
            raise InvalidArgumentError(f"offset must be an int, got {type(offset).__name__}")
        if type(max_records) is not int or max_records < 1:
            raise InvalidArgumentError(f"max_records must be a positive int, got {max_records!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise InvalidArgumentError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        return plog.read(offset, max_records, max_bytes)

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, end offset): the first readable offset and the next to be written."""
        return self._partition_log(topic, partition).offsets()

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        """The first offset whose timestamp is ≥ ``timestamp_ms``, or None if there is none."""
        plog = self._partition_log(topic, partition)
        check_timestamp(timestamp_ms, f"offset_for_time on topic {topic!r}")
        return plog.offset_for_time(timestamp_ms)

    def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        """Block until the partition's end offset passes ``offset`` (True) or the timeout (False)."""
        timeout_s = check_wait(offset, timeout_s)
        return self._partition_log(topic, partition).wait_for(offset, timeout_s)

    # --- clients and groups (the client layer, reached from the store) ------

    def _coordinator(self) -> Coordinator:
        coordinator = self._group_coordinator
        if coordinator is None:
            from .client.coordinator import Coordinator

            with self._lock:
                if self._group_coordinator is None:
                    self._group_coordinator = Coordinator(self._partition_counts)
                coordinator = self._group_coordinator
        return coordinator

    def _partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        configs = self._configs
        return {t: configs[t].partitions for t in topics if t in configs}

    def consumer(self, *topics: str, **config: Any) -> Consumer:
        """A Kafka-style consumer (see ``eventstore.client.consumer.Consumer``)."""
        self._check_open()
        from .client.consumer import Consumer

        try:
            return Consumer(self, *topics, **config)
        except TypeError as e:
            raise InvalidArgumentError(f"consumer(): {e}") from None

    def producer(self, **config: Any) -> Producer:
        """A Kafka-style producer (see ``eventstore.client.producer.Producer``)."""
        self._check_open()
        from .client.producer import Producer

        try:
            return Producer(self, **config)
        except TypeError as e:
            raise InvalidArgumentError(f"producer(): {e}") from None

    def transaction(self) -> Transaction:
        """Appends to any partitions that happen all together or not at all (``with`` commits)."""
        self._check_open()
        from .transactions import Transaction

        return Transaction(self)

    def pending_transactions(self) -> list[int]:
        """Ids of committed transactions whose records are not all in the log yet, in commit
        order: those the store is relaying (``TransactionRelayPendingError``), and those whose
        topic was deleted since (docs/format.md, section 13)."""
        self._check_open()
        return [int.from_bytes(k, "big") for k, _ in self._catalog.items(ck.DB_OUTBOX)]

    def list_groups(self) -> list[str]:
        """Consumer groups with committed offsets or active members."""
        self._check_open()
        from .client import admin

        return admin.list_groups(self)

    def describe_group(self, group: str) -> GroupDescription:
        """A group's state, generation, members and their assignments."""
        self._check_open()
        from .client import admin

        return admin.describe_group(self, group)

    def group_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (next offsets to read)."""
        self._check_open()
        from .client import admin

        return admin.group_offsets(self, group)

    def lag(self, group: str) -> dict[TopicPartition, int]:
        """Records the group has not committed past, per partition."""
        self._check_open()
        from .client import admin

        return admin.lag(self, group)

    def reset_group_offsets(
        self, group: str, to: str | int | Mapping[TopicPartition, int] | Mapping[tuple[str, int], int],
        topics: list[str] | None = None,
    ) -> dict[TopicPartition, int]:
        """Move an inactive group's offsets: "earliest", "latest", a timestamp, or explicit ones.

        Explicit offsets are keyed by ``TopicPartition`` or ``(topic, partition)`` tuples.
        """
        self._check_open()
        from .client import admin

        return admin.reset_group_offsets(self, group, to, topics)

    def delete_group(self, group: str) -> int:
        """Forget an inactive group's committed offsets."""
        self._check_open()
        from .client import admin

        return admin.delete_group(self, group)

    # --- streams (the event-sourcing layer, reached from the store) ----------

    def _index_path(self) -> str:
        return os.path.join(self.path, "index")

    def _streams(self) -> Streams:
        streams = self._stream_store
        if streams is None:
            with self._lock:
                if self._stream_store is None:
                    made = self._open_streams()
                    for event in made.foreign_skipped:  # records the index catch-up skipped
                        self._report(event)
                    self._stream_store = made
                streams = self._stream_store
        return streams

    def _open_streams(self) -> Streams:
        """The event-sourcing layer over this store. A stream index found damaged while it
        catches up with the log (it marks itself) is kept aside and rebuilt, once (case L1)."""
        from .sourcing import index
        from .sourcing.streams import Streams

        for attempt in (1, 2):  # bounded: a damaged index is rebuilt once
            try:
                made = Streams(self, self.stream_partitions)
                break
            except BaseException as e:
                marked = index.abandon(self._index_path())  # nothing left open
                if attempt == 2 or not marked or not isinstance(e, CorruptionError):
                    raise
        damage, broken = made.index.damage, made.index.broken
        if damage is not None and broken is not None:
            self._report(RecoveryEvent(
                case="L1", path=broken, position=damage.position,
                detail=f"stream index damaged ({damage.reason}); kept aside, rebuilt from the log"))
        return made

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
        self._check_open()
        batch = [events] if isinstance(events, NewEvent) else events
        return self._streams().append(stream_id, batch, expected_version, topic)

    def read_stream(
        self, stream_id: str, from_version: int = 0, limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        """A stream's events from ``from_version`` (backwards: down from it; -1 = the end)."""
        self._check_open()
        if backwards and from_version == 0:
            from_version = -1
        return self._streams().read(stream_id, from_version, limit, backwards)

    def read_all(self, from_position: int = 0, limit: int | None = 1000) -> list[RecordedEvent]:
        """Every stream's events in global position order, from ``from_position``."""
        self._check_open()
        return self._streams().read_all(from_position, limit)

    def stream_version(self, stream_id: str) -> int | None:
        """The stream's last version, or None if it has no events."""
        self._check_open()
        return self._streams().stream_version(stream_id)

    def list_streams(self, category: str | None = None) -> list[str]:
        """Stream ids, all or of one category, sorted; deleted streams left out."""
        self._check_open()
        return self._streams().list_streams(category)

    def subscribe_to_all(self, from_position: int | None = 0, **options: Any) -> Subscription:
        """Every stream's events in position order: history from ``from_position``
        (None: only those of appends that begin after this call), then live."""
        self._check_open()
        from .sourcing.subscriptions import subscribe_to_all

        return subscribe_to_all(self, from_position, **options)

    def subscribe_to_category(self, category: str, from_position: int | None = 0,
                              **options: Any) -> Subscription:
        """The events of streams ``<category>-*`` in position order, history then live."""
        self._check_open()
        from .sourcing.subscriptions import subscribe_to_category

        return subscribe_to_category(self, category, from_position, **options)

    def subscribe_to_stream(self, stream_id: str, from_version: int | None = 0,
                            **options: Any) -> Subscription:
        """One stream's events in version order, history then live."""
        self._check_open()
        from .sourcing.subscriptions import subscribe_to_stream

        return subscribe_to_stream(self, stream_id, from_version, **options)

    def get_stream_metadata(self, stream_id: str) -> StreamMetadata:
        self._check_open()
        return self._streams().metadata(stream_id)

    def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> AppendResult:
        """Set max age, max count, truncate-before or custom metadata of a stream."""
        self._check_open()
        return self._streams().set_metadata(stream_id, metadata)

    def delete_stream(self, stream_id: str) -> AppendResult:
        """Soft-delete a stream: reading it raises ``StreamNotFoundError`` (``deleted`` set),
        ``list_streams`` leaves it out; appending again continues its versions."""
        self._check_open()
        return self._streams().delete(stream_id)

    def truncate_stream(self, stream_id: str, before_version: int) -> AppendResult:
        """Hide the stream's events below ``before_version`` (e.g. to remove personal data)."""
        self._check_open()
        return self._streams().truncate_before(stream_id, before_version)

    # --- maintenance -------------------------------------------------------

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply every topic's retention now; returns the number of segments deleted."""
        self._check_open()
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
        self._check_open()
        check_int64(now_ms, "now_ms (ms since the epoch)", optional=True)
        if isinstance(topics, str):
            raise InvalidArgumentError("topics must be a list of topic names, not one str")
        names = sorted(self._logs) if topics is None else [self.topic(t).name for t in topics]
        out = []
        for name in names:
            for plog in list(self._logs.get(name, ())):
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
        held, for a progress bar over ``statistics().size_bytes``.
        """
        self._check_open()
        report = CheckReport()
        for logs in list(self._logs.values()):
            for plog in logs:
                problems = len(report.problems)
                check_partition(plog, report)
                if plog.config.streams and len(report.problems) == problems:
                    self._check_envelopes(plog, report)
                if on_progress is not None:
                    on_progress(plog.size_bytes())
        return report

    def _check_envelopes(self, plog: PartitionLog, report: CheckReport) -> None:
        """Report each foreign record of a streams partition (docs/format.md, section 12)."""
        from .sourcing.streams import foreign_records

        segments = plog.segments()
        bases = [s.base_offset for s in segments]
        for offset, reason in foreign_records(self, plog.topic, plog.partition):
            segment = segments[max(0, bisect.bisect_right(bases, offset) - 1)]
            report.foreign_records += 1
            report.problems.append(CheckProblem(
                segment.log_path, None,
                f"record at offset {offset}: {reason}; the stream index skips it"))

    def statistics(self) -> StoreStatistics:
        """A frozen snapshot of sizes, offsets and counters."""
        self._check_open()
        parts = []
        for name in sorted(self._logs):
            for plog in self._logs[name]:
                start, end = plog.offsets()
                segments = plog.segments()
                max_ts = plog.max_timestamp()
                parts.append(PartitionStatistics(
                    topic=name, partition=plog.partition, log_start_offset=start, end_offset=end,
                    size_bytes=sum(s.size for s in segments), segments=len(segments),
                    max_timestamp_ms=max_ts if max_ts >= 0 else None,
                ))
        all_logs = [plog for logs in self._logs.values() for plog in logs]
        return StoreStatistics(
            path=self.path, durability=self.durability, topics=len(self._configs),
            partitions=len(parts), records=sum(p.end_offset - p.log_start_offset for p in parts),
            size_bytes=sum(p.size_bytes for p in parts),
            appended_batches=sum(p.appended_batches for p in all_logs),
            appended_records=sum(p.appended_total for p in all_logs),
            fsyncs=sum(p.fsyncs for p in all_logs), partition_stats=parts,
        )


class _Group:
    """The records of one ``append_batch`` call bound for one partition, as columns."""

    __slots__ = ("base_ts", "headers", "indexes", "keys", "max_ts", "partition", "timestamps",
                 "ts_list", "values")

    def __init__(self, partition: int, indexes: list[int] | None, timestamps: Iterable[int],
                 keys: Iterable[bytes | None], values: list[bytes | None], headers: Iterable[Any],
                 base_ts: int, max_ts: int, ts_list: list[int] | None) -> None:
        self.partition = partition
        self.indexes = indexes if indexes is not None else range(len(values))
        self.timestamps, self.keys, self.values, self.headers = timestamps, keys, values, headers
        self.base_ts, self.max_ts = base_ts, max_ts
        self.ts_list: list[int] | int = ts_list if ts_list is not None else base_ts

    def add(self, index: int, ts: int, key: bytes | None, value: bytes | None, headers: Any) -> None:
        assert isinstance(self.indexes, list) and isinstance(self.ts_list, list)
        if not self.values:
            self.base_ts = self.max_ts = ts
        self.indexes.append(index)
        self.ts_list.append(ts)
        self.keys.append(key)  # type: ignore[attr-defined]
        self.values.append(value)
        self.headers.append(headers)  # type: ignore[attr-defined]
        if ts > self.max_ts:
            self.max_ts = ts
        self.timestamps = self.ts_list


class BatchMetadata(Sequence[RecordMetadata]):
    """What ``append_batch`` returns for one partition: metadata made on access."""

    __slots__ = ("_base", "_count", "_partition", "_timestamps", "_topic")

    def __init__(self, topic: str, partition: int, base: int, count: int,
                 timestamps: list[int] | int) -> None:
        self._topic, self._partition, self._base = topic, partition, base
        self._count, self._timestamps = count, timestamps

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> RecordMetadata: ...
    @overload
    def __getitem__(self, i: slice) -> list[RecordMetadata]: ...
    def __getitem__(self, i: int | slice) -> RecordMetadata | list[RecordMetadata]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("batch metadata index out of range")
        ts = self._timestamps if isinstance(self._timestamps, int) else self._timestamps[i]
        return RecordMetadata(self._topic, self._partition, self._base + i, ts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _positive(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgumentError(f"{what} must be an int in {low}..{high}, got {value!r}")
    return value


def _topic_settings(given: dict[str, Any]) -> dict[str, Any]:
    """The topic settings ``create_topic`` was given, checked (absent ones take TopicConfig's defaults)."""
    limits = {"partitions": (1, 100_000), "segment_bytes": (1024, 0x7FFFFFFF), "segment_ms": (1, 2**62),
              "max_record_bytes": (1, 0x7FFFFFFF - 1024)}
    out: dict[str, Any] = {}
    for key, value in given.items():  # bounded by the settings
        if key in limits:
            out[key] = _positive(value, key, *limits[key])
        elif key == "streams":
            out[key] = bool(value)
        else:
            out[key] = _optional_positive(value, key)
    return out


def _optional_positive(value: object, what: str) -> int | None:
    if value is None:
        return None
    return _positive(value, what, 1, 2**62)
