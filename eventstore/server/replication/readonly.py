"""``es replicate``: the server's leader side over a store another process owns
(docs/replication.md, 4.1).

The application holds the store (its lock); this module reads it through
``eventstore.open_reader`` — no lock, nothing written (docs/format.md, 14) — and
hands the server a :class:`ReadOnlyLog` and :class:`ReadOnlyGroups`: the calls the
read paths of the handlers make on ``Log`` and ``GroupCoordinator`` (topics,
offsets, stored batches, epochs, committed offsets, the producer id sequence),
answered from the reader. The same handlers then serve ApiVersions, Metadata,
replica Fetch, ListOffsets, OffsetForLeaderEpoch and ReplicaCatalog (and consumer
Fetch); every write is refused before a handler runs (``Replication.read_only``),
and any other call a handler makes raises ``NotLeaderError``, which the dispatcher
answers as NOT_LEADER_OR_FOLLOWER in that API's response.

Another process's appends wake nothing here, so a :class:`Poller` thread looks:
every ``poll_ms`` at the ends of the partitions someone waits on (a replica's
long poll, the leader's high-watermark bookkeeping), calling their callbacks as an
append would; every ``catalog_poll_ms`` at the catalog's last transaction, the
topics and the log starts, calling the catalog's write hooks when they changed
(the ReplicaCatalog tracker then takes a snapshot and makes a version if the
replicated state differs).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Final, NoReturn, cast

from ...catalog import Catalog, cursors
from ...errors import EventStoreError, NotLeaderError, TopicNotFoundError
from ...groups import GroupCoordinator
from ...log import Log, Watch
from ...reader import StoreReader
from ...records import NO_TOPIC_ID, Record, TopicConfig, TopicPartition
from ...storage import epochs
from ..cluster import new_cluster_id, read_cluster_id
from ..config import server_config
from ..server import Server

__all__ = ["DEFAULT_CATALOG_POLL_MS", "DEFAULT_POLL_MS", "READ_ONLY_REASON", "PolledCatalog", "Poller",
           "ReadOnlyGroups", "ReadOnlyLog", "replicate_server"]

log = logging.getLogger("eventstore.server")

DEFAULT_POLL_MS: Final = 5
"""How often the ends of watched partitions are looked at: bounds the lag it adds."""
DEFAULT_CATALOG_POLL_MS: Final = 200
READ_ONLY_REASON: Final = "the store belongs to another process; es replicate only copies it"

Callback = Callable[[], object]


class PolledCatalog(Catalog):
    """The store's catalog opened read-only; its write hooks run when the :class:`Poller`
    sees that the owner changed something (no write of this process ever commits)."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory, readonly=True)
        self.hooks: list[Callback] = []

    def add_write_hook(self, hook: Callback) -> Callable[[], None]:
        self.hooks = [*self.hooks, hook]

        def remove() -> None:
            self.hooks = [h for h in self.hooks if h is not hook]
        return remove

    def last_transaction(self) -> int:
        """The id of the owner's last committed write transaction."""
        return int(self.env.info()["last_txnid"])


class _PartitionInfo:
    """What ``Log.partition`` gives ListOffsets: the largest timestamp."""

    __slots__ = ("_partition", "_reader", "_topic")

    def __init__(self, reader: StoreReader, topic: str, partition: int) -> None:
        self._reader, self._topic, self._partition = reader, topic, partition

    def max_timestamp(self) -> int:
        return self._reader.max_timestamp(self._topic, self._partition)


class ReadOnlyLog:
    """The ``Log`` calls of the server's read paths, over a :class:`StoreReader`."""

    def __init__(self, reader: StoreReader, catalog: PolledCatalog) -> None:
        self.reader = reader
        self.path = reader.path
        self.catalog = catalog
        self._configs: dict[str, TopicConfig] = {}
        self._by_id: dict[uuid.UUID, TopicConfig] = {}
        self._lock = threading.Lock()
        self._listeners: dict[TopicPartition, list[Callback]] = {}
        self.reload_topics()
        self.leader_epoch = max((e for cfg in self._configs.values() for p in range(cfg.partitions)
                                 for e, _ in reader.epoch_entries(cfg.name, p)[-1:]), default=0)
        """The epoch the owner stamps its batches with (its partitions' last epochs)."""

    # --- topics -------------------------------------------------------------------

    def reload_topics(self) -> dict[str, TopicConfig]:
        """Read the owner's topics again."""
        configs = {cfg.name: cfg for cfg in self.reader.topics()}
        self._configs, self._by_id = configs, {cfg.topic_id: cfg for cfg in configs.values()}
        return configs

    def topics(self) -> list[TopicConfig]:
        return [self._configs[name] for name in sorted(self._configs)]

    def topic_configs(self) -> Mapping[str, TopicConfig]:
        return self._configs

    def find_topic(self, name: str) -> TopicConfig | None:
        """A topic made by the owner since the last look is found by looking again."""
        return self._configs.get(name) or self.reload_topics().get(name)

    def topic(self, name: str) -> TopicConfig:
        cfg = self.find_topic(name)
        if cfg is None:
            raise TopicNotFoundError(name, None)
        return cfg

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicConfig | None:
        if topic_id == NO_TOPIC_ID:
            return None
        found = self._by_id.get(topic_id)
        if found is None:
            self.reload_topics()
            found = self._by_id.get(topic_id)
        return found

    def partition(self, topic: str, partition: int) -> _PartitionInfo:
        return _PartitionInfo(self.reader, topic, partition)

    # --- records ------------------------------------------------------------------

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        return self.reader.offsets(topic, partition)

    def log_end(self, topic: str, partition: int) -> int:
        """What the owner has written whole: the view's end (docs/format.md, 14)."""
        return self.reader.offsets(topic, partition)[1]

    def read_replica(self, topic: str, partition: int, offset: int, max_bytes: int) -> tuple[bytes, int]:
        return self.reader.read_batches(topic, partition, offset, max_bytes)

    read_batches = read_replica

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Record]:
        return self.reader.read(topic, partition, offset, max_records)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        return self.reader.offset_for_time(topic, partition, timestamp_ms)

    def epoch_end_offset(self, topic: str, partition: int, epoch: int) -> tuple[int, int]:
        """As ``Log.epoch_end_offset``, from the epoch file the owner wrote."""
        entries = self.reader.epoch_entries(topic, partition)
        found = epochs.EpochFile(self.path, entries, on_disk=True)  # only read, never written
        return found.end_offset(epoch, self.log_end(topic, partition))

    def set_leader_epoch(self, epoch: int) -> None:
        """The epoch ``replication.json`` says, if larger; kept in memory only."""
        self.leader_epoch = max(self.leader_epoch, epoch)

    def set_replication(self, waiter: object) -> None:
        """Nothing to do: the owner's appends never wait for followers (asynchronous)."""

    # --- waiting ------------------------------------------------------------------

    def watch_log_end(self, partitions: Iterable[TopicPartition], callback: Callback) -> Watch:
        """``callback()`` (from the poller thread) whenever one of ``partitions`` grows."""
        tps = list(partitions)
        for tp in tps:  # bounded by the caller's partitions: each must exist
            self.topic(tp.topic)
        with self._lock:
            for tp in tps:  # bounded by the caller's partitions
                self._listeners.setdefault(tp, []).append(callback)
        return Watch([lambda: self._unwatch(tps, callback)])

    watch = watch_log_end

    def _unwatch(self, tps: list[TopicPartition], callback: Callback) -> None:
        with self._lock:
            for tp in tps:  # bounded by the partitions watched
                left = [c for c in self._listeners.get(tp, []) if c is not callback]
                if left:
                    self._listeners[tp] = left
                else:
                    self._listeners.pop(tp, None)

    def watched(self) -> dict[TopicPartition, list[Callback]]:
        with self._lock:
            return {tp: list(callbacks) for tp, callbacks in self._listeners.items()}

    def __getattr__(self, name: str) -> NoReturn:
        raise _not_served(name)


class ReadOnlyGroups:
    """The ``GroupCoordinator`` call of the ReplicaCatalog leader: the committed offsets."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def stored_cursors(self) -> list[cursors.Cursor]:
        return cursors.all_cursors(self._catalog)

    def __getattr__(self, name: str) -> NoReturn:
        raise _not_served(name)


def _not_served(name: str) -> NotLeaderError:
    """What a request beyond a follower's needs meets (consumer groups, configurations,
    streams: the application's own): the handler's answer is NOT_LEADER_OR_FOLLOWER."""
    return NotLeaderError(f"es replicate serves followers only ({name} is the application's)")


class Poller:
    """The thread that turns the owner's writes into the wake-ups its own appends would make."""

    def __init__(self, store: ReadOnlyLog, poll_ms: int, catalog_poll_ms: int) -> None:
        self._store = store
        self._poll_s = poll_ms / 1000
        self._catalog_every = max(1, catalog_poll_ms // poll_ms)
        self._ends: dict[TopicPartition, int] = {}
        self._catalog_seen: object = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="es-replicate-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        rounds = 0
        while not self._stop.wait(self._poll_s):  # one pass per interval until stopped
            try:
                self._look_at_ends()
                if rounds % self._catalog_every == 0:
                    self._look_at_catalog()
            except EventStoreError as e:  # a topic deleted under the look: the next pass sees
                log.debug("es replicate: %s", e)
            rounds += 1

    def _look_at_ends(self) -> None:
        for tp, callbacks in self._store.watched().items():  # bounded by the partitions watched
            try:
                end = self._store.log_end(tp.topic, tp.partition)
            except TopicNotFoundError:
                end = -1
            if end != self._ends.get(tp):
                self._ends[tp] = end
                for callback in callbacks:  # bounded by the waiters of this partition
                    callback()

    def _look_at_catalog(self) -> None:
        store = self._store
        configs = store.reload_topics()
        starts = tuple(store.offsets(cfg.name, p)[0]
                       for cfg in configs.values() for p in range(cfg.partitions))
        seen = (store.catalog.last_transaction(), tuple(configs.values()), starts)
        if seen != self._catalog_seen:
            self._catalog_seen = seen
            for hook in store.catalog.hooks:  # bounded by the trackers
                hook()


def replicate_server(reader: StoreReader, listen: str, *, node_id: int = 0,
                     poll_ms: int = DEFAULT_POLL_MS, catalog_poll_ms: int = DEFAULT_CATALOG_POLL_MS,
                     advertised_listener: str | None = None,
                     ) -> tuple[Callable[[], Server], Callable[[], None]]:
    """A factory of the read-only server over ``reader`` (call it on the loop that runs it)
    and the function that releases the catalog and stops the poller after it stopped."""
    config = server_config(listen, advertised_listener=advertised_listener, node_id=node_id)
    catalog = PolledCatalog(f"{reader.path}/catalog")
    try:
        store = ReadOnlyLog(reader, catalog)
    except BaseException:
        catalog.close()
        raise
    poller = Poller(store, poll_ms, catalog_poll_ms)
    cluster = read_cluster_id(reader.path) or new_cluster_id()

    def make() -> Server:
        server = Server(cast(Log, store), cast(GroupCoordinator, ReadOnlyGroups(catalog)), None, config,
                        cluster, announce=False)
        server.broker.replication.read_only = READ_ONLY_REASON
        poller.start()
        return server

    def close() -> None:
        poller.stop()
        catalog.close()

    return make, close
