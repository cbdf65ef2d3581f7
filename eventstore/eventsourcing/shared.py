"""Stores open in this process for the persistence module, shared by path, and their stream locks.

One process owns a store (a second ``eventstore.open`` of it is refused), but
the library makes a factory for every application, projection and test, and
several may name one store. So a store is opened once per process and shared,
counting its users; the last ``release`` closes it.

Each shared store has one set of stream locks. Every write of the module holds
the locks of the streams it writes (sorted, so two writers never wait for each
other in a circle) from its version checks to its last append: a write that
touches several streams (commits.py) is then never interleaved with another
write of the module to one of them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import eventstore
from eventstore import Store

from .settings import Settings, SettingsError

__all__ = ["SharedStore", "StreamLocks", "acquire", "release"]


class StreamLocks:
    """A lock per stream id, made when first wanted, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    def acquire(self, stream_ids: list[str]) -> list[str]:
        """Take the locks of ``stream_ids`` in sorted order; returns the ids to ``release``."""
        ids = sorted(set(stream_ids)) if len(stream_ids) > 1 else stream_ids
        with self._guard:
            taken = []
            for sid in ids:  # bounded by the streams of one write
                entry = self._locks.get(sid)
                if entry is None:
                    entry = self._locks[sid] = (threading.Lock(), [0])
                entry[1][0] += 1
                taken.append(entry[0])
        for lock in taken:  # sorted order: no cycle of waiters
            lock.acquire()
        return ids

    def release(self, stream_ids: list[str]) -> None:
        with self._guard:
            for sid in stream_ids:  # bounded by the streams of one write
                lock, users = self._locks[sid]
                lock.release()
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[sid]

    @contextmanager
    def holding(self, stream_ids: list[str]) -> Iterator[None]:
        ids = self.acquire(stream_ids)
        try:
            yield
        finally:
            self.release(ids)


class SharedStore:
    """A store and what the module's recorders over it share."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.users = 0
        self.locks = StreamLocks()
        #: commit streams whose last commit may not be applied yet (an append failed after it)
        self.unapplied: set[str] = set()
        self.unapplied_lock = threading.Lock()
        self.topics_made: set[str] = set()


_shared: dict[str, SharedStore] = {}
_registry_lock = threading.Lock()


def acquire(settings: Settings) -> SharedStore:
    """The shared store at ``settings.path``, opened (and its commits applied) if not open yet."""
    from .commits import apply_last_commits

    key = os.path.realpath(settings.path)
    with _registry_lock:
        shared = _shared.get(key)
        if shared is not None and shared.store.closed:
            shared = None
        if shared is None:
            store = eventstore.open(settings.path, durability=settings.durability,
                                    fsync_interval_ms=settings.fsync_interval_ms,
                                    stream_partitions=settings.partitions)
            shared = SharedStore(store, settings)
            try:
                apply_last_commits(shared)
            except BaseException:
                store.close()
                raise
            _shared[key] = shared
        elif (shared.settings.durability, shared.settings.fsync_interval_ms) != \
                (settings.durability, settings.fsync_interval_ms):
            raise SettingsError(
                f"store {settings.path!r} is already open in this process with durability "
                f"{shared.settings.durability!r} (fsync interval {shared.settings.fsync_interval_ms} ms)"
            )
        shared.users += 1
        return shared


def release(shared: SharedStore) -> None:
    """One user fewer; the last closes the store."""
    with _registry_lock:
        shared.users -= 1
        if shared.users > 0:
            return
        key = os.path.realpath(shared.settings.path)
        if _shared.get(key) is shared:
            del _shared[key]
    if not shared.store.closed:
        shared.store.close()
