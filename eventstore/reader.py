"""A read-only store for another process: ``open_reader(path)``.

An application holds its store with ``eventstore.open`` (an exclusive lock);
tools and other processes read the same store beside it through this module:
topics, records, offsets, times and committed group offsets. It takes no lock
and writes nothing (docs/format.md, section 14), so it can never get in the
writer's way, and the writer need not be running at all.
"""

from __future__ import annotations

import difflib
import os
import threading
import time
from types import TracebackType

from .catalog import Catalog, cursors
from .errors import (
    InvalidArgumentError,
    InvalidTopicError,
    StorageError,
    StoreClosedError,
    StoreNotFoundError,
    TopicNotFoundError,
)
from .records import PartitionStatistics, Record, TopicConfig, TopicPartition
from .storage import topicdir
from .storage.view import PartitionView, SegmentExtent
from .validation import check_group_id, check_timestamp, check_wait
from .validation import check_partition as valid_partition

DEFAULT_POLL_INTERVAL_MS = 50


def open_reader(path: str | os.PathLike[str] = "./es-data", *,
                poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS) -> StoreReader:
    """Open the store at ``path`` read-only, beside whichever process holds it.

    ``poll_interval_ms``: how often ``wait_for`` looks for new records (another
    process's appends wake nothing here).
    """
    if type(poll_interval_ms) is not int or poll_interval_ms <= 0:
        raise InvalidArgumentError(f"poll_interval_ms must be a positive int, got {poll_interval_ms!r}")
    return StoreReader(os.fspath(path), poll_interval_ms)


class StoreReader:
    """Read-only access to a store another process may be writing. Thread-safe."""

    def __init__(self, path: str, poll_interval_ms: int) -> None:
        self.path = path
        self.poll_interval_ms = poll_interval_ms
        self._root = topicdir.topics_root(path)
        catalog_dir = os.path.join(path, "catalog")
        if not (os.path.isdir(catalog_dir) and os.path.isdir(self._root)):
            raise StoreNotFoundError(path)
        self._catalog_dir = catalog_dir
        self._catalog_env: Catalog | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._configs: dict[str, TopicConfig] = {}
        self._views: dict[TopicPartition, PartitionView] = {}

    # --- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Release the mappings and the catalog. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            views, self._views = self._views, {}
        for view in views.values():
            view.close()
        if self._catalog_env is not None:
            self._catalog_env.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<eventstore.StoreReader {self.path!r}{' (closed)' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(self.path)

    # --- topics --------------------------------------------------------------

    def topics(self) -> list[TopicConfig]:
        """Every topic's configuration as the writer has it now, sorted by name."""
        self._check_open()
        configs = topicdir.load_configs(self._root)
        with self._lock:
            self._configs = configs
            for tp in [tp for tp in self._views if tp.topic not in configs]:
                # deleted: forget its view, but leave its mappings to the garbage collector,
                # since another thread may be reading through them right now
                del self._views[tp]
        return [configs[name] for name in sorted(configs)]

    def topic(self, name: str) -> TopicConfig:
        """One topic's configuration; ``TopicNotFoundError`` (with a suggestion) if missing."""
        if not isinstance(name, str):
            raise InvalidTopicError(f"topic name must be a str, got {type(name).__name__}")
        configs = {c.name: c for c in self.topics()}
        cfg = configs.get(name)
        if cfg is None:
            close = difflib.get_close_matches(name, list(configs), n=1)
            raise TopicNotFoundError(name, close[0] if close else None)
        return cfg

    def _view(self, topic: str, partition: object) -> PartitionView:
        self._check_open()
        cfg = self._configs.get(topic) if isinstance(topic, str) else None
        if cfg is None or (isinstance(partition, int) and not 0 <= partition < cfg.partitions):
            cfg = self.topic(topic)  # unknown here: look at the writer's topics again
        p = valid_partition(cfg, partition)
        tp = TopicPartition(topic, p)
        view = self._views.get(tp)
        if view is None:
            view = PartitionView(topicdir.partition_dir(self.path, topic, p), topic, p)
            with self._lock:
                view = self._views.setdefault(tp, view)
        return view

    # --- records -------------------------------------------------------------

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, end offset) of a partition, as written now."""
        return self._view(topic, partition).offsets()

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500,
             max_bytes: int | None = None) -> list[Record]:
        """Up to ``max_records`` records from ``offset``; empty at the end.

        ``OffsetOutOfRangeError`` below the log start or past the end.
        """
        if type(offset) is not int or offset < 0:
            raise InvalidArgumentError(f"offset must be an int ≥ 0, got {offset!r}")
        if type(max_records) is not int or max_records < 1:
            raise InvalidArgumentError(f"max_records must be an int ≥ 1, got {max_records!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise InvalidArgumentError(f"max_bytes must be an int ≥ 1 or None, got {max_bytes!r}")
        return self._view(topic, partition).read(offset, max_records, max_bytes)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        """The first offset whose timestamp is ≥ ``timestamp_ms``, or None."""
        check_timestamp(timestamp_ms, f"offset_for_time on topic {topic!r}")
        return self._view(topic, partition).offset_for_time(timestamp_ms)

    def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        """Wait until a record at ``offset`` or later exists; False if ``timeout_s`` passes first.

        The writer is another process, so this looks every ``poll_interval_ms``.
        """
        timeout_s = check_wait(offset, timeout_s)
        view = self._view(topic, partition)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        interval = self.poll_interval_ms / 1000
        while True:  # bounded by the deadline, or by the caller (timeout None)
            if view.offsets()[1] > offset:
                return True
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(interval, left))
            else:
                time.sleep(interval)
            self._check_open()

    def read_batches(self, topic: str, partition: int, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """The stored batches from the one holding ``offset``, byte for byte, at most
        ``max_bytes`` (the first whole), and the offset after them: what a replica copies."""
        if type(offset) is not int:
            raise InvalidArgumentError(f"offset must be an int, got {type(offset).__name__}")
        if type(max_bytes) is not int or max_bytes < 1:
            raise InvalidArgumentError(f"max_bytes must be a positive int, got {max_bytes!r}")
        return self._view(topic, partition).read_batches(offset, max_bytes)

    def max_timestamp(self, topic: str, partition: int) -> int:
        """The largest record timestamp of a partition, -1 when it has none."""
        return self._view(topic, partition).max_timestamp()

    def epoch_entries(self, topic: str, partition: int) -> list[tuple[int, int]]:
        """``(epoch, start offset)`` of every leader epoch that wrote into the partition."""
        return self._view(topic, partition).epoch_entries()

    def partition_statistics(self, topic: str | None = None) -> list[PartitionStatistics]:
        """Offsets, size and segments of every partition (of ``topic`` if given), as written now."""
        configs = [self.topic(topic)] if topic is not None else self.topics()
        out = []
        for cfg in configs:
            try:
                out += [self._partition_statistics(cfg.name, p) for p in range(cfg.partitions)]
            except TopicNotFoundError:
                if topic is not None:
                    raise
                continue  # deleted by the writer while this listed: not a topic any more
        return out

    def _partition_statistics(self, topic: str, partition: int) -> PartitionStatistics:
        view = self._view(topic, partition)
        start, end = view.offsets()
        max_ts = view.max_timestamp()
        return PartitionStatistics(
            topic=topic, partition=partition, log_start_offset=start, end_offset=end,
            size_bytes=view.size_bytes(), segments=view.segment_count(),
            max_timestamp_ms=max_ts if max_ts >= 0 else None,
        )

    def segments(self, topic: str, partition: int) -> list[SegmentExtent]:
        """The partition's segment files as written now, oldest first, each with the bytes of
        whole, valid batches it holds (what ``es backup`` copies; docs/format.md, section 20)."""
        return self._view(topic, partition).segments()

    def incarnation(self, topic: str, partition: int) -> object:
        """Which partition of that name the reader reads: it changes when the writer deletes
        the topic and makes it again, after which offsets name other records."""
        return self._view(topic, partition).incarnation

    # --- groups --------------------------------------------------------------

    @property
    def _catalog(self) -> Catalog:
        """The catalog, opened on first use: records need none of it.

        LMDB allows one handle per environment and process, so group offsets
        are read here only when the store is not open in this same process.
        """
        with self._lock:
            self._check_open()
            if self._catalog_env is None:
                try:
                    self._catalog_env = Catalog(self._catalog_dir, readonly=True)
                except StorageError as e:
                    if "already open in this process" not in str(e):
                        raise
                    raise StorageError(self._catalog_dir, "the store is open in this process: "
                                       "read group offsets through its Store") from e
            return self._catalog_env

    def list_groups(self) -> list[str]:
        """Groups with committed offsets (membership lives in the writer's process)."""
        self._check_open()
        return cursors.groups(self._catalog)

    def group_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (next offsets to read)."""
        self._check_open()
        check_group_id(group)
        topics = {cfg.name: cfg for cfg in self.topics()}  # offsets of a topic made again are not its
        return {tp: om.offset for tp, om in cursors.read_group(self._catalog, group, topics).items()}

    def lag(self, group: str) -> dict[TopicPartition, int]:
        """End offset minus committed offset, per partition of the topics the group committed to.

        As ``Store.lag``: a partition with no commit counts from its log start,
        and so does a commit below it (retention).
        """
        committed = self.group_offsets(group)
        configs = {c.name: c for c in self.topics()}
        out: dict[TopicPartition, int] = {}
        for topic in sorted({tp.topic for tp in committed}):
            cfg = configs.get(topic)
            if cfg is None:
                continue  # offsets of a deleted topic: nothing to measure against
            for p in range(cfg.partitions):
                tp = TopicPartition(topic, p)
                try:
                    start, end = self.offsets(topic, p)
                except TopicNotFoundError:
                    break
                out[tp] = max(0, end - max(committed.get(tp, start), start))
        return out
