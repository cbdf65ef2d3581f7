"""The stream index follows the log: on open, every streams partition is indexed past the
offset the index covers; a record that is not an event envelope is skipped and reported (case
F1, docs/format.md section 12), never a reason to refuse the open. ``check`` finds the same
records (``check_envelopes``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import EventDecodeError
from ..records import RecoveryEvent, TopicConfig
from ..storage.check import CheckProblem, CheckReport
from .events import RecordedEvent, events_from_records
from .index import Head, StreamIndex
from .rules import META_PREFIX
from .staging import put_metadata

if TYPE_CHECKING:
    from ..log import Log

__all__ = ["catch_up", "check_envelopes", "envelopes_of", "foreign_records"]

_CATCH_UP_RECORDS = 10_000


def catch_up(log: Log, index: StreamIndex) -> None:
    """Index what the log has past each streams partition's ``covered`` offset."""
    for cfg in log.topics():
        if cfg.streams:
            for p in range(cfg.partitions):  # bounded by the topic's partitions
                _catch_up_partition(log, index, cfg.name, p)


def _catch_up_partition(log: Log, index: StreamIndex, topic: str, partition: int) -> None:
    """Index the partition's records past ``covered``; skip and report foreign ones."""
    with index.read() as txn:
        offset = index.covered(txn, topic, partition)
    start, end = log.offsets(topic, partition)
    offset = max(offset, start)
    while offset < end:  # bounded by the partition's end
        records = log.read(topic, partition, offset, max_records=_CATCH_UP_RECORDS)
        found, foreign = envelopes_of(records)
        index.write(lambda txn, f=found, last=records[-1].offset:
                    _index_records(index, txn, topic, partition, f, last))
        for record, reason in foreign:  # bounded by the records read
            log.report(RecoveryEvent(
                case="F1", path=log.partition_path(topic, partition), position=0,
                detail=f"skipped a foreign record at offset {record.offset} of a streams "
                       f"topic: {reason}", extra={"topic": topic, "partition": partition,
                                                  "offset": record.offset}))
        offset = records[-1].offset + 1


def _index_records(index: StreamIndex, txn: Any, topic: str, partition: int,
                   found: list[tuple[Any, RecordedEvent]], last_offset: int) -> None:
    for record, ev in found:
        stream_id = ev.stream_id  # recovery: once per record not yet indexed
        head = index.head(txn, stream_id)
        if head is not None and head.last_version >= ev.version:
            continue  # indexed already
        if stream_id.startswith(META_PREFIX):
            put_metadata(index, txn, stream_id, ev.data, topic, partition)
        meta = head.meta if head is not None else b""
        index.put_head(txn, stream_id, Head(topic, partition, ev.version, meta))
        index.append_envelopes(txn, stream_id, ev.version, [record.value or b""])
        index.put_event(txn, ev.id_bytes, stream_id, ev.version, ev.position, topic, partition,
                        record.offset)
    index.put_covered(txn, topic, partition, last_offset + 1)


def check_envelopes(log: Log, cfg: TopicConfig, partition: int, report: CheckReport) -> None:
    """Report each foreign record of a streams partition (the log's check hook)."""
    if not cfg.streams:
        return
    path = log.partition_path(cfg.name, partition)
    for offset, reason in foreign_records(log, cfg.name, partition):
        report.foreign_records += 1
        report.problems.append(CheckProblem(
            path, None, f"record at offset {offset}: {reason}; the stream index skips it"))


def foreign_records(log: Log, topic: str, partition: int) -> list[tuple[int, str]]:
    """The offset and the reason of each foreign record of one streams partition."""
    out: list[tuple[int, str]] = []
    offset, end = log.offsets(topic, partition)
    while offset < end:  # bounded by the partition's end
        records = log.read(topic, partition, offset, max_records=_CATCH_UP_RECORDS)
        if not records:
            break
        out.extend((record.offset, reason) for record, reason in envelopes_of(records)[1])
        offset = records[-1].offset + 1
    return out


def envelopes_of(records: list[Any]) -> tuple[list[tuple[Any, RecordedEvent]], list[tuple[Any, str]]]:
    """Split records of a streams topic into (record, event) pairs and foreign (record, reason).

    A foreign record has no key, or a value that is not an event envelope, or
    an envelope that names another offset than its record's (one copied from
    elsewhere). The records are decoded in one call; only when that fails,
    one by one.
    """
    try:
        events = events_from_records(records)
    except EventDecodeError:
        pairs: list[tuple[Any, RecordedEvent | str]] = []
        for record in records:  # the slow path: a foreign record among them
            try:
                pairs.append((record, events_from_records([record])[0]))
            except EventDecodeError as e:
                pairs.append((record, f"not a stream event envelope ({e.__cause__})"))
    else:
        pairs = list(zip(records, events, strict=True))
    found: list[tuple[Any, RecordedEvent]] = []
    foreign: list[tuple[Any, str]] = []
    for record, ev in pairs:  # bounded by the records
        if isinstance(ev, str):
            foreign.append((record, ev))
        elif record.key is None:
            foreign.append((record, "not a stream event envelope (no stream id as its key)"))
        elif ev.offset != record.offset:
            foreign.append((record, f"not a stream event envelope (it names offset {ev.offset})"))
        else:
            found.append((record, ev))
    return found, foreign
