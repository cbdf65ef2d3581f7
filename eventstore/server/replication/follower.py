"""The follower's fetcher (docs/replication.md, section 4): copy the leader's log byte for
byte at the same offsets.

``Follower(broker).run()`` runs as a task of the server while this node follows:

1. connect to one of the leader's addresses (each in turn; backoff between rounds);
   ApiVersions; the leader's cluster id (Metadata) taken as this node's; the first
   catalog (``first_catalog``: topics, offsets, log starts), then the catalog's long
   poll beside the fetches (``sync_catalog``);
2. per partition, OffsetForLeaderEpoch from its last epoch, and ``Log.truncate`` of
   a tail the leader does not have (4.2);
3. a loop of replica Fetches for every partition of every topic it has, from its
   log end: the follower's high watermark ``min(its log end, the leader's)``
   (``Log.set_high_watermark``, on the loop) over what is durable already, each
   partition's bytes to ``Log.append_replica`` (in a worker thread, skipped for an
   answer that brought only high watermarks), one durability barrier for the round
   (``Log.wait_durable_each``), then the high watermark again, the
   stream index's catch-up when a streams topic grew (``Streams.catch_up``), and
   the next Fetch, whose offsets tell the leader what is durable here.

OFFSET_OUT_OF_RANGE below the leader's log start empties the partition and restarts
it there (``Log.reset_partition``, logged); above the leader's end truncates again.
A leader log start above the follower's moves the follower's (``Log.delete_records``).
Any error of the connection or the leader ends the round; the next one starts after
a backoff, from step 1. A promotion (``Replication.on_promote``) stops it.
"""

from __future__ import annotations

import datetime
import logging
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

from ...errors import EventStoreError
from ...log import Log
from ...records import TopicPartition
from ...sourcing.streams import Streams
from ...wire.errors import ProtocolError
from ..config import parse_address
from .catalog import first_catalog, sync_catalog
from .client import LeaderConnection
from .state import NodeAddress, Replication

try:
    from kio.schema.api_versions.v3.request import ApiVersionsRequest
    from kio.schema.fetch.v13 import request as fetch_request
    from kio.schema.metadata.v12 import request as metadata_request
    from kio.schema.offset_for_leader_epoch.v4 import request as epoch_request
    from kio.schema.types import BrokerId, TopicName
    from kio.static.primitive import i8, i32, i32Timedelta, i64
except ImportError as e:  # pragma: no cover - depends on the installation
    from ...wire.errors import SERVER_EXTRA

    raise ImportError(f"{__name__}: {e.name} is missing; {SERVER_EXTRA}") from e

__all__ = ["Follower", "LeaderRefused"]

log = logging.getLogger("eventstore.server.replication")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

NONE: Final = 0
OFFSET_OUT_OF_RANGE: Final = 1
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
UNKNOWN_TOPIC_ID: Final = 100
NOT_LEADER_OR_FOLLOWER: Final = 6
FENCED_LEADER_EPOCH: Final = 74
UNKNOWN_LEADER_EPOCH: Final = 75
MAX_WAIT_MS: Final = 500
NO_TOPIC_POLL_S: Final = 0.02
"""How often a follower with no topic looks whether the catalog has made one (a local look)."""
PARTITION_MAX_BYTES: Final = 8 << 20
FETCH_MAX_BYTES: Final = 32 << 20
BACKOFF_S: Final = (0.1, 5.0)
"""The first and the largest wait between two connection attempts (doubling)."""
_BASE_OFFSET: Final = struct.Struct(">q")
"""Both batch kinds begin with their base offset (docs/format.md, section 2)."""
TRUNCATION_ROUNDS: Final = 64
"""OffsetForLeaderEpoch questions per partition at most (each asks for an older epoch)."""


def _reasons(group: BaseExceptionGroup[BaseException]) -> list[str]:
    """What each error of a task group says (its name when it says nothing: EndOfStream)."""
    out: list[str] = []
    for e in group.exceptions:  # bounded by the group
        out.extend(_reasons(e) if isinstance(e, BaseExceptionGroup) else [str(e) or type(e).__name__])
    return out


class LeaderRefused(Exception):
    """The leader answered with an error that ends this connection (another leader, a stale epoch)."""


@dataclass(slots=True)
class _Partition:
    """One partition of a Fetch round: what was asked, of which topic incarnation."""

    tp: TopicPartition
    offset: int
    topic_id: uuid.UUID


class Follower:
    """Copies the leader's partitions into this node's log until promoted or cancelled."""

    def __init__(self, log_: Log, groups: Any, replication: Replication, leaders: tuple[str, ...],
                 advertised: NodeAddress, limiter: anyio.CapacityLimiter,
                 streams: Callable[[], Streams | None],
                 adopt_cluster_id: Callable[[str], object] | None = None) -> None:
        self._log = log_
        self._adopt_cluster_id = adopt_cluster_id
        """Called (in a worker thread) with the leader's cluster id on each connection."""
        self._streams = streams
        self._groups = groups
        self._rep = replication
        self._leaders = [parse_address(a, "replica_of address") for a in leaders]
        self._advertised = advertised
        self._limiter = limiter
        self._truncated: set[TopicPartition] = set()
        """Partitions checked against the leader's epochs on the current connection."""

    async def run(self) -> None:
        """Follow until promoted (``Replication.on_promote``) or cancelled."""
        with anyio.CancelScope() as scope:
            self._rep.on_promote.append(scope.cancel)
            try:
                await self._follow_forever()
            finally:
                self._rep.on_promote.remove(scope.cancel)

    async def _follow_forever(self) -> None:
        backoff = BACKOFF_S[0]
        while self._rep.role == "follower":  # one pass per round of addresses; ends on promotion
            for host, port in self._leaders:  # bounded by the addresses given
                try:
                    await self._follow(host, port)
                    backoff = BACKOFF_S[0]
                except* (OSError, anyio.EndOfStream, anyio.BrokenResourceError, ProtocolError,
                         EventStoreError, LeaderRefused) as group:  # raised inside _follow's task group
                    log.warning("following %s:%d: %s", host, port, "; ".join(_reasons(group)))
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])

    async def _follow(self, host: str, port: int) -> None:
        """One connection's life: hello, catalog, truncation, then fetch rounds until an error."""
        async with await LeaderConnection.open(host, port, self._rep.security) as conn:
            await conn.call(ApiVersionsRequest(client_software_name="eventstore-follower",
                                               client_software_version="1"))
            await self._take_cluster_id(conn)
            applied = await first_catalog((host, port), self._log, self._groups, self._rep, self._advertised)
            log.info("following %s:%d in leader epoch %d", host, port, self._rep.epoch)
            self._truncated.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sync_catalog, (host, port), self._log, self._groups, self._rep,
                              self._advertised, applied)
                try:
                    while self._rep.role == "follower":  # one pass per Fetch round
                        await self._truncate_new(conn)
                        await self._fetch_round(conn)
                finally:
                    tg.cancel_scope.cancel()

    async def _take_cluster_id(self, conn: LeaderConnection) -> None:
        """The leader's cluster id (its Metadata) becomes this node's: clients see one cluster."""
        if self._adopt_cluster_id is None:
            return
        response = await conn.call(metadata_request.MetadataRequest(
            topics=(), allow_auto_topic_creation=False, include_topic_authorized_operations=False))
        cluster = response.cluster_id
        if cluster:
            await self._blocking(self._adopt_cluster_id, str(cluster))

    # --- truncation ------------------------------------------------------------------

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(cfg.name, p) for cfg in self._log.topics() for p in range(cfg.partitions)]

    async def _truncate_new(self, conn: LeaderConnection) -> None:
        """OffsetForLeaderEpoch for every partition not yet checked on this connection."""
        todo = [tp for tp in self._partitions() if tp not in self._truncated]
        for tp in todo:  # bounded by the partitions
            await self._truncate(conn, tp)
            self._truncated.add(tp)

    async def _truncate(self, conn: LeaderConnection, tp: TopicPartition) -> None:
        """Cut the partition's tail that the leader does not have (section 4.2)."""
        epoch = self._log.last_epoch(tp.topic, tp.partition)
        for _round in range(TRUNCATION_ROUNDS):  # each round asks about an older epoch
            if epoch < 0:
                return  # nothing written here in any epoch: nothing to cut
            leader_epoch, end_offset = await self._epoch_end(conn, tp, epoch)
            start = self._log.offsets(tp.topic, tp.partition)[0]
            local_end = self._log.log_end(tp.topic, tp.partition)
            cut = max(start, min(local_end, end_offset)) if leader_epoch >= 0 else start
            if cut < local_end:
                new_end = await self._blocking(self._log.truncate, tp.topic, tp.partition, cut)
                log.warning("%s/%d: divergent tail truncated from %d to %d "
                            "(epoch %d ended at %d on the leader)",
                            tp.topic, tp.partition, local_end, new_end, leader_epoch, end_offset)
            if leader_epoch == epoch or leader_epoch < 0:
                return
            epoch = leader_epoch
        raise LeaderRefused(f"{tp.topic}/{tp.partition}: no common epoch after {TRUNCATION_ROUNDS} questions")

    async def _epoch_end(self, conn: LeaderConnection, tp: TopicPartition, epoch: int) -> tuple[int, int]:
        request = epoch_request.OffsetForLeaderEpochRequest(
            replica_id=BrokerId(self._rep.node_id),
            topics=(epoch_request.OffsetForLeaderTopic(topic=TopicName(tp.topic), partitions=(
                epoch_request.OffsetForLeaderPartition(partition=i32(tp.partition),
                                                       current_leader_epoch=i32(self._rep.epoch),
                                                       leader_epoch=i32(epoch)),)),))
        response = await conn.call(request)
        answer = response.topics[0].partitions[0]
        self._check_error(tp, int(answer.error_code))
        return int(answer.leader_epoch), int(answer.end_offset)

    # --- fetching ------------------------------------------------------------------

    async def _fetch_round(self, conn: LeaderConnection) -> None:
        """One replica Fetch of every partition from its log end; append, barrier, HW."""
        asked = [_Partition(TopicPartition(cfg.name, p), self._log.log_end(cfg.name, p), cfg.topic_id)
                 for cfg in self._log.topics() for p in range(cfg.partitions)]
        if not asked:  # no topic yet: the catalog brings them, and the first is fetched soon after
            await anyio.sleep(NO_TOPIC_POLL_S)
            return
        response = await conn.call(self._fetch_request(asked))
        if int(response.error_code) != NONE:
            raise LeaderRefused(f"Fetch answered error {int(response.error_code)}")
        by_tp = {p.tp: p for p in asked}
        names = {p.topic_id: p.tp.topic for p in asked}
        answers: list[tuple[TopicPartition, Any]] = []
        for topic in response.responses:  # bounded by the request
            name = names.get(topic.topic_id)
            for part in topic.partitions:
                tp = TopicPartition(name or "", int(part.partition_index))
                if name is not None and tp in by_tp:
                    answers.append((tp, part))
        visible = self._raise_high_watermarks(answers)  # on the loop: readers see it without a hop
        if self._worker_needed(answers, visible):
            await self._blocking(self._apply, answers, by_tp, visible)

    def _worker_needed(self, answers: list[tuple[TopicPartition, Any]], visible: set[str]) -> bool:
        """Whether an answer asks for more than its high watermarks, which are set already:
        records to append, an error, a log start to follow, or a streams topic to index.
        Most answers at a steady rate are only the high watermark a Fetch brought back."""
        for tp, part in answers:  # bounded by the request
            if part.records or int(part.error_code) != NONE:
                return True
            if self._log.offsets(tp.topic, tp.partition)[0] < int(part.log_start_offset):
                return True
        return any(cfg.streams for cfg in self._log.topics() if cfg.name in visible)

    def _fetch_request(self, asked: list[_Partition]) -> Any:
        """Fetch v13: topics by id, so a topic deleted and made again under its name on the
        leader answers UNKNOWN_TOPIC_ID to a fetch of the old one (whose offsets would
        otherwise count as positions in the new one) until the catalog brings the new one."""
        topics: dict[uuid.UUID, list[Any]] = {}
        for p in asked:  # bounded by the partitions
            topics.setdefault(p.topic_id, []).append(fetch_request.FetchPartition(
                partition=i32(p.tp.partition), current_leader_epoch=i32(self._rep.epoch),
                fetch_offset=i64(p.offset), partition_max_bytes=i32(PARTITION_MAX_BYTES)))
        return fetch_request.FetchRequest(
            replica_id=BrokerId(self._rep.node_id),
            max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=MAX_WAIT_MS)),
            min_bytes=i32(1), max_bytes=i32(FETCH_MAX_BYTES), isolation_level=i8(0),
            session_id=i32(0), session_epoch=i32(-1),
            topics=tuple(fetch_request.FetchTopic(topic_id=topic_id, partitions=tuple(parts))
                         for topic_id, parts in topics.items()),
            forgotten_topics_data=(), rack_id="")

    def _apply(self, answers: list[tuple[TopicPartition, Any]],
               by_tp: dict[TopicPartition, _Partition], visible: set[str]) -> None:
        """In a worker thread, after the HW was set over what is already durable here (on the
        loop, ``visible`` the topics it moved): each partition's bytes, one barrier, then
        the HW again over what the barrier made durable.

        The leader's HW in an answer covers at most what this follower had fetched before
        (its position), which is durable here already: readers see it at once, not after
        the barrier of the bytes that came with it. The log's refusal of local writes does
        not apply (``Log.replica_writes``: log starts follow the leader's)."""
        with self._log.replica_writes():
            self._apply_answers(answers, by_tp, set(visible))

    def _apply_answers(self, answers: list[tuple[TopicPartition, Any]],
                       by_tp: dict[TopicPartition, _Partition], visible: set[str]) -> None:
        ends: dict[TopicPartition, int] = {}
        for tp, part in answers:  # bounded by the request
            error = int(part.error_code)
            if error == OFFSET_OUT_OF_RANGE:
                self._out_of_range(tp, by_tp[tp].offset, int(part.log_start_offset))
                continue
            self._check_error(tp, error)
            if error != NONE:
                continue
            records = part.records
            if records:
                self._align_empty(tp, records)
                ends[tp] = self._log.append_replica(tp.topic, tp.partition, records)
        failed = self._log.wait_durable_each(ends)
        if failed:
            raise next(iter(failed.values()))
        visible |= self._raise_high_watermarks(answers)
        for tp, part in answers:  # bounded by the request
            if int(part.error_code) == NONE:
                self._follow_log_start(tp, int(part.log_start_offset))
        self._index_streams(visible)

    def _raise_high_watermarks(self, answers: list[tuple[TopicPartition, Any]]) -> set[str]:
        """Each answered partition's HW := min(its durable end here, the leader's HW); the
        topics whose HW moved."""
        moved: set[str] = set()
        for tp, part in answers:  # bounded by the request
            if int(part.error_code) == NONE:
                hw = min(self._log.log_end(tp.topic, tp.partition), int(part.high_watermark))
                if hw > self._log.high_watermark(tp.topic, tp.partition):
                    self._log.set_high_watermark(tp.topic, tp.partition, hw)
                    moved.add(tp.topic)
        return moved

    def _index_streams(self, topics: set[str]) -> None:
        """The stream index catches up from the log when records of a streams topic became
        visible (below the HW: what readers may see)."""
        if not any(cfg.streams for cfg in self._log.topics() if cfg.name in topics):
            return
        streams = self._streams()
        if streams is not None:
            streams.catch_up()

    def _follow_log_start(self, tp: TopicPartition, leader_start: int) -> None:
        """A leader log start above this one (and below what is visible here) moves it."""
        start, visible_end = self._log.offsets(tp.topic, tp.partition)
        if start < leader_start <= visible_end:
            self._log.delete_records(tp.topic, tp.partition, leader_start)

    def _align_empty(self, tp: TopicPartition, records: bytes) -> None:
        """An empty partition restarted at the leader's log start (``_out_of_range``) gets
        the batch holding that offset, which may begin before it: the partition restarts at
        the batch's base offset instead, and the log start follows the leader's after the
        round (``_follow_log_start``)."""
        (base,) = _BASE_OFFSET.unpack_from(records)
        start, _end = self._log.offsets(tp.topic, tp.partition)
        end = self._log.log_end(tp.topic, tp.partition)
        if start == end and base < end:
            self._log.reset_partition(tp.topic, tp.partition, base)

    def _out_of_range(self, tp: TopicPartition, offset: int, leader_start: int) -> None:
        """Below the leader's log start: start again there; above its end: truncate again."""
        if leader_start >= 0 and offset < leader_start:
            log.warning("%s/%d: the leader's log starts at %d, past this follower's end %d "
                        "(retention or DeleteRecords removed what it lacked): restarting the partition there",
                        tp.topic, tp.partition, leader_start, offset)
            self._log.reset_partition(tp.topic, tp.partition, leader_start)
        else:
            self._truncated.discard(tp)

    def _check_error(self, tp: TopicPartition, error: int) -> None:
        if error in (NONE, UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID):
            return  # an unknown topic: the catalog deletes or makes it
        if error == NOT_LEADER_OR_FOLLOWER:
            raise LeaderRefused("it is not the leader")
        if error == FENCED_LEADER_EPOCH:
            raise LeaderRefused(f"its leader epoch is newer than this follower's {self._rep.epoch}")
        if error == UNKNOWN_LEADER_EPOCH:
            raise LeaderRefused(f"a stale leader: its epoch is older than this follower's {self._rep.epoch}")
        raise LeaderRefused(f"{tp.topic}/{tp.partition}: error {error}")

    async def _blocking(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        with anyio.CancelScope(shield=True):  # a worker's write runs to its end
            result = await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        return result
