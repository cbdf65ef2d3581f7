"""ReplicaCatalog (20015) and Promote (20016): the replication control plane's extension
APIs (docs/replication.md, sections 5 and 6; docs/protocol.md, section 7).

ReplicaCatalog is a follower's long poll for the leader's catalog (``replication.catalog``);
it also registers the follower's address, which Metadata lists. A node that does not lead
answers NOT_LEADER_OR_FOLLOWER with the leader it knows in the leader fields; a request
carrying a newer epoch than a leader's fences that leader (a newer leader exists).

Promote (``replication.promotion``) makes this node the leader in a new epoch: one more
than the largest it knows, or the epoch asked (-1: none), which must be newer. A leader
asked without an epoch answers its own and changes nothing.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, Final

from ...wire import RequestHeader
from ...wire.apis import REPLICATION_KEYS
from ..context import Context
from ..dispatch import handles_frames, waiting
from ..extension import answer_extension
from ..refusals import MESSAGE, NOT_LEADER_OR_FOLLOWER
from ..replication.catalog import register_follower, tracker_of
from ..replication.leader import leader_of
from ..replication.promotion import promote
from ..replication.state import NodeAddress
from ..replication.view import cluster_view

__all__ = ["replication_control"]

REPLICA_CATALOG, PROMOTE = REPLICATION_KEYS
MAX_WAIT_MS: Final = 30_000
"""The longest a ReplicaCatalog long poll is held, whatever it asks."""


@handles_frames(*REPLICATION_KEYS)
async def replication_control(ctx: Context, header: RequestHeader, frame_bytes: bytes) -> bytes:
    """Answer one ReplicaCatalog or Promote request."""
    return await answer_extension(ctx, header, frame_bytes, functools.partial(_answer, ctx))


async def _answer(ctx: Context, key: int, request: dict[str, Any]) -> dict[str, Any]:
    if key == PROMOTE:
        return await _promote(ctx, request)
    return await _catalog(ctx, request)


def _self(ctx: Context) -> NodeAddress:
    return NodeAddress(ctx.node_id, ctx.host, ctx.port)


def _cluster_fields(ctx: Context) -> dict[str, Any]:
    """The leader, its epoch and the replicas, as this node knows them."""
    view = cluster_view(ctx.broker, _self(ctx))
    leader = view.leader
    return {"leader_id": leader.node_id, "leader_host": leader.host, "leader_port": leader.port,
            "leader_epoch": view.epoch,
            "replicas": [(b.node_id, b.host, b.port, b.node_id in view.in_sync_all) for b in view.brokers]}


async def _catalog(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    rep = ctx.broker.replication
    if rep.role == "leader" and request["leader_epoch"] > rep.epoch:
        rep.fence(f"replica {request['node_id']} knows epoch {request['leader_epoch']}, "
                  f"newer than {rep.epoch}")
    if not rep.leads:
        return {**_cluster_fields(ctx), "error_code": NOT_LEADER_OR_FOLLOWER, "error_message": MESSAGE,
                "instance": bytes(16), "version": -1, "full": False, "state": b""}
    tracker = await tracker_of(ctx.state, ctx.log, ctx.groups)
    register_follower(rep, request)
    tracker.reported()
    leader_of(ctx.broker).catalog_applied()
    instance = uuid.UUID(bytes=bytes(request["instance"]))
    applied = request["applied_version"]
    wait_ms = min(max(0, request["max_wait_ms"]), MAX_WAIT_MS)
    with waiting():
        await tracker.wait_newer(instance, applied, wait_ms, lambda: ctx.broker.stopping)
    full, state = tracker.answer(instance, applied)
    return {**_cluster_fields(ctx), "instance": tracker.instance.bytes, "version": tracker.version,
            "full": full, "state": state}


async def _promote(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    asked = request["epoch"]
    epoch = await promote(ctx.broker, None if asked < 0 else asked)
    return {"node_id": ctx.node_id, "epoch": epoch}
