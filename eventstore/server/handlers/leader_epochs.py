"""OffsetForLeaderEpoch (23), versions 2 to 4: where an epoch ended (docs/replication.md, 4.2).

A follower that returns after a failover asks, per partition, for the end of its
last epoch; the answer is ``Log.epoch_end_offset``: the largest epoch at or below
the one asked and the offset where the next epoch started (the log end for the
last one), or ``(-1, -1)`` when the partition knows no such epoch. The follower
truncates to that offset. ``current_leader_epoch`` is checked as a replica Fetch
checks it (``fenced_epoch_error``): an older one answers FENCED_LEADER_EPOCH, a
newer one UNKNOWN_LEADER_EPOCH and fences this node.
"""

from __future__ import annotations

from typing import Any, Final

from ...errors import EventStoreError
from ...wire import RequestHeader, kafka_error_for
from ..context import Context
from ..dispatch import handles
from ..entities import entity, item_class, response_class
from ..replication.epochs import epoch_error

NONE: Final = 0
UNKNOWN_TOPIC_OR_PARTITION: Final = 3


@handles(23)
async def offset_for_leader_epoch(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Each partition's ``(epoch, end offset)`` for the epoch asked."""
    cls = response_class(header)
    topic_cls = item_class(cls, "topics")
    partition_cls = item_class(topic_cls, "partitions")
    topics = []
    for topic in body.topics:  # bounded by the request
        parts = [entity(partition_cls, partition=int(p.partition), **_answer(ctx, str(topic.topic), p))
                 for p in topic.partitions]
        topics.append(entity(topic_cls, topic=topic.topic, partitions=tuple(parts)))
    return entity(cls, topics=tuple(topics))


def _answer(ctx: Context, topic: str, p: Any) -> dict[str, int]:
    cfg = ctx.log.find_topic(topic)
    partition = int(p.partition)
    if cfg is None or not 0 <= partition < cfg.partitions:
        return {"error_code": UNKNOWN_TOPIC_OR_PARTITION, "leader_epoch": -1, "end_offset": -1}
    error = epoch_error(ctx.broker.replication, int(p.current_leader_epoch), ctx.client)
    if error:
        return {"error_code": error, "leader_epoch": -1, "end_offset": -1}
    try:
        epoch, end = ctx.log.epoch_end_offset(topic, partition, int(p.leader_epoch))
    except EventStoreError as e:
        return {"error_code": kafka_error_for(e).code, "leader_epoch": -1, "end_offset": -1}
    return {"error_code": NONE, "leader_epoch": epoch, "end_offset": end}
