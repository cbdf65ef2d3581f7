"""ListOffsets (2), versions 1 to 9: the offsets of a time, or of the log's ends;
DeleteRecords (21), versions 0 to 2: the log start moved up.

The timestamps Kafka defines: -2 earliest (the log start offset), -1 latest (the end
offset: the high watermark, also the last stable offset since no transaction is ever
open), -3 the record with the largest timestamp (v7+), -4 earliest local (v8+; all
of the log is local: the log start offset), -5 earliest pending upload (v9; nothing
is ever uploaded: offset -1). Any timestamp ≥ 0: the first record whose timestamp is
at least it, answered with that record's offset and timestamp, or offset -1 when
there is none. The leader epoch is 0 wherever a version carries it.

DeleteRecords moves the log start to exactly the offset asked (``Log.delete_records``;
-1: the high watermark), as Kafka does: the low watermark it answers is that offset;
fetches below it answer OFFSET_OUT_OF_RANGE, ListOffsets ``earliest`` answers it; an
offset outside the log answers OFFSET_OUT_OF_RANGE.
"""

from __future__ import annotations

from typing import Any, Final

from ...errors import EventStoreError
from ...log import Log
from ...wire import RequestHeader, kafka_error_for
from ..context import Context
from ..dispatch import handles
from ..entities import entity, item_class, response_class

NONE: Final = 0
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
INVALID_REQUEST: Final = 42
LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, EARLIEST_PENDING_UPLOAD = -1, -2, -3, -4, -5
LEADER_EPOCH: Final = 0
HIGH_WATERMARK: Final = -1  # DeleteRecords: every record


@handles(2)
async def list_offsets(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Each partition's offset for the timestamp asked."""
    cls = response_class(header)
    topic_cls = item_class(cls, "topics")
    partition_cls = item_class(topic_cls, "partitions")
    asked = [(str(t.name), int(p.partition_index), int(p.timestamp))
             for t in body.topics for p in t.partitions]
    found = await ctx.blocking(_look_up_all, ctx.log, asked)
    topics: dict[str, list[Any]] = {}
    for (name, partition, _timestamp), (error, offset, timestamp) in zip(asked, found, strict=True):
        topics.setdefault(name, []).append(entity(
            partition_cls, partition_index=partition, error_code=error, timestamp=timestamp, offset=offset,
            leader_epoch=LEADER_EPOCH if error == NONE and offset >= 0 else -1))
    return entity(cls, topics=tuple(entity(topic_cls, name=name, partitions=tuple(parts))
                                    for name, parts in topics.items()))


def _look_up_all(log: Log, asked: list[tuple[str, int, int]]) -> list[tuple[int, int, int]]:
    """(error code, offset, timestamp) for each (topic, partition, timestamp), in a worker thread."""
    out = []
    for topic, partition, timestamp in asked:  # bounded by the request
        try:
            out.append(_look_up(log, topic, partition, timestamp))
        except EventStoreError as e:
            out.append((kafka_error_for(e).code, -1, -1))
    return out


def _look_up(log: Log, topic: str, partition: int, timestamp: int) -> tuple[int, int, int]:
    cfg = log.find_topic(topic)
    if cfg is None or not 0 <= partition < cfg.partitions:
        return UNKNOWN_TOPIC_OR_PARTITION, -1, -1
    start, end = log.offsets(topic, partition)
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return NONE, start, -1
    if timestamp == LATEST:
        return NONE, end, -1
    if timestamp == EARLIEST_PENDING_UPLOAD:
        return NONE, -1, -1
    if timestamp == MAX_TIMESTAMP:
        largest = log.partition(topic, partition).max_timestamp()
        if largest < 0 or start == end:
            return NONE, -1, -1
        return _at_time(log, topic, partition, largest)
    if timestamp < 0:
        return INVALID_REQUEST, -1, -1
    return _at_time(log, topic, partition, timestamp)


def _at_time(log: Log, topic: str, partition: int, timestamp: int) -> tuple[int, int, int]:
    """The first record at or after ``timestamp``: its offset and its own timestamp."""
    offset = log.offset_for_time(topic, partition, timestamp)
    if offset is None:
        return NONE, -1, -1
    records = log.read(topic, partition, offset, max_records=1)
    if not records:
        return NONE, -1, -1
    return NONE, records[0].offset, records[0].timestamp_ms


@handles(21)
async def delete_records(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Delete each partition's records below the offset asked; answer its new log start."""
    cls = response_class(header)
    topic_cls = item_class(cls, "topics")
    partition_cls = item_class(topic_cls, "partitions")
    asked = [(str(t.name), int(p.partition_index), int(p.offset)) for t in body.topics for p in t.partitions]
    done = await ctx.blocking(_delete_all, ctx.log, asked)
    topics: dict[str, list[Any]] = {}
    for (name, partition, _offset), (error, low_watermark) in zip(asked, done, strict=True):
        topics.setdefault(name, []).append(entity(
            partition_cls, partition_index=partition, low_watermark=low_watermark, error_code=error))
    return entity(cls, topics=tuple(entity(topic_cls, name=name, partitions=tuple(parts))
                                    for name, parts in topics.items()))


def _delete_all(log: Log, asked: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """(error code, low watermark) for each (topic, partition, offset), in a worker thread."""
    out = []
    for topic, partition, offset in asked:  # bounded by the request
        cfg = log.find_topic(topic)
        if cfg is None or not 0 <= partition < cfg.partitions:
            out.append((UNKNOWN_TOPIC_OR_PARTITION, -1))
            continue
        try:
            if offset == HIGH_WATERMARK:
                offset = log.offsets(topic, partition)[1]
            out.append((NONE, log.delete_records(topic, partition, offset)))
        except EventStoreError as e:
            out.append((kafka_error_for(e).code, -1))
    return out
