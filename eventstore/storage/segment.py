"""One segment: a ``.log`` file of batches plus its two sparse indexes.

Appends go through ``pwrite`` on the log's file descriptor; reads go through a
read-only ``mmap`` of the file, remapped when a reader needs bytes past the
mapped length. A segment knows nothing of topics, records or LMDB.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
from collections.abc import Iterator
from typing import Any

import msgspec

from ..errors import CorruptionError, StorageError, StorageFullError
from ..records import Record
from . import disk, faults
from . import format as fmt
from .index import INDEX_INTERVAL_BYTES, OffsetIndex, TimeIndex
from .names import INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, format_segment_name

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_RESIDENT_BYTES_MAX = 16 * 1024 * 1024


class SegmentDeletedError(Exception):
    """Internal: a reader's segment was deleted by retention; it retries on the new layout."""


def storage_error(path: str, e: OSError, doing: str) -> StorageError:
    """Translate an OSError on ``path`` into the matching EventStoreError."""
    cls = StorageFullError if e.errno in _FULL_ERRNOS else StorageError
    return cls(path, f"{doing} failed: {e.strerror or e}")


class Segment:
    """A segment file and its indexes. Closed segments are immutable."""

    #: Whether rebuilt indexes are written back; a read-only view keeps them in memory.
    persist_indexes = True

    def __init__(self, directory: str, base_offset: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.log_path = os.path.join(directory, format_segment_name(base_offset, LOG_SUFFIX))
        self.index = OffsetIndex(os.path.join(directory, format_segment_name(base_offset, INDEX_SUFFIX)))
        self.timeindex = TimeIndex(
            os.path.join(directory, format_segment_name(base_offset, TIMEINDEX_SUFFIX))
        )
        self.fd: int | None = None
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.first_timestamp: int | None = None
        self.indexes_loaded = False
        self.index_due_position = INDEX_INTERVAL_BYTES
        self.deleted = False
        self._mm: mmap.mmap | None = None
        self._mapped = 0
        self._map_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._fd_users = 0  # syncs and mappings using ``fd`` now: close() waits for them
        self._fd_cond = threading.Condition()

    # --- lifecycle ---------------------------------------------------------

    @classmethod
    def create(cls, directory: str, base_offset: int) -> Segment:
        seg = cls(directory, base_offset)
        try:
            try:
                seg.fd = disk.open_file(seg.log_path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(seg.fd).st_size:
                    raise CorruptionError(seg.log_path, 0, "new segment file already holds data")
                for idx in (seg.index, seg.timeindex):
                    idx.truncate(0)
            except OSError as e:
                raise storage_error(seg.log_path, e, "creating segment") from e
        except BaseException:
            seg.close()  # nothing left open by a failed creation
            raise
        seg.indexes_loaded = True
        return seg

    @classmethod
    def existing(cls, directory: str, base_offset: int, end_offset: int | None) -> Segment:
        """A segment already on disk; ``end_offset`` is known for closed ones."""
        seg = cls(directory, base_offset)
        try:
            seg.size = os.stat(seg.log_path).st_size
        except OSError as e:
            raise storage_error(seg.log_path, e, "stat") from e
        if end_offset is not None:
            seg.next_offset = end_offset
        return seg

    def open_for_append(self) -> None:
        self.refresh_index_due()
        if self.fd is None:
            try:
                self.fd = os.open(self.log_path, os.O_RDWR)
            except OSError as e:
                raise storage_error(self.log_path, e, "opening segment") from e

    def seal(self) -> None:
        """Close for writes (on roll): final time entry, fsync log and indexes."""
        if self.max_timestamp > self.timeindex.last_timestamp:
            last_base = self.last_batch(self.size)[1] if self.size else self.base_offset
            self.timeindex.append(self.max_timestamp, last_base - self.base_offset)
        self.sync_all()
        self.index.close()
        self.timeindex.close()

    def sync_all(self) -> None:
        self.datasync()
        try:
            self.index.sync()
            self.timeindex.sync()
        except OSError as e:
            raise storage_error(self.index.path, e, "fsync of index") from e

    def datasync(self) -> None:
        """fdatasync the log. A segment already closed was synced when it was sealed."""
        with self._using_fd() as fd:  # close() must not reuse the descriptor under a sync
            if fd is None:
                return
            try:
                disk.fdatasync(fd)
            except OSError as e:
                raise storage_error(self.log_path, e, "fdatasync") from e

    @contextlib.contextmanager
    def _using_fd(self) -> Iterator[int | None]:
        """The writer's descriptor (None once closed), kept open until the block ends.

        Any number of syncs and mappings may use it at once (a reader that maps the
        segment never waits for an fsync in progress); ``close`` waits until none does,
        so it never closes a number another thread is still using, or that the process
        has meanwhile handed out again.
        """
        with self._fd_cond:
            fd = self.fd
            if fd is not None:
                self._fd_users += 1
        try:
            yield fd
        finally:
            if fd is not None:
                with self._fd_cond:
                    self._fd_users -= 1
                    if not self._fd_users:
                        self._fd_cond.notify_all()

    def close(self, *, unmap: bool = True) -> None:
        self.index.close()
        self.timeindex.close()
        with self._fd_cond:
            fd, self.fd = self.fd, None
            while self._fd_users:  # bounded: each user's sync or mapping ends
                self._fd_cond.wait()
        if fd is not None:
            os.close(fd)
        mm, self._mm, self._mapped = self._mm, None, 0
        if mm is not None and unmap:
            with contextlib.suppress(BufferError):  # a reader still holds a view
                mm.close()

    def delete(self) -> None:
        """Unlink the log first, then the indexes (docs/format.md, section 10).

        The mapping is not closed: a reader may be using it right now. It goes
        when the last reader drops it; a reader that asks for it again is told
        the segment is gone and retries on the partition's new layout.
        """
        self.deleted = True
        self.close(unmap=False)
        for path in (self.log_path, self.index.path, self.timeindex.path):
            try:
                disk.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:  # what is left is found again by the next open
                raise storage_error(path, e, "removing segment file") from e
            faults.point("retention.log-unlinked" if path == self.log_path else "retention.segment-unlinked")

    # --- appending ---------------------------------------------------------

    def append(
        self, batch: bytes | bytearray | memoryview, base_offset: int, count: int, base_ts: int, max_ts: int
    ) -> None:
        """Write one encoded batch at the end; on failure nothing is left behind."""
        assert self.fd is not None, "append to a segment not open for writes"
        position = self.size
        try:
            written = disk.pwrite(self.fd, batch, position)
            while written < len(batch):  # bounded: each pass writes ≥1 byte or raises
                n = disk.pwrite(self.fd, memoryview(batch)[written:], position + written)
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                written += n
        except OSError as e:
            with contextlib.suppress(OSError):
                disk.ftruncate(self.fd, position)
            raise storage_error(self.log_path, e, f"write of {len(batch)} bytes") from e
        self.size = position + len(batch)
        self.next_offset = base_offset + count
        if self.first_timestamp is None:
            self.first_timestamp = base_ts
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
        self.maybe_index(position, base_offset)

    def refresh_index_due(self) -> None:
        """A batch starting at or past ``index_due_position`` gets an index entry (format.md, 3)."""
        self.index_due_position = self.index.last_position + INDEX_INTERVAL_BYTES

    def maybe_index(self, position: int, base_offset: int) -> None:
        """Add an index entry for the batch at ``position`` if one is due (format.md, 3)."""
        if position == 0 or position < self.index_due_position:
            return
        rel = base_offset - self.base_offset
        with self._index_lock:  # a reader may be repairing the index (R8)
            self.index.append(rel, position)
            if self.max_timestamp > self.timeindex.last_timestamp:
                self.timeindex.append(self.max_timestamp, rel)
            self.refresh_index_due()

    def _repair_index(self, limit: int) -> None:
        """Rebuild the offset and time indexes from the log up to ``limit`` (R8).

        Appends that become due for an index entry meanwhile wait on the index
        lock and add theirs after, so the rebuilt index stays complete.
        """
        with self._index_lock:
            if self.index_entries_valid(limit):
                return  # another reader repaired it first
            self._rebuild_indexes(limit)
            self.refresh_index_due()

    def truncate(self, position: int) -> None:
        """Cut the log at ``position`` (recovery only: no reader exists yet)."""
        try:
            if self.fd is not None:
                disk.ftruncate(self.fd, position)
            else:
                disk.truncate(self.log_path, position)
        except OSError as e:
            raise storage_error(self.log_path, e, "truncate") from e
        self.size = position
        self._mm, self._mapped = None, 0

    # --- reading -----------------------------------------------------------

    def view(self, end: int) -> Any:
        """A read-only mapping covering at least ``[0, end)``."""
        mm = self._mm
        if mm is not None and self._mapped >= end:
            return mm
        with self._map_lock:
            if self._mm is None or self._mapped < end:
                if self.deleted:
                    raise SegmentDeletedError(self.log_path)
                try:
                    self._mm = self._map_whole()
                except (OSError, ValueError) as e:
                    raise CorruptionError(self.log_path, end, f"cannot map segment: {e}") from e
                self._mapped = len(self._mm)
                if self._mapped < end:
                    raise CorruptionError(self.log_path, self._mapped, "segment shorter than its end")
            return self._mm

    def _map_whole(self) -> mmap.mmap:
        """Map the whole log file, through the writer's descriptor while it is open.

        The descriptor is used through ``_using_fd``: a ``close`` meanwhile would otherwise
        let this map, or close a second time, a number the process has handed out again.
        """
        with self._using_fd() as fd:
            if fd is not None:
                return mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        fd = os.open(self.log_path, os.O_RDONLY)
        try:
            return mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    def drop_pages(self) -> None:
        """Drop this segment's mapped pages from the resident set (the page cache keeps them)."""
        mm = self._mm
        if mm is not None:
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED)

    def locate(self, offset: int, limit: int, mm: Any) -> int:
        """Position of the batch holding ``offset`` (or ``limit`` if none before it).

        Walks batch prefixes from the nearest index entry. Every prefix walked
        must continue the offsets of the one before (its base offset is the
        previous base plus count), so one damaged field anywhere on the way is
        reported as corruption instead of leading the read astray.
        """
        self.ensure_indexes()
        rel, position = self.index.lookup(offset - self.base_offset)
        expected = self.base_offset + rel
        if position >= limit or fmt.read_prefix(mm, position)[0] != expected:
            if position < limit:
                self._repair_index(limit)  # a damaged entry: rebuild (R8), then walk from 0
            position, expected = 0, self.base_offset
        while position < limit:  # bounded: every step advances by a batch size
            base, size, magic = fmt.read_prefix(mm, position)
            known = magic == fmt.MAGIC_NATIVE or magic == fmt.MAGIC_KAFKA_V2
            readable = known and position + fmt.COUNT_BYTES <= limit
            count = fmt.batch_record_count(mm, position) if readable else 0
            if (base != expected or not known or size < fmt.MIN_BATCH_SIZE
                    or position + size > limit or count < 1):
                raise CorruptionError(
                    self.log_path, position,
                    f"batch prefix out of sequence while looking for offset {offset} "
                    f"(base offset {base}, expected {expected}; size {size}; count {count})",
                )
            if base + count > offset:
                return position
            expected = base + count
            position += size
        return limit

    def last_batch(self, limit: int) -> tuple[int, int]:
        """(position, base offset) of the last batch before ``limit``, walking from the index."""
        mm = self.view(limit)
        rel, position = self.index.lookup(self.next_offset - self.base_offset)
        last = (position, self.base_offset + rel)
        while position < limit:  # bounded by limit
            base, size, _ = fmt.read_prefix(mm, position)
            if size < fmt.MIN_BATCH_SIZE:
                break
            last = (position, base)
            position += size
        return last

    def read(
        self,
        offset: int,
        limit: int,
        max_records: int,
        max_bytes: int | None,
        decoder: msgspec.msgpack.Decoder[list[Record]],
        whole_batches: bool = False,
        must_progress: bool = True,
    ) -> tuple[list[Record], int]:
        """Records from ``offset`` up to byte ``limit`` (a batch boundary), and bytes used.

        ``max_bytes`` bounds the batch bytes read, but the first batch is always
        returned whole, so a reader always makes progress. With ``whole_batches``
        the last batch is not cut at ``max_records`` (readers that buffer, like
        the consumer, then never decode the same batch twice).
        """
        mm = self.view(limit)
        position = self.locate(offset, limit, mm)
        chunks: list[list[Record]] = []
        count = 0
        total = 0
        expected: int | None = None
        while position < limit and count < max_records:  # bounded by limit
            info = fmt.validate_batch(mm, position, limit - position, expected)
            if isinstance(info, str):
                raise CorruptionError(self.log_path, position, info)
            if (chunks or not must_progress) and max_bytes is not None \
                    and total + info.size > max_bytes:
                break
            records = self._decode(mm, position, info, decoder)
            if not chunks and not info.base_offset <= offset < info.next_offset:
                raise CorruptionError(self.log_path, position,
                                      f"batch {info.base_offset}..{info.next_offset - 1} "
                                      f"found where offset {offset} should be")
            if offset > info.base_offset:
                records = records[offset - info.base_offset :]
            chunks.append(records)
            count += len(records)
            total += info.size
            position += info.size
            expected = info.next_offset
        _resident.touched(self, total)
        out = chunks[0] if len(chunks) == 1 else _concat(chunks)
        if len(out) > max_records and not whole_batches:
            del out[max_records:]
        return out, total

    def read_batches(self, offset: int, limit: int, max_bytes: int,
                     must_progress: bool) -> tuple[bytes, int]:
        """The batches from the one holding ``offset`` up to byte ``limit`` (a batch boundary),
        byte for byte, checksums verified, and the offset after them.

        At most ``max_bytes``, but with ``must_progress`` the first batch whole.
        """
        mm = self.view(limit)
        start = position = self.locate(offset, limit, mm)
        expected: int | None = None
        while position < limit:  # bounded by limit
            info = fmt.validate_batch(mm, position, limit - position, expected)
            if isinstance(info, str):
                raise CorruptionError(self.log_path, position, info)
            if (position > start or not must_progress) and position - start + info.size > max_bytes:
                break
            position += info.size
            offset = expected = info.next_offset
        _resident.touched(self, position - start)
        return bytes(mm[start:position]), offset

    def _decode(
        self, mm: Any, position: int, info: fmt.BatchInfo, decoder: msgspec.msgpack.Decoder[list[Record]]
    ) -> list[Record]:
        try:
            records = fmt.decode_records(mm, position, info.size, decoder)
        except fmt.UNDECODABLE as e:
            raise CorruptionError(self.log_path, position, f"undecodable records: {e}") from e
        if (
            len(records) != info.record_count
            or records[0].offset != info.base_offset
            or records[-1].offset != info.next_offset - 1
        ):
            raise CorruptionError(self.log_path, position, "record offsets disagree with header")
        return records

    def batches(self, start: int, end: int) -> Iterator[tuple[int, fmt.BatchInfo | str]]:
        """(position, info or reason) for each batch in ``[start, end)``; stops after a bad one."""
        mm = self.view(end) if end > 0 else None
        position = start
        expected: int | None = None
        while position < end:  # bounded: each step advances ≥ 52 bytes or stops
            info = fmt.validate_batch(mm, position, end - position, expected)
            yield position, info
            if isinstance(info, str):
                return
            position += info.size
            expected = info.next_offset

    # --- indexes of closed segments ----------------------------------------

    def ensure_indexes(self) -> None:
        """Load a closed segment's indexes on first use; rebuild them if damaged (R8)."""
        if not self.indexes_loaded:
            with self._index_lock:
                self._load_indexes_locked()

    def _load_indexes_locked(self) -> None:
        if not self.indexes_loaded:
            rel_max = max(0, self.next_offset - 1 - self.base_offset)
            ok = self.index.load(self.size) and self.timeindex.load(rel_max)
            if not ok or not self._indexes_agree():
                self._rebuild_indexes()
            self.max_timestamp = self.timeindex.last_timestamp
            self.indexes_loaded = True

    def index_entries_valid(self, limit: int) -> bool:
        """Every offset-index entry below ``limit`` is a batch start with the right offset."""
        if not limit:
            return True
        mm = self.view(limit)
        for rel, position in zip(self.index.relative_offsets, self.index.positions, strict=True):
            if position + fmt.PREFIX_SIZE > limit or \
                    fmt.read_prefix(mm, position)[0] != self.base_offset + rel:
                return False
        return True

    def _indexes_agree(self) -> bool:
        """Every offset-index entry is a batch start with the right offset, and the time
        index ends with the closed segment's final entry (on its last batch). R8."""
        if not self.size:
            return True
        if not self.index_entries_valid(self.size):
            return False
        if not len(self.timeindex):
            return False
        last_position, last_base = self.last_batch(self.size)
        if self.timeindex.relative_offsets[-1] != last_base - self.base_offset:
            return False
        mm = self.view(self.size)
        return fmt.batch_max_timestamp(mm, last_position) <= self.timeindex.last_timestamp

    def _rebuild_indexes(self, limit: int | None = None) -> None:
        index, timeindex = OffsetIndex(self.index.path), TimeIndex(self.timeindex.path)
        max_ts, last_pos, last_base = -1, 0, self.base_offset
        end = self.size if limit is None else limit
        for position, info in self.batches(0, end):
            if isinstance(info, str):
                raise CorruptionError(self.log_path, position, info)
            max_ts = max(max_ts, info.max_timestamp)
            last_base = info.base_offset
            if position and position - last_pos >= INDEX_INTERVAL_BYTES:
                last_pos = position
                index.relative_offsets.append(info.base_offset - self.base_offset)
                index.positions.append(position)
                if max_ts > timeindex.last_timestamp:
                    timeindex.timestamps.append(max_ts)
                    timeindex.relative_offsets.append(info.base_offset - self.base_offset)
        if max_ts > timeindex.last_timestamp:
            timeindex.timestamps.append(max_ts)
            timeindex.relative_offsets.append(last_base - self.base_offset)
        if self.persist_indexes:
            with contextlib.suppress(OSError):  # derived data: keep serving from memory
                index.rewrite()
                timeindex.rewrite()
        self.index.close()
        self.timeindex.close()
        self.index, self.timeindex = index, timeindex


def _concat(chunks: list[list[Record]]) -> list[Record]:
    out: list[Record] = []
    for chunk in chunks:  # one extend per batch, not per record
        out.extend(chunk)
    return out


class _ResidentPages:
    """Bounds the mapped pages that reads leave resident, across all segments.

    A full scan touches every page of every segment; left alone, the resident
    set would grow with the log. Once reads have touched ``_RESIDENT_BYTES_MAX``
    bytes, every segment they touched drops its pages (``MADV_DONTNEED``); a
    later read of the same bytes takes minor faults from the page cache.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = 0
        self._segments: set[Segment] = set()

    def touched(self, seg: Segment, nbytes: int) -> None:
        with self._lock:
            self._segments.add(seg)
            self._bytes += nbytes
            if self._bytes < _RESIDENT_BYTES_MAX:
                return
            segments, self._segments, self._bytes = self._segments, set(), 0
        for s in segments:  # bounded by the segments read since the last drop
            s.drop_pages()


_resident = _ResidentPages()
