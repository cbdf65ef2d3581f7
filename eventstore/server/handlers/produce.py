"""Produce (0), versions 3 to 11: Kafka RecordBatch v2 appended as produced.

Each partition's ``records`` is one batch, handed to ``Log.append_kafka``: rules K1-K5
checked, idempotent producers' sequences checked, the producer's bytes stored with only
their base offset set (docs/format.md, sections 17 and 19). Errors are per partition:
one bad batch does not fail the others.

* **Arrival order**: Kafka appends a connection's requests in the order they arrive
  (clients with several requests in flight rely on it, and an idempotent producer's
  sequences would otherwise arrive out of order). A connection starts its requests'
  handlers in arrival order, and each Produce joins the server's :class:`Appender`
  queue before its first ``await``; the queue is appended in that order, a round
  at a time: one worker thread appends every queued request of the round, each
  partition without waiting for its fsync, lets the next round start, then waits
  once for the whole round (in ``fsync`` mode, ``Log.wait_durable_each``: the
  partitions' fsyncs run at once) while the next round is already being appended.
  The requests of every connection so share each partition's fsyncs (group commit,
  docs/format.md section 7) and one thread hand-off per round, not per request.
* **acks**: 0 appends and answers nothing; 1 and -1 answer once the batches are durable
  per the store's local durability mode (``fsync`` for ``replicated``); without
  followers the only replica is the leader, so "all in-sync replicas" is this one;
  anything else answers INVALID_REQUIRED_ACKS. In ``fsync``
  mode an acks 0 request still waits for its fsync before the next request of its
  connection is read: records become visible to readers only once synced.
* **acks=all with followers** (docs/replication.md, section 3): on a leader that
  replicates (``--min-insync-replicas``, or followers fetching), a partition whose
  in-sync set is smaller than ``min_insync_replicas`` answers NOT_ENOUGH_REPLICAS
  and is not written; the others are appended as above, then the request waits
  (``Leader.wait_replicated``: an event per partition, set when the high watermark
  reaches the batch's end) and answers NOT_ENOUGH_REPLICAS_AFTER_APPEND if the
  in-sync set shrank below the minimum meanwhile, REQUEST_TIMED_OUT if the
  request's timeout passed first.
* **Transactions** are not served: a request with a ``transactional_id`` is answered
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED for every partition (transactional batches
  without one are refused by K4 with INVALID_RECORD).
* ``log_append_time`` is the time the batch was appended in a LogAppendTime topic
  (``message.timestamp.type``; docs/format.md, 17.3), -1 in a CreateTime topic or
  for a duplicate;
  ``log_start_offset`` (v5+) is the partition's after the append; ``error_message``
  (v8+) says why a partition was refused.
"""

from __future__ import annotations

import datetime
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.lowlevel

from ...errors import EventStoreError, TransactionalIdError
from ...log import Log
from ...records import TopicPartition
from ...wire import RequestHeader, kafka_error_for
from ...wire.errors import CorruptRecordError
from ..context import Context
from ..dispatch import PRODUCE_KEY, handles
from ..entities import entity, item_class, response_class
from ..replication.leader import NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, leader_of

__all__ = ["Appender", "Outcome", "append_all", "append_and_settle", "append_round", "settle"]

log = logging.getLogger("eventstore.server")

NONE: Final = 0
INVALID_REQUIRED_ACKS: Final = 21
UNKNOWN_SERVER_ERROR: Final = -1
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
    log_append_time: int = -1  # ms; -1: CreateTime


Asked = Sequence[tuple[str, int, bytes | None]]
"""One request's partitions: ``(topic, partition, records)``."""


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
    elif acks == -1 and _replicates(ctx):
        outcomes = await _append_replicated(ctx, asked, body.timeout.total_seconds())
    else:  # no await before this: the request joins the queue in its connection's arrival order
        outcomes = await appender_of(ctx).append(ctx, asked)
    _count(ctx, asked, outcomes)
    if acks == 0:  # no answer: a refused partition is only logged (docs/protocol.md, section 3)
        for o in outcomes:  # bounded by the request
            if o.error != NONE:
                log.warning("Produce with acks 0 from %s: %s/%d refused (code %d): %s",
                            ctx.client, o.topic, o.partition, o.error, o.message)
        return None
    return _response(header, outcomes)


def _count(ctx: Context, asked: Asked, outcomes: list[Outcome]) -> None:
    """Bytes and records appended per topic, and the partitions refused, for ``/metrics``
    (once per partition)."""
    sizes = {(topic, partition): len(records) for topic, partition, records in asked if records is not None}
    metrics = ctx.broker.metrics
    for o in outcomes:  # bounded by the request
        if o.error != NONE:
            metrics.answered_error(PRODUCE_KEY, o.error)
        elif o.end_offset > o.base_offset >= 0:
            metrics.produced(o.topic, sizes.get((o.topic, o.partition), 0), o.end_offset - o.base_offset)


def _replicates(ctx: Context) -> bool:
    """Whether acks=all means more than this node: replication enabled, or followers known."""
    replication = ctx.broker.replication
    return replication.enabled or bool(replication.followers)


async def _append_replicated(ctx: Context, asked: Asked, timeout_s: float) -> list[Outcome]:
    """acks=all on a leader with followers: refuse the partitions with too few in-sync
    replicas, append the others (joining the queue before any ``await``), then wait until
    the followers have them."""
    leader = leader_of(ctx.broker)
    refused: dict[int, Outcome] = {}
    for i, (topic, partition, _records) in enumerate(asked):  # bounded by the request
        tp = TopicPartition(topic, partition)
        if not leader.enough_replicas(tp):
            refused[i] = Outcome(topic, partition, NOT_ENOUGH_REPLICAS,
                                 f"{leader.isr_size(tp)} in-sync replica(s), "
                                 f"min_insync_replicas is {ctx.broker.replication.min_insync_replicas}")
    allowed = [a for i, a in enumerate(asked) if i not in refused]
    appended = await appender_of(ctx).append(ctx, allowed) if allowed else []
    ends: dict[TopicPartition, int] = {}
    for o in appended:  # bounded by the request
        if o.error == NONE:
            tp = TopicPartition(o.topic, o.partition)
            ends[tp] = max(ends.get(tp, 0), o.end_offset)
    codes = await leader.wait_replicated(ends, timeout_s) if ends else {}
    for o in appended:  # bounded by the request
        code = codes.get(TopicPartition(o.topic, o.partition), NONE) if o.error == NONE else NONE
        if code != NONE:
            o.error = code
            shrank = code == NOT_ENOUGH_REPLICAS_AFTER_APPEND
            o.message = ("written, but the in-sync replicas shrank below min_insync_replicas" if shrank
                         else "the followers did not confirm in time")
    done = iter(appended)
    return [refused[i] if i in refused else next(done) for i in range(len(asked))]


def appender_of(ctx: Context) -> Appender:
    """The server's appender (made on the first Produce)."""
    appender = ctx.state.get(__name__)
    if appender is None:
        appender = ctx.state.setdefault(__name__, Appender(ctx.log))
    assert isinstance(appender, Appender)
    return appender


@dataclass(slots=True, eq=False)
class _Queued:
    """One request waiting in the appender's queue."""

    asked: Asked
    done: anyio.Event
    outcomes: list[Outcome] | None = None  # set once appended (and durable, in fsync mode)


class Appender:
    """Appends the Produce requests of every connection in the order they joined its queue.

    One request at a time leads: it takes the whole queue as a round, appends the
    round in one worker thread, hands the lead to the first request queued since
    (whose task wakes and appends the next round), and only then waits for the
    round's fsyncs: the next round's appends overlap this round's fsync, and the
    rounds' appends never overlap each other, so a partition's batches land in
    queue order. Runs on the event loop only (no lock needed); the waits are
    shielded from cancellation, so a queued request is appended and its round
    settled even when its connection goes away (as a request a broker has read).
    """

    __slots__ = ("_leading", "_log", "_queue")

    def __init__(self, log: Log) -> None:
        self._log = log
        self._queue: deque[_Queued] = deque()
        self._leading = False

    async def append(self, ctx: Context, asked: Asked) -> list[Outcome]:
        """Queue ``asked`` (synchronously, before the first ``await``) and return its outcomes
        once its round is appended and, in ``fsync`` mode, durable."""
        item = _Queued(asked, anyio.Event())
        self._queue.append(item)
        with anyio.CancelScope(shield=True):
            if self._leading:
                await item.done.wait()  # its outcomes, or the lead
            else:
                self._leading = True
            if item.outcomes is None:  # this request leads the round it is in
                await self._round(ctx)
        assert item.outcomes is not None
        return item.outcomes

    async def _round(self, ctx: Context) -> None:
        """Append the queue as one round and settle it, in one worker thread hand-off: the
        worker hands the lead on (through the loop) once the round is appended, before
        its fsync wait."""
        batch = list(self._queue)  # bounded by the requests in flight
        self._queue.clear()
        passed = [False]
        token = anyio.lowlevel.current_token()

        def appended_now() -> None:  # in the worker thread
            token.backend_class.run_sync_soon(self._pass_lead_once, (passed,), token.native_token)

        try:
            appended = await ctx.blocking(append_and_settle, self._log, [item.asked for item in batch],
                                          appended_now)
        except BaseException:  # a bug, not a refused batch: no request of the round hangs
            appended = [_failed(item.asked) for item in batch]
            raise
        finally:
            self._pass_lead_once(passed)
            for item, outcomes in zip(batch, appended, strict=True):  # bounded by the round
                item.outcomes = outcomes
                item.done.set()

    def _pass_lead_once(self, passed: list[bool]) -> None:
        """The lead passes to the first request queued (its outcomes still None), if any;
        once per round (on the loop: from the worker's call, or at the round's end)."""
        if passed[0]:
            return
        passed[0] = True
        if self._queue:
            self._queue[0].done.set()
        else:
            self._leading = False


def append_and_settle(log: Log, requests: Sequence[Asked], appended_now: Callable[[], object]
                      ) -> list[list[Outcome]]:
    """``append_round``, then ``appended_now()`` (the next round may start), then, in ``fsync``
    mode, ``settle`` (in a worker thread)."""
    appended = append_round(log, requests)
    appended_now()
    if log.local_durability == "fsync":
        settle(log, appended)
    return appended


def append_all(log: Log, asked: Asked) -> list[Outcome]:
    """Append one request's batches and, in ``fsync`` mode, wait until they are durable
    (acks 0 too: in that mode records become visible to readers only once synced)."""
    appended = append_round(log, [asked])
    if log.local_durability == "fsync":
        settle(log, appended)
    return appended[0]


def append_round(log: Log, requests: Sequence[Asked]) -> list[list[Outcome]]:
    """Append every partition's batch of every request, in order, none waiting for its fsync
    (in a worker thread)."""
    return [[_append(log, topic, partition, records) for topic, partition, records in asked]
            for asked in requests]


def settle(log: Log, appended: Sequence[list[Outcome]]) -> None:
    """Wait once until every appended batch of ``appended`` is durable (in a worker thread);
    a partition whose wait failed gets the error in every outcome of the round."""
    ends: dict[TopicPartition, int] = {}
    for outcomes in appended:  # bounded by the round
        for o in outcomes:  # a partition named twice waits for its last batch
            if o.error == NONE:
                tp = TopicPartition(o.topic, o.partition)
                ends[tp] = max(ends.get(tp, 0), o.end_offset)
    failed = log.wait_durable_each(ends)
    if not failed:
        return
    for outcomes in appended:  # bounded by the round
        for o in outcomes:
            error = failed.get(TopicPartition(o.topic, o.partition))
            if error is not None and o.error == NONE:  # the batch may not survive a power loss
                o.error, o.message = kafka_error_for(error).code, str(error)
                o.base_offset = -1


def _failed(asked: Asked) -> list[Outcome]:
    return [Outcome(topic, partition, UNKNOWN_SERVER_ERROR, "the append failed")
            for topic, partition, _ in asked]


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
    outcome.log_append_time = result.log_append_time_ms
    return outcome


def _response(header: RequestHeader, outcomes: list[Outcome]) -> Any:
    cls = response_class(header)
    topic_cls = item_class(cls, "responses")
    partition_cls = item_class(topic_cls, "partition_responses")
    topics: dict[str, list[Any]] = {}
    for o in outcomes:
        topics.setdefault(o.topic, []).append(entity(
            partition_cls, index=o.partition, error_code=o.error, base_offset=o.base_offset,
            log_append_time=_when(o.log_append_time), log_start_offset=o.log_start_offset, record_errors=(),
            error_message=o.message))
    return entity(cls, responses=tuple(entity(topic_cls, name=name, partition_responses=tuple(parts))
                                       for name, parts in topics.items()))


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _when(ms: int) -> datetime.datetime | None:
    """A time in ms as the aware datetime kio writes as int64 ms; None (-1 on the wire) for -1.
    Not ``TZAware.parse``d: that type refuses any datetime with sub-second digits, which
    the writer (``round(timestamp() * 1000)``) encodes exactly."""
    return None if ms < 0 else _EPOCH + datetime.timedelta(milliseconds=ms)
