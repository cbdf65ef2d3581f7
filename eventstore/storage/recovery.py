"""Open a partition directory: find its segments and recover the tail.

The decisions follow the table in docs/format.md, section 9; each case's label
(R1..R8) appears where it is decided, and the tests are named after them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import CorruptionError
from ..records import RecoveryEvent
from . import disk
from . import format as fmt
from .index import write_synced
from .names import (
    BROKEN_SUFFIX,
    LOG_SUFFIX,
    format_broken_name,
    parse_segment_name,
)
from .segment import Segment, storage_error


class Checkpoint(msgspec.Struct, array_like=True, frozen=True):
    """Everything before ``position`` of segment ``segment_base`` is fsynced and valid;
    ``producers`` is the idempotent producers' state up to there (``storage.producers``;
    empty in checkpoints written before Kafka batches were stored, when there were none)."""

    segment_base: int
    position: int
    next_offset: int
    max_timestamp: int
    index_entries: int
    timeindex_entries: int
    producers: tuple[Any, ...] = ()


Report = Callable[[RecoveryEvent], None]


def list_segment_bases(directory: str, report: Report) -> list[int]:
    """Base offsets of the segments in ``directory``; removes orphans (R7)."""
    logs: set[int] = set()
    others: list[tuple[int, str]] = []
    for name in os.listdir(directory):
        if name.endswith(".tmp") or name.endswith(".deleted"):
            _remove(os.path.join(directory, name), "R7", report, "leftover temporary file")
            continue
        try:
            base, suffix = parse_segment_name(name)
        except ValueError:
            continue  # .broken copies and foreign files are left alone
        (logs.add(base) if suffix == LOG_SUFFIX else others.append((base, name)))
    for base, name in others:
        if base not in logs:
            _remove(os.path.join(directory, name), "R7", report, "index without a log")
    return sorted(logs)


def _remove(path: str, case: str, report: Report, why: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        disk.unlink(path)
    report(RecoveryEvent(case=case, path=path, position=0, detail=f"removed {why}"))


def open_segments(directory: str, checkpoint: Checkpoint | None, report: Report) -> list[Segment]:
    """The partition's segments, the last one recovered and open for appends."""
    bases = list_segment_bases(directory, report)
    segments: list[Segment] = []
    try:
        if not bases:
            segments.append(Segment.create(directory, 0))
            sync_dir(directory)
            return segments
        segments += [
            Segment.existing(directory, base, bases[i + 1] if i + 1 < len(bases) else None)
            for i, base in enumerate(bases)
        ]
        first, start = _recovery_point(segments, checkpoint, report)
        _recover(segments, first, start, checkpoint, report)
        segments[-1].open_for_append()
    except BaseException:
        for seg in segments:  # a failed open leaves no file open
            seg.close()
        raise
    return segments


def _recovery_point(
    segments: list[Segment], cp: Checkpoint | None, report: Report
) -> tuple[int, int]:
    last = len(segments) - 1
    if cp is None:
        return last, 0
    for i, seg in enumerate(segments):
        if seg.base_offset == cp.segment_base:
            if cp.position > seg.size:
                report(RecoveryEvent(
                    case="R6", path=seg.log_path, position=cp.position,
                    detail=f"segment is {seg.size} bytes, shorter than its checkpoint; rescanning",
                ))
                return i, 0
            return i, cp.position
    return last, 0


def _recover(
    segments: list[Segment], first: int, start: int, cp: Checkpoint | None, report: Report
) -> None:
    last = len(segments) - 1
    expected = segments[first].base_offset
    for j in range(first, last + 1):  # bounded by the segment count
        seg = segments[j]
        if j > first and seg.base_offset != expected:
            raise CorruptionError(
                seg.log_path, 0, f"segment starts at offset {seg.base_offset}, expected {expected}"
            )
        position = start if j == first else 0
        _reset_state(seg, position, cp if j == first and position > 0 else None)
        if position == seg.size:
            seg.indexes_loaded = True  # R1 clean
        else:
            _scan_tail(seg, position, is_last=j == last, report=report)  # R2..R5
        expected = seg.next_offset
        if j < last:
            seg.seal()


def _reset_state(seg: Segment, position: int, cp: Checkpoint | None) -> None:
    """Cut the indexes back to what the checkpoint covers (or nothing) and load them."""
    try:
        if cp is None:
            seg.index.truncate(0)
            seg.timeindex.truncate(0)
            seg.next_offset, seg.max_timestamp = seg.base_offset, -1
        else:
            seg.index.load(position, cp.index_entries)
            seg.timeindex.load(max(0, cp.next_offset - 1 - seg.base_offset), cp.timeindex_entries)
            seg.index.truncate(len(seg.index))
            seg.timeindex.truncate(len(seg.timeindex))
            seg.next_offset, seg.max_timestamp = cp.next_offset, cp.max_timestamp
    except OSError as e:
        raise storage_error(seg.index.path, e, "resetting index") from e
    seg.indexes_loaded = True


def _scan_tail(seg: Segment, start: int, *, is_last: bool, report: Report) -> None:
    end = seg.size
    bad: tuple[int, str] | None = None
    seg.refresh_index_due()
    epochs = {0}  # the leader epochs of the batches scanned (docs/replication.md, 1.1)
    mm = seg.view(end) if start < end else None
    for position, info in seg.batches(start, end):
        if isinstance(info, str):
            bad = (position, info)
            break
        if info.base_offset != seg.next_offset:
            bad = (position, f"base offset {info.base_offset}, expected {seg.next_offset}")
            break
        seg.next_offset = info.next_offset
        seg.max_timestamp = max(seg.max_timestamp, info.max_timestamp)
        seg.maybe_index(position, info.base_offset)
        epochs.add(fmt.read_epoch(mm, position))
    if bad is None:
        if start < end:
            report(RecoveryEvent(
                case="R2", path=seg.log_path, position=start,
                detail=f"recovered {end - start} bytes past the checkpoint",
            ))
        return
    position, reason = bad
    if not is_last:
        raise CorruptionError(seg.log_path, position, f"{reason} (in a closed segment)")
    if position + fmt.PREFIX_SIZE <= end:
        epochs.add(fmt.read_epoch(mm, position))  # the bad batch's own, if it is sound
    if _valid_batch_follows(seg, position, end, epochs):
        raise CorruptionError(seg.log_path, position, f"{reason} (valid data follows)")  # R5
    case = "R3" if reason.startswith("short:") else "R4"
    _cut_torn_tail(seg, position, case, reason, report)


def _valid_batch_follows(seg: Segment, position: int, end: int, epochs: set[int]) -> bool:
    """Is there a valid batch past the bad one at ``position`` that continues the offsets?

    The bad batch's own length may be the damaged field, so the search does not
    trust it: it looks for every batch prefix after ``position`` (a leader epoch
    of ``epochs``, those of the batches before it and its own, then magic 0x45 or
    2: e.g. the bytes ``00 00 00 00 45`` at 12..17 of a batch of epoch 0), with
    C-speed ``find``, and validates each candidate.
    """
    mm = seg.view(end)
    markers = [e.to_bytes(4, "big", signed=True) + bytes((magic,))
               for e in sorted(epochs) for magic in (fmt.MAGIC_NATIVE, fmt.MAGIC_KAFKA_V2)]
    for marker in markers:  # bounded: two kinds per epoch seen
        at = position + 1
        while True:  # bounded: every pass moves ``at`` forward
            found = mm.find(marker, at + 12, end)
            if found < 0:
                break
            candidate = found - 12
            at = candidate + 1
            info = fmt.validate_batch(mm, candidate, end - candidate, None)
            if not isinstance(info, str) and info.base_offset >= seg.next_offset:
                return True
    return False


def _cut_torn_tail(seg: Segment, position: int, case: str, reason: str, report: Report) -> None:
    """Keep the torn bytes in a ``.broken`` file, then truncate the log (R3, R4)."""
    broken = os.path.join(seg.directory, format_broken_name(seg.base_offset, position))
    copy = 1
    while os.path.exists(broken):  # never overwrite bytes kept from an earlier torn tail
        broken = os.path.join(seg.directory, format_broken_name(seg.base_offset, position, copy))
        copy += 1
    assert broken.endswith(BROKEN_SUFFIX)
    try:
        with open(seg.log_path, "rb") as src:
            src.seek(position)
            data = src.read(seg.size - position)
        tmp = broken + ".tmp"  # a kill mid-copy leaves a .tmp (removed, R7), never a short copy
        write_synced(tmp, data)
        disk.replace(tmp, broken)
        fsync_dir(seg.directory)
    except OSError as e:
        raise storage_error(broken, e, "saving torn tail") from e
    seg.truncate(position)
    with contextlib.suppress(OSError):
        fd = os.open(seg.log_path, os.O_RDONLY)
        try:
            disk.fsync(fd)
        finally:
            os.close(fd)
    report(RecoveryEvent(
        case=case, path=seg.log_path, position=position,
        detail=f"truncated torn tail of {len(data)} bytes ({reason}); kept in {os.path.basename(broken)}",
        extra={"broken": broken, "bytes": len(data)},
    ))


def fsync_dir(directory: str) -> None:
    disk.fsync_dir(directory)  # looked up at each call: tests may have swapped it


def sync_dir(directory: str) -> None:
    """``fsync_dir``, its failure raised as ``StorageError`` (``StorageFullError``)."""
    try:
        disk.fsync_dir(directory)
    except OSError as e:
        raise storage_error(directory, e, "fsync of directory") from e


