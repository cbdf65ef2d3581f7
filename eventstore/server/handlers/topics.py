"""CreateTopics (19) 2 to 7, DeleteTopics (20) 1 to 6, CreatePartitions (37) 0 to 3.

One broker: a replication factor other than 1 (or -1, the default) is
INVALID_REPLICATION_FACTOR, and a manual assignment must name this node only
(INVALID_REPLICA_ASSIGNMENT). Configs map to the store's topic settings
(``eventstore.server.topic_configs``); any other is INVALID_CONFIG.
``validate_only`` checks everything, the topic's existence included, and changes
nothing. Each topic of a request succeeds or fails on its own.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from ...errors import EventStoreError, TopicExistsError
from ...records import NO_TOPIC_ID, TopicConfig
from ...storage.names import is_valid_topic_name
from ...validation import check_topic_settings
from ...wire import RequestHeader, kafka_error_for
from ..context import Context
from ..dispatch import handles
from ..entities import entity, item_class, response_class
from ..topic_configs import ConfigError, settings_from, topic_configs

NONE: Final = 0
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
TOPIC_ALREADY_EXISTS: Final = 36
INVALID_TOPIC_EXCEPTION: Final = 17
INVALID_PARTITIONS: Final = 37
INVALID_REPLICATION_FACTOR: Final = 38
INVALID_REPLICA_ASSIGNMENT: Final = 39
INVALID_CONFIG: Final = 40
INVALID_REQUEST: Final = 42
UNKNOWN_TOPIC_ID: Final = 100
DEFAULT_PARTITIONS: Final = 1


class Refused(Exception):
    """One resource of a request (a topic, a config resource) that cannot be done: its error code
    and message, answered for that resource alone."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@handles(19)
async def create_topics(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Create each topic (or, ``validate_only``, check that it could be)."""
    cls = response_class(header)
    topic_cls = item_class(cls, "topics")
    names = [str(t.name) for t in body.topics]
    results = []
    for topic in body.topics:  # bounded by the request
        name = str(topic.name)
        try:
            if names.count(name) > 1:
                raise Refused(INVALID_REQUEST, f"topic {name!r} is named more than once")
            settings = _creation_settings(ctx, topic)
            cfg = await ctx.blocking(_create, ctx, name, settings, bool(body.validate_only))
        except Refused as e:
            results.append(entity(topic_cls, name=name, topic_id=NO_TOPIC_ID, error_code=e.code,
                                  error_message=e.message, configs=None))
            continue
        results.append(_created(topic_cls, cfg))
    return entity(cls, topics=tuple(results))


def _creation_settings(ctx: Context, topic: Any) -> dict[str, Any]:
    name = str(topic.name)
    if not is_valid_topic_name(name):
        raise Refused(INVALID_TOPIC_EXCEPTION, f"invalid topic name {name!r}: use 1-249 of [A-Za-z0-9._-]")
    replication = int(topic.replication_factor)
    if replication not in (-1, 1):
        raise Refused(INVALID_REPLICATION_FACTOR,
                      f"replication factor {replication}: this server has one broker")
    partitions = int(topic.num_partitions)
    if topic.assignments:
        if partitions != -1 or replication != -1:
            raise Refused(INVALID_REQUEST, "give either assignments or num_partitions/replication_factor")
        if any(tuple(a.broker_ids) != (ctx.node_id,) for a in topic.assignments):
            raise Refused(INVALID_REPLICA_ASSIGNMENT, f"every partition's replicas must be [{ctx.node_id}]")
        partitions = len(topic.assignments)
    if partitions == -1:
        partitions = DEFAULT_PARTITIONS
    if partitions < 1:
        raise Refused(INVALID_PARTITIONS, f"number of partitions must be at least 1, got {partitions}")
    try:
        settings = settings_from({c.name: c.value for c in topic.configs})
        return {**settings, **check_topic_settings({"partitions": partitions})}
    except ConfigError as e:
        raise Refused(INVALID_CONFIG, str(e)) from None
    except EventStoreError as e:
        raise Refused(INVALID_PARTITIONS, str(e)) from None


def _create(ctx: Context, name: str, settings: dict[str, Any], validate_only: bool) -> TopicConfig:
    """In a worker thread: the topic created, or as it would be (``validate_only``)."""
    if validate_only:
        if ctx.log.find_topic(name) is not None:
            raise Refused(TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        return TopicConfig(name=name, **settings)
    try:
        return ctx.log.create_topic(name, **settings)
    except TopicExistsError:
        raise Refused(TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists") from None
    except EventStoreError as e:
        raise Refused(kafka_error_for(e).code, str(e)) from None


def _created(topic_cls: Any, cfg: TopicConfig) -> Any:
    config_cls = item_class(topic_cls, "configs") if "configs" in topic_cls.__dataclass_fields__ else None
    configs = None if config_cls is None else tuple(
        entity(config_cls, name=c.name, value=c.value, read_only=c.read_only, config_source=c.source,
               is_sensitive=False) for c in topic_configs(cfg))
    return entity(topic_cls, name=cfg.name, topic_id=cfg.topic_id, error_code=NONE, error_message=None,
                  num_partitions=cfg.partitions, replication_factor=1, configs=configs)


@handles(20)
async def delete_topics(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Delete each topic, named by name (or by id, v6)."""
    cls = response_class(header)
    item = item_class(cls, "responses")
    if hasattr(body, "topic_names"):
        asked: list[tuple[str | None, uuid.UUID | None]] = [(str(n), None) for n in body.topic_names]
    else:
        asked = [(None if t.name is None else str(t.name), t.topic_id) for t in body.topics]
    results = []
    for name, topic_id in asked:  # bounded by the request
        code, message, cfg = await ctx.blocking(_delete, ctx, name, topic_id)
        results.append(entity(item, name=cfg.name if cfg else name,
                              topic_id=cfg.topic_id if cfg else (topic_id or NO_TOPIC_ID),
                              error_code=code, error_message=message))
    return entity(cls, responses=tuple(results))


def _delete(ctx: Context, name: str | None, topic_id: uuid.UUID | None
            ) -> tuple[int, str | None, TopicConfig | None]:
    if name is None:
        cfg = ctx.log.topic_by_id(topic_id) if topic_id is not None and topic_id != NO_TOPIC_ID else None
        if cfg is None:
            return UNKNOWN_TOPIC_ID, f"no topic has the id {topic_id}", None
    else:
        cfg = ctx.log.find_topic(name)
        if cfg is None:
            return UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}", None
    try:
        ctx.log.delete_topic(cfg.name)
    except EventStoreError as e:
        return kafka_error_for(e).code, str(e), cfg
    return NONE, None, cfg


@handles(37)
async def create_partitions(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Grow each topic to ``count`` partitions (or, ``validate_only``, check that it could)."""
    cls = response_class(header)
    item = item_class(cls, "results")
    results = []
    for topic in body.topics:  # bounded by the request
        code, message = await ctx.blocking(_grow, ctx, topic, bool(body.validate_only))
        results.append(entity(item, name=str(topic.name), error_code=code, error_message=message))
    return entity(cls, results=tuple(results))


def _grow(ctx: Context, topic: Any, validate_only: bool) -> tuple[int, str | None]:
    name, count = str(topic.name), int(topic.count)
    cfg = ctx.log.find_topic(name)
    if cfg is None:
        return UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"
    if count <= cfg.partitions:
        return INVALID_PARTITIONS, f"topic {name!r} has {cfg.partitions} partitions; asked for {count}"
    if topic.assignments is not None:
        if len(topic.assignments) != count - cfg.partitions:
            new = count - cfg.partitions
            return INVALID_REPLICA_ASSIGNMENT, f"{len(topic.assignments)} assignments, {new} new partitions"
        if any(tuple(a.broker_ids) != (ctx.node_id,) for a in topic.assignments):
            return INVALID_REPLICA_ASSIGNMENT, f"every partition's replicas must be [{ctx.node_id}]"
    try:
        check_topic_settings({"partitions": count}, partitions_min=cfg.partitions)
        if not validate_only:
            ctx.log.alter_topic(name, partitions=count)
    except EventStoreError as e:
        code = kafka_error_for(e).code
        return (INVALID_PARTITIONS if code == INVALID_REQUEST else code), str(e)
    return NONE, None
