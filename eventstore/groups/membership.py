"""A consumer group: its members, generations, assignment, expiry and fencing.

A group knows members, not consumers. ``Member`` is what every kind of member
shares (an id, the topics it reads, a generation, a session, the partitions it
is assigned and owns); a kind says how it follows rebalances. The one kind
today is ``EmbeddedMember``, a consumer in this process: it acts on a rebalance
at its own next ``poll`` (as Kafka consumers do) and takes a newly assigned
partition only after the previous owner released it (after the owner's
``on_partitions_revoked`` ran, so it could commit) or was removed, so a
partition has at most one owner at any moment. ``KafkaMember`` (kafka.py), a
client of Kafka's JoinGroup/SyncGroup protocol over the wire, is the second
kind, with the same generations, expiry and fencing; a group holds members of
one kind at a time (kafka.py says why).

An embedded member that stops polling for ``max_poll_interval_ms`` is removed;
so is one whose consumer is gone without ``close()`` (its last reference
dropped: a consumer holds no reference cycle of its own, so it goes at once,
not at a later run of the cyclic garbage collector; nothing can heartbeat for
it) once ``session_timeout_ms`` has passed since its last heartbeat. A consumer
busy between polls keeps its session, as Kafka's background heartbeat keeps it.
Late commits of a removed member fail with ``CommitFailedError``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import msgspec

from ..errors import CommitFailedError, InvalidArgumentError
from ..records import TopicPartition
from .assignors import ASSIGNORS
from .consumer_protocol import encode_assignment, encode_subscription

if TYPE_CHECKING:
    from .kafka import KafkaGroupState

__all__ = ["EmbeddedMember", "Group", "GroupDescription", "Member", "MemberDescription"]

_member_ids = itertools.count(1)


class MemberDescription(msgspec.Struct, frozen=True, kw_only=True):
    """One member. ``kind`` is "embedded" (a consumer of this process) or "kafka" (a Kafka
    client over the wire); ``metadata`` and ``assignment_bytes`` are what Kafka's
    DescribeGroups shows: a Kafka member's own bytes, an embedded member's subscription and
    assignment in Kafka's consumer protocol encoding."""

    member_id: str
    client_id: str
    topics: list[str]
    assignment: list[TopicPartition]
    owned: list[TopicPartition]
    kind: str = "embedded"
    client_host: str = ""
    group_instance_id: str | None = None
    metadata: bytes = b""
    assignment_bytes: bytes = b""


class GroupDescription(msgspec.Struct, frozen=True, kw_only=True):
    group_id: str
    # "Stable", "PreparingRebalance" (someone has not caught up), "Empty"; a group of Kafka
    # clients may also be "CompletingRebalance" (joined, waiting for the leader's assignment)
    state: str
    generation: int
    protocol: str
    members: list[MemberDescription]
    protocol_type: str = "consumer"


class Member:
    """What every kind of member of a group has. Mutated only under its group's lock.

    ``target`` is the member's assignment in the group's current generation,
    ``owned`` what it holds now; ``generation`` the last generation it caught
    up with. ``strategy`` names the assignor the member asked for.
    """

    def __init__(self, group: Group, client_id: str, topics: frozenset[str], strategy: str,
                 session_timeout_ms: int, member_id: str | None = None) -> None:
        self.group = group
        self.member_id = member_id if member_id is not None else f"{client_id}-{next(_member_ids)}"
        self.client_id = client_id
        self.topics = topics
        self.strategy = strategy
        self.session_timeout_s = session_timeout_ms / 1000
        self.target: set[TopicPartition] = set()
        self.owned: set[TopicPartition] = set()
        self.generation = -1
        self.active = True
        self.last_heartbeat = time.monotonic()

    def joined(self, now: float) -> None:
        """The member (re)joins its group at ``now``."""
        self.active = True
        self.last_heartbeat = now

    def expired(self, now: float) -> bool:
        """Whether the group removes this member at ``now``: its session ran out."""
        return now - self.last_heartbeat > self.session_timeout_s

    def notify(self) -> None:
        """Something the member acts on changed: a new generation (and ``target``), or a
        partition it waits for was released."""

    def description(self) -> MemberDescription:
        """What ``describe_group`` shows of this member (under its group's lock)."""
        return MemberDescription(member_id=self.member_id, client_id=self.client_id,
                                 topics=sorted(self.topics), assignment=sorted(self.target),
                                 owned=sorted(self.owned),
                                 metadata=encode_subscription(self.topics),
                                 assignment_bytes=encode_assignment(self.target))


def _always() -> bool:
    return True


class EmbeddedMember(Member):
    """A consumer of this process: it polls, and is woken when it should poll again.

    ``wake`` is set on a rebalance; ``alive`` says whether its consumer still
    exists (a consumer dropped without ``close()`` cannot heartbeat any more).
    """

    def __init__(self, group: Group, client_id: str, topics: frozenset[str], strategy: str,
                 max_poll_interval_ms: int, session_timeout_ms: int) -> None:
        super().__init__(group, client_id, topics, strategy, session_timeout_ms)
        self.max_poll_interval_s = max_poll_interval_ms / 1000
        self.wake = threading.Event()
        self.alive: Callable[[], bool] = _always
        self.last_poll = self.last_heartbeat

    def joined(self, now: float) -> None:
        super().joined(now)
        self.last_poll = now

    def expired(self, now: float) -> bool:
        """Past ``max_poll_interval`` without a poll, or out of session with its consumer gone."""
        return now - self.last_poll > self.max_poll_interval_s or (
            super().expired(now) and not self.alive())

    def notify(self) -> None:
        self.wake.set()


class Group:
    """The state of one consumer group in this process."""

    def __init__(self, group_id: str, partition_counts: Callable[[Iterable[str]], dict[str, int]]):
        self.group_id = group_id
        self.lock = threading.RLock()
        self.generation = 0
        self.members: dict[str, Member] = {}
        self.owners: dict[TopicPartition, str] = {}
        self._partition_counts = partition_counts
        self._counts: dict[str, int] = {}
        self.kafka: KafkaGroupState | None = None  # Kafka's group protocol, once a client joined

    # --- membership ----------------------------------------------------------

    def join(self, member: Member) -> None:
        with self.lock:
            if self.kafka is not None:
                self.kafka.expire(time.monotonic())  # Kafka clients whose sessions ran out go first
            if self.kafka is not None and self.kafka.has_members():
                raise InvalidArgumentError(
                    f"group {self.group_id!r} has Kafka clients as members (over the wire); an "
                    "embedded consumer cannot join it until they leave: use another group_id"
                )
            others = {m.strategy for m in self.members.values()}
            if others and member.strategy not in others:
                raise InvalidArgumentError(
                    f"group {self.group_id!r} uses partition_assignment_strategy "
                    f"{others.pop()!r}; this consumer asked for {member.strategy!r}"
                )
            member.joined(time.monotonic())
            self.members[member.member_id] = member
            self._rebalance()

    def leave(self, member: Member) -> None:
        with self.lock:
            if self.members.pop(member.member_id, None) is None:
                return
            self._drop(member)
            self._rebalance()

    def resubscribe(self, member: Member, topics: frozenset[str]) -> None:
        """Change an active member's topics (a pattern matched new ones); rebalances."""
        with self.lock:
            if not member.active or member.topics == topics:
                return
            member.topics = topics
            self._rebalance()

    def _drop(self, member: Member) -> None:
        member.active = False
        for tp in member.owned:
            if self.owners.get(tp) == member.member_id:
                del self.owners[tp]
        member.owned = set()
        member.target = set()

    def _rebalance(self) -> None:
        self.generation += 1
        subs = {mid: m.topics for mid, m in self.members.items()}
        self._counts = self._partition_counts({t for ts in subs.values() for t in ts})
        strategy = next(iter(self.members.values())).strategy if self.members else "range"
        current = {mid: set(m.owned) for mid, m in self.members.items()}
        assignment = ASSIGNORS[strategy](subs, self._counts, current)
        for mid, m in self.members.items():
            m.target = assignment.get(mid, set())
            m.notify()

    def expire(self, now: float | None = None) -> list[Member]:
        """Remove the members that expired (see ``Member.expired``); returns them."""
        if now is None:
            now = time.monotonic()
        with self.lock:
            if self.kafka is not None and self.kafka.has_members():
                return self.kafka.expire(now)
            gone = [m for m in self.members.values() if m.expired(now)]
            for m in gone:
                del self.members[m.member_id]
                self._drop(m)
            counts = self._partition_counts({t for m in self.members.values() for t in m.topics})
            if gone or counts != self._counts:
                self._rebalance()
            return gone

    # --- a member's view --------------------------------------------------------

    def to_revoke(self, member: Member) -> set[TopicPartition] | None:
        """Partitions ``member`` must give up for the current generation (None: up to date)."""
        with self.lock:
            if member.generation == self.generation:
                return None
            member.generation = self.generation
            if member.strategy == "cooperative-sticky":
                return member.owned - member.target
            return set(member.owned)  # eager protocols revoke everything

    def release(self, member: Member, tps: Iterable[TopicPartition]) -> None:
        with self.lock:
            for tp in tps:
                member.owned.discard(tp)
                if self.owners.get(tp) == member.member_id:
                    del self.owners[tp]
                    for other in self.members.values():  # wake whoever waits for it
                        if tp in other.target:
                            other.notify()

    def acquire(self, member: Member) -> set[TopicPartition]:
        """Take every target partition that nobody owns; returns the ones taken now."""
        with self.lock:
            if not member.active:
                return set()
            taken = set()
            for tp in member.target - member.owned:
                if tp not in self.owners:
                    self.owners[tp] = member.member_id
                    member.owned.add(tp)
                    taken.add(tp)
            return taken

    def check_commit(self, member_id: str, generation: int, tps: Iterable[TopicPartition]) -> None:
        """Fencing, under the group's lock: only an active member may commit, in the generation
        it caught up with, and only partitions it owns.

        Expiry runs first: a member past ``max_poll_interval_ms`` is removed even
        when no other member polls, so its late commit fails as in Kafka.
        """
        with self.lock:
            self.expire()
            member = self.members.get(member_id)
            if self.kafka is not None and self.kafka.has_members():
                code = self.kafka.commit_error(member_id, None, generation, time.monotonic())
                if code:
                    raise CommitFailedError(self.group_id, f"{code.name} (Kafka member {member_id!r}, "
                                                           f"generation {generation})")
                return
            if member is None or not member.active:
                raise CommitFailedError(
                    self.group_id,
                    "this consumer was removed from the group (it left, or exceeded "
                    "max_poll_interval_ms / session_timeout_ms); its partitions were reassigned",
                )
            if generation != member.generation:
                raise CommitFailedError(
                    self.group_id,
                    f"generation {generation} is not this member's generation {member.generation}: "
                    "the group rebalanced since",
                )
            foreign = sorted(tp for tp in tps if self.owners.get(tp) != member_id)
            if foreign:
                raise CommitFailedError(
                    self.group_id,
                    f"partitions {', '.join(f'{t.topic}/{t.partition}' for t in foreign)} "
                    f"are not owned by this consumer in generation {self.generation}",
                )

    def describe(self) -> GroupDescription:
        with self.lock:
            members = [m.description() for m in self.members.values()]
            if self.kafka is not None and self.kafka.has_members():
                return GroupDescription(group_id=self.group_id, state=self.kafka.describe_state(),
                                        generation=self.generation,
                                        protocol=self.kafka.protocol_name or "",
                                        protocol_type=self.kafka.protocol_type or "", members=members)
            settled = all(m.generation == self.generation and m.owned == m.target
                          for m in self.members.values())
            state = "Empty" if not members else ("Stable" if settled else "PreparingRebalance")
            protocol = next(iter(self.members.values())).strategy if self.members else ""
            return GroupDescription(group_id=self.group_id, state=state,
                                    generation=self.generation, protocol=protocol, members=members)
