"""``check()`` of a streams partition: its foreign records, and the stream index against the log.

What catch-up would compute from the partition's records below the index's
``covered`` mark is compared with what the index holds: each event's entry by
id (stream, version, position), its position's entry (topic, partition,
offset), its stream's chunks (the envelopes byte for byte) and each stream's
head (topic, partition, last version). Records at or past ``covered`` are not
yet indexed (staged, or for the next open's catch-up), so they are left out.
Each inconsistency is a ``CheckProblem`` naming the index's data file and
saying what differs; once one is found the index marks itself damaged, so the
next open moves it aside and rebuilds it from the log (docs/format.md, section
15, case L1).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..catalog import datafile
from ..errors import CorruptionError
from ..records import TopicConfig
from ..storage.check import CheckProblem, CheckReport
from .catchup import envelopes_of, foreign_records
from .index import CHUNK_EVENTS, INDEX_REPAIR, StreamIndex

if TYPE_CHECKING:
    from ..log import Log

__all__ = ["check_partition"]

_READ_RECORDS = 10_000
PROBLEMS_MAX = 100  # per partition; past it, one line says how many more


class _Expected:
    """What the log says of one stream in the partition, below ``covered``."""

    __slots__ = ("chunks", "first_version", "last_version")

    def __init__(self, version: int) -> None:
        self.first_version = self.last_version = version
        self.chunks: dict[int, list[bytes]] = {}


def check_partition(log: Log, index: StreamIndex, cfg: TopicConfig, partition: int,
                    report: CheckReport) -> None:
    """Report the partition's foreign records and every way the index differs from it."""
    if not cfg.streams:
        return
    topic = cfg.name
    path = log.partition_path(topic, partition)
    for offset, reason in foreign_records(log, topic, partition):
        report.foreign_records += 1
        report.problems.append(CheckProblem(
            path, None, f"record at offset {offset}: {reason}; the stream index skips it"))
    where = os.path.join(index.path, datafile.DATA_FILE)
    if index.marked_damaged():  # found damaged already: not read any further
        report.problems.append(CheckProblem(where, None,
                                            f"the stream index was found damaged; {INDEX_REPAIR}"))
        return
    problems: list[str] = []
    try:
        _compare(log, index, topic, partition, problems)
    except CorruptionError as e:  # the index marked itself: rebuilt at the next open
        report.problems.append(CheckProblem(e.path, e.position, e.reason))
        return
    for reason in problems[:PROBLEMS_MAX]:
        report.problems.append(CheckProblem(where, None, f"{topic}/{partition}: {reason}"))
    if len(problems) > PROBLEMS_MAX:
        report.problems.append(CheckProblem(
            where, None, f"{topic}/{partition}: {len(problems) - PROBLEMS_MAX} more differences"))
    if problems:
        index.mark_damaged(f"check found {len(problems)} differences from the log in {topic}/{partition}")


def _compare(log: Log, index: StreamIndex, topic: str, partition: int, problems: list[str]) -> None:
    with index.read() as txn:
        covered = index.covered(txn, topic, partition)
        offset, end = log.offsets(topic, partition)
        streams: dict[str, _Expected] = {}
        ids: dict[bytes, list[tuple[str, int, int]]] = {}  # event id: where the log has it
        while offset < min(end, covered):  # bounded by the partition's end
            records = log.read(topic, partition, offset, max_records=_READ_RECORDS)
            if not records:
                break
            found = [(r, ev) for r, ev in envelopes_of(records)[0] if r.offset < covered]
            _check_events(index, txn, topic, partition, found, streams, ids, problems)
            offset = records[-1].offset + 1
        _check_ids(index, txn, ids, covered, problems)
        if covered <= end:  # else an append is being made durable: heads may be ahead
            _check_heads(index, txn, topic, partition, streams, problems)
        _check_chunks(index, txn, streams, problems)


def _check_ids(index: StreamIndex, txn: Any, ids: dict[bytes, list[tuple[str, int, int]]],
               covered: int, problems: list[str]) -> None:
    """Each event id is in the index; where an id occurs once, at its event (an id appended
    again is an append made idempotent, or another stream's: the index keeps one of them)."""
    for event_id, where in ids.items():  # bounded by the partition's events
        got = index.event_id(txn, event_id)
        if got is None or (len(where) == 1 and got[0] == where[0][0] and got != where[0]):
            problems.append(f"event {event_id.hex()} (stream {where[0][0]!r}, version {where[0][1]}, "
                            f"below covered {covered}): the stream index has {got}")


def _check_events(index: StreamIndex, txn: Any, topic: str, partition: int,
                  found: list[tuple[Any, Any]], streams: dict[str, _Expected],
                  ids: dict[bytes, list[tuple[str, int, int]]], problems: list[str]) -> None:
    """Each event's position entry; gather its id and its stream's envelopes by chunk."""
    for record, ev in found:  # bounded by the records read
        sid = ev.stream_id
        ids.setdefault(ev.id_bytes, []).append((sid, ev.version, ev.position))
        at = index.position(txn, ev.position)
        if at != (topic, partition, record.offset):
            problems.append(f"position {ev.position} (offset {record.offset}): the stream index has {at}")
        expected = streams.get(sid)
        if expected is None:
            expected = streams[sid] = _Expected(ev.version)
        elif ev.version != expected.last_version + 1:
            problems.append(f"stream {sid!r}: version {ev.version} at offset {record.offset} follows "
                            f"version {expected.last_version} in the log")
        expected.last_version = ev.version
        expected.chunks.setdefault(ev.version // CHUNK_EVENTS, []).append(record.value or b"")


def _check_heads(index: StreamIndex, txn: Any, topic: str, partition: int,
                 streams: dict[str, _Expected], problems: list[str]) -> None:
    """Every stream of the partition has the head the log gives it, and no other head does."""
    every = index.heads_with_prefix(txn, "")
    heads = {sid: head for sid, head in every if (head.topic, head.partition) == (topic, partition)}
    for sid, expected in streams.items():  # bounded by the partition's streams
        head = heads.get(sid)
        if head is None and sid not in dict(every):
            problems.append(f"stream {sid!r} (versions {expected.first_version}..{expected.last_version} "
                            "in the log) has no head in the stream index")
        elif head is not None and head.last_version != expected.last_version:
            problems.append(f"stream {sid!r}: the stream index's head says version "
                            f"{head.last_version}, the log's last is {expected.last_version}")
    for sid, head in heads.items():  # bounded by the index's heads
        if sid not in streams and head.last_version >= 0:
            problems.append(f"stream {sid!r}: the stream index's head says version "
                            f"{head.last_version}, the log holds none of its events")
    for sid, head in every:  # bounded by the index's heads
        if sid in streams and sid not in heads:
            problems.append(f"stream {sid!r}: its head names {head.topic}/{head.partition}, its events "
                            f"are in {topic}/{partition}")


def _check_chunks(index: StreamIndex, txn: Any, streams: dict[str, _Expected],
                  problems: list[str]) -> None:
    """Each chunk of envelopes holds the stream's records' values, byte for byte."""
    for sid, expected in streams.items():  # bounded by the partition's streams
        first_chunk = expected.first_version // CHUNK_EVENTS
        last_chunk = expected.last_version // CHUNK_EVENTS
        stored = index.chunk_map(txn, sid, first_chunk, last_chunk)
        for n, values in expected.chunks.items():  # bounded by the stream's chunks
            want = b"".join(values)
            got = stored.get(n)
            starts = n * CHUNK_EVENTS >= expected.first_version
            if got is None or (got != want if starts else not got.endswith(want)):
                problems.append(f"stream {sid!r}: chunk {n} (versions from {n * CHUNK_EVENTS}) "
                                "differs from the log's records")
