"""A read-only view of a partition that another process may be writing.

The rules are docs/format.md, section 14: no lock, nothing written, closed
segments read whole, the active segment read up to its last whole valid batch,
found by scanning with ``pread`` so that no mapping ever reaches past the end
of the file. ``refresh()`` picks up growth, rolls and retention.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_right
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from ..errors import CorruptionError, OffsetOutOfRangeError, TopicNotFoundError
from ..records import Record
from . import epochs
from . import format as fmt
from .index import INDEX_INTERVAL_BYTES
from .names import LOG_SUFFIX, parse_segment_name
from .partition import find_time
from .segment import Segment, SegmentDeletedError, storage_error

T = TypeVar("T")
_READ_RETRIES_MAX = 8
_SCAN_CHUNK_BYTES = 4 * 1024 * 1024


class _End(NamedTuple):
    """What the view has accepted: the next offset, and where the active segment's valid bytes end."""

    offset: int
    active: Segment | None
    position: int


class SegmentExtent(NamedTuple):
    """One segment as a view sees it: what a copy of the partition may take of it."""

    base_offset: int
    path: str
    size: int  # bytes of whole, valid batches: the file's size when closed
    end_offset: int  # the offset after the last of them
    closed: bool


class PartitionView:
    """Read-only, lock-free view of one partition directory. Thread-safe."""

    def __init__(self, directory: str, topic: str, partition: int) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self._decoder = fmt.decoder_for(topic, partition)
        self._lock = threading.Lock()
        self._layout: tuple[list[int], list[Segment]] = ([], [])
        self._end = _End(0, None, 0)
        self._active_file = (0, 0)  # (device, inode) of the active segment's file
        self._directory = (0, 0)  # (device, inode) of the partition directory
        self.refresh()

    # --- following the writer --------------------------------------------

    def refresh(self) -> None:
        """Look at the directory and the active segment's tail again."""
        with self._lock:
            directory = self._directory_identity()
            bases = self._list_bases()
            old_bases, old_segments = self._layout
            known = dict(zip(old_bases, old_segments, strict=True))
            end = self._end
            moved = directory != self._directory
            self._directory = directory
            if moved or (end.active is not None and self._replaced(end)):
                for old in old_segments:  # the topic was deleted and made again: start over
                    old.deleted = True
                known, end = {}, _End(0, None, 0)
            segments: list[Segment] = []
            for i, base in enumerate(bases):  # bounded by the segment count
                last = i == len(bases) - 1
                seg = known.get(base)
                if seg is None or (not last and seg is end.active):
                    seg = self._segment(base, None if last else bases[i + 1])  # new, or closed now
                segments.append(seg)
            for base, seg in known.items():
                if base not in bases:
                    seg.deleted = True  # retention: readers of it retry on the new layout
            if not segments:
                self._layout, self._end = ([], []), _End(0, None, 0)
                return
            active = segments[-1]
            if active is not end.active:
                end = self._start_scan(active)
            self._layout = (bases, segments)
            self._end = self._scan(end)

    def _directory_identity(self) -> tuple[int, int]:
        """(device, inode) of the partition directory; a topic made again gets a new one."""
        st = _stat(self.directory)
        if st is None:
            raise TopicNotFoundError(self.topic, None)
        return st.st_dev, st.st_ino

    def _replaced(self, end: _End) -> bool:
        """Whether the active segment's file is no longer the one this view scanned."""
        assert end.active is not None
        st = _stat(end.active.log_path)
        if st is None:
            return False  # gone: the listing tells what happened
        return (st.st_dev, st.st_ino) != self._active_file or st.st_size < end.position

    def _list_bases(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            raise TopicNotFoundError(self.topic, None) from None
        except OSError as e:
            raise storage_error(self.directory, e, "listing partition") from e
        bases = []
        for name in names:
            try:
                base, suffix = parse_segment_name(name)
            except ValueError:
                continue
            if suffix == LOG_SUFFIX:
                bases.append(base)
        return sorted(bases)

    def _segment(self, base: int, next_base: int | None) -> Segment:
        seg = Segment(self.directory, base)
        seg.persist_indexes = False
        st = _stat(seg.log_path)
        if st is None:
            seg.deleted = True  # removed between the listing and now; the next refresh drops it
        else:
            seg.size = st.st_size
        if next_base is not None:
            seg.next_offset = next_base
        return seg

    def _start_scan(self, seg: Segment) -> _End:
        """Where to start scanning a segment first seen as the active one (section 14)."""
        st = _stat(seg.log_path)
        self._active_file = (st.st_dev, st.st_ino) if st is not None else (0, 0)
        seg.indexes_loaded = True  # this view keeps the active segment's indexes itself
        seg.index.load(seg.size)
        seg.timeindex.load(1 << 32)
        # The time index's last entry covers every batch up to its own; it may lag the
        # offset index (a failed or unfinished append), so the scan starts at or before it.
        last_timed = seg.timeindex.relative_offsets[-1] if len(seg.timeindex) else -1
        start_rel, start = seg.index.lookup(last_timed) if last_timed >= 0 else (0, 0)
        if start and self._prefix_base(seg, start) != seg.base_offset + start_rel:
            start_rel, start = 0, 0
        keep = bisect_right(seg.index.relative_offsets, start_rel) if start else 0
        del seg.index.relative_offsets[keep:], seg.index.positions[keep:]
        keep = bisect_right(seg.timeindex.relative_offsets, start_rel) if start else 0
        del seg.timeindex.timestamps[keep:], seg.timeindex.relative_offsets[keep:]
        seg.max_timestamp = seg.timeindex.last_timestamp
        seg.size, seg.next_offset = start, seg.base_offset + start_rel
        return _End(seg.next_offset, seg, start)

    @staticmethod
    def _prefix_base(seg: Segment, position: int) -> int | None:
        raw = _pread(seg, fmt.PREFIX_SIZE, position)
        return fmt.read_prefix(raw, 0)[0] if len(raw) == fmt.PREFIX_SIZE else None

    def _scan(self, end: _End) -> _End:
        """Accept the whole, valid batches that follow ``end`` in the active segment."""
        seg = end.active
        assert seg is not None
        position, offset = end.position, end.offset
        want = _SCAN_CHUNK_BYTES
        while True:  # bounded: a pass accepts a batch, or widens the read once for a big one, or stops
            data = _pread(seg, want, position)
            used = 0
            while used < len(data):  # bounded: each step accepts a batch or stops
                info = fmt.validate_batch(data, used, len(data) - used, offset)
                if isinstance(info, str):
                    break
                self._index(seg, position + used, info)
                used += info.size
                offset = info.next_offset
            position += used
            full = len(data) == want
            if used:
                if not full:
                    break  # the end of the file, or a batch not yet whole or valid
                want = _SCAN_CHUNK_BYTES
                continue
            need = fmt.read_prefix(data, 0)[1] if len(data) >= fmt.PREFIX_SIZE else 0
            if not full or need <= want:
                break
            want = need  # one batch larger than a chunk
        seg.size, seg.next_offset = position, offset
        return _End(offset, seg, position)

    @staticmethod
    def _index(seg: Segment, position: int, info: fmt.BatchInfo) -> None:
        """In-memory index entries at the spacing of docs/format.md, sections 3 and 4."""
        if info.max_timestamp > seg.max_timestamp:
            seg.max_timestamp = info.max_timestamp
        if position == 0 or position < seg.index.last_position + INDEX_INTERVAL_BYTES:
            return
        rel = info.base_offset - seg.base_offset
        seg.index.relative_offsets.append(rel)
        seg.index.positions.append(position)
        if seg.max_timestamp > seg.timeindex.last_timestamp:
            seg.timeindex.timestamps.append(seg.max_timestamp)
            seg.timeindex.relative_offsets.append(rel)

    # --- reading -----------------------------------------------------------

    def offsets(self) -> tuple[int, int]:
        """(log start offset, end offset), after a refresh."""
        self.refresh()
        return self._known_offsets()

    def _known_offsets(self) -> tuple[int, int]:
        bases = self._layout[0]
        return (bases[0] if bases else 0), self._end.offset

    def read(self, offset: int, max_records: int, max_bytes: int | None = None) -> list[Record]:
        """Up to ``max_records`` records from ``offset``; empty at the end."""
        start, end = self._known_offsets()
        if not start <= offset < end or self._directory_identity() != self._directory:
            self.refresh()  # past the known end, or the topic was deleted (and made again)
        return self._retrying(lambda: self._read_once(offset, max_records, max_bytes), offset)

    def _retrying(self, action: Callable[[], T], offset: int) -> T:
        """``action()``, again on a refreshed view while retention removes segments under it."""
        for _ in range(_READ_RETRIES_MAX):  # bounded retries while retention moves the start
            try:
                return action()
            except (CorruptionError, SegmentDeletedError):
                if all(os.path.exists(s.log_path) for s in self._layout[1]):
                    raise
                self.refresh()  # a segment went away under the read
        start, end = self._known_offsets()
        raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end)

    def _read_once(self, offset: int, max_records: int, max_bytes: int | None) -> list[Record]:
        end = self._end
        bases, segments = self._layout
        start = bases[0] if bases else 0
        if offset < start or offset > end.offset:
            raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end.offset)
        out: list[Record] = []
        budget = max_bytes
        i = bisect_right(bases, offset) - 1
        while offset < end.offset and len(out) < max_records and i < len(segments):  # bounded by i
            seg = segments[i]
            limit = end.position if seg is end.active else seg.size
            records, used = seg.read(offset, limit, max_records - len(out), budget, self._decoder,
                                     must_progress=not out)
            if records:
                out.extend(records)
                offset = records[-1].offset + 1
            if budget is not None:
                budget -= used
                if budget <= 0:
                    break
            if seg is end.active or offset < seg.next_offset:
                break
            i += 1
        return out

    def read_batches(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """The stored batches from the one holding ``offset``, byte for byte (checksums
        verified), at most ``max_bytes`` but the first whole, and the offset after them:
        what a replica copies (``es replicate``). At the end: ``(b"", end)``."""
        start, end = self._known_offsets()
        if not start <= offset < end or self._directory_identity() != self._directory:
            self.refresh()
        return self._retrying(lambda: self._read_batches_once(offset, max_bytes), offset)

    def _read_batches_once(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        end = self._end
        bases, segments = self._layout
        start = bases[0] if bases else 0
        if offset < start or offset > end.offset:
            raise OffsetOutOfRangeError(self.topic, self.partition, offset, start, end.offset)
        chunks: list[bytes] = []
        budget = max_bytes
        i = bisect_right(bases, offset) - 1
        while offset < end.offset and i < len(segments):  # bounded by i
            seg = segments[i]
            limit = end.position if seg is end.active else seg.size
            data, offset = seg.read_batches(offset, limit, budget, must_progress=not chunks)
            if data:
                chunks.append(data)
                budget -= len(data)
            if budget <= 0 or seg is end.active or offset < seg.next_offset:
                break  # the byte budget, the end of the view, or the budget stopped this segment
            i += 1
        return b"".join(chunks), offset

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The first offset whose timestamp is ≥ ``timestamp_ms``, or None."""
        self.refresh()
        return self._retrying(lambda: self._offset_for_time_once(timestamp_ms), self._known_offsets()[0])

    def _offset_for_time_once(self, timestamp_ms: int) -> int | None:
        end = self._end
        for seg in self._layout[1]:  # bounded by the segment count
            if seg.base_offset >= end.offset:
                return None
            seg.ensure_indexes()
            if seg.max_timestamp < timestamp_ms:
                continue
            limit = end.position if seg is end.active else seg.size
            found = find_time(seg, timestamp_ms, limit, self._decoder)
            if found is not None:
                return found if found < end.offset else None
        return None

    def segments(self) -> list[SegmentExtent]:
        """Every segment after a refresh, oldest first: a closed one to its file's size, the
        active one to the end of the batches the scan accepted, so never a batch being written."""
        self.refresh()
        with self._lock:
            end, segments = self._end, self._layout[1]
        return [SegmentExtent(s.base_offset, s.log_path, end.position, end.offset, False) if s is end.active
                else SegmentExtent(s.base_offset, s.log_path, s.size, s.next_offset, True)
                for s in segments]

    def epoch_entries(self) -> list[tuple[int, int]]:
        """The partition's leader epochs as ``(epoch, start offset)`` (docs/replication.md,
        1.1): its epoch file, or without one the implicit epoch 0 of every record."""
        path = os.path.join(self.directory, epochs.FILE_NAME)
        try:
            with open(path, encoding="ascii") as f:
                text = f.read()
        except FileNotFoundError:
            start, end = self.offsets()
            return [(0, start)] if end > start else []
        except (OSError, UnicodeDecodeError) as e:
            raise CorruptionError(path, 0, f"unreadable leader-epoch file: {e}") from None
        entries = epochs.parse(text)
        if entries is None:  # the writer rebuilds it at its next open; a view writes nothing
            raise CorruptionError(path, 0, "not a leader-epoch file")
        return entries

    @property
    def incarnation(self) -> object:
        """The partition directory's identity: another one once the topic is made again."""
        return self._directory

    def max_timestamp(self) -> int:
        """The largest record timestamp in the view (-1 when empty)."""
        return self._retrying(self._max_timestamp_once, self._known_offsets()[0])

    def _max_timestamp_once(self) -> int:
        end = self._end
        found = -1
        for seg in self._layout[1]:  # bounded by the segment count; timestamps may go backwards
            if seg is not end.active:
                seg.ensure_indexes()
            found = max(found, seg.max_timestamp)
        return found

    def segment_count(self) -> int:
        return len(self._layout[1])

    def size_bytes(self) -> int:
        end = self._end
        return sum(end.position if s is end.active else s.size for s in self._layout[1])

    def close(self) -> None:
        with self._lock:
            for seg in self._layout[1]:
                seg.close()
            self._layout, self._end = ([], []), _End(0, None, 0)


def _stat(path: str) -> os.stat_result | None:
    """``os.stat(path)``, or None if it does not exist (the writer may remove files any time)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise storage_error(path, e, "stat") from e


def _pread(seg: Segment, size: int, position: int) -> bytes:
    """Bytes of the segment's log at ``position`` (fewer at the end of the file)."""
    try:
        fd = os.open(seg.log_path, os.O_RDONLY)
    except FileNotFoundError:
        return b""  # deleted by retention: nothing more to accept here
    except OSError as e:
        raise storage_error(seg.log_path, e, "opening segment") from e
    try:
        return os.pread(fd, size, position)
    except OSError as e:
        raise storage_error(seg.log_path, e, "read") from e
    finally:
        os.close(fd)
