"""The leader's side of replication (docs/replication.md, sections 2 and 3): where each
follower is, the in-sync set (ISR), the high watermark (HW), and the waits of acks=all.

One :class:`Leader` per server (``leader_of(broker)``), used on the event loop only,
except :class:`ReplicatedWaiter`, which an application's threads call.

* A replica Fetch reports a follower's position per partition (``fetched``); the
  follower is caught up when it asked for the leader's log end (or for the end the
  leader had when it answered that follower before), and stays in the ISR while its
  last catch-up is within ``replica_lag_ms``.
* The HW of a partition is ``min(log end, position of every ISR follower)``, never
  lower than before; it moves only while the ISR has at least ``min_insync_replicas``
  members (else it stays). It is pushed to the log (``Log.set_high_watermark``) when
  the store is served with replication enabled, which gates what readers see.
* It is recomputed when a follower fetches, when a partition's log end moves
  (``Log.watch_log_end``: appends of any kind, embedded ones too; the wake-up is
  scheduled from the appending thread, so the HW follows each move, not a tick) and
  on a tick that only lets silent followers leave the ISR. A moved HW wakes the
  replica long polls (``watch_high_watermarks``), which answer a follower whose last
  answer carried a lower one.
* An acks=all write waits on an event per partition that the recomputation sets
  once the HW reaches the write's end: no polling.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import anyio
import anyio.from_thread
import anyio.lowlevel

from ...errors import EventStoreError, NotEnoughReplicasError
from ...log import Log, Watch
from ...records import TopicPartition
from ...wakeup import Wakeup
from .state import FollowerInfo, Replication, now_ms

__all__ = ["Leader", "REPLICATED_TIMEOUT_S", "ReplicatedWaiter", "leader_of"]

log = logging.getLogger("eventstore.server.replication")

NONE: Final = 0
REQUEST_TIMED_OUT: Final = 7
NOT_ENOUGH_REPLICAS: Final = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND: Final = 20
TICK_MS_MAX: Final = 250.0
"""The ISR is re-evaluated at least this often (and at least four times per ``replica_lag_ms``)."""
REPLICATED_TIMEOUT_S: Final = 30.0
"""How long an embedded ``"replicated"`` append waits for the followers (Kafka's request.timeout.ms)."""
_STATE_KEY: Final = "replication.leader"


def leader_of(broker: Any) -> Leader:
    """The server's :class:`Leader`, made on first use (on the loop)."""
    leader = broker.state.get(_STATE_KEY)
    if leader is None:
        leader = broker.state.setdefault(_STATE_KEY, Leader(broker.log, broker.replication))
    assert isinstance(leader, Leader)
    return leader


class Leader:
    """Followers' positions, the ISR and the HW of every partition, and acks=all waits."""

    def __init__(self, log: Log, replication: Replication) -> None:
        self._log = log
        self._rep = replication
        self._hw: dict[TopicPartition, int] = {}
        self._waits: dict[TopicPartition, list[tuple[int, anyio.Event]]] = {}
        self._answered: dict[tuple[int, TopicPartition], tuple[int, float]] = {}
        """Per (follower, partition): the log end when its last fetch was answered, and that
        fetch's time: a next fetch from at least that end was caught up then."""
        self._told: dict[tuple[int, TopicPartition], int] = {}
        """Per (follower, partition): the high watermark its last answer carried."""
        self._isr: dict[TopicPartition, tuple[int, ...]] = {}
        self._incarnations: dict[TopicPartition, uuid.UUID] = {}
        """The topic id each partition's bookkeeping belongs to (``_check_incarnation``)."""
        """The last ISR computed per partition (followers only), to log its changes."""
        self.isr_sizes: dict[TopicPartition, int] = {}
        """ISR sizes (the leader included) of every partition computed so far: replaced
        whole on each change, so other threads read a consistent dict."""
        self._listeners: dict[object, Callable[[], object]] = {}
        """Replica long polls to wake when a high watermark moves or a follower applied a
        catalog version (``watch_news``)."""
        self._wakeup: Wakeup | None = None
        self._watch: Watch | None = None
        self._watched: frozenset[TopicPartition] = frozenset()

    # --- what a replica fetch tells -------------------------------------------------

    def fetched(self, follower_id: int, positions: Mapping[TopicPartition, int]) -> None:
        """A replica Fetch from ``follower_id`` at these offsets: it holds every record below
        each durably (section 2). Updates its catch-up times, then the HW."""
        now = now_ms()
        info = self._rep.followers.get(follower_id)
        if info is None:
            info = self._rep.followers[follower_id] = FollowerInfo(address=None)
            log.info("follower %d fetches", follower_id)
        info.last_seen_ms = now
        for tp, offset in positions.items():  # bounded by the request
            key = (tp.topic, tp.partition)
            try:
                self._check_incarnation(tp)
                end = self._log.log_end(tp.topic, tp.partition)
            except EventStoreError:
                continue
            if offset > end:  # not a position in this log (answered OFFSET_OUT_OF_RANGE)
                continue
            info.positions[key] = offset
            answered = self._answered.get((follower_id, tp))
            if offset >= end:
                info.caught_up_ms[key] = now
            elif answered is not None and offset >= answered[0]:
                info.caught_up_ms[key] = max(info.caught_up_ms.get(key, answered[1]), answered[1])
            self._answered[(follower_id, tp)] = (end, now)
        self.update(positions)

    def news_for(self, follower_id: int, hws: Mapping[TopicPartition, int]) -> bool:
        """Whether a high watermark of ``hws`` is above the one last told to the follower."""
        return any(hw > self._told.get((follower_id, tp), -1) for tp, hw in hws.items())

    def told(self, follower_id: int, hws: Mapping[TopicPartition, int]) -> None:
        """The high watermarks an answer to the follower carried."""
        for tp, hw in hws.items():  # bounded by the request
            self._told[(follower_id, tp)] = hw

    def watch_news(self, callback: Callable[[], object]) -> Callable[[], object]:
        """Call ``callback()`` (on the loop) whenever a high watermark moves or a follower
        reports a catalog version (``catalog_applied``), until the returned function is
        called: a follower's long poll then answers with the news at once, even when the
        log's readers are not gated (no ``--min-insync-replicas``) and so nothing in the
        log moved."""
        token = object()
        self._listeners[token] = callback
        return functools.partial(self._listeners.pop, token, None)

    def catalog_applied(self) -> None:
        """A follower reported the catalog version it applied (section 5): a newer one may
        have made topics, whose partitions its next fetch asks for, so its long poll
        looks whether to answer now (``catalog_version``)."""
        self._notify()

    def catalog_version(self, follower_id: int) -> tuple[bytes, int]:
        """The catalog (instance, version) ``follower_id`` last reported applied."""
        info = self._rep.followers.get(follower_id)
        return (bytes(16), -1) if info is None else (info.applied_instance, info.applied_catalog)

    def _notify(self) -> None:
        for listener in list(self._listeners.values()):  # bounded by the waiting replica fetches
            listener()

    # --- the ISR and the HW --------------------------------------------------------

    def in_sync(self, tp: TopicPartition) -> list[int]:
        """Node ids of the ISR of ``tp``: the leader first, then its in-sync followers."""
        return [self._rep.node_id, *self._followers_in_sync(tp, now_ms())]

    def isr_size(self, tp: TopicPartition) -> int:
        return 1 + len(self._followers_in_sync(tp, now_ms()))

    def enough_replicas(self, tp: TopicPartition) -> bool:
        """Whether an acks=all write to ``tp`` may start (section 3)."""
        return self.isr_size(tp) >= self._rep.min_insync_replicas

    def high_watermark(self, tp: TopicPartition) -> int:
        """The HW last computed for ``tp`` (the log end if never computed)."""
        hw = self._hw.get(tp)
        return hw if hw is not None else self._compute(tp, now_ms())

    def _followers_in_sync(self, tp: TopicPartition, now: float) -> tuple[int, ...]:
        key = (tp.topic, tp.partition)
        lag = self._rep.replica_lag_ms
        born = -math.inf
        in_sync = []
        for node, info in self._rep.followers.items():  # bounded by the followers
            caught_up = info.caught_up_ms.get(key)
            if caught_up is None:  # never fetched: in sync while the partition is new (section 3)
                if born == -math.inf:
                    born = self._born_ms(tp, now)
                caught_up = min(born, info.last_seen_ms)
            if now - caught_up <= lag:
                in_sync.append(node)
        return tuple(sorted(in_sync))

    def _born_ms(self, tp: TopicPartition, now: float) -> float:
        """When ``tp``'s topic was made, on the monotonic clock of ``now`` (-inf if unknown
        or long ago): a live follower counts as caught up on a new, empty partition."""
        config = self._log.find_topic(tp.topic)
        if config is None or not config.created_ms:
            return -math.inf
        age_ms = time.time() * 1000.0 - config.created_ms
        return now - age_ms if age_ms >= 0 else now

    def _compute(self, tp: TopicPartition, now: float) -> int:
        """``min(log end, every ISR follower's position)`` while the ISR has at least
        ``min_insync_replicas`` members; with fewer it stays where it is (the gated log's
        HW if never computed): a record only this node holds may be lost at the next
        failover, so no reader may see it (docs/replication.md, section 3)."""
        key = (tp.topic, tp.partition)
        previous = self._hw.get(tp)
        if previous is None:  # the gated log's HW (a promotion set it to the log end), if gated
            previous = self._log.high_watermark(tp.topic, tp.partition) if self._rep.enabled else -1
        in_sync = self._followers_in_sync(tp, now)
        if 1 + len(in_sync) < self._rep.min_insync_replicas:
            return previous
        end: int = self._log.log_end(tp.topic, tp.partition)
        followers = self._rep.followers
        positions = [followers[node].positions.get(key, 0) for node in in_sync]
        return max(min([end, *positions]), previous)

    def update(self, tps: Iterable[TopicPartition]) -> None:
        """Recompute the ISR and HW of ``tps``; push a moved HW to the log and wake the
        acks=all waits it satisfies (on the loop)."""
        now = now_ms()
        sizes_changed = hw_moved = False
        for tp in tps:  # bounded by the caller's partitions
            try:
                self._check_incarnation(tp)
                isr = self._followers_in_sync(tp, now)
                hw = self._compute(tp, now)
                moved = hw != self._hw.get(tp)
                if moved and self._rep.enabled:
                    self._log.set_high_watermark(tp.topic, tp.partition, hw)
            except EventStoreError:  # a deleted topic
                self._forget(tp)
                continue
            self._hw[tp] = hw
            hw_moved = hw_moved or moved
            known = self._isr.get(tp)
            if isr != known:
                if isr != (known or ()):
                    log.info("%s/%d: in-sync replicas now %s", tp.topic, tp.partition,
                             [self._rep.node_id, *isr])
                self._isr[tp] = isr
                sizes_changed = True
            self._wake(tp, hw, len(isr) + 1 < self._rep.min_insync_replicas)
        if sizes_changed:
            self.isr_sizes = {tp: len(isr) + 1 for tp, isr in self._isr.items()}
        if hw_moved:
            self._notify()

    def _wake(self, tp: TopicPartition, hw: int, too_few: bool) -> None:
        waits = self._waits.get(tp)
        if not waits:
            return
        keep = []
        for end, event in waits:  # bounded by the writes waiting
            if end <= hw or too_few:
                event.set()
            else:
                keep.append((end, event))
        self._waits[tp] = keep

    def _check_incarnation(self, tp: TopicPartition) -> None:
        """Forget what is known of ``tp`` when its topic was deleted and made again under the
        same name since (another topic id): followers' positions in the old one say nothing of
        the new one. ``TopicNotFoundError`` if it is gone."""
        topic_id = self._log.topic(tp.topic).topic_id
        known = self._incarnations.get(tp)
        if known != topic_id:
            if known is not None:
                self._forget(tp)
            self._incarnations[tp] = topic_id

    def _forget(self, tp: TopicPartition) -> None:
        self._hw.pop(tp, None)
        self._isr.pop(tp, None)
        self._incarnations.pop(tp, None)
        for per_follower in (self._told, self._answered):
            for key in [key for key in per_follower if key[1] == tp]:  # bounded by the followers
                del per_follower[key]
        key_ = (tp.topic, tp.partition)
        for info in self._rep.followers.values():  # bounded by the followers
            info.positions.pop(key_, None)
            info.caught_up_ms.pop(key_, None)
        for _end, event in self._waits.pop(tp, []):  # bounded by the writes waiting
            event.set()

    # --- acks=all ----------------------------------------------------------------

    async def wait_replicated(self, ends: Mapping[TopicPartition, int],
                              timeout_s: float) -> dict[TopicPartition, int]:
        """Wait until the HW of each partition reaches its end (section 3); per partition NONE,
        NOT_ENOUGH_REPLICAS_AFTER_APPEND (the ISR shrank below the minimum) or
        REQUEST_TIMED_OUT."""
        self.update(ends)
        events: dict[TopicPartition, anyio.Event] = {}
        for tp, end in ends.items():  # bounded by the request
            if self._hw.get(tp, -1) < end and self.isr_size(tp) >= self._rep.min_insync_replicas:
                event = anyio.Event()
                self._waits.setdefault(tp, []).append((end, event))
                events[tp] = event
        with anyio.move_on_after(max(timeout_s, 0.0)):
            for event in events.values():  # bounded by the request; one shared deadline
                await event.wait()
        out: dict[TopicPartition, int] = {}
        for tp, end in ends.items():  # bounded by the request
            if self._hw.get(tp, -1) < end and self.isr_size(tp) >= self._rep.min_insync_replicas:
                out[tp] = REQUEST_TIMED_OUT
            elif self.isr_size(tp) < self._rep.min_insync_replicas:
                out[tp] = NOT_ENOUGH_REPLICAS_AFTER_APPEND
            else:
                out[tp] = NONE
            event_ = events.get(tp)
            if event_ is not None and not event_.is_set():
                self._waits[tp] = [(e, ev) for e, ev in self._waits.get(tp, []) if ev is not event_]
        return out

    # --- the loop task ---------------------------------------------------------------

    async def run(self) -> None:
        """Keep the HW of every partition current until cancelled: on log end moves and on
        a tick that lets silent followers leave the ISR."""
        self._wakeup = Wakeup()
        self._hw.clear()  # leading again (elected after following): from the log's HW, not an old one
        tick_s = min(TICK_MS_MAX, self._rep.replica_lag_ms / 4) / 1000.0
        try:
            while True:  # one pass per wake-up or tick; ends when the server's task group is cancelled
                self._wakeup.clear()
                self._watch_all()
                self.update(self._watched)
                with anyio.move_on_after(tick_s):
                    await self._wakeup.wait()
        finally:
            watch, self._watch = self._watch, None
            if watch is not None:
                watch.cancel()

    def _watch_all(self) -> None:
        """Watch the log end of every partition (again when the topics changed)."""
        current = frozenset(TopicPartition(cfg.name, p)
                            for cfg in self._log.topics() for p in range(cfg.partitions))
        if current == self._watched:
            return
        for tp in self._watched - current:  # bounded by the deleted partitions
            self._forget(tp)
        if self._watch is not None:
            self._watch.cancel()
        try:
            self._watch = self._log.watch_log_end(current, self._log_end_moved)
        except EventStoreError:  # a topic deleted meanwhile: the next pass watches again
            self._watch = None
            return
        self._watched = current

    def _log_end_moved(self) -> None:
        """In the appending thread: wake the loop task (never blocks)."""
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.notify()


class ReplicatedWaiter:
    """The log's waiter for embedded ``"replicated"`` durability (``Log.set_replication``):
    called from application threads, it checks and waits on the server's loop."""

    def __init__(self, leader: Leader, replication: Replication,
                 timeout_s: float = REPLICATED_TIMEOUT_S) -> None:
        self._leader = leader
        self._rep = replication
        self._timeout_s = timeout_s
        self._token = anyio.lowlevel.current_token()

    def check(self, topics_partitions: Iterable[TopicPartition]) -> None:
        """Before writing: NotEnoughReplicasError when a partition's ISR is too small."""
        if not self._rep.accepts_writes:
            raise NotEnoughReplicasError("this node does not accept writes (a follower, or fenced)")
        sizes = self._leader.isr_sizes
        need = self._rep.min_insync_replicas
        for tp in topics_partitions:  # bounded by the append
            have = sizes.get(tp)
            if have is None:  # not computed yet (a new topic): asked on the loop
                try:
                    have = anyio.from_thread.run_sync(self._leader.isr_size, tp, token=self._token)
                except (anyio.RunFinishedError, RuntimeError) as e:
                    raise NotEnoughReplicasError(f"the server is not running: {e}; nothing written") from None
            if have < need:
                raise NotEnoughReplicasError(
                    f"{tp.topic}/{tp.partition}: {have} in-sync replica(s), {need} needed; nothing written")

    def wait(self, ends: Mapping[TopicPartition, int]) -> None:
        """After the local barrier: block until every end is replicated, or raise."""
        try:
            outcome = anyio.from_thread.run(self._leader.wait_replicated, dict(ends), self._timeout_s,
                                            token=self._token)
        except (anyio.RunFinishedError, RuntimeError) as e:
            raise NotEnoughReplicasError(f"the records are written but not known replicated: {e}") from None
        failed = [f"{tp.topic}/{tp.partition}" for tp, code in outcome.items() if code != NONE]
        if failed:
            raise NotEnoughReplicasError(
                f"the records are written but not known replicated ({', '.join(failed)}): "
                f"too few in-sync replicas or no answer within {self._timeout_s:g} s")
