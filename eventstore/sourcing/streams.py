"""Streams on the log: expected-version appends, reads by stream, the global ``$all`` order.

An append is a request queued per partition. One thread at a time (the
leader) takes the queued requests and, under the partition's write lock
(``append_prepared``), checks each expected version, assigns versions and
global positions, encodes the envelopes and writes them as one batch with one
fsync, and stages the stream index updates — each request all or nothing.
Versions are checked against stream heads kept in memory; the index (LMDB) is
read only for streams memory does not hold, mostly by the requester before it
queues, so the leader, whom everyone waits for, seldom leaves the GIL. Positions
come from one store-wide counter; a reader of ``$all`` only sees positions
below the *watermark*, the first position not yet durable, so it never sees a
gap that later fills.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import (
    EventDecodeError,
    EventStoreError,
    IllegalStateError,
    InvalidArgumentError,
    RecordTooLargeError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from ..partitioner import partition_for_key
from ..records import DEFAULT_MAX_RECORD_BYTES, RecoveryEvent
from ..storage.names import is_valid_topic_name
from ..storage.partition import Prepared
from ..storage.topicdir import partition_dir
from ..validation import check_int64
from .chunks import ChunkCache
from .events import (
    ENVELOPE_OVERHEAD_MAX,
    AppendResult,
    NewEvent,
    RecordedEvent,
    StreamMetadata,
    StreamState,
    array_header,
    decoder_for,
    encode_envelope,
    events_from_records,
)
from .index import CHUNK_EVENTS, Head, StreamIndex

if TYPE_CHECKING:
    from ..store import Store

META_PREFIX = "$$"
META_EVENT_TYPE = "$metadata"
_DECODERS_MAX = 4096
_CATCH_UP_RECORDS = 10_000
_STAGED_MAX = 512  # appends flush the staged index updates once this many (or their events) wait
_STAGED_BLOCK = 8 * _STAGED_MAX  # past this many, an append waits for a flush in progress
_FILL_WAIT_S = 0.002  # how long a leader waits for its batch to fill (see _await_batch)
_HEADS_MAX = 65_536  # stream heads kept in memory; past it, the flush forgets committed ones
_meta_json = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(StreamMetadata)
Expected = int | StreamState


def category_of(stream_id: str) -> str:
    """The text before the first ``-`` (the whole id if there is none)."""
    base = stream_id[len(META_PREFIX):] if stream_id.startswith(META_PREFIX) else stream_id
    return base.split("-", 1)[0]


class _Positions:
    """The store-wide position counter and the watermark below which all are durable."""

    def __init__(self, last: int) -> None:
        self._lock = threading.Lock()
        self._next = last + 1
        self._pending: dict[int, int] = {}  # start -> end of ranges not yet durable
        self._done: set[int] = set()
        self.watermark = last + 1  # first position readers may not see yet
        self._listeners: set[Callable[[], object]] = set()

    def reserve(self, count: int) -> int:
        with self._lock:
            start = self._next
            self._next += count
            self._pending[start] = start + count
            return start

    @property
    def next(self) -> int:
        """The position the next append will be given."""
        with self._lock:
            return self._next

    def complete(self, start: int) -> None:
        """Mark a reserved range durable (or abandoned); advance the watermark."""
        with self._lock:
            self._done.add(start)
            moved = False
            while self.watermark in self._done:  # bounded by the ranges in flight
                self._done.discard(self.watermark)
                self.watermark = self._pending.pop(self.watermark)
                moved = True
        if moved:
            for listener in list(self._listeners):
                listener()

    def wake(self) -> None:
        for listener in list(self._listeners):
            listener()

    def add_listener(self, fn: Callable[[], object]) -> None:
        self._listeners.add(fn)

    def remove_listener(self, fn: Callable[[], object]) -> None:
        self._listeners.discard(fn)


class _Request:
    """One ``append_to_stream`` call waiting for a leader.

    ``seen`` is the stream's head as the requester found it (None: no such
    stream) when the head-eviction count was ``generation``; the leader may
    use it instead of reading the index again (see ``Streams._current_heads``).
    """

    __slots__ = ("error", "events", "expected", "generation", "lead", "lock", "position_start",
                 "result", "seen", "stream_id")

    def __init__(self, stream_id: str, events: list[NewEvent], expected: Expected,
                 seen: Head | None, generation: int) -> None:
        self.stream_id, self.events, self.expected = stream_id, events, expected
        self.seen, self.generation = seen, generation
        self.result: AppendResult | None = None
        self.error: BaseException | None = None
        self.position_start = -1
        self.lead = False  # woken to combine the queue, not because it was handled
        self.lock = threading.Lock()
        self.lock.acquire()


class _Queue:
    """The appends waiting for one partition, and the token of the thread combining them.

    ``items`` takes no lock: a deque's appends and pops are atomic under the
    GIL, and a thread that lost the GIL while holding a lock every appender
    needs would make all of them queue behind it. ``leader`` is held by the
    thread that leads; it is only ever tried, never waited for. Only its
    holder takes requests out of ``items``.
    """

    __slots__ = ("filled", "items", "last", "leader", "want")

    def __init__(self) -> None:
        self.items: deque[_Request] = deque()
        self.leader = threading.Lock()
        self.last = 1  # requests in the last batch
        self.want = 1  # requests the waiting leader waits for
        self.filled: threading.Lock | None = None  # released once ``want`` are queued

    def put(self, request: _Request) -> None:
        """Queue ``request``; wake the waiting leader if that fills its batch."""
        self.items.append(request)
        filled = self.filled
        if filled is not None and len(self.items) >= self.want:
            if self.filled is filled:
                self.filled = None
            with contextlib.suppress(RuntimeError):  # another appender released it first
                filled.release()


_BATCH_REQUESTS_MAX = 1000


def _take_batch(items: deque[_Request]) -> list[_Request]:
    """The next requests to combine: up to a bound, a metadata append alone."""
    if not items:
        return []
    if items[0].stream_id.startswith(META_PREFIX):
        return [items.popleft()]
    batch: list[_Request] = []
    while items and len(batch) < _BATCH_REQUESTS_MAX and not items[0].stream_id.startswith(META_PREFIX):
        batch.append(items.popleft())
    return batch


def _await_batch(queue: _Queue) -> None:
    """Wait until as many requests are queued as the last batch held, or ``_FILL_WAIT_S``.

    Group commit with a delay, as databases do it: under many threads, those
    the last batch released come back with their next appends within about a
    batch's time. Taking the queue before they do splits the batch into ever
    smaller ones, each paying an fsync and a GIL hand-off per thread. A lone
    appender never waits (its last batch held one request: itself), and after
    a wait that timed out the next batch expects no more than came.
    """
    want = queue.last
    if len(queue.items) >= want:
        return
    filled = threading.Lock()
    filled.acquire()
    queue.want, queue.filled = want, filled
    if len(queue.items) < want:  # looked at after publishing ``filled``: no append is missed
        filled.acquire(timeout=_FILL_WAIT_S)
    queue.filled = None


class _Staged:
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


# An accepted request: (request, its stream's version before it, its head, its first offset)
_Accepted = tuple[_Request, int, Head | None, int]


class _Batch:
    """Requests combined into one write: those accepted, their envelopes and positions."""

    __slots__ = ("accepted", "end", "envelopes", "followers", "requests", "reserved")

    def __init__(self, requests: list[_Request]) -> None:
        self.requests = requests
        self.accepted: list[_Accepted] = []
        self.followers: list[tuple[_Request, _Request]] = []  # (resent, the accepted original)
        self.envelopes: list[list[bytes]] = []  # per accepted request
        self.reserved: list[int] = []  # start of the batch's range of global positions
        self.end = -1  # the offset after the batch's records, once written

    def fail(self, error: BaseException) -> None:
        """Give ``error`` to every request not already refused or found to be a retry."""
        taken = {id(a[0]) for a in self.accepted} | {id(f) for f, _ in self.followers}
        for req in self.requests:  # bounded by the batch
            if req.error is None and (req.result is None or id(req) in taken):
                req.result, req.error = None, error


class Streams:
    """The event-sourcing view of a store (``store.append_to_stream`` and friends).

    Stream heads live in memory as well as in the index: ``_heads`` holds the
    current head of every stream appended to (or looked up by a leader)
    since its entry was last evicted, so that the version check of an append
    needs no index read. Entries are added only under the stream's partition
    lock, where no other append can change that head. Once ``_HEADS_MAX`` are
    held, the flush evicts the ones it has committed, after bumping
    ``_evictions``: a look-up that found nothing in memory can tell from that
    count whether an entry left memory since it looked.
    """

    def __init__(self, store: Store, default_partitions: int) -> None:
        self._store = store
        self._default_partitions = default_partitions
        self.index = StreamIndex(store._index_path())
        self._decoders: dict[tuple[str, str, int], msgspec.msgpack.Decoder[list[RecordedEvent]]] = {}
        self._topic_lock = threading.Lock()
        self._stage_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._staged: list[_Staged] = []
        self._staged_events = 0  # events of the staged appends: a read flushes them first
        self._chunk_cache = ChunkCache()
        self._heads: dict[str, Head] = {}
        self._evictions = 0
        self._staged_ids: dict[bytes, tuple[str, int, int]] = {}
        self._queues: dict[tuple[str, int], _Queue] = {}
        self.foreign_skipped: list[RecoveryEvent] = []  # what the catch-up skipped (case F1)
        self._catch_up()
        with self.index.read() as txn:
            self.positions = _Positions(self.index.last_position(txn))
        self.index.drop_listeners.append(self._forget_topic)

    def close(self) -> None:
        self.flush()
        self.index.close()
        self.positions.wake()  # waiting subscriptions see the store closed

    # --- where a stream lives ------------------------------------------------------

    def _locate(self, stream_id: str, topic: str | None, head: Head | None,
                events: list[NewEvent]) -> tuple[str, int]:
        """The stream's topic and partition; a new stream's topic is made if missing, once
        ``events`` are known to fit in it (nothing is made for an append that is refused)."""
        if head is not None:
            if topic is not None and topic != head.topic:
                raise InvalidArgumentError(
                    f"stream {stream_id!r} lives in topic {head.topic!r}, not {topic!r}"
                )
            return head.topic, head.partition
        name = topic or category_of(stream_id)
        if not is_valid_topic_name(name):
            raise InvalidArgumentError(
                f"stream {stream_id!r}: its category {name!r} is not a valid topic name; "
                "pass topic= explicitly"
            )
        cfg = self._stream_topic(name, stream_id, events)
        key = stream_id[len(META_PREFIX):] if stream_id.startswith(META_PREFIX) else stream_id
        return name, partition_for_key(key.encode(), cfg.partitions)

    def _stream_topic(self, name: str, stream_id: str, events: list[NewEvent]) -> Any:
        """The configuration of the streams topic ``name``, created if it does not exist.

        An existing streams topic is found without taking the lock: a thread
        that loses the GIL while holding a lock every appender needs makes all
        of them queue behind it.
        """
        store = self._store
        cfg = store._configs.get(name)
        if cfg is not None and cfg.streams:
            return cfg
        with self._topic_lock:
            cfg = store._configs.get(name)
            if cfg is None:
                _check_sizes(stream_id, events, name, DEFAULT_MAX_RECORD_BYTES)
                return store.create_topic(name, partitions=self._default_partitions, streams=True)
            if not cfg.streams:
                raise InvalidArgumentError(
                    f"topic {name!r} holds plain records, not streams; choose another topic="
                )
            return cfg

    def _forget_topic(self, topic: str) -> None:
        """Drop the heads of a deleted topic's streams from memory (the index dropped them)."""
        with self._stage_lock:
            self._evictions += 1
            self._heads = {sid: h for sid, h in list(self._heads.items()) if h.topic != topic}
        self._chunk_cache.forget_topic(topic)

    # --- appending ------------------------------------------------------------------

    def append(self, stream_id: str, events: Sequence[NewEvent], expected: Expected,
               topic: str | None) -> AppendResult:
        """Append to one stream: queue the request, then lead or wait (see ``_lead``).

        The head is looked up here, outside the partition lock, so that the
        leader, which everyone waits for, rarely has to read the index itself.
        """
        _check_stream_id(stream_id)
        events = _check_events(events)
        _check_expected(expected)
        store = self._store
        if store._catalog.writing:
            raise IllegalStateError(
                f"cannot append to stream {stream_id!r} inside a catalog write transaction "
                "(Projection.handle runs in one): keep a projection's effects in its state, "
                "and append from on_commit or after catch_up()/run()"
            )
        generation = self._evictions  # before looking: see _current_heads
        seen = self._heads.get(stream_id)
        if seen is None:
            with self.index.read() as txn:
                seen = self.index.head(txn, stream_id)
        topic_name, partition = self._locate(stream_id, topic, seen, events)
        cfg = store.topic(topic_name)
        _check_sizes(stream_id, events, topic_name, cfg.max_record_bytes)
        plog = store._partition_log(topic_name, partition)
        request = _Request(stream_id, events, expected, seen, generation)
        queue = self._queue(topic_name, partition)
        queue.put(request)
        lead = queue.leader.acquire(blocking=False)
        while True:  # bounded: a request leads at most once, then is handled
            if lead:
                self._lead(queue, plog, topic_name, partition)
            request.lock.acquire()  # released once handled, or to make this thread lead
            lead, request.lead = request.lead, False
            if not lead:
                break
        if request.error is not None:
            raise request.error
        if len(self._staged) >= _STAGED_MAX or self._staged_events >= _STAGED_MAX:
            self._flush_due()
        assert request.result is not None
        return request.result

    def _queue(self, topic: str, partition: int) -> _Queue:
        key = (topic, partition)
        queue = self._queues.get(key)
        if queue is None:
            with self._topic_lock:
                queue = self._queues.setdefault(key, _Queue())
        return queue

    def _lead(self, queue: _Queue, plog: Any, topic: str, partition: int) -> None:
        """Combine one batch of the queue: check, write, fsync; then hand the queue on.

        Under 64 threads, handing the partition lock from appender to appender
        costs more than the appends themselves (each hand-off is a GIL hand-off);
        here one thread checks every queued request's expected version, writes
        them all with one ``pwrite`` and one fsync, and wakes each requester
        once. Each request stays all-or-nothing and is refused on its own. A
        metadata append (``$$stream``) is combined alone, since it changes how
        later checks see its stream.

        The next leader is the first request still queued, not this thread: by
        the time it has woken and got the GIL, the threads released before have
        had their turn and queued their next appends; it then waits for the
        rest of them (``_await_batch``), so batches stay large instead of
        splitting into ever smaller ones, each with its own fsync.
        """
        _await_batch(queue)
        batch = _Batch(_take_batch(queue.items))
        queue.last = max(1, len(batch.requests))
        try:
            if batch.requests:
                base = plog.append_prepared(functools.partial(self._prepare, batch, topic, partition))
                batch.end = base + sum(len(e) for e in batch.envelopes)
                if batch.accepted and self._store.durability == "fsync":
                    plog.wait_durable(batch.end)
        except BaseException as e:  # every requester gets the failure, none waits in vain
            batch.fail(e)
        finally:
            for start in batch.reserved:
                self.positions.complete(start)  # durable now, or abandoned
            for req in batch.requests:  # bounded by the batch
                req.lock.release()
            self._hand_off(queue)

    @staticmethod
    def _hand_off(queue: _Queue) -> None:
        """Make the first queued request's thread the next leader, or leave the queue idle.

        A request queued just as the token is let go is seen by the look that
        follows: either its own thread got the token, or this one takes it back.
        """
        items = queue.items
        while True:  # bounded: a second pass finds the queue non-empty
            if items:
                nxt = items[0]
                nxt.lead = True
                nxt.lock.release()
                return
            queue.leader.release()
            if not items or not queue.leader.acquire(blocking=False):
                return

    def _prepare(self, batch: _Batch, topic: str, partition: int, base_offset: int) -> Prepared | None:
        """Under the partition lock: what of the batch is written (see ``append_prepared``)."""
        accepted, envelopes = batch.accepted, batch.envelopes
        self._check_requests(batch, topic, partition, base_offset)
        if not accepted:
            return None
        batch.reserved.append(self._assign_positions(accepted, envelopes))
        for follower, twin in batch.followers:  # bounded by the batch
            follower.result = twin.result
        now = time.time_ns() // 1_000_000
        keys = [a[0].stream_id.encode() for a, envs in zip(accepted, envelopes, strict=True) for _ in envs]
        values = [env for envs in envelopes for env in envs]
        count = len(values)

        def written(base: int) -> None:
            for (req, current, head, offset), envs in zip(accepted, envelopes, strict=True):
                self._index_append(req.stream_id, req.events, envs, topic, partition, current,
                                   head, req.position_start, offset)

        return Prepared([now] * count, keys, values, [()] * count, now, now, written)

    def _check_requests(self, batch: _Batch, topic: str, partition: int, base_offset: int) -> None:
        """Under the partition lock: decide which requests are written, refused or retries.

        A request that resends the events of one accepted earlier in the same
        batch (the same retry sent twice at once) gets that one's result: its
        event ids are in no index yet.
        """
        heads = self._current_heads(batch.requests)
        firsts: dict[bytes, _Request] = {}  # first event id -> request accepted in this batch
        offset = base_offset
        for req in batch.requests:  # bounded by the batch
            sid = req.stream_id
            try:
                twin = _twin(firsts.get(req.events[0].id.bytes), req)
                if twin is not None:
                    batch.followers.append((req, twin))
                    continue
                head = heads[sid]
                current = head.last_version if head is not None else -1
                duplicate = self._duplicate(req, head, current)
            except EventStoreError as e:
                req.error = e
                continue
            if duplicate is not None:
                req.result = duplicate
                continue
            batch.accepted.append((req, current, head, offset))
            firsts.setdefault(req.events[0].id.bytes, req)
            count = len(req.events)
            heads[sid] = Head(topic, partition, current + count, head.meta if head else b"")
            offset += count

    def _current_heads(self, batch: list[_Request]) -> dict[str, Head | None]:
        """The head of each batched stream, read from the index only when memory cannot tell.

        Called under the partition lock, so no other append changes these heads
        meanwhile. Memory (``_heads``) answers for what it holds. For a stream
        it does not hold, the requester's own look-up is still current if no
        head was evicted since it started: anything written to the stream after
        that look-up would be in memory now. Otherwise one read transaction,
        opened after memory was consulted, serves every remaining stream: a
        head leaves memory only once committed, so the transaction sees it.
        Heads found are kept in memory for the next appends.
        """
        memory = self._heads
        heads: dict[str, Head | None] = {}
        unknown: list[str] = []
        for req in batch:  # bounded by the batch
            sid = req.stream_id
            if sid in heads:
                continue
            head = memory.get(sid)
            if head is None:
                if req.generation != self._evictions:  # read after memory: see the docstring
                    unknown.append(sid)
                    heads[sid] = None
                    continue
                head = req.seen
                if head is not None:
                    memory[sid] = head
            heads[sid] = head
        if unknown:
            with self.index.read() as txn:
                for sid in unknown:  # bounded by the batch
                    head = heads[sid] = self.index.head(txn, sid)
                    if head is not None:
                        memory[sid] = head
        return heads

    def _duplicate(self, req: _Request, head: Head | None, current: int) -> AppendResult | None:
        """The original result if ``req`` is a retry of an append already written, else None.

        Raises ``WrongExpectedVersionError`` if the stream is not at the
        expected version and this is no retry. Event ids are looked up when the
        check refuses, and when it passes but a retry could pass it too: the
        expected state does not pin a version (``ANY``, ``STREAM_EXISTS``), or
        ``NO_STREAM`` meets a deleted stream. An int expected version, or
        ``NO_STREAM`` for a stream never written, passes only if nothing was
        appended since, so a first append (the common case) costs no look-up.
        """
        sid = req.stream_id
        try:
            _check_version(sid, req.expected, current, head is not None and _is_deleted(head))
        except WrongExpectedVersionError:
            duplicate = self._idempotent(sid, req.events)
            if duplicate is None:
                raise
            return duplicate
        if req.expected is StreamState.ANY or req.expected is StreamState.STREAM_EXISTS or (
                req.expected is StreamState.NO_STREAM and head is not None):
            return self._idempotent(sid, req.events)
        return None

    def _assign_positions(self, accepted: list[_Accepted], envelopes: list[list[bytes]]) -> int:
        """Reserve one range of global positions for the batch; encode each request's envelopes.

        Returns the range's start, to complete once the batch is durable.
        """
        total = sum(len(a[0].events) for a in accepted)
        first = start = self.positions.reserve(total)
        now = time.time_ns() // 1_000_000
        for req, current, _head, offset in accepted:  # bounded by the batch
            count = len(req.events)
            req.position_start = start
            envelopes.append([
                encode_envelope((current + 1 + i, e.type, e.data, e.metadata, e.id.bytes,
                                 start + i, now, offset + i))
                for i, e in enumerate(req.events)
            ])
            req.result = AppendResult(req.stream_id, current + count, start + count - 1)
            start += count
        return first

    def _index_append(self, stream_id: str, events: Sequence[NewEvent], envelopes: list[bytes],
                      topic: str, partition: int, current: int, head: Head | None,
                      position: int, base_offset: int) -> None:
        """Stage the index update of a written append (under its partition's write lock).

        Staged updates are visible at once to appends (heads, event ids) and are
        written to LMDB in one transaction by ``flush``, which every read calls
        first: many appends share one index commit. A crash loses only staged
        updates, and open replays them from the log (``covered``).
        """
        staged = _Staged(stream_id, [e.id.bytes for e in events], envelopes, topic, partition,
                         current, position, base_offset,
                         Head(topic, partition, current + len(events), head.meta if head else b""),
                         head is None)
        with self._stage_lock:
            self._staged.append(staged)
            self._staged_events += len(events)
            self._heads[stream_id] = staged.head
            for i, e in enumerate(events):
                self._staged_ids[e.id.bytes] = (stream_id, current + 1 + i, position + i)
            if stream_id.startswith(META_PREFIX):
                target = stream_id[len(META_PREFIX):]
                old = self._heads.get(target)
                if old is None:
                    with self.index.read() as txn:
                        old = self.index.head(txn, target)
                base = old or Head(topic, partition, -1, b"")
                self._heads[target] = staged.target_head = Head(
                    base.topic, base.partition, base.last_version, events[-1].data)

    def flush(self) -> None:
        """Write every staged index update to LMDB, in one transaction.

        Readers call it first; taking the flush lock even when nothing is staged
        makes a reader wait for a flush another thread is in the middle of.
        """
        with self._flush_lock:
            self._flush_locked()

    def _flush_due(self) -> None:
        """An appender's flush, once enough is staged: skipped while another thread flushes.

        Appenders need not wait for a flush (their appends are staged, and
        staged heads and ids are visible to the next appends), unless so much
        piled up meanwhile that memory should be bounded.
        """
        if len(self._staged) >= _STAGED_BLOCK or self._staged_events >= _STAGED_BLOCK:
            self.flush()
        elif self._flush_lock.acquire(blocking=False):
            try:
                self._flush_locked()
            finally:
                self._flush_lock.release()

    def _flush_locked(self) -> None:
        with self._stage_lock:
            batch, self._staged, self._staged_events = self._staged, [], 0
        if not batch:
            return
        self.index.write(functools.partial(self._write_staged, batch))
        with self._stage_lock:
            for st in batch:  # bounded by the batch
                for event_id in st.ids:
                    self._staged_ids.pop(event_id, None)
            if len(self._heads) > _HEADS_MAX:
                self._evict_committed_heads()

    def _write_staged(self, batch: list[_Staged], txn: Any) -> None:
        """Write staged updates, in staging order (per stream, version order)."""
        index = self.index
        covered: dict[tuple[str, int], int] = {}
        for st in batch:  # bounded by the batch
            if st.target_head is not None:
                self._apply_metadata(txn, st.stream_id, st.target_head.meta, st.topic, st.partition)
            head = st.head
            if not st.fresh and not head.meta:
                stored = index.head(txn, st.stream_id)
                if stored is not None and stored.meta:
                    head = Head(head.topic, head.partition, head.last_version, stored.meta)
            index.put_head(txn, st.stream_id, head)
            index.append_envelopes(txn, st.stream_id, st.current + 1, st.envelopes)
            index.put_events(txn, st.ids, st.stream_id, st.current + 1, st.position, st.topic,
                             st.partition, st.base_offset)
            key = (st.topic, st.partition)
            covered[key] = max(covered.get(key, 0), st.base_offset + len(st.ids))
        for (topic, partition), next_offset in covered.items():  # bounded by the partitions
            index.put_covered(txn, topic, partition, next_offset)

    def _evict_committed_heads(self) -> None:
        """Forget every head the index holds already (under the stage lock).

        The count goes up before anything leaves memory, so a look-up that
        misses in memory after an eviction sees a changed count.
        """
        self._evictions += 1
        keep: dict[str, Head] = {}
        for st in self._staged:  # staged after this flush took its batch: not committed
            sids = [st.stream_id]
            if st.target_head is not None:
                sids.append(st.stream_id[len(META_PREFIX):])
            for sid in sids:
                head = self._heads.get(sid)
                if head is not None:
                    keep[sid] = head
        self._heads = keep

    def _apply_metadata(self, txn: Any, meta_stream: str, data: bytes, topic: str,
                        partition: int) -> None:
        target = meta_stream[len(META_PREFIX):]
        head = self.index.head(txn, target) or Head(topic, partition, -1, b"")
        head.meta = data
        self.index.put_head(txn, target, head)

    def _event_ids(self, event_ids: list[bytes]) -> list[tuple[str, int, int] | None]:
        """Where each event id was appended (stream, version, position), None if nowhere.

        Staged ids are looked up first, the index after, in a transaction opened
        only then: an id leaves the staged ones only once the index has it.
        """
        staged = self._staged_ids
        found = [staged.get(event_id) for event_id in event_ids]
        if None in found:
            with self.index.read() as txn:
                found = [f if f is not None else self.index.event_id(txn, event_id)
                         for f, event_id in zip(found, event_ids, strict=True)]
        return found

    def _idempotent(self, stream_id: str, events: Sequence[NewEvent]) -> AppendResult | None:
        """The original result if every event id was already appended to this stream, in order."""
        first = self._event_ids([events[0].id.bytes])[0]
        if first is None or first[0] != stream_id:
            return None
        found = self._event_ids([e.id.bytes for e in events])
        expected = [(stream_id, first[1] + i) for i in range(len(events))]
        if [f[:2] if f else None for f in found] != expected:
            raise InvalidArgumentError(
                f"some of these events were already appended to {stream_id!r}, others not; "
                "an idempotent retry must resend exactly the same events"
            )
        last = found[-1]
        assert last is not None
        return AppendResult(stream_id, last[1], last[2])

    # --- reading --------------------------------------------------------------------

    def read(self, stream_id: str, from_version: int, limit: int | None,
             backwards: bool) -> list[RecordedEvent]:
        _check_stream_id(stream_id)
        if type(from_version) is not int or from_version < -1:
            raise InvalidArgumentError(f"from_version must be an int ≥ 0, got {from_version!r}")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be an int ≥ 0 or None, got {limit!r}")
        self.flush()
        with self.index.read(buffers=True) as txn:
            head = self.index.head(txn, stream_id)
            if head is None or head.last_version < 0:
                raise StreamNotFoundError(stream_id)
            if _is_deleted(head):
                raise StreamNotFoundError(stream_id, deleted=True)
            visible_end = self._store.offsets(head.topic, head.partition)[1]
            floor = _floor_version(head)
            if backwards:
                top = head.last_version if from_version < 0 else min(from_version, head.last_version)
                low = floor if limit is None else max(floor, top - limit + 1)
                first, last = low, top
            else:
                first = max(from_version, floor)
                last = head.last_version if limit is None else min(head.last_version, first + limit - 1)
            if first > last:
                return []
            events = self._between(txn, stream_id, head, first, last)
        while events and events[-1].offset >= visible_end:  # not yet durable: not yet visible
            events.pop()
        events = _apply_max_age(head, events)
        if backwards:
            events.reverse()
        return events

    def visible(self, stream_id: str, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Those of ``events`` (read earlier from ``stream_id``) that its metadata still shows.

        A subscription delivers events it read ahead; a delete, truncation or
        max count set since must hide them as it hides them from ``read``.
        """
        head = self._heads.get(stream_id)  # the newest head: staged updates included
        if head is None:
            with self.index.read() as txn:
                head = self.index.head(txn, stream_id)
        if head is None or not head.meta or not events:
            return events
        if _is_deleted(head):
            return []
        floor = _floor_version(head)
        return _apply_max_age(head, [e for e in events if e.version >= floor])

    def _between(self, txn: Any, stream_id: str, head: Head, first: int,
                 last: int) -> list[RecordedEvent]:
        """Versions ``first .. last`` of the stream: full chunks from the cache as far as it
        holds them, the others read in ``txn`` (a ``buffers`` one) and decoded a chunk per
        call (no buffer the size of the stream); the full ones are cached (``ChunkCache``)."""
        first_chunk, last_chunk = first // CHUNK_EVENTS, last // CHUNK_EVENTS
        full = (head.last_version + 1) // CHUNK_EVENTS  # chunks 0 .. full-1 are full
        events, chunk = self._chunk_cache.run(stream_id, head.topic, head.partition, first_chunk,
                                              min(last_chunk, full - 1))
        if chunk <= last_chunk:
            raw = self.index.chunk_range(txn, stream_id, chunk, last_chunk)
            decoder = self._decoder(stream_id, head.topic, head.partition)
            full_header = array_header(CHUNK_EVENTS)
            decoded = [self.index.decoded(decoder, (full_header if n < full else array_header(
                head.last_version + 1 - n * CHUNK_EVENTS)) + data, stream_id)
                for n, data in enumerate(raw, chunk)]  # bounded by the chunks read
            self._chunk_cache.put(stream_id, head.topic, head.partition, chunk, decoded)
            for part in decoded:  # bounded by the chunks read
                events += part
        start = first - first_chunk * CHUNK_EVENTS
        if start == 0 and len(events) == last - first + 1:
            return events  # all of it: no copy of the list
        return events[start:start + last - first + 1]

    def _decoder(self, stream_id: str, topic: str,
                 partition: int) -> msgspec.msgpack.Decoder[list[RecordedEvent]]:
        key = (stream_id, topic, partition)
        decoder = self._decoders.get(key)
        if decoder is None:
            if len(self._decoders) >= _DECODERS_MAX:
                self._decoders.clear()
            decoder = self._decoders[key] = decoder_for(stream_id, topic, partition)
        return decoder

    def read_all(self, from_position: int, limit: int | None) -> list[RecordedEvent]:
        check_int64(from_position, "from_position")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be an int ≥ 0 or None, got {limit!r}")
        end = self.positions.watermark  # read first: everything below it is staged by now
        self.flush()
        if limit is not None:
            end = min(end, from_position + limit)
        with self.index.read() as txn:
            entries = self.index.positions(txn, from_position, end)
        return self._events_at(entries)

    def _events_at(self, entries: list[tuple[int, str, int, int]]) -> list[RecordedEvent]:
        """Fetch events by location, reading each partition's runs of offsets in one go."""
        out: list[RecordedEvent] = []
        i = 0
        store = self._store
        while i < len(entries):  # bounded: every pass consumes ≥ 1 entry
            _, topic, partition, offset = entries[i]
            j = i
            while j + 1 < len(entries) and entries[j + 1][1:3] == (topic, partition) \
                    and entries[j + 1][3] == entries[j][3] + 1:
                j += 1
            out.extend(events_from_records(store.read(topic, partition, offset,
                                                      max_records=j - i + 1)))
            i = j + 1
        return out

    # --- lifecycle -------------------------------------------------------------------

    def metadata(self, stream_id: str) -> StreamMetadata:
        _check_stream_id(stream_id)
        self.flush()
        with self.index.read() as txn:
            head = self.index.head(txn, stream_id)
        if head is None or not head.meta:
            return StreamMetadata()
        return _meta_decoder.decode(head.meta)  # a fresh value: callers may change it

    def set_metadata(self, stream_id: str, metadata: StreamMetadata,
                     topic: str | None = None) -> AppendResult:
        _check_stream_id(stream_id)
        if not isinstance(metadata, StreamMetadata):
            raise InvalidArgumentError("metadata must be a StreamMetadata")
        for name in ("max_age_ms", "max_count", "truncate_before"):  # bounded: three fields
            check_int64(getattr(metadata, name), f"StreamMetadata.{name}", optional=True)
        try:
            data = _meta_json.encode(metadata)
        except (TypeError, OverflowError) as e:
            raise InvalidArgumentError(f"stream metadata cannot be stored as JSON: {e}") from None
        self.flush()
        with self.index.read() as txn:
            head = self.index.head(txn, stream_id)
        where = topic if head is None else head.topic
        event = NewEvent(type=META_EVENT_TYPE, data=data)
        return self.append(META_PREFIX + stream_id, [event], StreamState.ANY,
                           where if where is not None else None)

    def delete(self, stream_id: str) -> AppendResult:
        """Soft delete: hide every event; appending again revives the stream after them."""
        self.flush()
        with self.index.read() as txn:
            head = self.index.head(txn, stream_id)
        if head is None or head.last_version < 0:
            raise StreamNotFoundError(stream_id)
        meta = msgspec.structs.replace(self.metadata(stream_id), deleted=True,
                                       truncate_before=head.last_version + 1)
        return self.set_metadata(stream_id, meta, head.topic)

    def truncate_before(self, stream_id: str, version: int) -> AppendResult:
        check_int64(version, "before_version")
        self.flush()
        with self.index.read() as txn:
            head = self.index.head(txn, stream_id)
        if head is None:
            raise StreamNotFoundError(stream_id)
        meta = msgspec.structs.replace(self.metadata(stream_id), truncate_before=version)
        return self.set_metadata(stream_id, meta, head.topic)

    def list_streams(self, category: str | None) -> list[str]:
        prefix = "" if category is None else category + "-"
        self.flush()
        with self.index.read() as txn:
            heads = self.index.heads_with_prefix(txn, prefix)
        return [sid for sid, head in heads
                if not sid.startswith(META_PREFIX) and head.last_version >= 0 and not _is_deleted(head)]

    def stream_version(self, stream_id: str) -> int | None:
        self.flush()
        with self.index.read() as txn:
            head = self.index.head(txn, stream_id)
        return None if head is None or head.last_version < 0 else head.last_version

    # --- recovery: the index follows the log ------------------------------------------

    def _catch_up(self) -> None:
        """Index what the log has past each partition's ``covered`` offset."""
        for cfg in self._store.topics():
            if not cfg.streams:
                continue
            for p in range(cfg.partitions):
                self._catch_up_partition(cfg.name, p)

    def _catch_up_partition(self, topic: str, partition: int) -> None:
        """Index the partition's records past ``covered``; skip and report foreign ones."""
        store = self._store
        with self.index.read() as txn:
            offset = self.index.covered(txn, topic, partition)
        start, end = store.offsets(topic, partition)
        offset = max(offset, start)
        while offset < end:  # bounded by the partition's end
            records = store.read(topic, partition, offset, max_records=_CATCH_UP_RECORDS)
            found, foreign = envelopes_of(records)
            self.index.write(lambda txn, f=found, last=records[-1].offset:
                             self._index_records(txn, topic, partition, f, last))
            for record, reason in foreign:  # bounded by the records read
                self.foreign_skipped.append(RecoveryEvent(
                    case="F1", path=partition_dir(store.path, topic, partition), position=0,
                    detail=f"skipped a foreign record at offset {record.offset} of a streams "
                           f"topic: {reason}", extra={"topic": topic, "partition": partition,
                                                      "offset": record.offset}))
            offset = records[-1].offset + 1

    def _index_records(self, txn: Any, topic: str, partition: int,
                       found: list[tuple[Any, RecordedEvent]], last_offset: int) -> None:
        index = self.index
        for record, ev in found:
            stream_id = ev.stream_id  # recovery: once per record not yet indexed
            head = index.head(txn, stream_id)
            if head is not None and head.last_version >= ev.version:
                continue  # indexed already
            if stream_id.startswith(META_PREFIX):
                self._apply_metadata(txn, stream_id, ev.data, topic, partition)
            meta = head.meta if head is not None else b""
            index.put_head(txn, stream_id, Head(topic, partition, ev.version, meta))
            index.append_envelopes(txn, stream_id, ev.version, [record.value or b""])
            index.put_event(txn, ev.id_bytes, stream_id, ev.version, ev.position, topic, partition,
                            record.offset)
        index.put_covered(txn, topic, partition, last_offset + 1)


def foreign_records(store: Store, topic: str, partition: int) -> list[tuple[int, str]]:
    """The offset and the reason of each foreign record of one streams partition (for ``check``)."""
    out: list[tuple[int, str]] = []
    offset, end = store.offsets(topic, partition)
    while offset < end:  # bounded by the partition's end
        records = store.read(topic, partition, offset, max_records=_CATCH_UP_RECORDS)
        if not records:
            break
        out.extend((record.offset, reason) for record, reason in envelopes_of(records)[1])
        offset = records[-1].offset + 1
    return out


def envelopes_of(records: list[Any]) -> tuple[list[tuple[Any, RecordedEvent]], list[tuple[Any, str]]]:
    """Split records of a streams topic into (record, event) pairs and foreign (record, reason).

    A foreign record has no key, or a value that is not an event envelope, or
    an envelope that names another offset than its record's (one copied from
    elsewhere). The records are decoded in one call; only when that fails,
    one by one.
    """
    try:
        events = events_from_records(records)
    except EventDecodeError:
        pairs: list[tuple[Any, RecordedEvent | str]] = []
        for record in records:  # the slow path: a foreign record among them
            try:
                pairs.append((record, events_from_records([record])[0]))
            except EventDecodeError as e:
                pairs.append((record, f"not a stream event envelope ({e.__cause__})"))
    else:
        pairs = list(zip(records, events, strict=True))
    found: list[tuple[Any, RecordedEvent]] = []
    foreign: list[tuple[Any, str]] = []
    for record, ev in pairs:  # bounded by the records
        if isinstance(ev, str):
            foreign.append((record, ev))
        elif record.key is None:
            foreign.append((record, "not a stream event envelope (no stream id as its key)"))
        elif ev.offset != record.offset:
            foreign.append((record, f"not a stream event envelope (it names offset {ev.offset})"))
        else:
            found.append((record, ev))
    return found, foreign


# --- checks and rules ---------------------------------------------------------------------


def _check_stream_id(stream_id: object) -> None:
    if not isinstance(stream_id, str) or not stream_id or len(stream_id.encode()) > 1024:
        raise InvalidArgumentError(f"stream_id must be a non-empty str of at most 1024 bytes, "
                                   f"got {stream_id!r}")
    if "\x00" in stream_id:
        raise InvalidArgumentError("stream_id must not contain NUL characters")


def _check_events(events: object) -> list[NewEvent]:
    if isinstance(events, NewEvent):
        events = [events]
    if not isinstance(events, (list, tuple)) or not events:
        raise InvalidArgumentError("events must be a non-empty list of NewEvent")
    for i, e in enumerate(events):
        if not isinstance(e, NewEvent):
            raise InvalidArgumentError(f"event {i} must be a NewEvent, got {type(e).__name__}")
        if not isinstance(e.type, str) or not e.type:
            raise InvalidArgumentError(f"event {i} needs a non-empty str type")
        if not isinstance(e.data, bytes) or not isinstance(e.metadata, bytes):
            raise InvalidArgumentError(f"event {i}: data and metadata must be bytes")
        if not isinstance(e.id, uuid.UUID):
            raise InvalidArgumentError(f"event {i}: id must be a uuid.UUID")
    return list(events)


def _check_sizes(stream_id: str, events: list[NewEvent], topic: str, limit: int) -> None:
    """Each event's record (stream id + envelope) within the topic's ``max_record_bytes``."""
    fixed = len(stream_id.encode()) + ENVELOPE_OVERHEAD_MAX
    for i, e in enumerate(events):  # bounded by the caller's events
        size = fixed + len(e.data) + len(e.metadata) + len(e.type.encode())
        if size > limit:
            raise RecordTooLargeError(topic, size, limit, i)


def _check_expected(expected: object) -> None:
    if isinstance(expected, StreamState):
        return
    if type(expected) is not int or expected < -1:
        raise InvalidArgumentError(
            f"expected_version must be a StreamState or an int ≥ -1, got {expected!r}"
        )


def _twin(earlier: _Request | None, req: _Request) -> _Request | None:
    """``earlier`` if ``req`` resends exactly its events to the same stream, else None.

    Raises if ``req`` resends some of them but not all, as a retry must not.
    """
    if earlier is None or earlier.stream_id != req.stream_id:
        return None
    if [e.id for e in earlier.events] != [e.id for e in req.events]:
        raise InvalidArgumentError(
            f"some of these events were already appended to {req.stream_id!r}, others not; "
            "an idempotent retry must resend exactly the same events"
        )
    return earlier


def _check_version(stream_id: str, expected: Expected, current: int, deleted: bool) -> None:
    if expected is StreamState.ANY:
        return
    if expected is StreamState.NO_STREAM:
        ok = current < 0 or deleted
    elif expected is StreamState.STREAM_EXISTS:
        ok = current >= 0 and not deleted
    else:
        ok = expected == current
    if not ok:
        raise WrongExpectedVersionError(stream_id, expected, current)


@functools.lru_cache(maxsize=1024)
def _decode_meta(raw: bytes) -> StreamMetadata:
    """A stream's metadata JSON, decoded once however many checks and reads consult it."""
    return _meta_decoder.decode(raw)


def _is_deleted(head: Head) -> bool:
    if not head.meta:
        return False
    meta = _decode_meta(head.meta)
    return meta.deleted and (meta.truncate_before or 0) > head.last_version


def _floor_version(head: Head) -> int:
    if not head.meta:
        return 0
    meta = _decode_meta(head.meta)
    floor = meta.truncate_before or 0
    if meta.max_count is not None:
        floor = max(floor, head.last_version - meta.max_count + 1)
    return max(0, floor)


def _apply_max_age(head: Head, events: list[RecordedEvent]) -> list[RecordedEvent]:
    if not head.meta or not events:
        return events
    meta = _decode_meta(head.meta)
    if meta.max_age_ms is None:
        return events
    oldest = time.time_ns() // 1_000_000 - meta.max_age_ms
    return [e for e in events if e.timestamp_ms >= oldest]

