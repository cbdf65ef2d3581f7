"""A node's replication state, shared by the handlers, the leader's bookkeeping and the
follower's fetcher (docs/replication.md, sections 1-4).

One :class:`Replication` per server, at ``broker.replication``. It says who leads
(this node or another), in which epoch, whether this node has been fenced, and,
on a leader, where each follower is. Everything here runs on the server's event
loop; nothing blocks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from .secure import ReplicaSecurity

__all__ = ["DEFAULT_REPLICA_LAG_MS", "FollowerInfo", "NodeAddress", "Replication", "Role"]

Role = Literal["leader", "follower"]

log = logging.getLogger("eventstore.server")

DEFAULT_REPLICA_LAG_MS: Final = 10_000
"""replica_lag_time_max_ms: a follower not caught up for this long leaves the in-sync set."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A node as Metadata names it."""

    node_id: int
    host: str
    port: int


@dataclass(slots=True)
class FollowerInfo:
    """What a leader knows of one follower (docs/replication.md, section 2)."""

    address: NodeAddress | None
    """From its ReplicaCatalog requests (a Fetch carries no address); None until one came."""
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    """Per (topic, partition): its last replica fetch offset."""
    caught_up_ms: dict[tuple[str, int], float] = field(default_factory=dict)
    """Per (topic, partition): monotonic ms of its last fetch that had caught up."""
    applied_catalog: int = -1
    """The catalog version it last said it applied (section 5)."""
    applied_instance: bytes = bytes(16)
    """The leader instance (uuid bytes) that version belongs to."""
    last_seen_ms: float = 0.0


@dataclass(slots=True)
class Replication:
    """The node's role and epoch, and on a leader its followers."""

    node_id: int
    role: Role = "leader"
    epoch: int = 0
    leader: NodeAddress | None = None
    """The current leader (this node's own address when it leads); None while unknown."""
    enabled: bool = False
    """True when this node replicates (a follower, or a leader that serves followers):
    readers then stop at the high watermark."""
    min_insync_replicas: int = 1
    replica_lag_ms: int = DEFAULT_REPLICA_LAG_MS
    security: ReplicaSecurity = field(default_factory=ReplicaSecurity)
    """How this node connects to its leader when it follows (TLS, SASL)."""
    fenced: str | None = None
    """Why this node may no longer accept writes (a newer epoch seen, its lease lost); None if it may."""
    read_only: str | None = None
    """Why this node serves a store it may never write (``es replicate`` beside the store's
    owner): it leads its followers but refuses every write; None if it may write."""
    followers: dict[int, FollowerInfo] = field(default_factory=dict)
    replicas: tuple[tuple[NodeAddress, bool], ...] = ()
    """On a follower: every replica and whether it is in sync, as the leader last told."""
    on_promote: list[Callable[[], object]] = field(default_factory=list)
    """Called (on the loop) when this node is promoted: the follower's tasks stop on it."""
    on_follow: list[Callable[[], object]] = field(default_factory=list)
    """Called (on the loop) when this node is told to follow a (new) leader: the replication
    task ends what it runs and starts following it."""
    on_change: list[Callable[[], object]] = field(default_factory=list)
    """Called (on the loop) after the role changed (a promotion, a fence): the server makes
    the log accept or refuse local writes by ``accepts_writes``."""
    on_catalog: list[Callable[[frozenset[str]], object]] = field(default_factory=list)
    """Called (on the loop) after a follower applied a catalog answer that changed ACLs,
    users or client quotas, with those kinds (``"acls"``, ``"users"``, ``"quotas"``): the
    server's authorizer and quotas take them up."""

    @property
    def leads(self) -> bool:
        """Whether this node is the unfenced leader its followers copy."""
        return self.role == "leader" and self.fenced is None

    @property
    def accepts_writes(self) -> bool:
        """Whether a write reaching this node may be applied here."""
        return self.leads and self.read_only is None

    def fence(self, reason: str) -> None:
        """Stop accepting writes for good (until restarted as a follower)."""
        if self.fenced is None:
            self.fenced = reason
            self._changed()

    def known_epoch(self, *others: int) -> int:
        """The largest epoch this node knows of: its own and ``others`` (its log's)."""
        return max(self.epoch, *others)

    def promote(self, epoch: int, address: NodeAddress) -> None:
        """Become the leader in ``epoch`` (docs/replication.md, section 6): writes are accepted
        from now on, and whatever follows an old leader is told to stop."""
        self.role, self.epoch, self.leader, self.fenced = "leader", epoch, address, None
        log.info("promoted: node %d leads in epoch %d", self.node_id, epoch)
        for callback in list(self.on_promote):  # bounded by the tasks that follow
            callback()
        self._changed()

    def follow(self, leader: NodeAddress, epoch: int) -> None:
        """Follow ``leader``, which leads in ``epoch`` (docs/replication.md, section 7: etcd
        names it). A leader of this node steps down (a fence it had stays); a follower
        retargets its fetcher, which truncates to the new leader's epochs first."""
        self.role, self.leader, self.epoch = "follower", leader, max(self.epoch, epoch)
        log.info("following node %d at %s:%d (epoch %d)", leader.node_id, leader.host, leader.port, epoch)
        for callback in list(self.on_follow):  # bounded by the replication task's registrations
            callback()
        self._changed()

    def _changed(self) -> None:
        for callback in list(self.on_change):  # bounded by the server's registrations
            callback()


def now_ms() -> float:
    """The monotonic clock the in-sync bookkeeping uses, in ms."""
    return time.monotonic() * 1000.0
