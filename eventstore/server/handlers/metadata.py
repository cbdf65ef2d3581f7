"""Metadata (3) 0 to 12, DescribeCluster (60) 0 to 1, FindCoordinator (10) 0 to 6.

One store has one leader for all its partitions (docs/replication.md, section 1): the
leader is every partition's leader, the controller and the coordinator of every group
and transactional id, in the current leader epoch; the brokers are the leader and the
followers it knows (``replication.view``). Without followers this node is the only
broker and replica. A follower names the leader, so clients send their writes there.

Topics are named by name, or from Metadata v10 on by id (``TopicConfig.topic_id``);
an unknown id answers UNKNOWN_TOPIC_ID. An unknown name is created only when the
server runs with ``auto_create_topics`` and the request allows it (v4+), as Kafka's
``auto.create.topics.enable``; otherwise it answers UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

import uuid
from typing import Any

from ...errors import EventStoreError, TopicExistsError
from ...records import NO_TOPIC_ID, TopicConfig, TopicPartition
from ...storage.names import is_valid_topic_name
from ...wire import RequestHeader, kafka_error_for
from ..context import Context
from ..dispatch import handles
from ..entities import entity, has_field, item_class, response_class, response_for
from ..replication.state import NodeAddress
from ..replication.view import ClusterView, cluster_view

__all__ = ["NONE", "UNKNOWN_TOPIC_ID", "find_or_create_topic", "metadata_topic"]

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUEST = 42
UNKNOWN_TOPIC_ID = 100
UNSUPPORTED_ENDPOINT_TYPE = 119
BROKERS_ENDPOINT = 1
GROUP_KEY, TRANSACTION_KEY = 0, 1


async def find_or_create_topic(ctx: Context, name: str, allow_create: bool) -> tuple[TopicConfig | None, int]:
    """The topic ``name`` and NONE, or None and the error code a client gets for it:
    created first when the server auto-creates topics and the request allows it."""
    if not is_valid_topic_name(name):
        return None, INVALID_TOPIC_EXCEPTION
    cfg = ctx.log.find_topic(name)
    if cfg is not None:
        return cfg, NONE
    if not (allow_create and ctx.config.auto_create_topics):
        return None, UNKNOWN_TOPIC_OR_PARTITION
    try:
        cfg = await ctx.blocking(_create, ctx, name)
    except EventStoreError as e:
        return None, kafka_error_for(e).code
    return cfg, NONE


def _create(ctx: Context, name: str) -> TopicConfig:
    try:
        return ctx.log.create_topic(name)
    except TopicExistsError:  # made meanwhile by another request: use it
        return ctx.log.topic(name)


def metadata_topic(ctx: Context, cls: Any, cfg: TopicConfig | None, name: str | None,
                   topic_id: uuid.UUID | None, error: int) -> Any:
    """One topic of a Metadata response: its partitions all led by the leader."""
    if cfg is None:
        return entity(cls, error_code=error, name=name, topic_id=topic_id or NO_TOPIC_ID, partitions=())
    partition_cls = item_class(cls, "partitions")
    view = view_of(ctx)
    leader, replicas = view.leader.node_id, view.replica_ids
    partitions = tuple(entity(partition_cls, error_code=NONE, partition_index=p, leader_id=leader,
                              leader_epoch=view.epoch, replica_nodes=replicas,
                              isr_nodes=view.isr(TopicPartition(cfg.name, p)), offline_replicas=())
                       for p in range(cfg.partitions))
    return entity(cls, error_code=NONE, name=cfg.name, topic_id=cfg.topic_id, is_internal=False,
                  partitions=partitions)


@handles(3)
async def metadata(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """The broker, the cluster, and the topics asked for (all when none are named)."""
    cls = response_class(header)
    topic_cls = item_class(cls, "topics")
    allow_create = bool(getattr(body, "allow_auto_topic_creation", True))
    requested = body.topics
    if requested is None or (header.api_version == 0 and not requested):
        topics = [metadata_topic(ctx, topic_cls, cfg, cfg.name, None, NONE)
                  for cfg in sorted(ctx.log.topic_configs().values(), key=lambda c: c.name)]
    else:
        topics = [await _requested_topic(ctx, topic_cls, t, allow_create) for t in requested]
    broker_cls = item_class(cls, "brokers")
    view = view_of(ctx)
    brokers = tuple(entity(broker_cls, node_id=b.node_id, host=b.host, port=b.port, rack=None)
                    for b in view.brokers)
    return entity(cls, brokers=brokers, cluster_id=ctx.cluster_id, controller_id=view.leader.node_id,
                  topics=tuple(topics))


def view_of(ctx: Context) -> ClusterView:
    """The cluster as this node sees it now."""
    return cluster_view(ctx.broker, NodeAddress(ctx.node_id, ctx.host, ctx.port))


async def _requested_topic(ctx: Context, topic_cls: Any, requested: Any, allow_create: bool) -> Any:
    name = requested.name
    topic_id = getattr(requested, "topic_id", None)
    if name is None:  # v10+: by id
        cfg = ctx.log.topic_by_id(topic_id) if topic_id is not None else None
        return metadata_topic(ctx, topic_cls, cfg, None, topic_id, UNKNOWN_TOPIC_ID)
    cfg, error = await find_or_create_topic(ctx, str(name), allow_create)
    return metadata_topic(ctx, topic_cls, cfg, str(name), None, error)


@handles(60)
async def describe_cluster(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """The brokers (the leader first) and the leader as the controller."""
    cls = response_class(header)
    endpoint_type = getattr(body, "endpoint_type", BROKERS_ENDPOINT)
    if endpoint_type != BROKERS_ENDPOINT:
        return entity(cls, error_code=UNSUPPORTED_ENDPOINT_TYPE, endpoint_type=endpoint_type,
                      error_message="only the brokers endpoint is served", cluster_id=ctx.cluster_id)
    view = view_of(ctx)
    brokers = tuple(entity(item_class(cls, "brokers"), broker_id=b.node_id, host=b.host, port=b.port)
                    for b in view.brokers)
    return entity(cls, error_code=NONE, cluster_id=ctx.cluster_id, controller_id=view.leader.node_id,
                  brokers=brokers)


@handles(10)
async def find_coordinator(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """The leader, for groups and transactional ids (v4+: for each key asked)."""
    key_type = getattr(body, "key_type", GROUP_KEY)
    error, message = (NONE, None) if key_type in (GROUP_KEY, TRANSACTION_KEY) else (
        INVALID_REQUEST, f"unknown key type {key_type}")
    cls = response_class(header)
    leader = view_of(ctx).leader
    where = {"node_id": leader.node_id if not error else -1, "host": leader.host if not error else "",
             "port": leader.port if not error else -1, "error_code": error, "error_message": message}
    if not has_field(cls, "coordinators"):
        return response_for(header, **where)
    item = item_class(cls, "coordinators")
    return entity(cls, coordinators=tuple(entity(item, key=key, **where) for key in body.coordinator_keys))
