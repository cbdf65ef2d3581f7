"""DescribeConfigs (32) 1 to 4, AlterConfigs (33) 0 to 2, IncrementalAlterConfigs (44) 0 to 1,
DescribeLogDirs (35) 1 to 4.

Topic resources (type 2) are the store's topic settings under Kafka's names
(``eventstore.server.topic_configs``); the broker (type 4, named by its node id or
"") is described, read-only. AlterConfigs replaces a topic's whole set (a setting
not given goes back to its default), as Kafka's does; IncrementalAlterConfigs
sets (0) or deletes (1, back to the default) one at a time; APPEND and SUBTRACT
(list configs) are INVALID_CONFIG, since no setting here is a list.

DescribeLogDirs: the store directory is the one log dir; each partition's size is
its segments' bytes; nothing lags.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any, Final

from ...errors import EventStoreError
from ...wire import RequestHeader, kafka_error_for
from ..config import format_address
from ..context import Context
from ..dispatch import handles
from ..entities import entity, has_field, item_class, response_class
from ..topic_configs import (
    TOPIC_SETTINGS,
    ConfigEntry,
    ConfigError,
    broker_configs,
    settings_from,
    topic_configs,
)
from .topics import Refused

NONE: Final = 0
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
INVALID_CONFIG: Final = 40
INVALID_REQUEST: Final = 42
TOPIC, BROKER = 2, 4
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _entries(ctx: Context, resource_type: int, name: str) -> list[ConfigEntry]:
    """The configs of one resource; :class:`ConfigError`-like failures as (code, message)."""
    if resource_type == TOPIC:
        cfg = ctx.log.find_topic(name)
        if cfg is None:
            raise Refused(UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        return topic_configs(cfg)
    if resource_type == BROKER:
        if name not in ("", str(ctx.node_id)):
            raise Refused(INVALID_REQUEST, f"no broker {name!r}: this server is broker {ctx.node_id}")
        return broker_configs(ctx.node_id, format_address(ctx.host, ctx.port), ctx.config.auto_create_topics)
    raise Refused(INVALID_REQUEST, f"resource type {resource_type} is not served (topics: 2, broker: 4)")


@handles(32)
async def describe_configs(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """The configs of each resource asked for (those named, or all)."""
    cls = response_class(header)
    result_cls = item_class(cls, "results")
    config_cls = item_class(result_cls, "configs")
    results = []
    for resource in body.resources:  # bounded by the request
        kind, name = int(resource.resource_type), str(resource.resource_name)
        try:
            entries = _entries(ctx, kind, name)
        except Refused as e:
            results.append(entity(result_cls, error_code=e.code, error_message=e.message, resource_type=kind,
                                  resource_name=name, configs=()))
            continue
        keys = resource.configuration_keys
        if keys:  # None or empty: all
            entries = [e for e in entries if e.name in set(keys)]
        configs = tuple(_config(config_cls, e) for e in entries)
        results.append(entity(result_cls, error_code=NONE, error_message=None, resource_type=kind,
                              resource_name=name, configs=configs))
    return entity(cls, results=tuple(results))


def _config(config_cls: Any, e: ConfigEntry) -> Any:
    return entity(config_cls, name=e.name, value=e.value, read_only=e.read_only, config_source=e.source,
                  is_default=e.source == 5, is_sensitive=False, synonyms=(), config_type=e.config_type,
                  documentation=None)


@handles(33)
async def alter_configs(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Replace each topic's settings with those given (the rest back to their defaults)."""
    changes = []
    for resource in body.resources:  # bounded by the request
        given: dict[str, str | None] = dict.fromkeys(TOPIC_SETTINGS)
        given.update({c.name: c.value for c in resource.configs})
        changes.append((resource, given))
    return await _alter(ctx, header, changes, bool(body.validate_only))


@handles(44)
async def incremental_alter_configs(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Set or reset each named config of each topic; the others stay as they are."""
    changes = []
    for resource in body.resources:  # bounded by the request
        given: dict[str, str | None] = {}
        bad = None
        for c in resource.configs:  # bounded by the request
            if c.config_operation == SET:
                given[c.name] = c.value
            elif c.config_operation == DELETE:
                given[c.name] = None
            else:
                bad = f"{c.name}: operation {c.config_operation} (APPEND/SUBTRACT) needs a list config"
        changes.append((resource, given if bad is None else bad))
    return await _alter(ctx, header, changes, bool(body.validate_only))


async def _alter(ctx: Context, header: RequestHeader,
                 changes: Sequence[tuple[Any, dict[str, str | None] | str]], validate_only: bool) -> Any:
    cls = response_class(header)
    item = item_class(cls, "responses")
    results = []
    for resource, given in changes:  # bounded by the request
        kind, name = int(resource.resource_type), str(resource.resource_name)
        code, message = await ctx.blocking(_apply, ctx, kind, name, given, validate_only)
        results.append(entity(item, error_code=code, error_message=message, resource_type=kind,
                              resource_name=name))
    return entity(cls, responses=tuple(results))


def _apply(ctx: Context, kind: int, name: str, given: dict[str, str | None] | str,
           validate_only: bool) -> tuple[int, str | None]:
    if isinstance(given, str):
        return INVALID_CONFIG, given
    try:
        _entries(ctx, kind, name)
    except Refused as e:
        return e.code, e.message
    if kind != TOPIC:
        return INVALID_CONFIG, "the broker's configs are read-only on this server"
    try:
        settings = settings_from(given, ctx.log.find_topic(name))
        if not validate_only:
            ctx.log.alter_topic(name, **settings)
    except ConfigError as e:
        return INVALID_CONFIG, str(e)
    except EventStoreError as e:
        return kafka_error_for(e).code, str(e)
    return NONE, None


@handles(35)
async def describe_log_dirs(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """The store directory, with the size of each partition asked for (all when none)."""
    cls = response_class(header)
    result_cls = item_class(cls, "results")
    topic_cls = item_class(result_cls, "topics")
    partition_cls = item_class(topic_cls, "partitions")
    asked = None if body.topics is None else [(str(t.topic), tuple(int(p) for p in t.partitions))
                                              for t in body.topics]
    sizes = await ctx.blocking(_sizes, ctx, asked)
    topics = tuple(entity(topic_cls, name=name, partitions=tuple(
        entity(partition_cls, partition_index=p, partition_size=size, offset_lag=0, is_future_key=False)
        for p, size in parts)) for name, parts in sizes)
    total, usable = -1, -1
    if has_field(result_cls, "total_bytes"):
        usage = await ctx.blocking(shutil.disk_usage, ctx.log.path)
        total, usable = usage.total, usage.free
    result = entity(result_cls, error_code=NONE, log_dir=os.path.abspath(ctx.log.path), topics=topics,
                    total_bytes=total, usable_bytes=usable)
    return entity(cls, error_code=NONE, results=(result,))


def _sizes(ctx: Context, asked: list[tuple[str, tuple[int, ...]]] | None
           ) -> list[tuple[str, list[tuple[int, int]]]]:
    configs = ctx.log.topic_configs()
    if asked is None:
        asked = [(name, tuple(range(cfg.partitions))) for name, cfg in sorted(configs.items())]
    out = []
    for name, partitions in asked:  # bounded by the request (or the topics)
        cfg = configs.get(name)
        if cfg is None:
            continue  # Kafka leaves out what this log dir does not hold
        parts = []
        for p in partitions:  # bounded by the request
            if 0 <= p < cfg.partitions:
                try:
                    parts.append((p, ctx.log.partition(name, p).size_bytes()))
                except EventStoreError:
                    continue  # deleted meanwhile
        out.append((name, parts))
    return out
