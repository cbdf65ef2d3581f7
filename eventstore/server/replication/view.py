"""The cluster as Metadata, DescribeCluster, FindCoordinator and ReplicaCatalog describe it
(docs/replication.md, sections 4.5 and 5): who leads, in which epoch, which nodes replicate,
which are in sync.

A leader knows its followers from their ReplicaCatalog requests (addresses) and replica
fetches (positions: the ISR of each partition). A follower repeats what the leader last
told it, with itself always among the brokers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...records import TopicPartition
from .leader import leader_of
from .state import NodeAddress, Replication, now_ms

__all__ = ["ClusterView", "cluster_view"]


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One answer's view of the cluster."""

    leader: NodeAddress
    epoch: int
    brokers: tuple[NodeAddress, ...]
    """The leader first, then the other replicas, each once."""
    in_sync_all: frozenset[int]
    """Nodes in sync as a whole (a follower's view, and ReplicaCatalog's ``in_sync``)."""
    _broker: Any

    @property
    def replica_ids(self) -> tuple[int, ...]:
        return tuple(b.node_id for b in self.brokers)

    def isr(self, tp: TopicPartition) -> tuple[int, ...]:
        """The in-sync replicas of one partition, the leader first."""
        rep: Replication = self._broker.replication
        if rep.role == "leader":
            return tuple(leader_of(self._broker).in_sync(tp))
        return tuple(b.node_id for b in self.brokers if b.node_id in self.in_sync_all)


def cluster_view(broker: Any, self_address: NodeAddress) -> ClusterView:
    """The view from ``broker`` (its ``replication``), this node being at ``self_address``."""
    rep = broker.replication
    if rep.role == "leader":
        followers = tuple(info.address for info in rep.followers.values() if info.address is not None)
        in_sync = {self_address.node_id, *(b.node_id for b in followers if _in_sync(broker, b.node_id))}
        return ClusterView(self_address, rep.epoch, (self_address, *followers), frozenset(in_sync), broker)
    leader = rep.leader if rep.leader is not None else NodeAddress(-1, "", -1)
    told = [address for address, _ in rep.replicas]
    others = [b for b in told if b.node_id not in (leader.node_id, self_address.node_id)]
    in_sync = {leader.node_id, *(address.node_id for address, flag in rep.replicas if flag)}
    # a leader not heard from yet (node id -1) is no broker: clients see "leader not available"
    known = (leader,) if leader.node_id >= 0 else ()
    return ClusterView(leader, rep.epoch, (*known, *others, self_address), frozenset(in_sync), broker)


def _in_sync(broker: Any, node_id: int) -> bool:
    """Whether a follower is in the ISR of every partition (of none: whether it is alive)."""
    rep: Replication = broker.replication
    info = rep.followers.get(node_id)
    if info is None:
        return False
    if not info.positions:
        return now_ms() - info.last_seen_ms <= rep.replica_lag_ms
    leader = leader_of(broker)
    return all(node_id in leader.in_sync(TopicPartition(*key)) for key in info.positions)
