"""A partition's log: its segments, appends with group commit, reads, retention.

Concurrency: one write lock per partition serialises appends; readers take no
lock at all. They read two immutable snapshots: ``_layout`` (the segment list,
replaced on roll and retention) and ``_visible`` (the high watermark: end
offset, the segment holding it and the byte position there). A record becomes
visible only once the partition's durability mode says it may not disappear.
"""

from __future__ import annotations

import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, NamedTuple

from ..errors import (
    CorruptionError,
    EventStoreError,
    InvalidArgumentError,
    OffsetOutOfRangeError,
    StorageError,
    StoreClosedError,
)
from ..records import Record, RecoveryEvent, TopicConfig
from ..wire import batch as kafka
from ..wire.errors import CorruptRecordError
from . import disk, faults
from . import format as fmt
from .epochs import EpochFile
from .producers import EXPIRATION_MS, ProducerState
from .recovery import Checkpoint, Report, open_segments, sync_dir
from .segment import Segment, SegmentDeletedError
from .timings import LogTimings
from .truncation import Intent, apply_intent, read_intent, remove_intent, write_intent

Durability = Literal["fsync", "interval", "none"]
Visible = tuple[int, Segment, int]  # (end offset, the segment holding it, the byte position there)
CHECKPOINT_EVERY_BYTES = 32 * 1024 * 1024
MAX_RELATIVE_OFFSET = 0xFFFFFFFF
# append_one's inline path checks the segment's age (segment_ms) at least this often
_ROLL_CHECK_EVERY_APPENDS = 64
_encode_batch = fmt.encode_batch
_READ_RETRIES_MAX = 3
# base_offset, batch_length, partition_leader_epoch: what the store writes into a Kafka batch
_KAFKA_PREFIX = struct.Struct(">qii")
# producer_id, producer_epoch, base_sequence, record_count: positions 43..61 of a Kafka batch
_KAFKA_PRODUCER = struct.Struct(">qhii")
_TIMESTAMP = struct.Struct(">q")

class PartitionLog:
    """One partition directory. Thread-safe; readers never block writers."""

    def __init__(
        self,
        directory: str,
        topic: str,
        partition: int,
        config: TopicConfig,
        durability: Durability,
        checkpoint: Checkpoint | None,
        report: Report,
        on_checkpoint: Callable[[Checkpoint], None],
        *,
        log_start: int = 0,
        on_log_start: Callable[[int], None] | None = None,
        producer_expiration_ms: int = EXPIRATION_MS,
        timings: LogTimings | None = None,
    ) -> None:
        self.directory = directory
        self.timings = timings or LogTimings()
        """Where fsync latencies and batches/records per fsync are counted (shared by a log's
        partitions)."""
        self.topic = topic
        self.partition = partition
        self.config = config
        self.durability = durability
        self._fsync_mode = durability == "fsync"
        self._on_checkpoint = on_checkpoint
        self._lock = threading.Lock()
        self._sync_mutex = threading.Lock()  # guards _syncing, _waiters, _failed
        self._syncing = False
        self._waiters: list[_Waiter] = []
        self._failed: EventStoreError | None = None  # a failed fsync, or closed
        self._vis_lock = threading.Lock()
        self._listeners: dict[object, Callable[[], object]] = {}
        self._end_listeners: dict[object, Callable[[], object]] = {}
        self.decoder = fmt.decoder_for(topic, partition)
        """Decodes this partition's records (``Record`` with its topic and partition filled in)."""
        intent = read_intent(directory)  # a truncation or reset a crash cut short: finish it
        if intent is not None:
            apply_intent(directory, intent)
        segments = open_segments(directory, checkpoint, report)
        self._layout: tuple[list[int], list[Segment]] = (
            [s.base_offset for s in segments],
            segments,
        )
        self.producer_expiration_ms = producer_expiration_ms
        """Entries of producers idle this long are dropped at each checkpoint (section 19)."""
        try:
            self.producers = load_producers(segments, checkpoint)
            """Idempotent producers' state (``storage.producers``), guarded by the write lock."""
        except BaseException:
            for seg in segments:
                seg.close()
            raise
        active = segments[-1]
        self.active = active
        self._roll_deadline = time.monotonic() + config.segment_ms / 1000
        self._next_offset = active.next_offset
        self._synced_offset = self._next_offset
        self._fast_offset_limit = self._next_offset  # first append takes the careful path
        self._on_log_start = on_log_start
        self._last_checkpoint: Checkpoint | None = checkpoint
        try:
            self.epochs = EpochFile.load(directory, segments[0].base_offset, self._next_offset,
                                         _batch_epochs(segments))
            """The partition's leader-epoch file (``storage.epochs``), changed under the write lock."""
            if intent is not None and intent.reset:
                self.epochs.drop_from(-1)
                if on_log_start is not None:
                    on_log_start(intent.end_offset)
                log_start = intent.end_offset
            else:
                self.epochs.drop_from(self._next_offset, keep_at_end=intent is None)
            if checkpoint is None or intent is not None or checkpoint != self._checkpoint_of(active):
                active.sync_all()  # what recovery kept is durable before anyone sees it
                self._write_checkpoint(self._checkpoint_of(active))
            if intent is not None:
                remove_intent(directory)
        except BaseException:
            self.abandon()  # a failed open leaves no file open
            raise
        self._noted_epoch = self.epochs.last_epoch
        self.leader_epoch = max(self._noted_epoch, 0)
        """The epoch stamped into the batches this partition writes (``set_leader_epoch``)."""
        self._checkpoint_position = (active.base_offset, active.size)
        self._visible: Visible = (self._next_offset, active, active.size)
        self._durable: Visible = self._visible  # the durable end: kept apart once gated
        self._cuts = 0  # truncations and resets so far (guarded by _sync_mutex)
        self._gated = False
        self._high_watermark = self._next_offset
        self._publish_on_write = durability != "fsync"  # and not gated
        self._log_start = min(log_start, self._next_offset)
        """The log start DeleteRecords set (docs/format.md, section 10); the log starts at the
        larger of it and the first segment's base. Past the end after a crash: the end."""
        self.appended_batches = 0
        self.appended_records = 0  # records beyond one per batch; see appended_total
        self.fsyncs = 0
        self._synced_batches = 0  # appended_batches at the last fsync (guarded by _sync_mutex)

    # --- appending ---------------------------------------------------------

    def append(
        self,
        timestamps: Iterable[int],
        keys: Iterable[bytes | None],
        values: Sequence[bytes | None],
        headers: Iterable[Any],
        base_ts: int,
        max_ts: int,
        attributes: int = 0,
    ) -> int:
        """Write records, given as columns, as one batch; returns its base offset.

        Each column yields one entry per value (``itertools.repeat`` for a value
        they share); ``attributes`` are the batch's (``fmt.LOG_APPEND_TIME`` in a
        LogAppendTime topic). The caller then calls ``wait_durable(base + len(values))``
        outside any lock, so that concurrent appenders share fsyncs.
        """
        prepared = Prepared(timestamps, keys, values, headers, base_ts, max_ts, _nothing, attributes)
        return self.append_prepared(lambda _base: prepared)[0]

    def append_prepared(self, prepare: Callable[[int], Prepared | None]) -> tuple[int, int]:
        """Append what ``prepare(base_offset)`` returns, deciding it under the write lock.

        ``prepare`` runs with the partition's write lock held and sees the base
        offset the batch will get; it may raise (nothing is written) or return
        None (nothing to write). After a successful write its ``on_written``
        runs, still under the lock. Returns the base offset and the end offset
        (the base offset again if nothing was written).
        """
        with self._lock:
            if self._failed is not None:
                raise self._failed
            base = self._next_offset
            prepared = prepare(base)
            if prepared is None:
                return base, base
            count = len(prepared.values)
            rows = list(zip(range(base, base + count), prepared.timestamps, prepared.keys,
                            prepared.values, prepared.headers, strict=True))
            epoch = self.leader_epoch
            batch = _encode_batch(base, rows, prepared.base_ts, prepared.max_ts, prepared.attributes, epoch)
            self._write(batch, base, count, prepared.base_ts, prepared.max_ts, epoch)
            prepared.on_written(base)
            return base, base + count

    def append_encoded(self, batch: bytes, batch_base: int, count: int, base_ts: int, max_ts: int,
                       rebase: Callable[[int, int], bytes | bytearray]) -> int:
        """Write a batch already encoded and checked; returns its base offset.

        If ``batch_base`` is not the partition's end, or its leader epoch is not the
        partition's, ``rebase(end, epoch)`` (called under the write lock) returns the
        batch re-encoded there, or raises (nothing is written).
        """
        with self._lock:
            if self._failed is not None:
                raise self._failed
            base, epoch = self._next_offset, self.leader_epoch
            same = batch_base == base and fmt.read_epoch(batch, 0) == epoch
            data = batch if same else rebase(base, epoch)
            return self._write(data, base, count, base_ts, max_ts, epoch)

    def append_kafka(self, batch: bytearray, header: kafka.BatchHeader,
                     append_time: int | None = None) -> tuple[int, bool]:
        """Write a Kafka batch already checked (rules K1-K5); returns its base offset and
        whether it is a duplicate (then nothing was written and the offset is the one the
        batch was first written at).

        Under the write lock: the idempotent producer's sequence is checked
        (``ProducerState.check``; may raise, nothing written), the base offset
        and leader epoch (both outside the CRC) are written into ``batch``, and
        the batch is written as it is (docs/format.md, 17.3); with ``append_time`` (a
        LogAppendTime topic) it is marked LogAppendTime at that time first (17.3.2).
        """
        count = header.record_count
        producer = header.producer_id >= 0
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if producer:
                duplicate = self.producers.check(self.topic, self.partition, header.producer_id,
                                                 header.producer_epoch, header.base_sequence, count)
                if duplicate is not None:
                    return duplicate.base_offset, True
            base = self._next_offset
            first_ts, max_ts = header.base_timestamp, header.max_timestamp
            if append_time is not None:
                kafka.set_log_append_time(batch, append_time)
                first_ts = max_ts = append_time
            epoch = self.leader_epoch
            _KAFKA_PREFIX.pack_into(batch, 0, base, header.batch_length, epoch)
            self._write(batch, base, count, first_ts, max_ts, epoch)
            if producer:
                self.producers.update(header.producer_id, header.producer_epoch, header.base_sequence,
                                      count, base, max_ts)
            return base, False

    # --- replicas (docs/replication.md) -------------------------------------

    def set_leader_epoch(self, epoch: int) -> None:
        """Stamp ``epoch`` into the batches written from now on; the next one notes it in the
        epoch file first (``_write``), so appends take the careful path once."""
        with self._lock:
            self.leader_epoch = epoch
            self._fast_offset_limit = 0

    def epoch_end_offset(self, epoch: int) -> tuple[int, int]:
        """(the largest epoch ≤ ``epoch`` that wrote here, where it ended); (-1, -1) if none."""
        with self._lock:
            return self.epochs.end_offset(epoch, self._next_offset)

    def append_replica(self, data: bytes | bytearray | memoryview) -> int:
        """Write a leader's stored batches byte for byte at the same offsets; returns the new
        written end (not waited durable).

        Every batch is checked before anything is written (framing, checksum or CRC,
        contiguous offsets from the partition's end, epochs never going back); a new epoch
        is noted in the epoch file before its first batch; idempotent producers' state
        follows the Kafka batches. Refused with nothing written on any mismatch.
        """
        view = memoryview(data).cast("B")
        batches = _replica_batches(view, self.topic, self.partition)
        with self._lock:
            if self._failed is not None:
                raise self._failed
            end = self._next_offset
            if batches[0].base != end:
                raise InvalidArgumentError(
                    f"{self.topic}/{self.partition}: replica batch starts at offset "
                    f"{batches[0].base}, but the partition ends at {end}")
            if batches[0].epoch < self._noted_epoch:
                raise InvalidArgumentError(
                    f"{self.topic}/{self.partition}: a replica batch of leader epoch "
                    f"{batches[0].epoch} after epoch {self._noted_epoch} (epochs never go back)")
            for b in batches:  # bounded by the batches given
                self._write(view[b.position:b.position + b.size], b.base, b.records, b.base_ts,
                            b.max_ts, b.epoch)
                if b.producer_id >= 0:
                    self.producers.update(b.producer_id, b.producer_epoch, b.sequence, b.records,
                                          b.base, b.max_ts)
            return self._next_offset

    def truncate(self, offset: int) -> int:
        """Cut the partition so that it ends at ``offset`` rounded down to a batch boundary;
        returns the new end. Crash-safe (``storage.truncation``): an intent first, then the
        segment files, the recovered state, the checkpoint, the epoch file. The visible end
        and high watermark come down with it."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            start = self.offsets()[0]
            if offset < start:
                raise InvalidArgumentError(
                    f"{self.topic}/{self.partition}: cannot truncate to {offset}, below the log "
                    f"start {start}")
            if offset >= self._next_offset:
                return self._next_offset
            end, seg, position = self._boundary(offset, (self._next_offset, self.active, self.active.size))
            self._cut(Intent(False, end, seg.base_offset, position))
            self._log_start = min(self._log_start, end)
            return end

    def reset(self, start_offset: int) -> None:
        """Delete every segment and restart the partition empty at ``start_offset`` (log
        start = end = ``start_offset``); crash-safe as ``truncate``."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            self._cut(Intent(True, start_offset, start_offset, 0))

    def _cut(self, intent: Intent) -> None:
        """Truncation and reset, docs/format.md; with the write lock held."""
        with self._sync_mutex:
            self._cuts += 1  # a sync that started before publishes nothing of the old end
        if not intent.reset:
            self._sync_or_fail(self.active.sync_all)  # what stays is durable before the cut
        write_intent(self.directory, intent)
        apply_intent(self.directory, intent)
        if intent.reset:
            if self._on_log_start is not None:
                self._on_log_start(intent.end_offset)
            self._log_start = intent.end_offset
            faults.point("truncate.log-start")
        old = self._layout[1]
        kept = self._last_checkpoint
        usable = kept is not None and not intent.reset and (
            kept.segment_base < intent.segment_base
            or (kept.segment_base == intent.segment_base and kept.position <= intent.position))
        checkpoint = kept if usable else None
        for seg in old:  # readers holding them retry on the new layout
            seg.deleted = True
            seg.close(unmap=False)
        segments = open_segments(self.directory, checkpoint, _ignore)
        self._layout = ([s.base_offset for s in segments], segments)
        self.producers = load_producers(segments, checkpoint)
        active = self.active = segments[-1]
        end = self._next_offset = active.next_offset
        with self._sync_mutex:
            self._synced_offset = end
        self._roll_deadline = time.monotonic() + self.config.segment_ms / 1000
        self._fast_offset_limit = 0
        self._sync_or_fail(active.sync_all)
        self._write_checkpoint(self._checkpoint_of(active))
        faults.point("truncate.checkpointed")
        self.epochs.drop_from(-1 if intent.reset else end)
        self._noted_epoch = self.epochs.last_epoch
        faults.point("truncate.epochs")
        remove_intent(self.directory)
        with self._vis_lock:
            self._durable = (end, active, active.size)
            self._high_watermark = min(self._high_watermark, end)
            self._visible = self._durable
            if self._gated and self._high_watermark < end:  # what the watermark hid stays hidden
                self._visible = self._boundary(max(self._high_watermark, self._layout[0][0]), self._durable)

    def describe_producers(self) -> list[tuple[int, int, int, int]]:
        """``(producer_id, epoch, last_sequence, last_timestamp)`` of each idempotent producer
        this partition knows (DescribeProducers)."""
        with self._lock:
            return self.producers.describe()

    def append_one(self, ts: int, key: bytes | None, value: bytes | None, headers: Any,
                   attributes: int = 0) -> int:
        """``append`` for a single record.

        This is the hottest path of small appends, so the common case (no roll,
        whole write, no index entry due) is written out inline; everything else
        goes through ``_write``.
        """
        with self._lock:
            base = self._next_offset
            epoch = self.leader_epoch
            batch = _encode_batch(base, ((base, ts, key, value, headers),), ts, ts, attributes, epoch)
            seg = self.active
            position = seg.size
            end_position = position + len(batch)
            if (
                position >= seg.index_due_position
                or end_position > self._segment_bytes
                or base >= self._fast_offset_limit
                or self._failed is not None
            ):
                return self._write(batch, base, 1, ts, ts, epoch)
            try:
                written = disk.pwrite(seg.fd, batch, position)  # type: ignore[arg-type]
            except OSError:
                written = -1
            if written != len(batch):  # error or short write: let the careful path handle it
                if written > 0:
                    disk.ftruncate(seg.fd, position)  # type: ignore[arg-type]
                return self._write(batch, base, 1, ts, ts, epoch)
            seg.size = end_position
            seg.next_offset = self._next_offset = base + 1
            if ts > seg.max_timestamp:
                seg.max_timestamp = ts
            self.appended_batches += 1
            if self._publish_on_write:
                self._visible = (base + 1, seg, end_position)
                if self._listeners:
                    self._notify()
            elif not self._fsync_mode:  # gated: the written end is the durable end
                self._publish(base + 1, seg, end_position)
            return base

    def _write(self, batch: bytes | bytearray | memoryview, base: int, count: int, base_ts: int,
               max_ts: int, epoch: int) -> int:
        """Steps 2, 4, 5 and 7 of the append protocol, for a batch of leader epoch ``epoch``
        (a new epoch is noted in the epoch file first). Called with the write lock held."""
        if self._failed is not None:
            raise self._failed
        if epoch != self._noted_epoch:
            self._note_epoch(epoch, base)
        seg = self.active
        if seg.size and (
            seg.size + len(batch) > self.config.segment_bytes
            or time.monotonic() >= self._roll_deadline
            or base + count - seg.base_offset > MAX_RELATIVE_OFFSET
        ):
            seg = self._roll()
        if not seg.size:  # segment_ms counts from a segment's first append
            self._roll_deadline = time.monotonic() + self.config.segment_ms / 1000
        self._fast_offset_limit = min(
            seg.base_offset + MAX_RELATIVE_OFFSET,
            base + count + _ROLL_CHECK_EVERY_APPENDS,
        )
        seg.append(batch, base, count, base_ts, max_ts)
        self._next_offset = end = base + count
        self.appended_batches += 1
        self.appended_records += count - 1  # append_one's inline path counts batches only
        if self._publish_on_write:
            self._visible = (end, seg, seg.size)  # every publisher holds the write lock here
            if self._listeners:
                self._notify()
        elif not self._fsync_mode:  # gated: the written end is the durable end
            self._publish(end, seg, seg.size)
        return base

    def _note_epoch(self, epoch: int, base: int) -> None:
        """Add the epoch-file entry of a batch of a new epoch, before it is written."""
        if epoch < self._noted_epoch:
            raise InvalidArgumentError(
                f"{self.topic}/{self.partition}: a batch of leader epoch {epoch} after epoch "
                f"{self._noted_epoch} (epochs never go back)")
        self.epochs.add(epoch, base)
        self._noted_epoch = epoch

    def _roll(self) -> Segment:
        """Roll protocol, docs/format.md section 8. Called with the write lock held."""
        old = self.active
        self._sync_or_fail(old.seal)
        faults.point("roll.sealed")
        new = Segment.create(self.directory, self._next_offset)
        faults.point("roll.created")
        sync_dir(self.directory)
        faults.point("roll.dir-synced")
        bases, segments = self._layout
        self._layout = ([*bases, new.base_offset], [*segments, new])
        self.active = new
        self._publish(self._next_offset, old, old.size)  # sealing synced all of it
        self._write_checkpoint(self._checkpoint_of(new))
        faults.point("roll.checkpointed")
        self._enforce_retention_locked(_now_ms())
        return new

    def is_durable(self, end_offset: int) -> bool:
        """Whether every record before ``end_offset`` is fsynced already (no lock)."""
        return self._synced_offset >= end_offset

    def wait_durable(self, end_offset: int) -> None:
        """Return once every record before ``end_offset`` is fsynced (group commit).

        At most one thread at a time is the leader and runs ``fdatasync``; the
        others park on a private lock. When the leader's sync completes it wakes
        every waiter whose records it covered and hands leadership to the oldest
        waiter it did not cover, which syncs at once for everyone written by then.
        No woken thread has to reacquire a shared lock, so wakeups do not convoy.

        An fsync error fails the partition for good: after a failed fsync the
        kernel may have dropped the dirty pages, so a retry could report success
        for data that is gone.
        """
        if self._synced_offset >= end_offset:
            return
        waiter = _Waiter(end_offset)
        with self._sync_mutex:
            if self._synced_offset >= end_offset:
                return
            if self._failed is not None:
                raise self._failed
            if self._syncing:
                self._waiters.append(waiter)
            else:
                self._syncing = True
                waiter.lead = True
                waiter.lock.release()
        waiter.lock.acquire()  # released by a leader: covered, failed, or our turn to lead
        if waiter.lead:
            self._lead_sync()
            self._maybe_checkpoint()
        failed: EventStoreError | None = self._failed  # set by another thread's leader
        if failed is not None and self._synced_offset < end_offset:
            raise failed

    def _lead_sync(self) -> None:
        with self._lock:
            target, seg, position = self._next_offset, self.active, self.active.size
            cuts, batches = self._cuts, self.appended_batches
        error: StorageError | None = None
        started = time.perf_counter()
        try:
            seg.datasync()
        except StorageError as e:
            error = e
        self.timings.fsync_seconds.observe(time.perf_counter() - started)
        with self._sync_mutex:
            if error is not None:
                self._failed = error
                covered, self._waiters = self._waiters, []
                nxt = None
            else:
                self.fsyncs += 1
                self._count_fsync(batches, target)
                if cuts == self._cuts:  # else a truncation since made its own end durable
                    self._synced_offset = max(self._synced_offset, target)
                    if self._fsync_mode:  # other modes publish on write
                        self._publish(target, seg, position)
                covered = [w for w in self._waiters if w.end_offset <= target]
                self._waiters = [w for w in self._waiters if w.end_offset > target]
                nxt = self._waiters.pop(0) if self._waiters else None
            if nxt is None:
                self._syncing = False
            else:
                nxt.lead = True
        for w in covered:  # bounded by the number of waiting threads
            w.lock.release()
        if nxt is not None:
            nxt.lock.release()
        if error is not None:
            raise error

    def _publish(self, offset: int, seg: Segment, position: int) -> None:
        """The durable end moved to ``offset``: so does the visible end, up to the high
        watermark once gated (``enable_high_watermark``)."""
        with self._vis_lock:
            if not self._gated:
                if offset <= self._visible[0]:
                    return
                self._visible = (offset, seg, position)
                moved = True
            else:
                if offset <= self._durable[0]:
                    return
                self._durable = (offset, seg, position)
                moved = self._advance_visible()
        if self._gated:
            for listener in list(self._end_listeners.values()):  # bounded by the watchers
                listener()
        if moved and self._listeners:
            self._notify()

    # --- the high-watermark gate (docs/replication.md, section 3) -----------

    def enable_high_watermark(self, from_start: bool = False) -> None:
        """From now on readers see up to min(durable end, high watermark). The high
        watermark starts at the visible end (nothing visible is hidden) or, ``from_start``,
        at the log start: a follower's records are hidden until its leader's high watermark
        covers them (docs/replication.md, section 4: a tail the leader lacks is cut first)."""
        with self._lock, self._vis_lock:
            if self._gated:
                return
            self._durable = self._visible
            self._high_watermark = self._visible[0]
            if from_start:
                self._visible = self._boundary_after(self.offsets()[0], self._durable)
                self._high_watermark = min(self._high_watermark, self._visible[0])
            self._gated = True
            self._publish_on_write = False

    def set_high_watermark(self, offset: int) -> None:
        """Raise the high watermark (a lower one is ignored); readers and watchers wake when
        the visible end moves."""
        with self._vis_lock:
            if offset <= self._high_watermark:
                return
            self._high_watermark = offset
            moved = self._gated and self._advance_visible()
        if moved and self._listeners:
            self._notify()

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    def log_end(self) -> int:
        """The durable end (the written end in modes ``interval`` and ``none``)."""
        return self._durable[0] if self._gated else self._visible[0]

    def _advance_visible(self) -> bool:
        """Move the visible end to the batch boundary at or below min(high watermark, durable
        end); whether it moved. Called with ``_vis_lock`` held, gated."""
        durable = self._durable
        target = min(self._high_watermark, durable[0])
        if target <= self._visible[0]:
            return False
        found = durable if target == durable[0] else self._boundary(target, durable)
        if found[0] <= self._visible[0]:
            return False
        self._visible = found
        return True

    def _boundary(self, offset: int, durable: Visible) -> Visible:
        """The batch boundary at or below ``offset`` (below the durable end), with the segment
        and byte position readers need: an index lookup and a short walk of prefixes."""
        bases, segments = self._layout
        seg = segments[bisect_right(bases, offset) - 1]
        limit = durable[2] if seg is durable[1] else seg.size
        mm = seg.view(limit) if limit else None
        position = seg.locate(offset, limit, mm)
        if position >= limit:
            return offset, seg, limit
        return fmt.read_prefix(mm, position)[0], seg, position

    def _boundary_after(self, offset: int, durable: Visible) -> Visible:
        """The batch boundary at or above ``offset`` (at most the durable end). A follower's
        log start inside a batch came from its leader's, which it takes only once visible
        (docs/replication.md, section 4): the rest of that batch was below a high watermark."""
        found = self._boundary(offset, durable)
        if found[0] >= offset:
            return found
        _base, seg, position = found
        mm = seg.view(durable[2] if seg is durable[1] else seg.size)
        return self._boundary(found[0] + fmt.batch_record_count(mm, position), durable)

    def _notify(self) -> None:
        for listener in list(self._listeners.values()):  # bounded by the number of waiters
            listener()

    def add_listener(self, listener: Callable[[], object]) -> object:
        """Call ``listener()`` (from the appending thread) whenever new records become visible.

        Returns a token for ``remove_listener``: the same callable added twice
        is two registrations, each removed on its own.
        """
        token = object()
        self._listeners[token] = listener
        return token

    def remove_listener(self, token: object) -> None:
        self._listeners.pop(token, None)
        self._end_listeners.pop(token, None)

    def add_end_listener(self, listener: Callable[[], object]) -> object:
        """Call ``listener()`` whenever the durable end moves (``log_end``); a token for
        ``remove_listener``. It may also be called when only the visible end moved."""
        token = object()
        self._end_listeners[token] = listener
        self._listeners[token] = listener  # ungated, the visible end is the durable end
        return token

    def listener_count(self) -> int:
        """How many listeners are registered (a leak shows here)."""
        return len(self._listeners)

    def wait_for(self, offset: int, timeout_s: float | None) -> bool:
        """Block until a record at ``offset`` or later is visible, or the timeout passes."""
        if self._visible[0] > offset:
            return True
        event = threading.Event()
        token = self.add_listener(event.set)
        try:
            return self._visible[0] > offset or event.wait(timeout_s)
        finally:
            self.remove_listener(token)

    # --- checkpoints -------------------------------------------------------

    def _checkpoint_of(self, seg: Segment) -> Checkpoint:
        """The checkpoint of the end of ``seg``, the active segment (with the write lock held,
        or at open): the producers' snapshot is taken at the same point of the log."""
        self.producers.expire(_now_ms(), self.producer_expiration_ms)
        return Checkpoint(
            seg.base_offset, seg.size, seg.next_offset, seg.max_timestamp,
            len(seg.index), len(seg.timeindex), self.producers.snapshot(),
        )

    def _write_checkpoint(self, cp: Checkpoint) -> None:
        self._on_checkpoint(cp)
        self._checkpoint_position = (cp.segment_base, cp.position)
        self._last_checkpoint = cp

    def _maybe_checkpoint(self) -> None:
        base, position = self._checkpoint_position
        seg = self.active
        if seg.base_offset == base and seg.size - position < CHECKPOINT_EVERY_BYTES:
            return
        self.checkpoint()

    def checkpoint(self) -> None:
        """Fsync the active segment and its indexes, then record a recovery checkpoint."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            seg = self.active
            cp = self._checkpoint_of(seg)
            started = time.perf_counter()
            self._sync_or_fail(seg.sync_all)
            self.timings.fsync_seconds.observe(time.perf_counter() - started)
            faults.point("checkpoint.synced")
            self.fsyncs += 1
            with self._sync_mutex:
                self._count_fsync(self.appended_batches, cp.next_offset)
                self._synced_offset = max(self._synced_offset, cp.next_offset)
            self._publish(cp.next_offset, seg, cp.position)
            self._write_checkpoint(cp)
            faults.point("checkpoint.written")

    def _count_fsync(self, batches: int, end: int) -> None:
        """Batches and records one successful fsync made durable (with ``_sync_mutex`` held)."""
        self.timings.batches_per_fsync.observe(max(0, batches - self._synced_batches))
        self.timings.records_per_fsync.observe(max(0, end - self._synced_offset))
        self._synced_batches = max(self._synced_batches, batches)

    def _sync_or_fail(self, sync: Callable[[], None]) -> None:
        """Run a sync of the active segment; if it fails, the partition fails for good, as
        after a failed group-commit sync (``wait_durable``): a retry could report success
        for pages the kernel already dropped."""
        try:
            sync()
        except StorageError as e:
            with self._sync_mutex:
                if self._failed is None:
                    self._failed = e
            raise

    # --- reading -----------------------------------------------------------

    def offsets(self) -> tuple[int, int]:
        """(log start offset, high watermark)."""
        return max(self._layout[1][0].base_offset, self._log_start), self._visible[0]

    def visible(self) -> tuple[int, Segment, int]:
        """What readers see: (end offset, the segment holding it, the byte position there)."""
        return self._visible

    def read(self, offset: int, max_records: int, max_bytes: int | None,
             whole_batches: bool = False) -> list[Record]:
        return self.read_sized(offset, max_records, max_bytes, whole_batches)[0]

    def read_sized(self, offset: int, max_records: int, max_bytes: int | None,
                   whole_batches: bool = False) -> tuple[list[Record], int]:
        """As ``read``, with the bytes of the batches read (what a fetch of them would carry)."""
        for _ in range(_READ_RETRIES_MAX):
            try:
                return self._read_once(offset, max_records, max_bytes, whole_batches)
            except SegmentDeletedError:
                continue
            except ValueError:  # a mapping closed under the read
                self._raise_if_closed()
                raise
        start, end = self.offsets()
        raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end)

    def _raise_if_closed(self) -> None:
        """A read that found its segment's mapping closed: the partition was closed (its
        topic deleted, the store closed) while it read. Say so, as a read after it would."""
        if self._failed is not None:
            raise self._failed from None

    def _read_once(self, offset: int, max_records: int, max_bytes: int | None,
                   whole_batches: bool) -> tuple[list[Record], int]:
        end, vis_seg, vis_pos = self._visible
        bases, segments = self._layout
        start = max(bases[0], self._log_start)
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end)
        out: list[Record] = []
        budget = max_bytes
        read_bytes = 0
        i = bisect_right(bases, offset) - 1
        while offset < end and len(out) < max_records and i < len(segments):  # bounded by i
            seg = segments[i]
            if seg.deleted:
                raise SegmentDeletedError
            limit = vis_pos if seg is vis_seg else seg.size
            records, used = seg.read(offset, limit, max_records - len(out), budget, self.decoder,
                                     whole_batches, must_progress=not out)
            if records:
                if out:
                    out.extend(records)
                else:
                    out = records
                offset = records[-1].offset + 1
            read_bytes += used
            if budget is not None:
                budget -= used
                if budget <= 0:
                    break
            if seg is vis_seg or offset < seg.next_offset:
                break  # the visible end, or a limit stopped this segment early
            i += 1
        return out, read_bytes

    def read_batches(self, offset: int, max_bytes: int, *, to_log_end: bool = False) -> tuple[bytes, int]:
        """Stored batches from the one holding ``offset``, byte for byte, at most
        ``max_bytes`` (the first whole), and the offset after the last of them: up to the
        visible end, or with ``to_log_end`` up to the durable end (what a replica copies)."""
        for _ in range(_READ_RETRIES_MAX):
            try:
                return self._read_batches_once(offset, max_bytes, to_log_end)
            except SegmentDeletedError:
                continue
            except ValueError:  # a mapping closed under the read
                self._raise_if_closed()
                raise
        start, end = self.offsets()
        raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end)

    def _read_batches_once(self, offset: int, max_bytes: int, to_log_end: bool) -> tuple[bytes, int]:
        end, vis_seg, vis_pos = self._durable if to_log_end and self._gated else self._visible
        bases, segments = self._layout
        start = max(bases[0], self._log_start)
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end)
        chunks: list[bytes] = []
        budget = max_bytes
        i = bisect_right(bases, offset) - 1
        while offset < end and i < len(segments):  # bounded by i
            seg = segments[i]
            if seg.deleted:
                raise SegmentDeletedError
            limit = vis_pos if seg is vis_seg else seg.size
            data, offset = seg.read_batches(offset, limit, budget, must_progress=not chunks)
            if data:
                chunks.append(data)
                budget -= len(data)
            if budget <= 0 or seg is vis_seg or offset < seg.next_offset:
                break  # the byte budget, the visible end, or the budget stopped this segment
            i += 1
        return b"".join(chunks), offset

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The first offset whose record timestamp is ≥ ``timestamp_ms``, or None."""
        for _ in range(_READ_RETRIES_MAX):
            try:
                return self._offset_for_time_once(timestamp_ms)
            except SegmentDeletedError:
                continue  # retention removed a segment under us: look again
        return self._offset_for_time_once(timestamp_ms)

    def _offset_for_time_once(self, timestamp_ms: int) -> int | None:
        end, vis_seg, vis_pos = self._visible
        for seg in self._layout[1]:  # bounded by the segment count
            if seg.base_offset >= end:
                return None
            seg.ensure_indexes()
            if seg.max_timestamp < timestamp_ms:
                continue
            limit = vis_pos if seg is vis_seg else seg.size
            found = find_time(seg, timestamp_ms, limit, self.decoder)
            if found is not None:
                found = max(found, self._log_start)  # records before the log start are deleted
                return found if found < end else None
        return None

    # --- retention ---------------------------------------------------------

    def enforce_retention(self, now_ms: int | None = None, dry_run: bool = False) -> list[Segment]:
        """Delete closed segments past retention (with ``dry_run``, only name them); returns them."""
        with self._lock:
            now = _now_ms() if now_ms is None else now_ms
            if dry_run:
                return self._retention_victims(now)
            return self._enforce_retention_locked(now)

    def _retention_victims(self, now_ms: int) -> list[Segment]:
        """The oldest closed segments that retention removes now (docs/format.md, section 10)."""
        cfg = self.config
        if cfg.retention_ms is None and cfg.retention_bytes is None:
            return []
        segments = self._layout[1]
        total = sum(s.size for s in segments)
        gone: list[Segment] = []
        for oldest in segments[:-1]:  # bounded; never the active segment
            oldest.ensure_indexes()
            by_time = cfg.retention_ms is not None and oldest.max_timestamp < now_ms - cfg.retention_ms
            by_size = cfg.retention_bytes is not None and total - oldest.size >= cfg.retention_bytes
            if not (by_time or by_size):
                break
            gone.append(oldest)
            total -= oldest.size
        return gone

    def _enforce_retention_locked(self, now_ms: int) -> list[Segment]:
        gone = self._retention_victims(now_ms)
        if gone:
            keep = self._layout[1][len(gone):]
            self._layout = ([s.base_offset for s in keep], keep)
            for seg in gone:
                seg.delete()
            sync_dir(self.directory)
            faults.point("retention.dir-synced")
        return gone

    def delete_before(self, offset: int) -> list[Segment]:
        """Move the log start to ``offset`` (DeleteRecords): recorded first (``on_log_start``,
        durable when it returns), then the segments whose records are all below it are
        deleted; when ``offset`` is the end and the active segment holds records, it is
        rolled first so that they can go too. Returns the segments deleted."""
        with self._lock:
            if offset > self._log_start:
                if self._on_log_start is not None:
                    self._on_log_start(offset)
                self._log_start = offset
            if offset >= self._next_offset and self.active.next_offset > self.active.base_offset:
                self._roll()
            segments = self._layout[1]
            gone: list[Segment] = []
            for seg in segments[:-1]:  # bounded; never the active segment
                if seg.next_offset > offset:
                    break
                gone.append(seg)
            if gone:
                keep = segments[len(gone):]
                self._layout = ([s.base_offset for s in keep], keep)
                for seg in gone:
                    seg.delete()
                sync_dir(self.directory)
        return gone

    # --- state -------------------------------------------------------------

    @property
    def config(self) -> TopicConfig:
        return self._config

    @config.setter
    def config(self, config: TopicConfig) -> None:
        self._config = config
        self._segment_bytes = config.segment_bytes

    @property
    def appended_total(self) -> int:
        return self.appended_batches + self.appended_records

    @property
    def end_written(self) -> int:
        """The offset after the last record written (visible or not yet)."""
        return self._next_offset

    def segments(self) -> list[Segment]:
        return list(self._layout[1])

    def max_timestamp(self) -> int:
        """The largest record timestamp in the partition (-1 if empty)."""
        best = -1
        for seg in self._layout[1]:  # bounded by the segment count
            seg.ensure_indexes()
            best = max(best, seg.max_timestamp)
        return best

    def size_bytes(self) -> int:
        return sum(s.size for s in self._layout[1])

    def abandon(self, refuse_with: EventStoreError | None = None) -> None:
        """Close every file without a sync or a checkpoint: after an open that failed, or
        for a partition whose topic is deleted. Appends after it raise ``refuse_with``."""
        with self._lock:
            if self._failed is None:
                self._failed = refuse_with or StoreClosedError(self.directory)
            for seg in self._layout[1]:
                seg.close()

    def close(self, refuse_with: EventStoreError | None = None) -> None:
        """Fsync, checkpoint, close every file. Appends after it raise ``refuse_with``
        (by default ``StoreClosedError``)."""
        try:
            if self._failed is None:
                self.wait_durable(self._next_offset)  # lets any sync in progress finish
                self.checkpoint()
        finally:
            with self._lock:
                if self._failed is None:
                    self._failed = refuse_with or StoreClosedError(self.directory)
                for seg in self._layout[1]:
                    seg.close()


def _nothing(_base: int) -> None:
    return None


class Prepared:
    """A batch decided under the write lock (see ``PartitionLog.append_prepared``)."""

    __slots__ = ("attributes", "base_ts", "headers", "keys", "max_ts", "on_written", "timestamps", "values")

    def __init__(self, timestamps: Iterable[int], keys: Iterable[bytes | None],
                 values: Sequence[bytes | None], headers: Iterable[Any], base_ts: int, max_ts: int,
                 on_written: Callable[[int], object], attributes: int = 0) -> None:
        self.timestamps, self.keys, self.values, self.headers = timestamps, keys, values, headers
        self.base_ts, self.max_ts, self.on_written = base_ts, max_ts, on_written
        self.attributes = attributes  # the batch's: fmt.LOG_APPEND_TIME or 0


class _Waiter:
    """A thread waiting in ``wait_durable``: parked on its own lock until released."""

    __slots__ = ("end_offset", "lead", "lock")

    def __init__(self, end_offset: int) -> None:
        self.end_offset = end_offset
        self.lead = False
        self.lock = threading.Lock()
        self.lock.acquire()


def find_time(seg: Segment, timestamp_ms: int, limit: int, decoder: Any) -> int | None:
    mm = seg.view(limit) if limit else None
    rel = seg.timeindex.start_for(timestamp_ms)
    position = 0
    if rel is not None:
        position = seg.locate(seg.base_offset + rel, limit, mm)
        if position < limit:
            position += fmt.read_prefix(mm, position)[1]
    while position < limit:  # bounded by limit
        _base, size, _magic = fmt.read_prefix(mm, position)
        if fmt.batch_max_timestamp(mm, position) >= timestamp_ms:
            info = fmt.validate_batch(mm, position, limit - position, None)
            if isinstance(info, str):
                raise CorruptionError(seg.log_path, position, info)
            try:
                records = fmt.decode_records(mm, position, info.size, decoder)
            except fmt.UNDECODABLE as e:
                raise CorruptionError(seg.log_path, position, f"undecodable records: {e}") from e
            for record in records:  # one batch
                if record.timestamp_ms >= timestamp_ms:
                    return record.offset
        position += size
    return None


def load_producers(segments: list[Segment], checkpoint: Checkpoint | None) -> ProducerState:
    """The producers' state at the end of the log (docs/format.md, section 19): the
    checkpoint's snapshot and the Kafka batches after its position, or, without a usable
    checkpoint (none, its segment gone, or its position past the end: R6), every Kafka batch
    of the partition from the start."""
    start_index, start_position, state = 0, 0, ProducerState()
    if checkpoint is not None:
        for i, seg in enumerate(segments):  # bounded by the segment count
            if seg.base_offset == checkpoint.segment_base and checkpoint.position <= seg.size:
                try:
                    state = ProducerState.restore(checkpoint.producers)
                except (ValueError, TypeError):
                    break  # not a snapshot: rebuild from the start
                start_index, start_position = i, checkpoint.position
                break
    for seg in segments[start_index:]:  # bounded by the segment count
        _replay_segment(state, seg, start_position if seg is segments[start_index] else 0)
    return state


def _replay_segment(state: ProducerState, seg: Segment, position: int) -> None:
    """Feed ``state`` the producer fields of the Kafka batches of ``seg`` from ``position``
    (batches recovery or an earlier run validated: headers only, no records)."""
    end = seg.size
    if position >= end:
        return
    mm = seg.view(end)
    while position + fmt.PREFIX_SIZE <= end:  # bounded: every step advances by a batch size
        base, size, magic = fmt.read_prefix(mm, position)
        if size < fmt.MIN_BATCH_SIZE:
            raise CorruptionError(seg.log_path, position, f"batch of {size} bytes")
        if magic == fmt.MAGIC_KAFKA_V2 and position + fmt.KAFKA_HEADER_SIZE <= end:
            producer_id, epoch, sequence, count = _KAFKA_PRODUCER.unpack_from(mm, position + 43)
            if producer_id >= 0:
                state.update(producer_id, epoch, sequence, count, base, fmt.batch_max_timestamp(mm, position))
        position += size


class _ReplicaBatch(NamedTuple):
    """A batch of ``append_replica``'s bytes, checked."""

    position: int
    size: int
    base: int
    records: int
    base_ts: int
    max_ts: int
    epoch: int
    producer_id: int
    producer_epoch: int
    sequence: int


def _replica_batches(view: memoryview, topic: str, partition: int) -> list[_ReplicaBatch]:
    """Check a replica's bytes (whole valid batches of either kind, contiguous offsets,
    epochs not going back) and say where each batch is; raises before anything is written."""
    out: list[_ReplicaBatch] = []
    position, total = 0, len(view)
    expected: int | None = None
    while position < total:  # bounded: each step advances by a whole batch or raises
        info = fmt.validate_batch(view, position, total - position, expected)
        if isinstance(info, str):
            if info.startswith("base offset"):
                raise InvalidArgumentError(f"{topic}/{partition}: replica batches not contiguous: {info}")
            raise CorruptRecordError(f"replica batch for {topic}/{partition}: {info}", position)
        epoch = fmt.read_epoch(view, position)
        if out and epoch < out[-1].epoch:
            raise InvalidArgumentError(
                f"{topic}/{partition}: replica batch of leader epoch {epoch} after one of {out[-1].epoch}")
        producer_id, producer_epoch, sequence = -1, -1, -1
        if info.magic == fmt.MAGIC_KAFKA_V2:
            producer_id, producer_epoch, sequence, _count = _KAFKA_PRODUCER.unpack_from(view, position + 43)
        out.append(_ReplicaBatch(position, info.size, info.base_offset, info.record_count,
                                 _first_timestamp(view, position, info), info.max_timestamp, epoch,
                                 producer_id, producer_epoch, sequence))
        position += info.size
        expected = info.next_offset
    if not out:
        raise InvalidArgumentError(f"{topic}/{partition}: no replica batch given")
    return out


def _first_timestamp(buf: Any, position: int, info: fmt.BatchInfo) -> int:
    """A checked batch's base timestamp (a Kafka LogAppendTime batch's is its max)."""
    if info.magic != fmt.MAGIC_KAFKA_V2:
        return int(_TIMESTAMP.unpack_from(buf, position + 23)[0])
    if buf[position + kafka.ATTRIBUTES_POSITION + 1] & fmt.LOG_APPEND_TIME:
        return info.max_timestamp
    return int(_TIMESTAMP.unpack_from(buf, position + 27)[0])


def _batch_epochs(segments: list[Segment]) -> Iterator[tuple[int, int]]:
    """(leader epoch, base offset) of every batch, from the prefixes (an epoch file rebuilt)."""
    for seg in segments:  # bounded by the segment count
        end = seg.size
        if not end:
            continue
        mm = seg.view(end)
        position = 0
        while position + fmt.PREFIX_SIZE <= end:  # bounded: every step advances by a batch size
            base, size, _magic = fmt.read_prefix(mm, position)
            if size < fmt.MIN_BATCH_SIZE:
                raise CorruptionError(seg.log_path, position, f"batch of {size} bytes")
            yield fmt.read_epoch(mm, position), base
            position += size


def _ignore(_event: RecoveryEvent) -> None:
    """A truncation reopens segments it just cut: nothing there is a recovery to report."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
