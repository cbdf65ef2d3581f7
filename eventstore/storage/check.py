"""Full consistency check of a partition: every batch, every index entry.

Used by ``store.check()``, ``es verify`` and at the teardown of every test's
store. It reads; it never repairs.
"""

from __future__ import annotations

import msgspec

from . import format as fmt
from .partition import PartitionLog
from .segment import Segment, SegmentDeletedError


class CheckProblem(msgspec.Struct, frozen=True):
    """One thing wrong: the file, the byte position in it (None: the file as a whole), why."""

    path: str
    position: int | None
    reason: str

    def __str__(self) -> str:
        where = self.path if self.position is None else f"{self.path} at position {self.position}"
        return f"{where}: {self.reason}"


class CheckReport(msgspec.Struct, kw_only=True):
    """What a check read and what it found wrong (``problems`` empty means healthy).

    ``foreign_records``: records of streams topics that are not event envelopes
    (each is also one of ``problems``; docs/format.md, section 12).
    """

    partitions: int = 0
    segments: int = 0
    batches: int = 0
    records: int = 0
    bytes: int = 0
    foreign_records: int = 0
    problems: list[CheckProblem] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_partition(plog: PartitionLog, report: CheckReport) -> None:
    report.partitions += 1
    end, vis_seg, vis_pos = plog.visible()
    segments = plog.segments()
    expected = segments[0].base_offset
    for seg in segments:  # bounded by the segment count
        if seg.base_offset >= end and seg is not vis_seg:
            break
        report.segments += 1
        if seg.base_offset != expected:
            report.problems.append(CheckProblem(
                seg.log_path, None, f"starts at offset {seg.base_offset}, expected {expected}"))
        limit = vis_pos if seg is vis_seg else seg.size
        try:
            expected = _check_segment(seg, limit, report, plog)
        except SegmentDeletedError:
            expected = seg.next_offset  # retention removed it while we looked: nothing to check
        if seg is vis_seg:
            break


def _max_timestamp_fits(info: fmt.BatchInfo, records_max: int) -> bool:
    """A native batch's max timestamp is its records' largest; a Kafka producer's only bounds
    them (rule K5), and a LogAppendTime batch gives every record its max timestamp."""
    if info.magic == fmt.MAGIC_KAFKA_V2:
        return records_max <= info.max_timestamp
    return records_max == info.max_timestamp


def _check_segment(seg: Segment, limit: int, report: CheckReport, plog: PartitionLog) -> int:
    starts: dict[int, int] = {}
    next_offset = seg.base_offset
    max_ts = -1
    for position, info in seg.batches(0, limit):
        if isinstance(info, str):
            report.problems.append(CheckProblem(seg.log_path, position, info))
            return next_offset
        if info.base_offset != next_offset:
            report.problems.append(CheckProblem(
                seg.log_path, position, f"base offset {info.base_offset}, expected {next_offset}"))
        try:  # a Kafka batch's records are checked by rule K5 here (docs/format.md, 17.4)
            records = fmt.decode_records(seg.view(limit), position, info.size, plog.decoder)
        except fmt.UNDECODABLE as e:
            report.problems.append(CheckProblem(seg.log_path, position, str(e)))
            return next_offset
        offsets = [r.offset for r in records]
        if offsets != list(range(info.base_offset, info.next_offset)):
            report.problems.append(CheckProblem(seg.log_path, position, "record offsets wrong"))
        if not _max_timestamp_fits(info, max((r.timestamp_ms for r in records), default=-1)):
            report.problems.append(CheckProblem(seg.log_path, position, "max timestamp wrong"))
        starts[position] = info.base_offset
        max_ts = max(max_ts, info.max_timestamp)
        next_offset = info.next_offset
        report.batches += 1
        report.records += info.record_count
        report.bytes += info.size
    seg.ensure_indexes()
    for rel, position in zip(seg.index.relative_offsets, seg.index.positions, strict=True):
        if position >= limit:
            continue  # indexes may run ahead of the visible end in fsync mode
        if starts.get(position) != seg.base_offset + rel:
            report.problems.append(CheckProblem(
                seg.index.path, None, f"entry ({rel}, {position}) is not a batch start"))
    for ts in seg.timeindex.timestamps:
        if ts > max(max_ts, seg.max_timestamp):
            report.problems.append(CheckProblem(
                seg.timeindex.path, None, f"timestamp {ts} above the segment's max"))
            break
    return next_offset
