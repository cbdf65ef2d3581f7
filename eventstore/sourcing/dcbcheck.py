"""``check()`` of the DCB tag index against the log (docs/format.md, section 18).

The tag index is derived from the events of ``$dcb`` in ``__dcb``: what
catch-up would compute from the events below the index's ``covered`` version
is compared with what the index holds, in one read transaction (``covered``
and the data it covers are written in one): each event's record by position,
every tag's and type's chunks (the positions they list, in order, each record
equal to the one by position, the chunk keyed by its first), their counts, and
no tag, type or position the log lacks. Each difference is a ``CheckProblem``
naming the index's data file; once one is found the stream index marks itself
damaged, so the next open moves it aside and rebuilds it, tag index included,
from the log (docs/format.md, section 15, case L1).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from ..catalog import datafile
from ..errors import CorruptionError
from ..records import TopicConfig
from ..storage.check import CheckProblem, CheckReport
from .catchup import envelopes_of
from .dcb import DB_EVENTS, DB_META, DB_TAGS, DB_TYPES, DCB_STREAM, DCB_TOPIC, tags_of
from .dcbtypes import SequencedEvent

if TYPE_CHECKING:
    from .dcb import DCB

__all__ = ["check_tag_index"]

_READ_RECORDS = 10_000
PROBLEMS_MAX = 100  # past it, one line says how many more
_u64 = struct.Struct(">Q")
_rec_dec = msgspec.msgpack.Decoder(SequencedEvent)
_recs_dec = msgspec.msgpack.Decoder(list[SequencedEvent])


class _Expected:
    """What the log says the index holds: each event's record, and positions by tag and type."""

    def __init__(self) -> None:
        self.records: dict[int, SequencedEvent] = {}
        self.by_tag: dict[str, list[int]] = {}
        self.by_type: dict[str, list[int]] = {}

    def add(self, rec: SequencedEvent) -> None:
        self.records[rec.position] = rec
        self.by_type.setdefault(rec.type, []).append(rec.position)
        for tag in dict.fromkeys(rec.tags):  # bounded by the event's tags; each once
            self.by_tag.setdefault(tag, []).append(rec.position)


def check_tag_index(dcb: DCB, cfg: TopicConfig, partition: int, report: CheckReport) -> None:
    """Report every way the tag index differs from ``__dcb``'s events: a check hook of the
    log (``partial(check_tag_index, dcb)``), run on each partition whose bytes checked clean,
    that looks at ``__dcb``'s only."""
    if cfg.name != DCB_TOPIC:
        return
    index = dcb.index
    where = os.path.join(index.path, datafile.DATA_FILE)
    if index.marked_damaged():  # reported by the stream index check; rebuilt at the next open
        return
    problems: list[str] = []
    try:
        _compare(dcb, partition, problems)
    except CorruptionError as e:
        report.problems.append(CheckProblem(e.path, e.position, e.reason))
        return
    prefix = f"{DCB_TOPIC}/{partition}: tag index: "
    for reason in problems[:PROBLEMS_MAX]:
        report.problems.append(CheckProblem(where, None, prefix + reason))
    if len(problems) > PROBLEMS_MAX:
        more = len(problems) - PROBLEMS_MAX
        report.problems.append(CheckProblem(where, None, f"{prefix}{more} more differences"))
    if problems:
        index.mark_damaged(f"check found {len(problems)} differences between the tag index and the log")


def _compare(dcb: DCB, partition: int, problems: list[str]) -> None:
    with dcb.index.read() as txn:
        raw = txn.get(b"covered", db=dcb.dbs[DB_META])
        covered = 0 if raw is None else int(_u64.unpack(raw)[0])
        expected = _from_log(dcb, partition, covered)
        _check_records(txn, dcb.dbs[DB_EVENTS], expected.records, problems)
        for db, kind, letter, wanted in ((DB_TAGS, "tag", b"g", expected.by_tag),
                                         (DB_TYPES, "type", b"y", expected.by_type)):  # two kinds
            found = _chunked(txn, dcb.dbs[db], kind, problems)
            counts = _counts(txn, dcb.dbs[DB_META], letter)
            _check_chunked(kind, wanted, found, counts, expected.records, problems)


def _from_log(dcb: DCB, partition: int, covered: int) -> _Expected:
    """The records of ``$dcb``'s events below version ``covered``, read from the log."""
    log = dcb.streams.log
    expected = _Expected()
    offset, end = log.offsets(DCB_TOPIC, partition)
    while offset < end:  # bounded by the partition's end
        records = log.read(DCB_TOPIC, partition, offset, max_records=_READ_RECORDS)
        if not records:
            break
        for _record, ev in envelopes_of(records)[0]:  # bounded by the records read
            if ev.stream_id == DCB_STREAM and ev.version < covered:
                expected.add(SequencedEvent(ev.position + 1, ev.type, ev.data, tags_of(ev.metadata)))
        offset = records[-1].offset + 1
    return expected


def _check_records(txn: Any, db: Any, records: dict[int, SequencedEvent], problems: list[str]) -> None:
    """Each event's record by position, and no position the log lacks."""
    seen = 0
    for key, value in txn.cursor(db=db):  # bounded by the index's records
        position = int(_u64.unpack(key)[0])
        want = records.get(position)
        try:
            got: SequencedEvent | None = _rec_dec.decode(value)
        except msgspec.DecodeError:
            got = None
        if want is None:
            problems.append(f"position {position} is indexed, the log has no such DCB event below covered")
            continue
        seen += 1
        if got != want:
            problems.append(f"position {position}: the index's record differs from the log's event")
    if seen < len(records):
        indexed = {int(_u64.unpack(k)[0]) for k in txn.cursor(db=db).iternext(keys=True, values=False)}
        for position in sorted(set(records) - indexed)[:PROBLEMS_MAX]:  # bounded by the problems
            problems.append(f"position {position} (in the log, below covered) is not indexed")


def _chunked(txn: Any, db: Any, kind: str, problems: list[str]) -> dict[str, list[SequencedEvent]]:
    """Every tag's (type's) records, its chunks read in key order; malformed chunks reported."""
    found: dict[str, list[SequencedEvent]] = {}
    for name, first, value in _chunks(txn, db):  # bounded by the index's chunks
        try:
            chunk = _recs_dec.decode(value)
        except msgspec.DecodeError:
            problems.append(f"{kind} {name!r}: the chunk keyed {first} does not decode")
            continue
        if not chunk or chunk[0].position != first:
            problems.append(f"{kind} {name!r}: the chunk keyed {first} does not start with that position")
        found.setdefault(name, []).extend(chunk)
    return found


def _chunks(txn: Any, db: Any) -> Iterator[tuple[str, int, bytes]]:
    for key, value in txn.cursor(db=db):  # bounded by the index's chunks
        key = bytes(key)  # name, 0x00, first position uint64 BE
        yield key[:-9].decode(errors="replace"), int(_u64.unpack(key[-8:])[0]), bytes(value)


def _counts(txn: Any, db: Any, letter: bytes) -> dict[str, int]:
    """The ``g`` (tag) or ``y`` (type) counts of ``dcbmeta``."""
    cur = txn.cursor(db=db)
    out: dict[str, int] = {}
    if not cur.set_range(letter):
        return out
    for key, value in cur:  # bounded by the counts
        if not key.startswith(letter):
            break
        out[bytes(key[1:]).decode(errors="replace")] = int(_u64.unpack(value)[0])
    return out


def _check_chunked(kind: str, wanted: dict[str, list[int]], found: dict[str, list[SequencedEvent]],
                   counts: dict[str, int], records: dict[int, SequencedEvent], problems: list[str]) -> None:
    """Each tag (type) lists exactly its events' positions in order, each record the one the
    log gives that position, and its count says how many; no other tag (type) is indexed."""
    for name in sorted(set(wanted) | set(found) | set(counts)):  # bounded by the tags (types)
        want = wanted.get(name, [])
        got = found.get(name, [])
        if [r.position for r in got] != want:
            problems.append(f"{kind} {name!r}: the index lists {len(got)} events, the log has {len(want)} "
                            "(or they differ)")
        elif any(r != records[r.position] for r in got):  # bounded by the tag's events
            problems.append(f"{kind} {name!r}: a record differs from the log's event")
        if counts.get(name, 0) != len(want):
            problems.append(f"{kind} {name!r}: the index counts {counts.get(name, 0)} events, "
                            f"the log has {len(want)}")
