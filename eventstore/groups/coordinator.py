"""The group coordinator of one log: its groups, and the one fenced offset commit.

Every committed offset goes through ``commit_offsets``: the consumer's
``commit`` and auto-commits, a transaction's offsets (written in the same
catalog transaction as its outbox entry), and later a network OffsetCommit.
Fencing and the write happen as one step under the group's lock, so a member
removed from the group can never overwrite a newer commit.

Lock order: a group's lock, then the catalog's write transaction (never the
other way round), which is why a transaction hands its own writes in as
``txn`` instead of calling in from inside its catalog write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..catalog import cursors
from ..errors import CommitFailedError
from ..records import OffsetAndMetadata, TopicConfig, TopicPartition
from ..validation import check_group_id
from . import admin
from .membership import Group, GroupDescription

if TYPE_CHECKING:
    from ..log import Log

__all__ = ["GroupCoordinator"]


class GroupCoordinator:
    """All consumer groups of one log: membership in memory, committed offsets in its catalog."""

    def __init__(self, log: Log) -> None:
        """Made when the store opens: forgets the offsets of topics that are gone (a deletion
        cut short, or a store written before deletions dropped them)."""
        self.log = log
        self._lock = threading.Lock()
        self._groups: dict[str, Group] = {}
        log.add_delete_hook(self._forget_topic)
        cursors.drop_gone(log.catalog, log.topic_configs())

    # --- the registry ------------------------------------------------------------

    def group(self, group_id: str) -> Group:
        """The group ``group_id``, made on first use."""
        with self._lock:
            g = self._groups.get(group_id)
            if g is None:
                g = self._groups[group_id] = Group(group_id, self.log.partition_counts)
            return g

    def find(self, group_id: str) -> Group | None:
        with self._lock:
            return self._groups.get(group_id)

    def forget(self, group_id: str) -> None:
        """Drop a group without members from the registry (its offsets were deleted): it is
        unknown again, as Kafka's deleted groups are."""
        with self._lock:
            g = self._groups.get(group_id)
            if g is not None and not g.members and (g.kafka is None or not g.kafka.has_members()):
                del self._groups[group_id]

    def active_groups(self) -> list[str]:
        with self._lock:
            return sorted(g for g, state in self._groups.items() if state.members)

    def expire(self, group_id: str | None = None) -> None:
        """Run expiry now (of one group, or of all), so that a member nobody polls beside is
        removed anyway."""
        names = [group_id] if group_id is not None else self.active_groups()
        for name in names:  # bounded by the groups
            g = self.find(name)
            if g is not None:
                g.expire()

    def _forget_topic(self, cfg: TopicConfig) -> None:
        """The log deletes a topic: every group forgets its committed offsets there (a delete
        hook), so a topic made again under the same name starts with none."""
        cursors.delete_topic(self.log.catalog, cfg.name)

    # --- committed offsets -------------------------------------------------------

    def commit_offsets(self, group: str, member_id: str | None, generation: int,
                       offsets: Mapping[TopicPartition, OffsetAndMetadata],
                       txn: Callable[[Any], object] | None = None) -> None:
        """Commit ``offsets`` (next offsets to read) for ``group``, fenced, durably.

        ``member_id`` and ``generation`` say who commits: a member of the group
        may commit only while it is one, in the generation it caught up with,
        and only partitions it owns; otherwise ``CommitFailedError`` and nothing
        is written. ``member_id`` None commits outside any membership (a consumer
        with a manual assignment, as Kafka allows; ``generation`` is then
        ignored). ``txn(write)``, if given, runs inside the same catalog write
        transaction, so that what it writes and the offsets commit together or
        not at all (a transaction's outbox entry).
        """
        check_group_id(group)
        catalog = self.log.catalog
        now_ms = time.time_ns() // 1_000_000

        def write(t: Any) -> None:
            if txn is not None:
                txn(t)
            if offsets:
                cursors.put_cursors(t, catalog, group, offsets, now_ms, self.log.topic_configs())

        if member_id is None or not offsets:
            catalog.write(write)
            return
        g = self.find(group)
        if g is None:
            raise CommitFailedError(group, f"member {member_id!r} is not in this group")
        with g.lock:  # fencing and the write happen as one step
            g.check_commit(member_id, generation, offsets)
            catalog.write(write)

    def committed(self, group: str, tp: TopicPartition) -> OffsetAndMetadata | None:
        """The group's committed offset of ``tp`` (None if there is none, or only one committed
        on an earlier topic of that name)."""
        return cursors.get(self.log.catalog, group, tp, self.log.topic_configs())

    # --- copies (a replication follower; docs/replication.md, section 5) ------------

    def stored_cursors(self) -> list[cursors.Cursor]:
        """Every committed offset in full, as a replication leader sends them."""
        self.log.check_open()
        return cursors.all_cursors(self.log.catalog)

    def copy_cursors(self, put: list[cursors.Cursor], drop: list[tuple[str, str, int]]) -> None:
        """Make these committed offsets exactly the leader's (``put``) and drop others
        (``(group, topic, partition)``), in one transaction; nothing fenced here, the leader
        fenced them when they were committed."""
        self.log.check_open()
        cursors.apply_copied(self.log.catalog, put, drop)

    # --- administration (eventstore.Store's group methods) -------------------------

    def list_groups(self) -> list[str]:
        """Consumer groups with committed offsets or active members."""
        self.log.check_open()
        return admin.list_groups(self)

    def describe_group(self, group: str) -> GroupDescription:
        """A group's state, generation, members and their assignments."""
        self.log.check_open()
        return admin.describe_group(self, group)

    def group_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (next offsets to read)."""
        self.log.check_open()
        return admin.group_offsets(self, group)

    def lag(self, group: str) -> dict[TopicPartition, int]:
        """Records the group has not committed past, per partition."""
        self.log.check_open()
        return admin.lag(self, group)

    def reset_group_offsets(
        self, group: str, to: str | int | Mapping[TopicPartition, int] | Mapping[tuple[str, int], int],
        topics: list[str] | None = None,
    ) -> dict[TopicPartition, int]:
        """Move an inactive group's offsets: "earliest", "latest", a timestamp, or explicit ones.

        Explicit offsets are keyed by ``TopicPartition`` or ``(topic, partition)`` tuples.
        """
        self.log.check_open()
        return admin.reset_group_offsets(self, group, to, topics)

    def delete_group(self, group: str) -> int:
        """Forget an inactive group's committed offsets."""
        self.log.check_open()
        return admin.delete_group(self, group)
