"""InitProducerId (22), versions 0 to 5, and DescribeProducers (61), version 0: idempotent
producers (docs/format.md, section 19).

* **InitProducerId** hands out a producer id never handed out before by this store
  (a counter in the catalog, durable before the answer) with epoch 0. As Kafka does
  for a producer without a transactional id, a request that names its current id
  and epoch (v3+, KIP-360) gets a new id too. A ``transactional_id`` is answered
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED: Kafka transactions are not served.
* **DescribeProducers** lists, per partition asked, the producers whose batches the
  partition keeps state for: id, epoch, last sequence, last batch's max timestamp;
  the coordinator epoch and the open transaction's start offset are -1 (none).
"""

from __future__ import annotations

from typing import Any, Final

from ...errors import EventStoreError, TransactionalIdError
from ...log import Log
from ...wire import RequestHeader, kafka_error_for
from ..context import Context
from ..dispatch import handles
from ..entities import entity, item_class, response_class

NONE: Final = 0
UNKNOWN_TOPIC_OR_PARTITION: Final = 3

Described = tuple[int, str | None, list[tuple[int, int, int, int]]]  # error, message, producers


@handles(22)
async def init_producer_id(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """A new producer id, epoch 0 (raises ``TransactionalIdError`` for a transactional id:
    the dispatcher answers its code in the top-level ``error_code``)."""
    if body.transactional_id is not None:
        raise TransactionalIdError(str(body.transactional_id))
    producer_id = await ctx.blocking(ctx.log.allocate_producer_id)
    return entity(response_class(header), error_code=NONE, producer_id=producer_id, producer_epoch=0)


@handles(61)
async def describe_producers(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """The idempotent producers each partition asked for keeps state for."""
    asked = [(str(t.name), int(p)) for t in body.topics for p in t.partition_indexes]
    found = await ctx.blocking(_describe_all, ctx.log, asked)
    cls = response_class(header)
    topic_cls = item_class(cls, "topics")
    partition_cls = item_class(topic_cls, "partitions")
    state_cls = item_class(partition_cls, "active_producers")
    topics: dict[str, list[Any]] = {}
    for (topic, partition), (error, message, producers) in zip(asked, found, strict=True):
        states = tuple(entity(state_cls, producer_id=pid, producer_epoch=epoch, last_sequence=sequence,
                              last_timestamp=timestamp, coordinator_epoch=-1, current_txn_start_offset=-1)
                       for pid, epoch, sequence, timestamp in producers)
        topics.setdefault(topic, []).append(entity(
            partition_cls, partition_index=partition, error_code=error, error_message=message,
            active_producers=states))
    return entity(cls, topics=tuple(entity(topic_cls, name=name, partitions=tuple(parts))
                                    for name, parts in topics.items()))


def _describe_all(log: Log, asked: list[tuple[str, int]]) -> list[Described]:
    """Each partition's producers, in a worker thread (a partition's lock is taken briefly)."""
    out: list[Described] = []
    for topic, partition in asked:  # bounded by the request
        cfg = log.find_topic(topic)
        if cfg is None or not 0 <= partition < cfg.partitions:
            out.append((UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}/{partition}", []))
            continue
        try:
            out.append((NONE, None, log.describe_producers(topic, partition)))
        except EventStoreError as e:  # deleted meanwhile, or the store is closing
            out.append((kafka_error_for(e).code, str(e), []))
    return out
