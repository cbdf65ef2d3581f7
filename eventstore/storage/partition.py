"""A partition's log: its segments, appends with group commit, reads, retention.

Concurrency: one write lock per partition serialises appends; readers take no
lock at all. They read two immutable snapshots: ``_layout`` (the segment list,
replaced on roll and retention) and ``_visible`` (the high watermark: end
offset, the segment holding it and the byte position there). A record becomes
visible only once the partition's durability mode says it may not disappear.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from typing import Any, Literal

from ..errors import CorruptionError, OffsetOutOfRangeError
from ..records import Record, TopicConfig
from . import format as fmt
from .recovery import Checkpoint, Report, fsync_dir, open_segments
from .segment import Segment, SegmentDeletedError

Durability = Literal["fsync", "interval", "none"]
CHECKPOINT_EVERY_BYTES = 32 * 1024 * 1024
MAX_RELATIVE_OFFSET = 0xFFFFFFFF
_READ_RETRIES_MAX = 3

# (timestamp_ms, key, value, headers) — an item ready to be given an offset
Item = tuple[int, bytes | None, bytes | None, Any]


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
    ) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.config = config
        self.durability = durability
        self._on_checkpoint = on_checkpoint
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._vis_lock = threading.Lock()
        self._listeners: set[Callable[[], object]] = set()
        self._decoder = fmt.decoder_for(topic, partition)
        segments = open_segments(directory, checkpoint, report)
        self._layout: tuple[list[int], list[Segment]] = (
            [s.base_offset for s in segments],
            segments,
        )
        active = segments[-1]
        self.active = active
        self._active_since_ms = _now_ms()
        self._next_offset = active.next_offset
        self._synced_offset = self._next_offset
        if checkpoint is None or checkpoint != self._checkpoint_of(active):
            active.sync_all()  # what recovery kept is durable before anyone sees it
            self._write_checkpoint(self._checkpoint_of(active))
        self._checkpoint_position = (active.base_offset, active.size)
        self._visible: tuple[int, Segment, int] = (self._next_offset, active, active.size)
        self.appended_batches = 0
        self.appended_records = 0
        self.fsyncs = 0

    # --- appending ---------------------------------------------------------

    def append(self, items: list[Item], max_ts: int) -> int:
        """Write ``items`` as one batch; returns its base offset.

        The caller then calls ``wait_durable(base + len(items))`` (outside any
        lock) so that concurrent appenders share fsyncs.
        """
        count = len(items)
        base_ts = items[0][0]
        with self._lock:
            base = self._next_offset
            rows = [(base + i, ts, k, v, h) for i, (ts, k, v, h) in enumerate(items)]
            batch = fmt.encode_batch(base, rows, base_ts, max_ts)
            seg = self.active
            if seg.size and self._should_roll(seg, len(batch), count):
                seg = self._roll()
            seg.append(batch, base, count, base_ts, max_ts)
            self._next_offset = base + count
            self.appended_batches += 1
            self.appended_records += count
            if self.durability != "fsync":
                self._publish(self._next_offset, seg, seg.size)
        return base

    def _should_roll(self, seg: Segment, batch_bytes: int, count: int) -> bool:
        cfg = self.config
        return (
            seg.size + batch_bytes > cfg.segment_bytes
            or _now_ms() - self._active_since_ms >= cfg.segment_ms
            or self._next_offset + count - seg.base_offset > MAX_RELATIVE_OFFSET
        )

    def _roll(self) -> Segment:
        """Roll protocol, docs/format.md section 8. Called with the write lock held."""
        old = self.active
        old.seal()
        new = Segment.create(self.directory, self._next_offset)
        fsync_dir(self.directory)
        bases, segments = self._layout
        self._layout = ([*bases, new.base_offset], [*segments, new])
        self.active = new
        self._active_since_ms = _now_ms()
        self._publish(self._next_offset, old, old.size)  # sealing synced all of it
        self._write_checkpoint(self._checkpoint_of(new))
        self._enforce_retention_locked(_now_ms())
        return new

    def wait_durable(self, end_offset: int) -> None:
        """Return once every record before ``end_offset`` is fsynced (group commit)."""
        if self._synced_offset >= end_offset:
            return
        with self._sync_lock:
            if self._synced_offset >= end_offset:
                return
            with self._lock:
                target, seg, position = self._next_offset, self.active, self.active.size
            seg.datasync()
            self.fsyncs += 1
            self._synced_offset = max(self._synced_offset, target)
            self._publish(target, seg, position)
        self._maybe_checkpoint()

    def _publish(self, offset: int, seg: Segment, position: int) -> None:
        with self._vis_lock:
            if offset <= self._visible[0]:
                return
            self._visible = (offset, seg, position)
        for listener in list(self._listeners):  # bounded by the number of waiters
            listener()

    def add_listener(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` (from the appending thread) whenever new records become visible."""
        self._listeners.add(listener)

    def remove_listener(self, listener: Callable[[], object]) -> None:
        self._listeners.discard(listener)

    def wait_for(self, offset: int, timeout_s: float | None) -> bool:
        """Block until a record at ``offset`` or later is visible, or the timeout passes."""
        if self._visible[0] > offset:
            return True
        event = threading.Event()
        self.add_listener(event.set)
        try:
            return self._visible[0] > offset or event.wait(timeout_s)
        finally:
            self.remove_listener(event.set)

    # --- checkpoints -------------------------------------------------------

    @staticmethod
    def _checkpoint_of(seg: Segment) -> Checkpoint:
        return Checkpoint(
            seg.base_offset, seg.size, seg.next_offset, seg.max_timestamp,
            len(seg.index), len(seg.timeindex),
        )

    def _write_checkpoint(self, cp: Checkpoint) -> None:
        self._on_checkpoint(cp)
        self._checkpoint_position = (cp.segment_base, cp.position)

    def _maybe_checkpoint(self) -> None:
        base, position = self._checkpoint_position
        seg = self.active
        if seg.base_offset == base and seg.size - position < CHECKPOINT_EVERY_BYTES:
            return
        self.checkpoint()

    def checkpoint(self) -> None:
        """Fsync the active segment and its indexes, then record a recovery checkpoint."""
        with self._lock:
            seg = self.active
            cp = self._checkpoint_of(seg)
            seg.sync_all()
            self.fsyncs += 1
            self._synced_offset = max(self._synced_offset, cp.next_offset)
            self._publish(cp.next_offset, seg, cp.position)
            self._write_checkpoint(cp)

    # --- reading -----------------------------------------------------------

    def offsets(self) -> tuple[int, int]:
        """(log start offset, high watermark)."""
        return self._layout[1][0].base_offset, self._visible[0]

    def read(self, offset: int, max_records: int, max_bytes: int | None) -> list[Record]:
        for _ in range(_READ_RETRIES_MAX):
            try:
                return self._read_once(offset, max_records, max_bytes)
            except SegmentDeletedError:
                continue
        start, end = self.offsets()
        raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end)

    def _read_once(self, offset: int, max_records: int, max_bytes: int | None) -> list[Record]:
        end, vis_seg, vis_pos = self._visible
        bases, segments = self._layout
        start = bases[0]
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end)
        out: list[Record] = []
        budget = max_bytes
        i = bisect_right(bases, offset) - 1
        while offset < end and len(out) < max_records and i < len(segments):  # bounded by i
            seg = segments[i]
            if seg.deleted:
                raise SegmentDeletedError
            limit = vis_pos if seg is vis_seg else seg.size
            records, used = seg.read(offset, limit, max_records - len(out), budget, self._decoder)
            if records:
                if out:
                    out.extend(records)
                else:
                    out = records
                offset = records[-1].offset + 1
            if budget is not None:
                budget -= used
                if budget <= 0:
                    break
            if seg is vis_seg or offset < seg.next_offset:
                break  # the visible end, or a limit stopped this segment early
            i += 1
        return out

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The first offset whose record timestamp is ≥ ``timestamp_ms``, or None."""
        end, vis_seg, vis_pos = self._visible
        for seg in self._layout[1]:  # bounded by the segment count
            if seg.base_offset >= end:
                return None
            seg.ensure_indexes()
            if seg.max_timestamp < timestamp_ms:
                continue
            limit = vis_pos if seg is vis_seg else seg.size
            found = _find_time(seg, timestamp_ms, limit, self._decoder)
            if found is not None:
                return found if found < end else None
        return None

    # --- retention ---------------------------------------------------------

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Delete closed segments past retention; returns how many were deleted."""
        with self._lock:
            return self._enforce_retention_locked(_now_ms() if now_ms is None else now_ms)

    def _enforce_retention_locked(self, now_ms: int) -> int:
        cfg = self.config
        if cfg.retention_ms is None and cfg.retention_bytes is None:
            return 0
        keep = list(self._layout[1])
        total = sum(s.size for s in keep)
        gone: list[Segment] = []
        while len(keep) > 1:  # bounded; never the active segment
            oldest = keep[0]
            oldest.ensure_indexes()
            by_time = cfg.retention_ms is not None and oldest.max_timestamp < now_ms - cfg.retention_ms
            by_size = cfg.retention_bytes is not None and total - oldest.size >= cfg.retention_bytes
            if not (by_time or by_size):
                break
            gone.append(keep.pop(0))
            total -= oldest.size
        if gone:
            self._layout = ([s.base_offset for s in keep], keep)
            for seg in gone:
                seg.delete()
            fsync_dir(self.directory)
        return len(gone)

    # --- state -------------------------------------------------------------

    @property
    def end_written(self) -> int:
        """The offset after the last record written (visible or not yet)."""
        return self._next_offset

    def segments(self) -> list[Segment]:
        return list(self._layout[1])

    def size_bytes(self) -> int:
        return sum(s.size for s in self._layout[1])

    def close(self) -> None:
        """Fsync, checkpoint, close every file. The partition is unusable after."""
        with self._sync_lock:
            self.checkpoint()
            with self._lock:
                for seg in self._layout[1]:
                    seg.close()

    def remove_files(self) -> None:
        with self._lock:
            for seg in self._layout[1]:
                seg.delete()


def _find_time(seg: Segment, timestamp_ms: int, limit: int, decoder: Any) -> int | None:
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
            for record in fmt.decode_records(mm, position, info.size, decoder):  # one batch
                if record.timestamp_ms >= timestamp_ms:
                    return record.offset
        position += size
    return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
