"""Promotion (docs/replication.md, section 6): this node leads from now on, in a new epoch.

One function for both ways in: ``es promote`` (the Promote extension API) and an etcd
election (the coordinator's ``on_elected``). The durable steps come first — the role
file, then the log's epoch (each partition notes it before its first batch of it), then
the high watermark raised to the log end — and only then does the node accept writes and
tell its follower tasks to stop (``Replication.promote``).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from ...errors import InvalidArgumentError, NotLeaderError
from ...log import Log
from .durable import DurableRole, write_role
from .state import NodeAddress

__all__ = ["promote"]


async def promote(broker: Any, epoch: int | None = None) -> int:
    """Make the node of ``broker`` the leader; returns its epoch. ``epoch`` None: one more
    than the largest it knows (its own, its log's, its last leader's); given (an election's),
    it must be larger than that. A node that leads already, unfenced, keeps its epoch when
    none is given."""
    rep = broker.replication
    if rep.read_only is not None:
        raise NotLeaderError(f"this node cannot lead: {rep.read_only}")
    known = rep.known_epoch(broker.log.leader_epoch)
    if epoch is None:
        if rep.accepts_writes:
            return int(rep.epoch)
        epoch = known + 1
    elif epoch <= known:
        raise InvalidArgumentError(f"epoch {epoch} is not newer than {known}, the largest this node knows")
    await anyio.to_thread.run_sync(_lead, broker.log, epoch)
    rep.promote(epoch, NodeAddress(broker.config.node_id, broker.advertised_host, broker.advertised_port))
    return epoch


def _lead(store_log: Log, epoch: int) -> None:
    """The durable part: the role file, the log's epoch, HW := log end."""
    write_role(store_log.path, DurableRole("leader", epoch, None))
    store_log.set_leader_epoch(epoch)
    for cfg in store_log.topics():  # bounded by the topics and their partitions
        for p in range(cfg.partitions):
            store_log.set_high_watermark(cfg.name, p, store_log.log_end(cfg.name, p))
