"""Streams on the log: expected-version appends, reads by stream, the global ``$all`` order.

``Streams(log, index)`` is the event-sourcing layer over a ``Log`` and its
derived stream index. Its jobs live in their own modules:

- ``queue.py``: an append is a request queued per partition; one thread at a
  time (the leader) takes the queued requests and hands the queue on;
- ``versions.py``: under the partition's write lock (``Log.append_prepared``)
  the leader checks each request's expected version, and recognises retries;
- ``positions.py``: the batch takes one range of global positions; a reader of
  ``$all`` only sees positions below the *watermark*, the first position not
  yet durable, so it never sees a gap that later fills;
- ``staging.py``: the written batch's index updates are staged and flushed to
  LMDB in batches; the stream heads memory keeps answer most version checks;
- ``reads.py``: reads by stream and of ``$all``;
- ``catchup.py``: on open the index follows the log; foreign records are
  skipped and reported.

Each request stays all or nothing: the envelopes of a batch are written as
one batch with one fsync, and each request is refused or accepted on its own.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import msgspec

from ..errors import (
    CorruptionError,
    IllegalStateError,
    InvalidArgumentError,
    StorageError,
    StreamNotFoundError,
    TopicExistsError,
)
from ..partitioner import partition_for_key
from ..records import DEFAULT_MAX_RECORD_BYTES, RecoveryEvent, TopicConfig
from ..storage.check import CheckReport
from ..storage.names import is_valid_topic_name
from ..storage.partition import Prepared
from ..validation import check_int64
from . import index as index_module
from .catchup import catch_up
from .consistency import check_partition
from .dcbtypes import DCB_STREAM
from .events import AppendResult, NewEvent, StreamMetadata, StreamState, encode_envelope
from .index import Head, StreamIndex
from .positions import Positions
from .queue import Accepted, AppendQueue, AppendRequest, Batch, await_batch, hand_off, take_batch
from .reads import StreamReads
from .rules import (
    META_EVENT_TYPE,
    META_PREFIX,
    Expected,
    category_of,
    check_events,
    check_expected,
    check_sizes,
    check_stream_id,
    metadata_target,
)
from .staging import Staging
from .versions import check_requests

if TYPE_CHECKING:
    from ..log import Log, Watch

__all__ = ["Streams", "StreamsOwner", "category_of", "open_streams"]

_meta_json = msgspec.json.Encoder()


class Streams:
    """The event-sourcing layer over ``log``, with its stream ``index`` (``store.streams``)."""

    def __init__(self, log: Log, index: StreamIndex, default_partitions: int = 4) -> None:
        """Bring ``index`` up to date with ``log`` and register with the log's hooks.
        ``default_partitions``: the partitions of a streams topic made on first use."""
        self.log = log
        self.index = index
        self.staging = Staging(index)
        """Staged index updates and the stream heads kept in memory."""
        self._default_partitions = default_partitions
        self.layers: dict[str, object] = {}
        """Layers made once per store over these streams, by name (``dcb.dcb_of``)."""
        self.catch_up_hooks: list[Callable[[], object]] = []
        """Called by ``catch_up`` after the stream index, before readers are woken: the
        layers' own derived indexes (the DCB tag index) follow the log too."""
        self._topic_lock = threading.Lock()
        self._queues: dict[tuple[str, int], AppendQueue] = {}
        catch_up(log, index)
        with index.read() as txn:
            self.positions = Positions(index.last_position(txn))
            """Global positions and their watermark."""
        self._reads = StreamReads(log, self.staging, self.positions)
        self.read = self._reads.read
        self.read_all = self._reads.read_all
        self.visible = self._reads.visible
        self.metadata = self._reads.metadata
        self.list_streams = self._reads.list_streams
        self.stream_version = self._reads.stream_version
        index.drop_listeners.append(self.staging.forget_topic)
        index.drop_listeners.append(self._reads.forget_topic)
        log.add_delete_hook(self._drop_topic)
        log.add_check_hook(self._check_partition)
        log.add_close_hook(self.close)

    def close(self) -> None:
        """Flush and close the index (a close hook of the log). A flush that fails leaves
        ``covered`` short of what it staged: the next open indexes it from the log."""
        try:
            with contextlib.suppress(StorageError, CorruptionError):
                self.staging.flush()
        finally:
            self.index.close()
            self.positions.wake()  # waiting subscriptions see the store closed

    def check_open(self) -> None:
        """Raise ``StoreClosedError`` if the store is closed."""
        self.log.check_open()

    def flush(self) -> None:
        """Write every staged index update to the index (reads do it themselves)."""
        self.staging.flush()

    def catch_up(self) -> None:
        """Index what reached the log without these streams: a follower's replica appends
        (docs/replication.md, 4.3). The index follows the log as at open, the heads memory
        holds are dropped (the index has newer ones), and the global positions move past
        the indexed ones, waking ``$all`` readers. For a store nothing appends to through
        these streams meanwhile (a follower refuses writes). The layers' indexes follow
        (``catch_up_hooks``) before the global positions move, so a reader woken by the
        move finds them caught up."""
        self.staging.flush()
        catch_up(self.log, self.index)
        self.staging.evict()
        for hook in list(self.catch_up_hooks):  # bounded by the layers
            hook()
        with self.index.read() as txn:
            self.positions.advance_to(self.index.last_position(txn))

    def watch(self, callback: Callable[[], object]) -> Watch:
        """Call ``callback()`` whenever the watermark moves: events may be there to read."""
        return self.positions.watch(callback)

    def _check_partition(self, cfg: TopicConfig, partition: int, report: CheckReport) -> None:
        """The log's check hook: the partition's foreign records, and the stream index against
        the log (what is staged is flushed first, if the disk lets it)."""
        if cfg.streams:
            with contextlib.suppress(StorageError, CorruptionError):
                self.staging.flush()
            check_partition(self.log, self.index, cfg, partition, report)

    def _drop_topic(self, cfg: TopicConfig) -> None:
        """The log deletes a topic: forget its streams (a delete hook)."""
        if cfg.streams:
            self.staging.flush()
            self.index.drop_topic(cfg.name)

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
        return name, partition_for_key(metadata_target(stream_id).encode(), cfg.partitions)

    def _stream_topic(self, name: str, stream_id: str, events: list[NewEvent]) -> TopicConfig:
        """The configuration of the streams topic ``name``, created if it does not exist.

        An existing streams topic is found without taking the lock: a thread
        that loses the GIL while holding a lock every appender needs makes all
        of them queue behind it.
        """
        cfg = self.log.find_topic(name)
        if cfg is not None and cfg.streams:
            return cfg
        with self._topic_lock:
            cfg = self.log.find_topic(name)
            if cfg is None:
                check_sizes(stream_id, events, name, DEFAULT_MAX_RECORD_BYTES)
                try:
                    return self.log.create_topic(name, partitions=self._default_partitions, streams=True)
                except TopicExistsError:  # made meanwhile by a create_topic outside this lock
                    cfg = self.log.find_topic(name)
                    if cfg is None:  # and deleted again: the caller sees the race
                        raise
            if not cfg.streams:
                raise InvalidArgumentError(
                    f"topic {name!r} holds plain records, not streams; choose another topic="
                )
            return cfg

    # --- appending ------------------------------------------------------------------

    def append(self, stream_id: str, events: Sequence[NewEvent], expected: Expected,
               topic: str | None, guard: Callable[[AppendRequest], None] | None = None) -> AppendResult:
        """Append to one stream: queue the request, then lead or wait (see ``_lead``).
        ``guard``: see ``AppendRequest.guard``.

        The head is looked up here, outside the partition lock, so that the
        leader, which everyone waits for, rarely has to read the index itself.
        """
        self.log.check_open()
        check_stream_id(stream_id)
        if stream_id == DCB_STREAM and guard is None:  # its appends carry their condition
            raise InvalidArgumentError(f"stream {DCB_STREAM!r} holds the store's tagged events: "
                                       "append them with append_events")
        events = check_events(events)
        check_expected(expected)
        if self.log.catalog.writing:
            raise IllegalStateError(
                f"cannot append to stream {stream_id!r} inside a catalog write transaction "
                "(Projection.handle runs in one): keep a projection's effects in its state, "
                "and append from on_commit or after catch_up()/run()"
            )
        generation = self.staging.evictions  # before looking: see versions.current_heads
        seen = self.staging.current_head(stream_id)
        topic_name, partition = self._locate(stream_id, topic, seen, events)
        cfg = self.log.topic(topic_name)
        check_sizes(stream_id, events, topic_name, cfg.max_record_bytes)
        self.log.partition(topic_name, partition)  # the partition exists
        self.staging.make_room()  # a full disk refuses it here, before anything is written
        request = AppendRequest(stream_id, events, expected, seen, generation, guard)
        queue = self._queue(topic_name, partition)
        queue.put(request)
        lead = queue.leader.acquire(blocking=False)
        while True:  # bounded: a request leads at most once, then is handled
            if lead:
                self._lead(queue, topic_name, partition)
            request.lock.acquire()  # released once handled, or to make this thread lead
            lead, request.lead = request.lead, False
            if not lead:
                break
        if request.error is not None:
            raise request.error
        self.staging.flush_if_due()
        assert request.result is not None
        return request.result

    def _queue(self, topic: str, partition: int) -> AppendQueue:
        key = (topic, partition)
        queue = self._queues.get(key)
        if queue is None:
            with self._topic_lock:
                queue = self._queues.setdefault(key, AppendQueue())
        return queue

    def _lead(self, queue: AppendQueue, topic: str, partition: int) -> None:
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
        rest of them (``await_batch``), so batches stay large instead of
        splitting into ever smaller ones, each with its own fsync.
        """
        await_batch(queue)
        batch = Batch(take_batch(queue.items))
        queue.last = max(1, len(batch.requests))
        try:
            if batch.requests:  # durable per the mode once it returns
                batch.end = self.log.append_prepared(
                    topic, partition, functools.partial(self._prepare, batch, topic, partition))[1]
        except BaseException as e:  # every requester gets the failure, none waits in vain
            batch.fail(e)
        finally:
            for start in batch.reserved:
                self.positions.complete(start)  # durable now, or abandoned
            for req in batch.requests:  # bounded by the batch
                req.lock.release()
            hand_off(queue)

    def _prepare(self, batch: Batch, topic: str, partition: int, base_offset: int) -> Prepared | None:
        """Under the partition lock: what of the batch is written (see ``Log.append_prepared``)."""
        accepted, envelopes = batch.accepted, batch.envelopes
        check_requests(self.staging, batch, topic, partition, base_offset)
        if not accepted:
            return None
        batch.reserved.append(self._assign_positions(accepted, envelopes))
        for follower, twin in batch.followers:  # bounded by the batch
            follower.result = twin.result
        now = time.time_ns() // 1_000_000
        keys = [a[0].stream_id.encode() for a, envs in zip(accepted, envelopes, strict=True) for _ in envs]
        values = [env for envs in envelopes for env in envs]
        count = len(values)
        stage = self.staging.stage

        def written(base: int) -> None:
            for (req, current, head, offset), envs in zip(accepted, envelopes, strict=True):
                stage(req.stream_id, req.events, envs, topic, partition, current, head,
                      req.position_start, offset)

        return Prepared([now] * count, keys, values, [()] * count, now, now, written)

    def _assign_positions(self, accepted: list[Accepted], envelopes: list[list[bytes]]) -> int:
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

    # --- metadata, delete, truncate: appends to the metadata stream ----------------------

    def set_metadata(self, stream_id: str, metadata: StreamMetadata,
                     topic: str | None = None) -> AppendResult:
        check_stream_id(stream_id)
        if not isinstance(metadata, StreamMetadata):
            raise InvalidArgumentError("metadata must be a StreamMetadata")
        for name in ("max_age_ms", "max_count", "truncate_before"):  # bounded: three fields
            check_int64(getattr(metadata, name), f"StreamMetadata.{name}", optional=True)
        try:
            data = _meta_json.encode(metadata)
        except (TypeError, OverflowError) as e:
            raise InvalidArgumentError(f"stream metadata cannot be stored as JSON: {e}") from None
        head = self._reads.head(stream_id)
        where = topic if head is None else head.topic
        event = NewEvent(type=META_EVENT_TYPE, data=data)
        return self.append(META_PREFIX + stream_id, [event], StreamState.ANY, where)

    def delete(self, stream_id: str) -> AppendResult:
        """Soft delete: hide every event; appending again revives the stream after them."""
        head = self._reads.head(stream_id)
        if head is None or head.last_version < 0:
            raise StreamNotFoundError(stream_id)
        meta = msgspec.structs.replace(self.metadata(stream_id), deleted=True,
                                       truncate_before=head.last_version + 1)
        return self.set_metadata(stream_id, meta, head.topic)

    def truncate_before(self, stream_id: str, version: int) -> AppendResult:
        check_int64(version, "before_version")
        head = self._reads.head(stream_id)
        if head is None:
            raise StreamNotFoundError(stream_id)
        meta = msgspec.structs.replace(self.metadata(stream_id), truncate_before=version)
        return self.set_metadata(stream_id, meta, head.topic)


class StreamsOwner(Protocol):
    """What holds a ``Streams`` (an ``eventstore.Store``): repositories and projection runners
    take one."""

    @property
    def streams(self) -> Streams: ...


def open_streams(log: Log, directory: str, default_partitions: int) -> Streams:
    """The streams layer over ``log`` with its index in ``directory``. A stream index found
    damaged while it catches up with the log (it marks itself) is kept aside and rebuilt,
    once (case L1). Nothing is left open if this raises."""
    for attempt in (1, 2):  # bounded: a damaged index is rebuilt once
        try:
            made = Streams(log, StreamIndex(directory), default_partitions)
            break
        except BaseException as e:
            marked = index_module.abandon(directory)  # nothing left open
            if attempt == 2 or not marked or not isinstance(e, CorruptionError):
                raise
    damage, broken = made.index.damage, made.index.broken
    if damage is not None and broken is not None:
        log.report(RecoveryEvent(
            case="L1", path=broken, position=damage.position,
            detail=f"stream index damaged ({damage.reason}); kept aside, rebuilt from the log"))
    return made
