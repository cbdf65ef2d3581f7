"""The replication task of a server (docs/replication.md, sections 2-4): a follower's
fetcher while the node follows, then (from the start on a leader, or after a
promotion) the leader's bookkeeping of the in-sync set and high watermark.

With replication enabled the log's readers stop at the high watermark
(``Log.enable_high_watermark``; on a follower it starts at the log start, so that a
restarted node shows nothing of a tail its leader may lack), and embedded appends in
``"replicated"`` durability wait for the followers through :class:`ReplicatedWaiter`
(``Log.set_replication``), registered for the server's life.

While the node does not accept writes (a follower, a fenced leader) its log refuses
local writes too (``Log.set_writable``): an application serving its store in-process
as a follower cannot fork its leader's history. A promotion lifts the refusal; it
stays after the server stops (the store still follows, as its role file says).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import anyio

from ...log import Log
from ..cluster import write_cluster_id
from ..config import format_address
from .follower import Follower
from .leader import Leader, ReplicatedWaiter, leader_of
from .state import NodeAddress, Replication

__all__ = ["run_replication"]

logger = logging.getLogger("eventstore.server.replication")


async def run_replication(broker: Any) -> None:
    """Follow or lead, as the node's role says and again at each change of it, until the
    server's task group is cancelled."""
    replication = broker.replication
    log = broker.log
    leader = leader_of(broker)
    if replication.enabled:  # a follower shows nothing its leader's HW has not covered yet
        log.enable_high_watermark(from_start=replication.role == "follower")
        log.set_replication(ReplicatedWaiter(leader, replication))
    if replication.read_only is None:  # a read-only log refuses every write already
        replication.on_change.append(lambda: _follow_role(log, replication))
        _follow_role(log, replication)
    try:
        while True:  # one pass per role; a coordinated node changes role at run time
            await _run_role(broker, replication, leader)
    finally:
        log.set_replication(None)


async def _run_role(broker: Any, replication: Replication, leader: Leader) -> None:
    """Lead, or follow the known leader, or (a coordinated node before etcd named one)
    wait, until a promotion or an order to follow another leader ends it."""
    with anyio.CancelScope() as scope:
        replication.on_promote.append(scope.cancel)
        replication.on_follow.append(scope.cancel)
        try:
            if replication.role == "leader":
                await leader.run()
            elif leaders := _leaders(broker, replication):
                config = broker.config
                advertised = NodeAddress(config.node_id, broker.advertised_host, broker.advertised_port)
                await Follower(broker.log, broker.groups, replication, leaders, advertised,
                               broker.limiter, lambda: broker.streams,
                               functools.partial(_adopt_cluster_id, broker)).run()
            await anyio.sleep_forever()  # a follower promoted, or leaderless: until the next change
        finally:
            replication.on_promote.remove(scope.cancel)
            replication.on_follow.remove(scope.cancel)


def _leaders(broker: Any, replication: Replication) -> tuple[str, ...]:
    """Whom a follower fetches from: ``--replica-of``, else the leader etcd named."""
    if broker.config.replica_of:
        return tuple(broker.config.replica_of)
    known = replication.leader
    return (format_address(known.host, known.port),) if known is not None else ()


def _follow_role(log: Log, replication: Replication) -> None:
    """The log accepts local writes exactly while the node does."""
    if replication.accepts_writes:
        log.set_writable(True)
    elif replication.fenced is not None:
        log.set_writable(False, f"this node was the leader and is fenced: {replication.fenced}")
    else:
        leader = replication.leader
        where = f" (the leader is node {leader.node_id} at {leader.host}:{leader.port})" if leader else ""
        log.set_writable(False, f"this node is a follower{where}")


def _adopt_cluster_id(broker: Any, cluster: str) -> None:
    """In a worker thread: the leader's cluster id becomes this store's (its ``cluster.id``,
    so a promotion keeps it) and the one this server answers with."""
    if cluster == broker.cluster_id:
        return
    write_cluster_id(broker.log.path, cluster)
    logger.info("cluster id %s taken from the leader (was %s)", cluster, broker.cluster_id)
    broker.cluster_id = cluster
