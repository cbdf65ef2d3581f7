"""Fetch (1), versions 4 to 16: stored batches, long poll, byte bounds, no sessions.

* **Frames**: a response carrying 4 KiB of records or more is encoded around them
  (``encode_response_frame`` in ``eventstore.wire.messages``): each partition's
  batches are sent as the bytes read, not copied into the frame.
* **Bytes**: each partition gets at most ``partition_max_bytes``, the response at most
  ``max_bytes``; but the first partition that has records gets at least its first
  batch whole, however large, so a consumer always makes progress (as Kafka, KIP-74).
  Batches are served as stored (``read_batches``); native ones as their cached v2
  form (``eventstore.server.batches``). The records field is the batches' bytes (kio
  never decodes records).
* **Long poll**: with fewer than ``min_bytes`` to answer, the request waits until an
  append to one of its partitions (``Log.watch``) brings enough, ``max_wait_ms``
  passes, or the server stops. A partition error (OFFSET_OUT_OF_RANGE, UNKNOWN_...)
  answers at once.
* **Sessions** (KIP-227): none are made. A full fetch (session id 0) is answered with
  session id 0, which tells the client that no session exists, so its next fetch is
  full again; an incremental fetch (a session id other than 0) answers
  FETCH_SESSION_ID_NOT_FOUND, and session id 0 with an epoch above 0 answers
  INVALID_FETCH_SESSION_EPOCH (docs/protocol.md, section 4, which gives the measurement
  that left sessions out: their saving is per request, and a consumer reading fast
  makes few, large requests).
* **Isolation**: the store holds no transactional batches (produced ones are refused),
  so read_committed and read_uncommitted read the same, the last stable offset is the
  high watermark, and there are no aborted transactions.
* **Topics by id** from v13: an unknown id answers UNKNOWN_TOPIC_ID.
* **Replica fetches** (``replica_id`` ≥ 0; v15+ in ``replica_state``) are a follower
  copying this leader (docs/replication.md, section 2): the stored batches of both
  kinds as they are (no conversion), up to the leader's log end (``Log.log_end``),
  not its high watermark; ``current_leader_epoch`` checked (``epoch_error``); the
  fetch offsets reported as the follower's positions (``Leader.fetched``), which
  move the in-sync set and the high watermark; the long poll waits for the log end
  to move (``Log.watch_log_end``), the high watermark to pass the one last told to
  that follower (``Leader.watch_news``), so a follower learns what its readers may
  see one round trip after the leader knows it, or that follower to report a newer
  catalog version (its next fetch asks for the partitions of topics it made).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import anyio

from ...errors import EventStoreError
from ...log import Log
from ...records import NO_TOPIC_ID, TopicPartition
from ...wakeup import Wakeup
from ...wire import RequestHeader, kafka_error_for
from ..batches import ConvertedBatches, NotConverted, as_kafka_batches
from ..context import Context
from ..dispatch import handles, waiting
from ..entities import entity, item_class, response_class
from ..replication.epochs import epoch_error
from ..replication.leader import Leader, leader_of

__all__ = ["converted_batches"]

NONE: Final = 0
OFFSET_OUT_OF_RANGE: Final = 1
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
FETCH_SESSION_ID_NOT_FOUND: Final = 70
INVALID_FETCH_SESSION_EPOCH: Final = 71
UNKNOWN_TOPIC_ID: Final = 100
_CACHE_KEY: Final = "fetch.converted"
#: A Fetch that may answer more than this is read in a worker thread, not on the event loop.
LOOP_READ_BYTES: Final = 8 << 20


@dataclass(slots=True)
class Wanted:
    """One partition a Fetch asks for, and what reading it found."""

    name: str | None
    topic_id: uuid.UUID | None
    partition: int
    offset: int
    max_bytes: int
    error: int = NONE
    records: bytes = b""
    high_watermark: int = -1
    log_start: int = -1


def converted_batches(ctx: Context) -> ConvertedBatches:
    """This server's cache of native batches converted to v2 batches."""
    cache = ctx.state.get(_CACHE_KEY)
    if cache is None:
        cache = ctx.state.setdefault(_CACHE_KEY, ConvertedBatches(ctx.config.fetch_cache_bytes))
    assert isinstance(cache, ConvertedBatches)
    return cache


@handles(1)
async def fetch(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """The records from each partition's fetch offset, once there are ``min_bytes`` of them
    or ``max_wait_ms`` has passed.

    Reads run on the event loop, not in a worker thread: a read copies bytes out of
    mapped segments (no lock, no fsync), and a thread hand-off there and back costs
    more than the read itself on the path a waiting consumer is woken by (N3). Two
    reads go to a worker thread instead, so that the loop is never held long: one
    that may answer more than ``LOOP_READ_BYTES``, and one that meets a native batch
    to convert (``_read``). The wake-up is registered only when the first read finds
    too little."""
    cls = response_class(header)
    session_error = _session_error(body)
    if session_error:
        return entity(cls, error_code=session_error, session_id=0, responses=())
    wanted = [_wanted(ctx, topic, p) for topic in body.topics for p in topic.partitions]
    replica = _replica_id(body)
    if replica >= 0:
        return await _replica_fetch(ctx, body, replica, wanted, cls)
    live = [w for w in wanted if not w.error]
    deadline = time.monotonic() + body.max_wait.total_seconds()
    cache = converted_batches(ctx)
    max_bytes, min_bytes = int(body.max_bytes), int(body.min_bytes)
    on_loop = min(max_bytes, sum(max(w.max_bytes, 0) for w in live)) <= LOOP_READ_BYTES
    size = await _read(ctx, live, max_bytes, cache, on_loop)
    if _answered(ctx, live, size, min_bytes, deadline):
        return _counted(ctx, cls, wanted)
    watched = [TopicPartition(w.name, w.partition) for w in live if w.name is not None]
    try:
        waiter = ctx.watch(watched)
    except EventStoreError:  # a topic deleted since: one read tells which, no wait
        await _read(ctx, live, max_bytes, cache, on_loop)
        return _counted(ctx, cls, wanted)
    with waiter:
        while True:  # one pass per wake-up; bounded by max_wait_ms
            waiter.clear()
            size = await _read(ctx, live, max_bytes, cache, on_loop)  # again: appends may precede the watch
            if _answered(ctx, live, size, min_bytes, deadline):
                break
            with waiting():
                woken = await waiter.wait(deadline - time.monotonic())
            if not woken:
                break
    return _counted(ctx, cls, wanted)


async def _read(ctx: Context, live: list[Wanted], max_bytes: int, cache: ConvertedBatches,
                on_loop: bool) -> int:
    """``_read_all`` on the loop when ``on_loop`` and no native batch needs converting,
    else in a worker thread."""
    if on_loop:
        try:
            return _read_all(ctx.log, live, max_bytes, cache, convert=False)
        except NotConverted:
            pass  # read again where converting does not hold the loop
    return await ctx.blocking(_read_all, ctx.log, live, max_bytes, cache)


def _replica_id(body: Any) -> int:
    """The follower's node id (-1 for a consumer): v15+ in ``replica_state``, before in ``replica_id``."""
    state = getattr(body, "replica_state", None)
    if state is not None:
        return int(state.replica_id)
    return int(getattr(body, "replica_id", -1))


async def _replica_fetch(ctx: Context, body: Any, replica: int, wanted: list[Wanted], cls: Any) -> Any:
    """A follower's fetch: the epoch check, its positions recorded, then stored bytes up to the
    log end once there are ``min_bytes`` of them or ``max_wait_ms`` has passed."""
    epochs = [int(p.current_leader_epoch) for topic in body.topics for p in topic.partitions]
    for w, epoch in zip(wanted, epochs, strict=True):  # bounded by the request
        if not w.error:
            w.error = epoch_error(ctx.broker.replication, epoch, ctx.client)
    live = [w for w in wanted if not w.error]
    leader = leader_of(ctx.broker)
    tps = {TopicPartition(w.name, w.partition): w.offset for w in live if w.name is not None}
    leader.fetched(replica, tps)
    deadline = time.monotonic() + body.max_wait.total_seconds()
    max_bytes, min_bytes = int(body.max_bytes), int(body.min_bytes)
    on_loop = min(max_bytes, sum(max(w.max_bytes, 0) for w in live)) <= LOOP_READ_BYTES
    catalog = leader.catalog_version(replica)
    size = await _read_replica(ctx, leader, live, max_bytes, on_loop)
    if not _replica_answered(ctx, leader, replica, live, size, min_bytes, deadline):
        wakeup = Wakeup()
        try:
            watch = ctx.log.watch_log_end(list(tps), wakeup.notify)
        except EventStoreError:  # a topic deleted since: one read tells which
            await _read_replica(ctx, leader, live, max_bytes, on_loop)
            return _told(leader, replica, cls, wanted)
        unwatch = leader.watch_news(wakeup.notify)
        try:
            with watch:
                while True:  # one pass per wake-up; bounded by max_wait_ms
                    wakeup.clear()
                    size = await _read_replica(ctx, leader, live, max_bytes, on_loop)
                    if (_replica_answered(ctx, leader, replica, live, size, min_bytes, deadline)
                            or leader.catalog_version(replica) != catalog):
                        break
                    with waiting(), anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                        await wakeup.wait()
        finally:
            unwatch()
    return _told(leader, replica, cls, wanted)


def _replica_answered(ctx: Context, leader: Leader, replica: int, live: list[Wanted], size: int,
                      min_bytes: int, deadline: float) -> bool:
    """``_answered``, or a high watermark above the one last told to this follower: it then
    learns at once what its readers may see (its own fetch may have moved it)."""
    return _answered(ctx, live, size, min_bytes, deadline) or leader.news_for(
        replica, {TopicPartition(w.name, w.partition): w.high_watermark for w in live if w.name is not None})


def _told(leader: Leader, replica: int, cls: Any, wanted: list[Wanted]) -> Any:
    """The response, the high watermarks it carries noted as told to the follower."""
    leader.told(replica, {TopicPartition(w.name, w.partition): w.high_watermark
                          for w in wanted if not w.error and w.name is not None})
    return _response(cls, wanted)


async def _read_replica(ctx: Context, leader: Leader, live: list[Wanted], max_bytes: int,
                        on_loop: bool) -> int:
    """``_read_stored`` (on the loop when small), then each partition's high watermark."""
    if on_loop:
        size = _read_stored(ctx.log, live, max_bytes)
    else:
        size = await ctx.blocking(_read_stored, ctx.log, live, max_bytes)
    for w in live:  # bounded by the request
        if not w.error and w.name is not None:
            try:
                w.high_watermark = leader.high_watermark(TopicPartition(w.name, w.partition))
            except EventStoreError as e:
                w.error, w.records = kafka_error_for(e).code, b""
    return size


def _read_stored(log: Log, wanted: list[Wanted], max_bytes: int) -> int:
    """The stored batches of every partition up to its log end, byte for byte, within the byte
    bounds (the first partition with records gets its first batch whole)."""
    total = 0
    for w in wanted:  # bounded by the request
        assert w.name is not None
        try:
            w.log_start = log.offsets(w.name, w.partition)[0]
            end = log.log_end(w.name, w.partition)
            budget = min(w.max_bytes, max_bytes - total)
            if w.offset < w.log_start or w.offset > end:
                w.error, w.records = OFFSET_OUT_OF_RANGE, b""
                continue
            if w.offset == end or (budget <= 0 and total > 0) or w.max_bytes <= 0:
                w.records = b""
                continue
            records, _next = log.read_replica(w.name, w.partition, w.offset, max(budget, 1))
            if total > 0 and len(records) > budget:
                records = b""
            w.records = records
            total += len(records)
        except EventStoreError as e:
            w.error, w.records = kafka_error_for(e).code, b""
    return total


def _answered(ctx: Context, live: list[Wanted], size: int, min_bytes: int, deadline: float) -> bool:
    """Whether to answer now: enough bytes, the wait is over, an error, or a shutdown."""
    return (size >= min_bytes or deadline - time.monotonic() <= 0 or any(w.error for w in live)
            or ctx.broker.stopping)


def _session_error(body: Any) -> int:
    session_id = getattr(body, "session_id", 0)
    epoch = getattr(body, "session_epoch", -1)
    if session_id != 0:
        return FETCH_SESSION_ID_NOT_FOUND
    if epoch > 0:
        return INVALID_FETCH_SESSION_EPOCH
    return NONE


def _wanted(ctx: Context, topic: Any, p: Any) -> Wanted:
    name = getattr(topic, "topic", None)
    topic_id = getattr(topic, "topic_id", None)
    w = Wanted(name=None, topic_id=topic_id, partition=int(p.partition), offset=int(p.fetch_offset),
               max_bytes=int(p.partition_max_bytes))
    if name is None:  # v13+: by id
        cfg = ctx.log.topic_by_id(topic_id) if topic_id is not None else None
        if cfg is None:
            w.error = UNKNOWN_TOPIC_ID
            return w
    else:
        cfg = ctx.log.find_topic(str(name))
        if cfg is None:
            w.name = str(name)
            w.error = UNKNOWN_TOPIC_OR_PARTITION
            return w
    w.name, w.topic_id = cfg.name, cfg.topic_id
    if not 0 <= w.partition < cfg.partitions:
        w.error = UNKNOWN_TOPIC_OR_PARTITION
    return w


def _read_all(log: Log, wanted: list[Wanted], max_bytes: int, cache: ConvertedBatches,
              convert: bool = True) -> int:
    """Read every partition within the byte bounds; returns the bytes. :class:`NotConverted`
    (without ``convert``) leaves ``wanted`` to be read again."""
    total = 0
    for w in wanted:  # bounded by the request
        assert w.name is not None
        try:
            w.log_start, w.high_watermark = log.offsets(w.name, w.partition)
            budget = min(w.max_bytes, max_bytes - total)
            if w.offset < w.log_start or w.offset > w.high_watermark:
                w.error, w.records = OFFSET_OUT_OF_RANGE, b""
                continue
            if w.offset == w.high_watermark or (budget <= 0 and total > 0) or w.max_bytes <= 0:
                w.records = b""
                continue
            stored, _next = log.read_batches(w.name, w.partition, w.offset, max(budget, 1))
            records = as_kafka_batches(stored, w.topic_id or NO_TOPIC_ID, w.partition, cache, convert)
            if total > 0 and len(records) > budget:  # only the first partition with records may go over
                records = b""
            w.records = records
            total += len(records)
        except EventStoreError as e:
            w.error, w.records = kafka_error_for(e).code, b""
    return total


def _counted(ctx: Context, cls: Any, wanted: list[Wanted]) -> Any:
    """The response, its bytes counted per topic for ``/metrics`` (once per partition)."""
    metrics = ctx.broker.metrics
    for w in wanted:  # bounded by the request
        if w.name is not None:
            metrics.fetched(w.name, len(w.records))
    return _response(cls, wanted)


def _response(cls: Any, wanted: list[Wanted]) -> Any:
    topic_cls = item_class(cls, "responses")
    partition_cls = item_class(topic_cls, "partitions")
    topics: list[Any] = []
    last: tuple[str | None, uuid.UUID | None] | None = None
    for w in wanted:  # the request's order, its topics grouped as they came
        part = entity(partition_cls, partition_index=w.partition, error_code=w.error,
                      high_watermark=w.high_watermark, last_stable_offset=w.high_watermark,
                      log_start_offset=w.log_start, aborted_transactions=(), preferred_read_replica=-1,
                      records=w.records)
        if last == (w.name, w.topic_id) and topics:
            topics[-1][1].append(part)
        else:
            topics.append(((w.name, w.topic_id), [part]))
            last = (w.name, w.topic_id)
    responses = tuple(entity(topic_cls, topic=name, topic_id=topic_id or NO_TOPIC_ID, partitions=tuple(parts))
                      for (name, topic_id), parts in topics)
    return entity(cls, error_code=NONE, session_id=0, responses=responses)
