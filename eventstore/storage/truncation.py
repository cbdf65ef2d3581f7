"""Cutting a replica's partition back (docs/format.md, "Truncation and reset (replicas)").

A truncation (cut the log at a batch boundary) or a reset (delete every
segment, restart empty at an offset) touches several files. Each first writes
its **intent**, ``<partition>/truncation``, durably; then it changes the files;
then it removes the intent. An open that finds the intent does the file changes
again (they are idempotent) before recovering the partition, so a crash at any
step ends either before the operation (no intent yet) or after it.

The intent is ASCII: a first line ``1`` (the version), then either
``truncate <end_offset> <segment_base> <position>`` or ``reset <start_offset>``.
"""

from __future__ import annotations

import contextlib
import os

import msgspec

from ..errors import CorruptionError, StorageError
from . import disk, faults
from .index import write_synced
from .names import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIMEINDEX_SUFFIX,
    format_segment_name,
    is_segment_name,
    parse_segment_name,
)

FILE_NAME = "truncation"
VERSION = "1"


class Intent(msgspec.Struct, frozen=True):
    """What a cut leaves the partition as: its end offset, and for a truncation the
    segment and byte position of that end (for a reset: the new empty segment, 0)."""

    reset: bool
    end_offset: int
    segment_base: int
    position: int


def read_intent(directory: str) -> Intent | None:
    """The intent a crash left in ``directory``, or None."""
    path = os.path.join(directory, FILE_NAME)
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptionError(path, 0, f"unreadable truncation intent: {e}") from e
    lines = text.split("\n")
    fields = lines[1].split(" ") if len(lines) == 3 and lines[0] == VERSION and not lines[2] else []
    numbers = [int(f) for f in fields[1:] if f.isdigit()]
    if fields[:1] == ["truncate"] and len(numbers) == 3 == len(fields) - 1:
        return Intent(False, numbers[0], numbers[1], numbers[2])
    if fields[:1] == ["reset"] and len(numbers) == 1 == len(fields) - 1:
        return Intent(True, numbers[0], numbers[0], 0)
    raise CorruptionError(path, 0, f"invalid truncation intent {text!r}")


def write_intent(directory: str, intent: Intent) -> None:
    """Write the intent durably (temp file, fsync, rename, directory fsync)."""
    if intent.reset:
        line = f"reset {intent.end_offset}"
    else:
        line = f"truncate {intent.end_offset} {intent.segment_base} {intent.position}"
    path = os.path.join(directory, FILE_NAME)
    try:
        write_synced(path + ".tmp", f"{VERSION}\n{line}\n".encode("ascii"))
        disk.replace(path + ".tmp", path)
        disk.fsync_dir(directory)
    except OSError as e:
        raise StorageError(path, f"cannot write the truncation intent: {e.strerror}") from e
    faults.point("truncate.intent")


def remove_intent(directory: str) -> None:
    """The operation is complete: remove the intent, durably."""
    path = os.path.join(directory, FILE_NAME)
    try:
        with contextlib.suppress(FileNotFoundError):
            disk.unlink(path)
        disk.fsync_dir(directory)
    except OSError as e:
        raise StorageError(path, f"cannot remove the truncation intent: {e.strerror}") from e
    faults.point("truncate.done")


def apply_intent(directory: str, intent: Intent) -> None:
    """Make the segment files what the intent says (idempotent): delete every segment
    after the one the end is in, newest first, and cut that one at the end's position
    (for a reset: every other segment deleted, the new one empty, created if missing)."""
    bases = sorted({parse_segment_name(n)[0] for n in os.listdir(directory) if is_segment_name(n)})
    try:
        for base in reversed(bases):  # bounded by the segments
            if base > intent.segment_base or (intent.reset and base != intent.segment_base):
                for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX):  # the log first
                    with contextlib.suppress(FileNotFoundError):
                        disk.unlink(os.path.join(directory, format_segment_name(base, suffix)))
        disk.fsync_dir(directory)
        faults.point("truncate.deleted")
        log_path = os.path.join(directory, format_segment_name(intent.segment_base, LOG_SUFFIX))
        fd = disk.open_file(log_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size > intent.position:
                disk.ftruncate(fd, intent.position)
            disk.fsync(fd)
        finally:
            os.close(fd)
        if intent.reset:
            for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):  # indexes of the empty segment
                index_path = os.path.join(directory, format_segment_name(intent.segment_base, suffix))
                with contextlib.suppress(FileNotFoundError):
                    disk.truncate(index_path, 0)
        disk.fsync_dir(directory)
    except OSError as e:
        raise StorageError(directory, f"cannot cut the partition's segments: {e.strerror}") from e
    faults.point("truncate.cut")

