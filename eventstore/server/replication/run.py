"""The replication task of a server (docs/replication.md, sections 2-4): a follower's
fetcher while the node follows, then (from the start on a leader, or after a
promotion) the leader's bookkeeping of the in-sync set and high watermark.

With replication enabled the log's readers stop at the high watermark
(``Log.enable_high_watermark``), and embedded appends in ``"replicated"``
durability wait for the followers through :class:`ReplicatedWaiter`
(``Log.set_replication``), registered for the server's life.
"""

from __future__ import annotations

from typing import Any

from .follower import Follower
from .leader import ReplicatedWaiter, leader_of
from .state import NodeAddress

__all__ = ["run_replication"]


async def run_replication(broker: Any) -> None:
    """Follow, then lead, until the server's task group is cancelled."""
    replication = broker.replication
    log = broker.log
    leader = leader_of(broker)
    if replication.enabled:
        log.enable_high_watermark()
        log.set_replication(ReplicatedWaiter(leader, replication))
    try:
        if replication.role == "follower" and broker.config.replica_of:
            advertised = NodeAddress(broker.config.node_id, broker.advertised_host, broker.advertised_port)
            await Follower(log, broker.groups, replication, broker.config.replica_of, advertised,
                           broker.limiter, lambda: broker.streams).run()
        await leader.run()
    finally:
        log.set_replication(None)
