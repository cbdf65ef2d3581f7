"""Sparse offset and time indexes of a segment (docs/format.md, sections 3 and 4).

Both are derived from the log: they can be cut back or rebuilt at any time.
Entries live in memory as arrays and are appended to their file as they are
made; the file is read back only when a closed segment is first used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import sys
import threading
from array import array
from bisect import bisect_left, bisect_right

from . import disk

INDEX_INTERVAL_BYTES = 4096
OFFSET_ENTRY_BYTES = 8
TIME_ENTRY_BYTES = 12
_SWAP = sys.byteorder != "little"
_TIME_ENTRY = struct.Struct("<qI")
assert _TIME_ENTRY.size == TIME_ENTRY_BYTES


def _to_file(arr: array) -> bytes:  # type: ignore[type-arg]
    if _SWAP:
        arr = array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()


def _from_file(typecode: str, data: bytes) -> array:  # type: ignore[type-arg]
    arr = array(typecode)
    arr.frombytes(data)
    if _SWAP:
        arr.byteswap()
    return arr


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` at the file position of ``fd`` through ``disk``, looping on short writes."""
    view = memoryview(data)
    while view:  # bounded: every pass writes at least one byte or raises
        n = disk.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]


def write_synced(path: str, data: bytes) -> None:
    """Create (or truncate) ``path``, write ``data`` and fsync it: the first half of every
    replace-by-rename here (the caller renames it into place)."""
    fd = disk.open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        disk.fsync(fd)
    finally:
        os.close(fd)


class _IndexFile:
    """An append-only file of fixed-size entries, opened lazily for writing."""

    entry_bytes = 0

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._close_lock = threading.Lock()

    def _write(self, data: bytes, entries_before: int) -> bool:
        try:
            if self._fd is None:
                self._fd = disk.open_file(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            disk.pwrite(self._fd, data, entries_before * self.entry_bytes)
            return True
        except OSError:
            # Derived data: drop the entry, cut any partial write off, carry on.
            with contextlib.suppress(OSError):
                if self._fd is not None:
                    disk.ftruncate(self._fd, entries_before * self.entry_bytes)
            return False

    def _rewrite(self, data: bytes) -> None:
        tmp = self.path + ".tmp"
        write_synced(tmp, data)
        self.close()
        disk.replace(tmp, self.path)

    def _truncate(self, entries: int) -> None:
        if self._fd is None:
            self._fd = disk.open_file(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        disk.ftruncate(self._fd, entries * self.entry_bytes)

    def sync(self) -> None:
        if self._fd is not None:
            disk.fdatasync(self._fd)

    def close(self) -> None:
        with self._close_lock:  # two closers must not close the number twice (it may be reused)
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def read_raw(self) -> tuple[bytes, bool]:
        """The file's whole entries, and whether it ended in a partial one (a torn write)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return b"", False
        whole = len(data) - len(data) % self.entry_bytes
        return data[:whole], whole != len(data)


class OffsetIndex(_IndexFile):
    """(relative_offset, position) pairs, both strictly increasing."""

    entry_bytes = OFFSET_ENTRY_BYTES

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.relative_offsets = array("I")
        self.positions = array("I")

    def __len__(self) -> int:
        return len(self.positions)

    def load(self, log_size: int, entries_max: int | None = None) -> bool:
        """Read the file; keep the valid prefix. False if anything had to be dropped."""
        raw, torn = self.read_raw()
        flat = _from_file("I", raw)
        rel, pos = flat[0::2], flat[1::2]
        keep = len(pos) if entries_max is None else min(entries_max, len(pos))
        for i in range(keep):  # bounded by the file's entry count
            bad_order = i > 0 and (rel[i] <= rel[i - 1] or pos[i] <= pos[i - 1])
            if bad_order or pos[i] >= log_size or pos[i] == 0:
                keep = i
                break
        self.relative_offsets, self.positions = rel[:keep], pos[:keep]
        return keep == len(pos) and not torn

    def truncate(self, entries: int) -> None:
        del self.relative_offsets[entries:]
        del self.positions[entries:]
        self._truncate(entries)

    def append(self, relative_offset: int, position: int) -> None:
        n = len(self.positions)
        if self._write(_to_file(array("I", (relative_offset, position))), n):
            self.relative_offsets.append(relative_offset)
            self.positions.append(position)

    def rewrite(self) -> None:
        flat = array("I", bytes(8 * len(self.positions)))
        flat[0::2], flat[1::2] = self.relative_offsets, self.positions
        self._rewrite(_to_file(flat))

    def lookup(self, relative_offset: int) -> tuple[int, int]:
        """(relative offset, position) of the last indexed batch starting at or before
        ``relative_offset``; (0, 0), the segment's start, if there is none."""
        i = bisect_right(self.relative_offsets, relative_offset)
        return (self.relative_offsets[i - 1], self.positions[i - 1]) if i else (0, 0)

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0


class TimeIndex(_IndexFile):
    """(max_timestamp, relative_offset) pairs, both strictly increasing."""

    entry_bytes = TIME_ENTRY_BYTES

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.timestamps = array("q")
        self.relative_offsets = array("I")

    def __len__(self) -> int:
        return len(self.timestamps)

    def load(self, max_relative_offset: int, entries_max: int | None = None) -> bool:
        raw, torn = self.read_raw()
        pairs = list(_TIME_ENTRY.iter_unpack(raw))
        n = len(pairs)
        ts = array("q", (p[0] for p in pairs))
        rel = array("I", (p[1] for p in pairs))
        keep = n if entries_max is None else min(entries_max, n)
        for i in range(keep):
            bad_order = i > 0 and (ts[i] <= ts[i - 1] or rel[i] < rel[i - 1])
            if bad_order or rel[i] > max_relative_offset:
                keep = i
                break
        self.timestamps, self.relative_offsets = ts[:keep], rel[:keep]
        return keep == n and not torn

    def truncate(self, entries: int) -> None:
        del self.timestamps[entries:]
        del self.relative_offsets[entries:]
        self._truncate(entries)

    def append(self, timestamp: int, relative_offset: int) -> None:
        n = len(self.timestamps)
        data = _TIME_ENTRY.pack(timestamp, relative_offset)
        if self._write(data, n):
            self.timestamps.append(timestamp)
            self.relative_offsets.append(relative_offset)

    def rewrite(self) -> None:
        pairs = zip(self.timestamps, self.relative_offsets, strict=True)
        self._rewrite(b"".join(_TIME_ENTRY.pack(t, r) for t, r in pairs))

    def start_for(self, timestamp: int) -> int | None:
        """Relative offset after which records may reach ``timestamp``.

        None: scan the segment from its start. Otherwise every record in batches
        up to and including the batch at the returned relative offset is older.
        """
        i = bisect_left(self.timestamps, timestamp)
        return self.relative_offsets[i - 1] if i else None

    @property
    def last_timestamp(self) -> int:
        return self.timestamps[-1] if self.timestamps else -1
