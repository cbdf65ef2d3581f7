"""Kafka's group APIs over the one coordinator, sans network: one method per API.

The server's handlers (``eventstore/server/handlers/groups.py``) decode a request,
call one method here and encode the answer; everything a group does is decided
here, under its group's lock, so it is tested without sockets. JoinGroup and
SyncGroup return a ``Pending`` (kafka.py) that the caller awaits; ``expire`` and
``next_deadline`` let the caller fire the group's timeouts while it waits.

Offsets go through the coordinator's one fenced ``commit_offsets``, so an
OffsetCommit lands in the same cursors as an embedded consumer's commit and
``store.group_offsets``, ``store.lag`` and ``es groups`` see it. A Kafka commit's
metadata string is kept with the offset (the cursor's ``metadata``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..catalog import cursors
from ..records import OffsetAndMetadata, TopicPartition
from . import admin
from .coordinator import GroupCoordinator
from .kafka import (
    EMPTY,
    GroupError,
    JoinRequest,
    JoinResult,
    KafkaGroupState,
    Pending,
    SyncRequest,
    SyncResult,
    kafka_state,
)
from .membership import Group, GroupDescription

__all__ = ["GroupListing", "KafkaGroups"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    state: str
    protocol_type: str


class KafkaGroups:
    """The group APIs of the Kafka protocol, over ``coordinator``; ``clock`` is monotonic seconds;
    ``initial_rebalance_delay_s`` is Kafka's ``group.initial.rebalance.delay.ms`` in seconds."""

    def __init__(self, coordinator: GroupCoordinator, clock: Clock = time.monotonic,
                 initial_rebalance_delay_s: float = 0.0) -> None:
        self.coordinator = coordinator
        self.clock = clock
        self.initial_rebalance_delay_s = initial_rebalance_delay_s

    def _state(self, group_id: str) -> tuple[Group, KafkaGroupState]:
        group = self.coordinator.group(group_id)
        return group, kafka_state(group, self.initial_rebalance_delay_s)

    # --- membership --------------------------------------------------------------------

    def join(self, group_id: str, req: JoinRequest) -> Pending[JoinResult]:
        group, state = self._state(group_id)
        with group.lock:
            now = self.clock()
            group.expire(now)
            return state.join(req, now)

    def sync(self, group_id: str, req: SyncRequest) -> Pending[SyncResult]:
        group, state = self._state(group_id)
        with group.lock:
            now = self.clock()
            group.expire(now)
            return state.sync(req, now)

    def heartbeat(self, group_id: str, member_id: str, generation: int,
                  instance_id: str | None = None) -> GroupError:
        group = self.coordinator.find(group_id)
        if group is None or group.kafka is None:
            return GroupError.UNKNOWN_MEMBER_ID
        with group.lock:
            now = self.clock()
            group.expire(now)
            return group.kafka.heartbeat(member_id, generation, instance_id, now)

    def leave(self, group_id: str, members: Iterable[tuple[str, str | None]]) -> list[GroupError]:
        """LeaveGroup of ``(member_id, group_instance_id)`` pairs; one answer each."""
        group = self.coordinator.find(group_id)
        wanted = list(members)
        if group is None or group.kafka is None:
            return [GroupError.UNKNOWN_MEMBER_ID] * len(wanted)
        with group.lock:
            now = self.clock()
            return [group.kafka.leave(member_id, instance_id, now) for member_id, instance_id in wanted]

    def expire(self, group_id: str) -> None:
        group = self.coordinator.find(group_id)
        if group is not None:
            group.expire(self.clock())

    def next_deadline(self, group_id: str) -> float | None:
        """When the group next has a timeout to fire (the clock's seconds), if any."""
        group = self.coordinator.find(group_id)
        if group is None or group.kafka is None:
            return None
        with group.lock:
            return group.kafka.next_deadline()

    # --- offsets ------------------------------------------------------------------------

    def commit(self, group_id: str, member_id: str, generation: int, instance_id: str | None,
               offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> GroupError:
        """OffsetCommit: fenced as Kafka fences it, then the coordinator's ``commit_offsets``.

        Blocks for the catalog's fsync: call it from a worker thread.
        """
        group, state = self._state(group_id)
        with group.lock:  # the check and the write are one step (the lock is re-entrant)
            now = self.clock()
            group.expire(now)
            code = state.commit_error(member_id, instance_id, generation, now)
            if code:
                return code
            # fenced just now, under the lock held through the write: the coordinator's
            # commit as from outside the membership, so it does not check again
            self.coordinator.commit_offsets(group_id, None, -1, offsets)
            return GroupError.NONE

    def committed(self, group_id: str, partitions: Iterable[TopicPartition] | None,
                  ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """OffsetFetch: the committed offsets of ``partitions`` (None: every one the group has)."""
        log = self.coordinator.log
        stored = cursors.read_group(log.catalog, group_id, log.topic_configs())
        if partitions is None:
            return dict(sorted(stored.items()))
        return {tp: stored.get(tp) for tp in partitions}

    def delete_offsets(self, group_id: str, partitions: Iterable[TopicPartition],
                       ) -> tuple[GroupError, dict[TopicPartition, GroupError]]:
        """OffsetDelete: forget the group's offsets of ``partitions``, unless its members read
        their topic (GROUP_SUBSCRIBED_TO_TOPIC for those)."""
        wanted = list(partitions)
        if not self._known(group_id):
            return GroupError.GROUP_ID_NOT_FOUND, {}
        group = self.coordinator.group(group_id)
        with group.lock:
            group.expire(self.clock())
            busy = {t for m in group.members.values() for t in m.topics}
            out = {tp: GroupError.GROUP_SUBSCRIBED_TO_TOPIC if tp.topic in busy else GroupError.NONE
                   for tp in wanted}
            doomed = [tp for tp, code in out.items() if code == GroupError.NONE]
            cursors.delete_partitions(self.coordinator.log.catalog, group_id, doomed)
        return GroupError.NONE, out

    # --- administration -------------------------------------------------------------------

    def _known(self, group_id: str) -> bool:
        """Whether the group exists: made since the store opened and not deleted, or with offsets."""
        if self.coordinator.find(group_id) is not None:
            return True
        return bool(cursors.read_group(self.coordinator.log.catalog, group_id))

    def list(self) -> list[GroupListing]:
        """ListGroups: every group with members or committed offsets, its state and protocol type."""
        out = []
        for group_id in self.coordinator.list_groups():
            desc = self.describe(group_id)
            protocol_type = desc.protocol_type if desc.members else "consumer"
            out.append(GroupListing(group_id, desc.state, protocol_type))
        return out

    def describe(self, group_id: str) -> GroupDescription:
        """DescribeGroups of one group ("Dead" when it has neither members nor offsets)."""
        desc = self.coordinator.describe_group(group_id)
        if desc.state == EMPTY and not self._known(group_id):
            return GroupDescription(group_id=group_id, state="Dead", generation=desc.generation,
                                    protocol="", protocol_type="", members=[])
        return desc

    def delete(self, group_id: str) -> GroupError:
        """DeleteGroups of one group: NON_EMPTY_GROUP while members are alive."""
        if not self._known(group_id):
            return GroupError.GROUP_ID_NOT_FOUND
        group = self.coordinator.find(group_id)
        if group is not None:
            group.expire(self.clock())
            if group.members or (group.kafka is not None and group.kafka.has_members()):
                return GroupError.NON_EMPTY_GROUP
        admin.delete_group(self.coordinator, group_id)
        self.coordinator.forget(group_id)
        return GroupError.NONE
