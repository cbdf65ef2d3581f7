"""Produce (0), versions 3 to 11: Kafka RecordBatch v2 appended as produced.

Each partition's ``records`` is one batch, handed to ``Log.append_kafka``: rules K1-K5
checked, idempotent producers' sequences checked, the producer's bytes stored with only
their base offset set (docs/format.md, sections 17 and 19). Errors are per partition:
one bad batch does not fail the others.

* **One worker hop, one wait**: the whole request is appended in one worker thread, each
  partition without waiting for its fsync, then one wait covers them all (in ``fsync``
  mode; ``Log.wait_durable_each``: the partitions' fsyncs run at once), and the requests
  of every connection share each partition's fsyncs (group commit, docs/format.md
  section 7).
* **acks**: 0 appends and answers nothing; 1 and -1 answer once the batches are durable
  per the store's durability mode (the only replica is the leader, so "all in-sync
  replicas" is this one); anything else answers INVALID_REQUIRED_ACKS. In ``fsync``
  mode an acks 0 request still waits for its fsync before the next request of its
  connection is read: records become visible to readers only once synced.
* **Transactions** are not served: a request with a ``transactional_id`` is answered
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED for every partition (transactional batches
  without one are refused by K4 with INVALID_RECORD).
* ``log_append_time`` is -1 (CreateTime: the topics keep the producers' timestamps);
  ``log_start_offset`` (v5+) is the partition's after the append; ``error_message``
  (v8+) says why a partition was refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ...errors import EventStoreError, TransactionalIdError
from ...log import Log
from ...records import TopicPartition
from ...wire import RequestHeader, kafka_error_for
from ...wire.errors import CorruptRecordError
from ..context import Context
from ..dispatch import handles
from ..entities import entity, item_class, response_class

__all__ = ["Outcome", "append_all"]

log = logging.getLogger("eventstore.server")

NONE: Final = 0
INVALID_REQUIRED_ACKS: Final = 21
_ACKS: Final = (0, 1, -1)


@dataclass(slots=True)
class Outcome:
    """What one partition of a Produce came to."""

    topic: str
    partition: int
    error: int = NONE
    message: str | None = None
    base_offset: int = -1
    log_start_offset: int = -1
    end_offset: int = -1  # the offset after the batch: what the wait for durability covers


@handles(0)
async def produce(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Append each partition's batch; answer per partition (nothing at all for acks 0)."""
    acks = int(body.acks)
    asked = [(str(t.name), int(p.index), p.records) for t in body.topic_data for p in t.partition_data]
    if body.transactional_id is not None:
        error = TransactionalIdError(str(body.transactional_id))
        outcomes = [Outcome(topic, partition, kafka_error_for(error).code, str(error))
                    for topic, partition, _ in asked]
    elif acks not in _ACKS:
        outcomes = [Outcome(topic, partition, INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, not {acks}")
                    for topic, partition, _ in asked]
    else:
        outcomes = await ctx.blocking(append_all, ctx.log, asked)
    if acks == 0:  # no answer: a refused partition is only logged (docs/protocol.md, section 3)
        for o in outcomes:  # bounded by the request
            if o.error != NONE:
                log.warning("Produce with acks 0 from %s: %s/%d refused (code %d): %s",
                            ctx.client, o.topic, o.partition, o.error, o.message)
        return None
    return _response(header, outcomes)


def append_all(log: Log, asked: Sequence[tuple[str, int, bytes | None]]) -> list[Outcome]:
    """Append every partition's batch (in a worker thread), then, in ``fsync`` mode, wait
    once until all of them are durable: acks 0 too, since in that mode records become
    visible to readers only once synced."""
    outcomes = [_append(log, topic, partition, records) for topic, partition, records in asked]
    if log.durability == "fsync":
        ends: dict[TopicPartition, int] = {}
        for o in outcomes:  # bounded by the request; a partition named twice waits for its last
            if o.error == NONE:
                tp = TopicPartition(o.topic, o.partition)
                ends[tp] = max(ends.get(tp, 0), o.end_offset)
        failed = log.wait_durable_each(ends)
        for outcome in outcomes:  # bounded by the request
            error = failed.get(TopicPartition(outcome.topic, outcome.partition))
            if error is not None and outcome.error == NONE:  # the batch may not survive a power loss
                outcome.error, outcome.message = kafka_error_for(error).code, str(error)
                outcome.base_offset = -1
    return outcomes


def _append(log: Log, topic: str, partition: int, records: bytes | None) -> Outcome:
    outcome = Outcome(topic, partition)
    try:
        if records is None:
            raise CorruptRecordError("a partition without records")
        result = log.append_kafka(topic, partition, records, durable=False)
    except EventStoreError as e:
        outcome.error, outcome.message = kafka_error_for(e).code, str(e)
        return outcome
    outcome.base_offset = result.base_offset
    outcome.log_start_offset = result.log_start_offset
    outcome.end_offset = result.base_offset + result.record_count
    return outcome


def _response(header: RequestHeader, outcomes: list[Outcome]) -> Any:
    cls = response_class(header)
    topic_cls = item_class(cls, "responses")
    partition_cls = item_class(topic_cls, "partition_responses")
    topics: dict[str, list[Any]] = {}
    for o in outcomes:
        topics.setdefault(o.topic, []).append(entity(
            partition_cls, index=o.partition, error_code=o.error, base_offset=o.base_offset,
            log_append_time=None, log_start_offset=o.log_start_offset, record_errors=(),
            error_message=o.message))
    return entity(cls, responses=tuple(entity(topic_cls, name=name, partition_responses=tuple(parts))
                                       for name, parts in topics.items()))
