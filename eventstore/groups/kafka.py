"""Members of Kafka's group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), sans network.

A ``KafkaMember`` is a second kind of ``Member`` (membership.py): a Kafka client
that joins over the wire. Its group runs Kafka's classic group protocol, as
Kafka's own coordinator does:

* **Join barrier.** A join (of a new member, or of a known one whose protocols
  changed, or the leader's) moves the group to ``PreparingRebalance``; every
  member learns it from its next heartbeat (REBALANCE_IN_PROGRESS) and joins
  again. The rebalance completes once every known member has rejoined, or when
  the largest rebalance timeout of the members has passed: members that did not
  rejoin are removed. The new generation's protocol is the one every member
  supports that most members prefer; the leader (the previous one if it is
  still there) is given every member's metadata, the others none.
* **Sync.** In ``CompletingRebalance`` members send SyncGroup and wait; the
  leader's SyncGroup carries every member's assignment (computed by the
  client: the coordinator passes the bytes through), which completes all the
  waits and makes the group ``Stable``.
* **Sessions.** Any request of a member (join, sync, heartbeat, commit) renews
  its session; a member silent for ``session_timeout_ms`` is removed and the
  group rebalances. A member waiting in JoinGroup or SyncGroup is not expired
  (its request is its heartbeat); the rebalance timeout and the leader's own
  session bound those waits.
* **MEMBER_ID_REQUIRED** (JoinGroup v4+, KIP-394): a new member without an id
  is given one and must join again with it; until then it is *pending* (it
  holds the barrier back) for at most its session timeout.
* **Static membership** (KIP-345): a member with a ``group.instance.id`` that
  joins again without its member id takes the place of its previous member id.
  In a ``Stable`` group whose protocol would not change, that is no
  rebalance: it gets its previous assignment back; the previous member id is
  fenced (FENCED_INSTANCE_ID).

Nothing here waits. A JoinGroup or SyncGroup returns a ``Pending`` that the
group resolves when the barrier or the leader's assignment completes it; the
caller (the server, or a test) waits on it however suits it, and calls the
group's ``expire(now)`` at ``next_deadline()``, so that timeouts fire without a
timer thread. Everything runs under the group's lock. Time is a ``now``
argument (``time.monotonic()`` seconds), so tests drive it with a fake clock.

Embedded consumers and Kafka clients are not members of one group at once
(README, "Networked mode"): the assignment of a Kafka group is computed by its
leader, a client the coordinator cannot ask to take embedded members into
account, and an embedded member takes partitions only from the coordinator. A
JoinGroup for a group with embedded members is answered
INCONSISTENT_GROUP_PROTOCOL; an embedded consumer subscribing to a group with
Kafka members gets ``InvalidArgumentError``. Committed offsets are the same
cursors for both, so one kind can follow the other in a group.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Generic, TypeVar

from .consumer_protocol import decode_assignment, decode_subscription
from .membership import Member, MemberDescription

if TYPE_CHECKING:
    from .membership import Group

__all__ = [
    "EMPTY",
    "COMPLETING_REBALANCE",
    "GroupError",
    "JoinMember",
    "JoinRequest",
    "JoinResult",
    "KafkaGroupState",
    "KafkaMember",
    "Pending",
    "PREPARING_REBALANCE",
    "STABLE",
    "SyncRequest",
    "SyncResult",
    "kafka_state",
]

# Kafka's names for the states of a classic group (DescribeGroups, ListGroups).
EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"

#: Session timeouts a member may ask for, ms (Kafka's group.min/max.session.timeout.ms
#: are 6 s and 30 min; the lower bound is lower here so that short sessions can be used
#: on one machine).
SESSION_TIMEOUT_MS_MIN = 100
SESSION_TIMEOUT_MS_MAX = 30 * 60 * 1000
#: Members (and pending member ids) one group may hold: a bound on what clients can make
#: the coordinator keep (Kafka's group.max.size).
GROUP_SIZE_MAX = 4096


class GroupError(IntEnum):
    """The Kafka error codes the group protocol answers."""

    NONE = 0
    UNKNOWN_TOPIC_OR_PARTITION = 3
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    MEMBER_ID_REQUIRED = 79
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82
    GROUP_SUBSCRIBED_TO_TOPIC = 86


T = TypeVar("T")


class Pending(Generic[T]):
    """A result the group will give later: set once, by whichever thread completes it.

    ``on_done`` callbacks run under the group's lock, in the completing thread:
    they must only signal (set an event), never block or call the group.
    """

    def __init__(self) -> None:
        self._result: T | None = None
        self._event = threading.Event()
        self._callbacks: list[Callable[[], object]] = []

    @classmethod
    def resolved(cls, result: T) -> Pending[T]:
        p: Pending[T] = cls()
        p.resolve(result)
        return p

    def resolve(self, result: T) -> None:
        if self._event.is_set():
            return
        self._result = result
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:  # bounded by the waiters of one request (one, in practice)
            fn()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    @property
    def result(self) -> T:
        if self._result is None:
            raise RuntimeError("the group has not answered yet")
        return self._result

    def on_done(self, fn: Callable[[], object]) -> None:
        if self._event.is_set():
            fn()
        else:
            self._callbacks.append(fn)

    def wait(self, timeout: float) -> bool:
        """For threads: wait up to ``timeout`` seconds; whether it is done."""
        return self._event.wait(timeout)


@dataclass(frozen=True)
class JoinRequest:
    """What a JoinGroup asks, whatever its version (absent fields take Kafka's defaults)."""

    member_id: str
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int = -1  # v0: the session timeout
    group_instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    require_known_member_id: bool = False  # v4+


@dataclass(frozen=True)
class JoinMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True)
class JoinResult:
    error: GroupError
    member_id: str = ""
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: list[JoinMember] = field(default_factory=list)
    message: str = ""


@dataclass(frozen=True)
class SyncRequest:
    member_id: str
    generation: int
    group_instance_id: str | None = None
    protocol_type: str | None = None  # v5+
    protocol_name: str | None = None  # v5+
    assignments: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncResult:
    error: GroupError
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


class KafkaMember(Member):
    """A Kafka client in a group: its protocols and metadata, and its requests in flight."""

    def __init__(self, group: Group, member_id: str, req: JoinRequest, now: float) -> None:
        super().__init__(group, req.client_id, frozenset(), "", req.session_timeout_ms,
                         member_id=member_id)
        self.group_instance_id = req.group_instance_id
        self.client_host = req.client_host
        self.protocol_type = req.protocol_type
        self.protocols = list(req.protocols)
        self.rebalance_timeout_s = _rebalance_timeout_ms(req) / 1000
        self.assignment = b""
        self.awaiting_join: Pending[JoinResult] | None = None
        self.awaiting_sync: Pending[SyncResult] | None = None
        self.last_heartbeat = now

    def update(self, req: JoinRequest, now: float) -> None:
        """A rejoin: the member may have changed its protocols and timeouts."""
        self.protocols = list(req.protocols)
        self.session_timeout_s = req.session_timeout_ms / 1000
        self.rebalance_timeout_s = _rebalance_timeout_ms(req) / 1000
        self.client_id = req.client_id
        self.client_host = req.client_host
        self.last_heartbeat = now

    def metadata(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        return self.protocols == list(protocols)

    def vote(self, candidates: set[str]) -> str:
        """The protocol this member prefers among ``candidates`` (its first listed one)."""
        return next(name for name, _ in self.protocols if name in candidates)

    def expired(self, now: float) -> bool:
        """Out of session, unless a JoinGroup or SyncGroup of it is waiting (that is its heartbeat)."""
        if self.awaiting_join is not None or self.awaiting_sync is not None:
            return False
        return super().expired(now)

    def description(self) -> MemberDescription:
        assigned = decode_assignment(self.assignment)
        return MemberDescription(member_id=self.member_id, client_id=self.client_id,
                                 topics=sorted(self.topics), assignment=assigned, owned=assigned,
                                 kind="kafka", client_host=self.client_host,
                                 group_instance_id=self.group_instance_id,
                                 metadata=self.metadata(self.strategy or None),
                                 assignment_bytes=self.assignment)

    def session_deadline(self) -> float | None:
        if self.awaiting_join is not None or self.awaiting_sync is not None:
            return None
        return self.last_heartbeat + self.session_timeout_s


def _rebalance_timeout_ms(req: JoinRequest) -> int:
    return req.rebalance_timeout_ms if req.rebalance_timeout_ms > 0 else req.session_timeout_ms


def kafka_state(group: Group, initial_delay_s: float = 0.0) -> KafkaGroupState:
    """The Kafka protocol state of ``group``, made on first use (under the group's lock) with
    ``initial_delay_s`` as its initial rebalance delay."""
    with group.lock:
        if group.kafka is None:
            group.kafka = KafkaGroupState(group, initial_delay_s)
        return group.kafka


class KafkaGroupState:
    """Kafka's classic group state machine over one ``Group`` (its members and generation).

    Every method runs under the group's lock and takes ``now`` (monotonic seconds).
    ``initial_delay_s`` is Kafka's ``group.initial.rebalance.delay.ms``, in seconds.
    """

    def __init__(self, group: Group, initial_delay_s: float = 0.0) -> None:
        self.group = group
        self.initial_delay_s = initial_delay_s
        self.state = EMPTY
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader: str | None = None
        self.pending: dict[str, float] = {}  # member ids given out (MEMBER_ID_REQUIRED) -> deadline
        self.statics: dict[str, str] = {}  # group.instance.id -> member id
        self.rebalance_deadline = 0.0
        # the initial rebalance delay of a rebalance that started in an Empty group: when the
        # current wait ends (None: no such wait), when the last may end (the first member's
        # rebalance timeout), and whether a member joined during the current one
        self.initial_deadline: float | None = None
        self.initial_limit = 0.0
        self.joined_while_waiting = False

    # --- what the group holds ------------------------------------------------------

    def members(self) -> list[KafkaMember]:
        return [m for m in self.group.members.values() if isinstance(m, KafkaMember)]

    def has_members(self) -> bool:
        """Whether Kafka clients are in the group or about to be (a member id given out)."""
        return bool(self.pending) or any(isinstance(m, KafkaMember) for m in self.group.members.values())

    def _member(self, member_id: str) -> KafkaMember | None:
        m = self.group.members.get(member_id)
        return m if isinstance(m, KafkaMember) else None

    def _fenced(self, member_id: str, instance_id: str | None) -> bool:
        """A static member's old member id, replaced since by a newer instance of it."""
        if instance_id is None:
            return False
        known = self.statics.get(instance_id)
        return known is not None and known != member_id

    def _check_member(self, member_id: str, instance_id: str | None) -> tuple[GroupError, KafkaMember | None]:
        if self._fenced(member_id, instance_id):
            return GroupError.FENCED_INSTANCE_ID, None
        member = self._member(member_id)
        if member is None:
            return GroupError.UNKNOWN_MEMBER_ID, None
        return GroupError.NONE, member

    def _supports(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        members = self.members()
        if not members:
            return True
        if protocol_type != self.protocol_type:
            return False
        return bool(self._candidates(members) & {name for name, _ in protocols})

    @staticmethod
    def _candidates(members: list[KafkaMember]) -> set[str]:
        sets = [{name for name, _ in m.protocols} for m in members]
        return set.intersection(*sets) if sets else set()

    def _select_protocol(self) -> str:
        members = self.members()
        candidates = self._candidates(members)
        votes = Counter(m.vote(candidates) for m in members)
        first = members[0].vote(candidates)
        return max(sorted(votes), key=lambda name: (votes[name], name == first))

    # --- JoinGroup -----------------------------------------------------------------------

    def join(self, req: JoinRequest, now: float) -> Pending[JoinResult]:
        """A JoinGroup; the answer comes when the rebalance completes (at once for errors)."""
        error = self._join_error(req)
        if error is not None:
            return Pending.resolved(error)
        if not req.member_id:
            if req.group_instance_id is not None:
                known = self.statics.get(req.group_instance_id)
                if known is not None:
                    return self._replace_static(known, req, now)
                return self._add(self._new_member_id(req), req, now)
            if req.require_known_member_id:
                if self._full():
                    return Pending.resolved(JoinResult(GroupError.GROUP_MAX_SIZE_REACHED))
                member_id = self._new_member_id(req)
                self.pending[member_id] = now + req.session_timeout_ms / 1000
                return Pending.resolved(JoinResult(GroupError.MEMBER_ID_REQUIRED, member_id=member_id))
            return self._add(self._new_member_id(req), req, now)
        if req.member_id in self.pending:
            del self.pending[req.member_id]
            return self._add(req.member_id, req, now, counted=True)
        code, member = self._check_member(req.member_id, req.group_instance_id)
        if member is None or self.state == EMPTY:
            return Pending.resolved(JoinResult(code or GroupError.UNKNOWN_MEMBER_ID, member_id=req.member_id))
        return self._rejoin(member, req, now)

    def _join_error(self, req: JoinRequest) -> JoinResult | None:
        others = [m for m in self.group.members.values() if not isinstance(m, KafkaMember)]
        if others:
            return JoinResult(GroupError.INCONSISTENT_GROUP_PROTOCOL, member_id=req.member_id, message=(
                f"group {self.group.group_id!r} has {len(others)} embedded consumer(s) of this store; "
                "Kafka clients and embedded consumers cannot share a group"))
        if not SESSION_TIMEOUT_MS_MIN <= req.session_timeout_ms <= SESSION_TIMEOUT_MS_MAX:
            return JoinResult(GroupError.INVALID_SESSION_TIMEOUT, member_id=req.member_id, message=(
                f"session timeout {req.session_timeout_ms} ms is outside "
                f"{SESSION_TIMEOUT_MS_MIN}..{SESSION_TIMEOUT_MS_MAX}"))
        if not req.protocol_type or not req.protocols or not self._supports(req.protocol_type, req.protocols):
            return JoinResult(GroupError.INCONSISTENT_GROUP_PROTOCOL, member_id=req.member_id, message=(
                f"group {self.group.group_id!r} uses protocol type {self.protocol_type!r} with "
                f"{sorted(self._candidates(self.members()))}; this member offers {req.protocol_type!r} "
                f"with {[name for name, _ in req.protocols]}"))
        return None

    def _full(self) -> bool:
        return len(self.group.members) + len(self.pending) >= GROUP_SIZE_MAX

    @staticmethod
    def _new_member_id(req: JoinRequest) -> str:
        prefix = req.group_instance_id if req.group_instance_id is not None else (req.client_id or "member")
        return f"{prefix[:200]}-{uuid.uuid4()}"

    def _add(self, member_id: str, req: JoinRequest, now: float,
             counted: bool = False) -> Pending[JoinResult]:
        """A new member: it joins and the group rebalances (``counted``: its id was pending)."""
        if not counted and self._full():
            return Pending.resolved(JoinResult(GroupError.GROUP_MAX_SIZE_REACHED, member_id=req.member_id))
        member = KafkaMember(self.group, member_id, req, now)
        member.topics = frozenset(decode_subscription(req.protocols[0][1]))
        member.awaiting_join = Pending()
        self.group.members[member_id] = member
        if req.group_instance_id is not None:
            self.statics[req.group_instance_id] = member_id
        if self.protocol_type is None:
            self.protocol_type = req.protocol_type
        if self.initial_deadline is not None:
            self.joined_while_waiting = True
        pending = member.awaiting_join
        self._prepare_rebalance(now)
        return pending

    def _rejoin(self, member: KafkaMember, req: JoinRequest, now: float) -> Pending[JoinResult]:
        """A known member joins again: the current generation if nothing changed, else a rebalance."""
        if self.state == COMPLETING_REBALANCE and member.matches(req.protocols):
            member.last_heartbeat = now
            return Pending.resolved(self._join_result(member))
        if self.state == STABLE and member.member_id != self.leader and member.matches(req.protocols):
            member.last_heartbeat = now
            return Pending.resolved(self._join_result(member))
        return self._update_and_rebalance(member, req, now)

    def _update_and_rebalance(self, member: KafkaMember, req: JoinRequest, now: float) -> Pending[JoinResult]:
        if member.awaiting_join is not None:  # a retried JoinGroup: the newer request waits
            member.awaiting_join.resolve(JoinResult(GroupError.REBALANCE_IN_PROGRESS,
                                                    member_id=member.member_id))
        member.update(req, now)
        pending: Pending[JoinResult] = Pending()
        member.awaiting_join = pending
        if self.state == PREPARING_REBALANCE:
            self._try_complete_join(now)
        else:
            self._prepare_rebalance(now)
        return pending

    def _replace_static(self, old_id: str, req: JoinRequest, now: float) -> Pending[JoinResult]:
        """A static member back under a new member id: the old id is fenced.

        In a stable group whose protocol would not change it is no rebalance: the
        member keeps its assignment, and is told the previous leader's id so that
        it acts as a follower and asks for that assignment in SyncGroup.
        """
        member = self._member(old_id)
        assert member is not None  # statics name members only
        new_id = self._new_member_id(req)
        old_leader = self.leader
        fenced = JoinResult(GroupError.FENCED_INSTANCE_ID, member_id=old_id)
        if member.awaiting_join is not None:
            member.awaiting_join.resolve(fenced)
            member.awaiting_join = None
        if member.awaiting_sync is not None:
            member.awaiting_sync.resolve(SyncResult(GroupError.FENCED_INSTANCE_ID))
            member.awaiting_sync = None
        del self.group.members[old_id]
        member.member_id = new_id
        self.group.members[new_id] = member
        self.statics[req.group_instance_id or ""] = new_id
        if self.leader == old_id:
            self.leader = new_id
        member.update(req, now)
        if self.state == STABLE and self._select_protocol() == self.protocol_name:
            result = self._join_result(member)
            return Pending.resolved(JoinResult(
                GroupError.NONE, member_id=new_id, generation=result.generation,
                protocol_type=result.protocol_type, protocol_name=result.protocol_name,
                leader=old_leader or "", members=[]))
        pending: Pending[JoinResult] = Pending()
        member.awaiting_join = pending
        if self.state == PREPARING_REBALANCE:
            self._try_complete_join(now)
        else:
            self._prepare_rebalance(now)
        return pending

    def _join_result(self, member: KafkaMember) -> JoinResult:
        """The current generation as a JoinGroup answer: the leader gets every member's metadata."""
        members = []
        if member.member_id == self.leader:
            members = [JoinMember(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
                       for m in self.members()]
        return JoinResult(GroupError.NONE, member_id=member.member_id, generation=self.group.generation,
                          protocol_type=self.protocol_type, protocol_name=self.protocol_name,
                          leader=self.leader or "", members=members)

    # --- rebalancing ---------------------------------------------------------------------

    def _prepare_rebalance(self, now: float) -> None:
        """Start a rebalance: waiting SyncGroups are told REBALANCE_IN_PROGRESS, members must rejoin."""
        if self.state == COMPLETING_REBALANCE:
            for m in self.members():
                m.assignment = b""
                if m.awaiting_sync is not None:
                    m.awaiting_sync.resolve(SyncResult(GroupError.REBALANCE_IN_PROGRESS))
                    m.awaiting_sync = None
        if self.state != PREPARING_REBALANCE:
            timeouts = [m.rebalance_timeout_s for m in self.members()]
            self.rebalance_deadline = now + max(timeouts, default=0.0)
            if self.state == EMPTY and self.initial_delay_s > 0:
                self.initial_limit = self.rebalance_deadline
                self.initial_deadline = min(now + self.initial_delay_s, self.initial_limit)
                self.joined_while_waiting = False
            self.state = PREPARING_REBALANCE
            for m in self.members():
                m.notify()
        self._try_complete_join(now)

    def _try_complete_join(self, now: float) -> None:
        if self.state != PREPARING_REBALANCE or self._initial_wait(now):
            return
        everyone = all(m.awaiting_join is not None for m in self.members())
        if (everyone and not self.pending) or now >= self.rebalance_deadline:
            self._complete_join(now)

    def _initial_wait(self, now: float) -> bool:
        """Whether the initial rebalance delay still holds the join back: a wait that ends
        with a member having joined during it is followed by another, as long as time is left."""
        if self.initial_deadline is None:
            return False
        if now >= self.initial_deadline and self.joined_while_waiting:
            self.initial_deadline = min(self.initial_deadline + self.initial_delay_s, self.initial_limit)
            self.joined_while_waiting = False
        if now < self.initial_deadline:
            return True
        self.initial_deadline = None
        return False

    def _complete_join(self, now: float) -> None:
        """The barrier is down: members that did not rejoin go, a new generation starts."""
        for m in [m for m in self.members() if m.awaiting_join is None]:
            self._remove(m)
        group = self.group
        group.generation += 1
        if not self.members():
            self._become_empty()
            return
        self.protocol_name = self._select_protocol()
        if self.leader not in group.members:
            self.leader = self.members()[0].member_id
        self.state = COMPLETING_REBALANCE
        for m in self.members():
            m.generation = group.generation
            m.strategy = self.protocol_name
            m.topics = frozenset(decode_subscription(m.metadata(self.protocol_name)))
            m.assignment = b""
            m.last_heartbeat = now
            pending, m.awaiting_join = m.awaiting_join, None
            if pending is not None:
                pending.resolve(self._join_result(m))

    def _become_empty(self) -> None:
        self.state = EMPTY
        self.initial_deadline = None
        self.protocol_type = None
        self.protocol_name = None
        self.leader = None

    def _remove(self, member: KafkaMember) -> None:
        """Forget ``member`` (its waits are answered UNKNOWN_MEMBER_ID)."""
        if member.awaiting_join is not None:
            member.awaiting_join.resolve(JoinResult(GroupError.UNKNOWN_MEMBER_ID, member_id=member.member_id))
            member.awaiting_join = None
        if member.awaiting_sync is not None:
            member.awaiting_sync.resolve(SyncResult(GroupError.UNKNOWN_MEMBER_ID))
            member.awaiting_sync = None
        self.group.members.pop(member.member_id, None)
        member.active = False
        instance = member.group_instance_id
        if instance is not None and self.statics.get(instance) == member.member_id:
            del self.statics[instance]

    def _remove_and_rebalance(self, member: KafkaMember, now: float) -> None:
        self._remove(member)
        if self.state in (STABLE, COMPLETING_REBALANCE):
            self._prepare_rebalance(now)
        elif self.state == PREPARING_REBALANCE:
            self._try_complete_join(now)

    # --- SyncGroup, Heartbeat, LeaveGroup ------------------------------------------------

    def sync(self, req: SyncRequest, now: float) -> Pending[SyncResult]:
        """A SyncGroup; followers wait for the leader's, which carries every assignment."""
        code, member = self._check_member(req.member_id, req.group_instance_id)
        if member is None:
            return Pending.resolved(SyncResult(code))
        if req.generation != self.group.generation:
            return Pending.resolved(SyncResult(GroupError.ILLEGAL_GENERATION))
        if (req.protocol_type is not None and req.protocol_type != self.protocol_type) or (
                req.protocol_name is not None and req.protocol_name != self.protocol_name):
            return Pending.resolved(SyncResult(GroupError.INCONSISTENT_GROUP_PROTOCOL))
        if self.state == PREPARING_REBALANCE:
            return Pending.resolved(SyncResult(GroupError.REBALANCE_IN_PROGRESS))
        member.last_heartbeat = now
        if self.state == STABLE:
            return Pending.resolved(self._sync_result(member))
        if member.awaiting_sync is not None:  # a retried SyncGroup: the newer request waits
            member.awaiting_sync.resolve(SyncResult(GroupError.REBALANCE_IN_PROGRESS))
        pending_sync: Pending[SyncResult] = Pending()
        member.awaiting_sync = pending_sync
        if member.member_id == self.leader:
            for m in self.members():
                m.assignment = req.assignments.get(m.member_id, b"")
            self.state = STABLE
            for m in self.members():
                waiting, m.awaiting_sync = m.awaiting_sync, None
                m.last_heartbeat = now
                if waiting is not None:
                    waiting.resolve(self._sync_result(m))
        return pending_sync

    def _sync_result(self, member: KafkaMember) -> SyncResult:
        return SyncResult(GroupError.NONE, member.assignment, self.protocol_type, self.protocol_name)

    def heartbeat(self, member_id: str, generation: int, instance_id: str | None, now: float) -> GroupError:
        """A Heartbeat: renews the session; says REBALANCE_IN_PROGRESS when the member must rejoin."""
        code, member = self._check_member(member_id, instance_id)
        if member is None:
            return code
        if generation != self.group.generation:
            return GroupError.ILLEGAL_GENERATION
        member.last_heartbeat = now
        if self.state == PREPARING_REBALANCE:
            return GroupError.REBALANCE_IN_PROGRESS
        return GroupError.NONE

    def leave(self, member_id: str, instance_id: str | None, now: float) -> GroupError:
        """One member of a LeaveGroup (v3+ name several; each gets its own answer)."""
        if instance_id is not None:
            known = self.statics.get(instance_id)
            if known is None:
                return GroupError.UNKNOWN_MEMBER_ID
            if member_id and member_id != known:
                return GroupError.FENCED_INSTANCE_ID
            member_id = known
        if member_id in self.pending:
            del self.pending[member_id]
            self._try_complete_join(now)
            return GroupError.NONE
        member = self._member(member_id)
        if member is None:
            return GroupError.UNKNOWN_MEMBER_ID
        self._remove_and_rebalance(member, now)
        return GroupError.NONE

    # --- time --------------------------------------------------------------------------

    def expire(self, now: float) -> list[Member]:
        """Deadlines that passed: pending ids, sessions, the rebalance timeout. Returns who went."""
        for member_id in [mid for mid, deadline in self.pending.items() if deadline < now]:
            del self.pending[member_id]
        gone: list[Member] = []
        for m in self.members():
            if m.expired(now):
                self._remove_and_rebalance(m, now)
                gone.append(m)
        self._try_complete_join(now)
        return gone

    def next_deadline(self) -> float | None:
        """When ``expire`` next has something to do (None: nothing is timed)."""
        times = list(self.pending.values())
        times += [d for m in self.members() if (d := m.session_deadline()) is not None]
        if self.state == PREPARING_REBALANCE:
            times.append(self.rebalance_deadline)
            if self.initial_deadline is not None:
                times.append(self.initial_deadline)
        return min(times, default=None)

    # --- offsets -------------------------------------------------------------------------

    def commit_error(self, member_id: str, instance_id: str | None, generation: int,
                     now: float) -> GroupError:
        """Whether an OffsetCommit may write, as Kafka decides (and renews the member's session).

        Generation -1 with no member id and no instance id is a commit from outside the
        group (a client with a manual assignment): allowed while the group has no members.
        """
        if generation < 0 and not member_id and instance_id is None:
            return GroupError.UNKNOWN_MEMBER_ID if self.group.members else GroupError.NONE
        code, member = self._check_member(member_id, instance_id)
        if member is None:
            return code
        if generation != self.group.generation:
            return GroupError.ILLEGAL_GENERATION
        if self.state == COMPLETING_REBALANCE:
            return GroupError.REBALANCE_IN_PROGRESS
        member.last_heartbeat = now
        return GroupError.NONE

    def describe_state(self) -> str:
        return self.state if self.members() else EMPTY

    def subscribed(self, topic: str) -> bool:
        return any(topic in m.topics for m in self.members())

    def topics(self) -> Iterable[str]:
        return {t for m in self.members() for t in m.topics}
