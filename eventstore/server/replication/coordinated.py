"""A server whose role etcd decides (``es serve --coordinator``; docs/replication.md, section 7).

The :class:`~.coordinator.Coordinator` elects; this module connects its three callbacks to
the server: an election promotes the node in the epoch it won (the same promotion as
``es promote``), a leader named by etcd is followed (the replication task retargets its
fetcher, truncating first), and a lost lease fences the node at once. The member record
it publishes says where clients reach the node and how far its log goes, which ranks it
in the next election.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc

from ...log import Log
from ..config import format_address
from .coordinator import Coordinator, MemberState
from .durable import DurableRole, write_role
from .promotion import promote
from .state import NodeAddress

__all__ = ["run_coordinated"]


def log_end_total(store_log: Log) -> int:
    """The sum of the log ends of every partition: how much of the history this node holds."""
    return sum(store_log.log_end(cfg.name, p) for cfg in store_log.topics() for p in range(cfg.partitions))


async def run_coordinated(broker: Any, *,
                          task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the node's coordinator until cancelled; started once it holds a lease and is
    listed among the members. Raises ``CoordinatorError`` when etcd is out of reach at start."""
    config = broker.config
    rep = broker.replication

    def member() -> MemberState:
        return MemberState(broker.advertised_host, broker.advertised_port,
                           rep.known_epoch(broker.log.leader_epoch), log_end_total(broker.log))

    async def elected(epoch: int) -> None:
        await promote(broker, epoch)

    async def follow(address: NodeAddress, epoch: int) -> None:
        rep.follow(address, epoch)
        # the role file too: restarted without the coordinator, the store must not lead
        leader = DurableRole("follower", rep.epoch, format_address(address.host, address.port))
        await anyio.to_thread.run_sync(write_role, broker.log.path, leader)

    async def fenced(reason: str) -> None:
        rep.fence(reason)

    coordinator = Coordinator(config.coordinator, config.cluster, config.node_id, member,
                              on_elected=elected, on_leader=follow, on_fenced=fenced,
                              lease_ttl=config.lease_ttl)
    await coordinator.run(task_status=task_status)
