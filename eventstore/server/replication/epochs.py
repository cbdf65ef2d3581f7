"""The leader epoch check of a replica's requests (docs/replication.md, section 2).

A replica Fetch and an OffsetForLeaderEpoch carry the epoch the replica knows
(``current_leader_epoch``, -1: none given). An older one than this node's is
stale: FENCED_LEADER_EPOCH, the replica refreshes. A newer one means another
node was promoted since this one led: UNKNOWN_LEADER_EPOCH, and this node
fences itself (it accepts no write until restarted as a follower).
"""

from __future__ import annotations

import logging
from typing import Final

from .state import Replication

__all__ = ["FENCED_LEADER_EPOCH", "NOT_LEADER_OR_FOLLOWER", "UNKNOWN_LEADER_EPOCH", "epoch_error"]

log = logging.getLogger("eventstore.server.replication")

NONE: Final = 0
NOT_LEADER_OR_FOLLOWER: Final = 6
FENCED_LEADER_EPOCH: Final = 74
UNKNOWN_LEADER_EPOCH: Final = 75


def epoch_error(replication: Replication, current_leader_epoch: int, client: str) -> int:
    """The error code for a replica's request in ``current_leader_epoch`` (0: none)."""
    if replication.role != "leader":
        return NOT_LEADER_OR_FOLLOWER
    if current_leader_epoch < 0 or current_leader_epoch == replication.epoch:
        return NONE
    if current_leader_epoch < replication.epoch:
        return FENCED_LEADER_EPOCH
    if replication.fenced is None:
        log.warning("a replica at %s knows leader epoch %d, newer than this node's %d: "
                    "this node stops accepting writes", client, current_leader_epoch, replication.epoch)
    replication.fence(f"a newer leader epoch ({current_leader_epoch}) exists")
    return UNKNOWN_LEADER_EPOCH
