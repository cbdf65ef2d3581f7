"""The stream index's updates between an append and the index: staged in memory, flushed to
LMDB in batches, and the stream heads memory keeps so that version checks seldom read LMDB.

A written append stages its update (``stage``) under its partition's write
lock. Staged heads and event ids are visible at once to the next appends;
``flush`` writes everything staged in one LMDB transaction, and every read of
the index calls it first, so many appends share one index commit. A crash
loses only staged updates, and open replays them from the log (``covered``).

A flush that fails (a full disk) keeps its updates staged, ahead of those
staged since, so the next flush writes them in the same order and a
partition's ``covered`` mark never passes an event the index lacks. The
appender's flush does not fail the append (its event is in the log); reads
raise the flush's error until one gets through. While the index cannot be
written, ``make_room`` refuses a new append before it writes anything once
``_BLOCK_FACTOR`` times ``staged_max`` wait, so memory stays bounded.

Heads live in memory as well as in the index: ``head`` answers for every
stream appended to (or looked up by a leader) since its entry was last
evicted. Once ``heads_max`` are held, the flush evicts the ones it has
committed, after bumping ``evictions``: a look-up that found nothing in
memory can tell from that count whether an entry left memory since it looked.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import CorruptionError, StorageError
from .events import NewEvent
from .index import Head, StreamIndex
from .rules import META_PREFIX, metadata_target

__all__ = ["HEADS_MAX", "STAGED_MAX", "Staged", "Staging", "put_metadata"]

STAGED_MAX = 512  # appends flush the staged index updates once this many (or their events) wait
HEADS_MAX = 65_536  # stream heads kept in memory; past it, the flush forgets committed ones
_BLOCK_FACTOR = 8  # past STAGED_MAX times this, an append waits for a flush in progress


class Staged:
    """One append's index update, staged until the next flush.

    ``fresh``: the stream had no head when the append was checked, so the
    index holds nothing of it that the flush would have to merge.
    """

    __slots__ = ("base_offset", "current", "envelopes", "fresh", "head", "ids", "partition",
                 "position", "stream_id", "target_head", "topic")

    def __init__(self, stream_id: str, ids: list[bytes], envelopes: list[bytes], topic: str,
                 partition: int, current: int, position: int, base_offset: int, head: Head,
                 fresh: bool) -> None:
        self.stream_id, self.ids, self.envelopes = stream_id, ids, envelopes
        self.topic, self.partition, self.current = topic, partition, current
        self.position, self.base_offset, self.head = position, base_offset, head
        self.fresh = fresh
        self.target_head: Head | None = None


class Staging:
    """Staged index updates, stream heads in memory, and the flush. Thread-safe.

    ``staged_max`` and ``heads_max`` bound memory (tests lower them).
    """

    def __init__(self, index: StreamIndex) -> None:
        self.index = index
        self.staged_max = STAGED_MAX
        self.heads_max = HEADS_MAX
        self._lock = threading.Lock()  # guards what is staged and the heads
        self._flush_lock = threading.Lock()  # one flush at a time
        self._staged: list[Staged] = []
        self._staged_events = 0  # events of the staged appends: a read flushes them first
        self._heads: dict[str, Head] = {}
        self._evictions = 0
        self._ids: dict[bytes, tuple[str, int, int]] = {}

    # --- heads in memory ------------------------------------------------------------

    @property
    def evictions(self) -> int:
        """How many times heads left memory; read it before a look-up that may miss."""
        return self._evictions

    def head(self, stream_id: str) -> Head | None:
        """The stream's head if memory holds it (staged updates included), else None."""
        return self._heads.get(stream_id)

    def current_head(self, stream_id: str) -> Head | None:
        """The stream's newest head: memory first, the index after."""
        head = self._heads.get(stream_id)
        if head is None:
            with self.index.read() as txn:
                head = self.index.head(txn, stream_id)
        return head

    def remember(self, stream_id: str, head: Head) -> None:
        """Keep a head read from the index (under the stream's partition lock)."""
        self._heads[stream_id] = head

    def held(self) -> int:
        """How many heads memory holds."""
        return len(self._heads)

    def forget_topic(self, topic: str) -> None:
        """Drop the heads of a deleted topic's streams from memory (the index dropped them)."""
        with self._lock:
            self._evictions += 1
            self._heads = {sid: h for sid, h in list(self._heads.items()) if h.topic != topic}

    def evict(self) -> None:
        """Forget every head the index holds already (the flush does it past ``heads_max``)."""
        with self._lock:
            self._evict_committed_locked()

    def _evict_committed_locked(self) -> None:
        """The count goes up before anything leaves memory, so a look-up that misses in memory
        after an eviction sees a changed count."""
        self._evictions += 1
        keep: dict[str, Head] = {}
        for st in self._staged:  # staged after this flush took its batch: not committed
            sids = [st.stream_id]
            if st.target_head is not None:
                sids.append(metadata_target(st.stream_id))
            for sid in sids:
                head = self._heads.get(sid)
                if head is not None:
                    keep[sid] = head
        self._heads = keep

    # --- staging ----------------------------------------------------------------------

    def stage(self, stream_id: str, events: Sequence[NewEvent], envelopes: list[bytes],
              topic: str, partition: int, current: int, head: Head | None,
              position: int, base_offset: int) -> None:
        """Stage the index update of a written append (under its partition's write lock)."""
        staged = Staged(stream_id, [e.id.bytes for e in events], envelopes, topic, partition,
                        current, position, base_offset,
                        Head(topic, partition, current + len(events), head.meta if head else b""),
                        head is None)
        with self._lock:
            self._staged.append(staged)
            self._staged_events += len(events)
            self._heads[stream_id] = staged.head
            for i, e in enumerate(events):
                self._ids[e.id.bytes] = (stream_id, current + 1 + i, position + i)
            if stream_id.startswith(META_PREFIX):
                target = metadata_target(stream_id)
                old = self._heads.get(target)
                if old is None:
                    with self.index.read() as txn:
                        old = self.index.head(txn, target)
                base = old or Head(topic, partition, -1, b"")
                self._heads[target] = staged.target_head = Head(
                    base.topic, base.partition, base.last_version, events[-1].data)

    def event_ids(self, event_ids: list[bytes]) -> list[tuple[str, int, int] | None]:
        """Where each event id was appended (stream, version, position), None if nowhere.

        Staged ids are looked up first, the index after, in a transaction opened
        only then: an id leaves the staged ones only once the index has it.
        """
        staged = self._ids
        found = [staged.get(event_id) for event_id in event_ids]
        if None in found:
            with self.index.read() as txn:
                found = [f if f is not None else self.index.event_id(txn, event_id)
                         for f, event_id in zip(found, event_ids, strict=True)]
        return found

    # --- flushing -------------------------------------------------------------------

    def flush(self) -> None:
        """Write every staged index update to LMDB, in one transaction; returns once every
        update staged before the call is there (a flush another thread is in the middle of
        included: the flush lock is taken even when nothing is staged)."""
        with self._flush_lock:
            self._flush_locked()

    def make_room(self) -> None:
        """Before an append writes anything: once so much is staged that memory should be
        bounded, flush it and wait; a flush that fails refuses the append with its error."""
        if max(len(self._staged), self._staged_events) >= _BLOCK_FACTOR * self.staged_max:
            self.flush()

    def flush_if_due(self) -> None:
        """An appender's flush, after its append is written, once ``staged_max`` appends (or
        their events) are staged: skipped while another thread flushes, and never raising
        ``StorageError`` or ``CorruptionError`` (what failed stays staged; see the module).

        Appenders need not wait for a flush (their appends are staged, and
        staged heads and ids are visible to the next appends), unless so much
        piled up meanwhile that memory should be bounded.
        """
        pending = max(len(self._staged), self._staged_events)
        if pending < self.staged_max:
            return
        blocking = pending >= _BLOCK_FACTOR * self.staged_max
        if not self._flush_lock.acquire(blocking=blocking):
            return
        try:
            self._flush_locked()
        except (StorageError, CorruptionError):
            pass  # the updates stay staged; the next flush or read tries again
        finally:
            self._flush_lock.release()

    def _flush_locked(self) -> None:
        with self._lock:
            batch, self._staged, self._staged_events = self._staged, [], 0
        if not batch:
            return
        try:
            self.index.write(functools.partial(self._write, batch))
        except BaseException:
            with self._lock:  # nothing of the batch was written: it goes first next time
                self._staged[:0] = batch
                self._staged_events += sum(len(st.ids) for st in batch)  # bounded by the batch
            raise
        with self._lock:
            for st in batch:  # bounded by the batch
                for event_id in st.ids:
                    self._ids.pop(event_id, None)
            if len(self._heads) > self.heads_max:
                self._evict_committed_locked()

    def _write(self, batch: list[Staged], txn: Any) -> None:
        """Write staged updates, in staging order (per stream, version order).

        A stream's envelopes of consecutive versions are added to its chunks in
        one call: one-event appends to one stream would otherwise rewrite its
        last chunk once each. Likewise consecutive appends that continue one
        another (same stream and partition, versions, positions and offsets in
        sequence) have their ids and positions indexed in one ``put_events``.
        """
        index = self.index
        covered: dict[tuple[str, int], int] = {}
        runs: dict[str, tuple[int, list[bytes]]] = {}  # stream -> first version, envelopes
        events = _EventRun(index, txn)
        for st in batch:  # bounded by the batch
            if st.target_head is not None:
                put_metadata(index, txn, st.stream_id, st.target_head.meta, st.topic, st.partition)
            head = st.head
            if not st.fresh and not head.meta:
                stored = index.head(txn, st.stream_id)
                if stored is not None and stored.meta:
                    head = Head(head.topic, head.partition, head.last_version, stored.meta)
            index.put_head(txn, st.stream_id, head)
            run = runs.get(st.stream_id)
            if run is not None and run[0] + len(run[1]) == st.current + 1:
                run[1].extend(st.envelopes)
            else:
                if run is not None:
                    index.append_envelopes(txn, st.stream_id, *run)
                runs[st.stream_id] = (st.current + 1, list(st.envelopes))
            events.add(st)
            key = (st.topic, st.partition)
            covered[key] = max(covered.get(key, 0), st.base_offset + len(st.ids))
        events.put()
        for stream_id, (first, envelopes) in runs.items():  # bounded by the batch's streams
            index.append_envelopes(txn, stream_id, first, envelopes)
        for (topic, partition), next_offset in covered.items():  # bounded by the partitions
            index.put_covered(txn, topic, partition, next_offset)


class _EventRun:
    """Staged appends whose events follow one another in their stream, in the global order
    and in their partition, gathered for one ``put_events``."""

    def __init__(self, index: StreamIndex, txn: Any) -> None:
        self.index, self.txn = index, txn
        self.first: Staged | None = None
        self.ids: list[bytes] = []

    def add(self, st: Staged) -> None:
        first, n = self.first, len(self.ids)
        if first is not None and (st.stream_id, st.topic, st.partition, st.current, st.position,
                                  st.base_offset) == (first.stream_id, first.topic, first.partition,
                                                      first.current + n, first.position + n,
                                                      first.base_offset + n):
            self.ids.extend(st.ids)
            return
        self.put()
        self.first, self.ids = st, list(st.ids)

    def put(self) -> None:
        first = self.first
        if first is not None:
            self.index.put_events(self.txn, self.ids, first.stream_id, first.current + 1, first.position,
                                  first.topic, first.partition, first.base_offset)
            self.first, self.ids = None, []


def put_metadata(index: StreamIndex, txn: Any, meta_stream: str, data: bytes, topic: str,
                 partition: int) -> None:
    """Inside a write transaction: the metadata appended to ``meta_stream`` becomes its target
    stream's (a stream with no events yet gets a head with version -1)."""
    target = metadata_target(meta_stream)
    head = index.head(txn, target) or Head(topic, partition, -1, b"")
    head.meta = data
    index.put_head(txn, target, head)
