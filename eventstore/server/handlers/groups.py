"""The group APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
ListGroups, DescribeGroups, DeleteGroups, OffsetDelete (docs/protocol.md, section 8).

Each handler reads kio's request of whatever version, calls one method of
``KafkaGroups`` (``eventstore/groups/kafka_groups.py``: the state machine lives
there, sans network) and builds kio's response of the same version. Groups are
those of the store's one coordinator, shared with embedded consumers.

Nothing here blocks the event loop: every call into the coordinator runs in a
worker thread (``ctx.blocking``), since a group's lock may be held by a commit
waiting for its fsync. A JoinGroup or SyncGroup that must wait (the join
barrier, the leader's assignment) awaits the group's ``Pending`` through a
``RecordsWaiter`` of no partitions: the coordinator's thread wakes it, shutdown
wakes it, and between wake-ups it fires the group's next deadline (rebalance
timeout, sessions) itself, so no timer runs per group.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import typing
from typing import Any, TypeVar

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32Timedelta

from ...errors import InvalidArgumentError
from ...groups.kafka import GroupError, JoinRequest, Pending, SyncRequest
from ...groups.kafka_groups import KafkaGroups
from ...records import OffsetAndMetadata, TopicPartition
from ...validation import check_group_id
from ...wire import RequestHeader
from ...wire.messages import response_type
from ..context import Context
from ..dispatch import handles
from ..replication.catalog import wait_catalog_replicated

__all__ = ["kafka_groups"]

T = TypeVar("T")

log = logging.getLogger("eventstore.server")

JOIN_GROUP, SYNC_GROUP, HEARTBEAT, LEAVE_GROUP = 11, 14, 12, 13
OFFSET_COMMIT, OFFSET_FETCH, LIST_GROUPS, DESCRIBE_GROUPS = 8, 9, 16, 15
DELETE_GROUPS, OFFSET_DELETE = 42, 47

#: Group ids longer than this many UTF-8 bytes are refused (INVALID_GROUP_ID): a committed
#: offset's key is the group, the topic (up to 249 bytes) and the partition, and LMDB keys
#: hold at most 511 bytes.
GROUP_ID_BYTES_MAX = 255
#: Kafka's offset.metadata.max.bytes: longer commit metadata is OFFSET_METADATA_TOO_LARGE.
OFFSET_METADATA_BYTES_MAX = 4096
#: The longest a wait sleeps between two looks at the group's deadlines, seconds.
WAIT_SLICE_S = 1.0

OFFSET_METADATA_TOO_LARGE = 12
INVALID_REQUEST = 42
REQUEST_TIMED_OUT = 7
NO_AUTHORIZED_OPERATIONS = -(2**31)  # Kafka's "not asked for"


def kafka_groups(ctx: Context) -> KafkaGroups:
    """The group APIs over this server's coordinator (one per server)."""
    groups = ctx.state.get("groups")
    if groups is None:
        delay_s = ctx.config.group_initial_rebalance_delay_ms / 1000
        groups = ctx.state["groups"] = KafkaGroups(ctx.groups, initial_rebalance_delay_s=delay_s)
    assert isinstance(groups, KafkaGroups)
    return groups


# --- building kio responses of any version ----------------------------------------------------


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    """``cls``'s resolved annotations, kept (kio's classes are a fixed set)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _item(cls: type[Any], name: str) -> Any:
    """The item class of array field ``name`` of kio entity ``cls``."""
    annotation = _hints(cls)[name]
    for arg in typing.get_args(annotation):  # tuple[Item, ...], perhaps inside "| None"
        inner = typing.get_args(arg) or (arg,)
        if dataclasses.is_dataclass(inner[0]):
            return inner[0]
    raise TypeError(f"{cls.__name__}.{name} is not an array of entities")


_ZERO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))


def _build(cls: type[Any], **values: Any) -> Any:
    """kio entity ``cls`` from ``values``: fields this version lacks are left out, a throttle
    time is zero; a nullable string is "" in versions where it is not nullable."""
    fields = cls.__dataclass_fields__
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            continue
        if value is None and type(None) not in typing.get_args(_hints(cls)[name]):
            value = ""
        out[name] = ErrorCode(int(value)) if name == "error_code" else value
    if "throttle_time" in fields:
        out["throttle_time"] = _ZERO_THROTTLE
    return cls(**out)


def _response(header: RequestHeader) -> Any:
    return response_type(header.api_key, header.api_version)


def _ms(value: Any) -> int:
    """A kio duration field (timedelta) or plain int as milliseconds."""
    if isinstance(value, datetime.timedelta):
        return round(value.total_seconds() * 1000)
    return int(value)


def _group_error(group_id: str) -> GroupError | None:
    """INVALID_GROUP_ID for an id the store cannot keep (empty, NUL, too long)."""
    try:
        check_group_id(group_id)
    except InvalidArgumentError:
        return GroupError.INVALID_GROUP_ID
    if len(group_id.encode("utf-8", "surrogatepass")) > GROUP_ID_BYTES_MAX:
        return GroupError.INVALID_GROUP_ID
    return None


async def _settle(ctx: Context, kg: KafkaGroups, group_id: str, pending: Pending[T]) -> T | None:
    """The group's answer to a waiting request, firing the group's deadlines meanwhile; None
    when the server is shutting down first."""
    with ctx.watch([]) as waiter:
        pending.on_done(waiter.notify)
        while not pending.done:  # bounded: each deadline passes (sessions, rebalance timeouts)
            deadline = await ctx.blocking(kg.next_deadline, group_id)
            timeout = WAIT_SLICE_S if deadline is None else deadline - kg.clock() + 0.001
            await waiter.wait(min(max(timeout, 0.0), WAIT_SLICE_S))
            if ctx.broker.stopping:
                return None
            waiter.clear()
            if not pending.done:
                await ctx.blocking(kg.expire, group_id)
    return pending.result


def _client_host(ctx: Context) -> str:
    return "/" + ctx.client.rsplit(":", 1)[0].strip("[]")


# --- JoinGroup, SyncGroup, Heartbeat, LeaveGroup ------------------------------------------------


@handles(JOIN_GROUP)
async def join_group(ctx: Context, header: RequestHeader, body: Any) -> Any:
    cls = _response(header)
    group_id = str(body.group_id)
    error = _group_error(group_id)
    if error is not None:
        return _build(cls, error_code=error, generation_id=-1, member_id=body.member_id, leader="",
                      protocol_name=None, members=())
    req = JoinRequest(
        member_id=body.member_id, protocol_type=body.protocol_type,
        protocols=[(p.name, bytes(p.metadata)) for p in body.protocols],
        session_timeout_ms=_ms(body.session_timeout),
        rebalance_timeout_ms=_ms(getattr(body, "rebalance_timeout", -1)),
        group_instance_id=getattr(body, "group_instance_id", None),
        client_id=header.client_id or "", client_host=_client_host(ctx),
        require_known_member_id=header.api_version >= 4,
    )
    kg = kafka_groups(ctx)
    result = await _settle(ctx, kg, group_id, await ctx.blocking(kg.join, group_id, req))
    if result is None:
        return _build(cls, error_code=GroupError.REBALANCE_IN_PROGRESS, generation_id=-1,
                      member_id=body.member_id, leader="", protocol_name=None, members=())
    if result.message:  # JoinGroup has no error message field: say why in the log
        log.info("JoinGroup from %s for group %r answered %s: %s", ctx.client, group_id,
                 result.error.name, result.message)
    member_cls = _item(cls, "members")
    members = tuple(_build(member_cls, member_id=m.member_id, group_instance_id=m.group_instance_id,
                           metadata=m.metadata) for m in result.members)
    return _build(cls, error_code=result.error, generation_id=result.generation,
                  protocol_type=result.protocol_type, protocol_name=result.protocol_name,
                  leader=result.leader, skip_assignment=False, member_id=result.member_id,
                  members=members)


@handles(SYNC_GROUP)
async def sync_group(ctx: Context, header: RequestHeader, body: Any) -> Any:
    cls = _response(header)
    group_id = str(body.group_id)
    error = _group_error(group_id)
    if error is not None:
        return _build(cls, error_code=error, assignment=b"")
    req = SyncRequest(
        member_id=body.member_id, generation=int(body.generation_id),
        group_instance_id=getattr(body, "group_instance_id", None),
        protocol_type=getattr(body, "protocol_type", None),
        protocol_name=getattr(body, "protocol_name", None),
        assignments={a.member_id: bytes(a.assignment) for a in body.assignments},
    )
    kg = kafka_groups(ctx)
    result = await _settle(ctx, kg, group_id, await ctx.blocking(kg.sync, group_id, req))
    if result is None:
        return _build(cls, error_code=GroupError.REBALANCE_IN_PROGRESS, assignment=b"")
    return _build(cls, error_code=result.error, assignment=result.assignment,
                  protocol_type=result.protocol_type, protocol_name=result.protocol_name)


@handles(HEARTBEAT)
async def heartbeat(ctx: Context, header: RequestHeader, body: Any) -> Any:
    cls = _response(header)
    group_id = str(body.group_id)
    error = _group_error(group_id)
    if error is None:
        kg = kafka_groups(ctx)
        error = await ctx.blocking(kg.heartbeat, group_id, body.member_id, int(body.generation_id),
                                   getattr(body, "group_instance_id", None))
    return _build(cls, error_code=error)


@handles(LEAVE_GROUP)
async def leave_group(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """v0-2 name one member; v3+ a batch, each answered on its own."""
    cls = _response(header)
    group_id = str(body.group_id)
    batched = hasattr(body, "members")
    wanted = [(m.member_id, m.group_instance_id) for m in body.members] if batched \
        else [(body.member_id, None)]
    error = _group_error(group_id)
    if error is not None:
        return _build(cls, error_code=error, members=())
    kg = kafka_groups(ctx)
    codes = await ctx.blocking(kg.leave, group_id, wanted)
    if not batched:
        return _build(cls, error_code=codes[0])
    member_cls = _item(cls, "members")
    members = tuple(_build(member_cls, member_id=mid, group_instance_id=iid, error_code=code)
                    for (mid, iid), code in zip(wanted, codes, strict=True))
    return _build(cls, error_code=GroupError.NONE, members=members)


# --- offsets ---------------------------------------------------------------------------------------


@handles(OFFSET_COMMIT)
async def offset_commit(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Fenced by member id and generation (-1 and no member: a commit from outside the group).

    Partitions of unknown topics, negative offsets and metadata past 4 KiB are
    refused one by one; the rest commit together, through the one fenced
    ``commit_offsets``.
    """
    cls = _response(header)
    group_id = str(body.group_id)
    generation = int(getattr(body, "generation_id_or_member_epoch", getattr(body, "generation_id", -1)))
    member_id = body.member_id
    instance_id = getattr(body, "group_instance_id", None)
    codes: dict[tuple[str, int], int] = {}
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for topic in body.topics:
        for p in topic.partitions:
            key = (str(topic.name), int(p.partition_index))
            codes[key] = _commit_check(ctx, key, int(p.committed_offset), p.committed_metadata)
            if codes[key] == GroupError.NONE:
                offsets[TopicPartition(*key)] = OffsetAndMetadata(int(p.committed_offset),
                                                                  p.committed_metadata or "")
    error = _group_error(group_id)
    if error is None and offsets:
        kg = kafka_groups(ctx)
        error = await ctx.blocking(kg.commit, group_id, member_id, generation, instance_id, offsets)
        if not error and not await wait_catalog_replicated(ctx.broker):
            # committed here, not known applied by the in-sync followers (docs/replication.md, 5)
            codes = {k: (REQUEST_TIMED_OUT if c == GroupError.NONE else c) for k, c in codes.items()}
    if error:
        codes = {k: (error if c == GroupError.NONE else c) for k, c in codes.items()}
    return _build(cls, topics=_topics_of(cls, codes))


def _commit_check(ctx: Context, key: tuple[str, int], offset: int, metadata: str | None) -> int:
    topic, partition = key
    cfg = ctx.log.find_topic(topic)
    if cfg is None or not 0 <= partition < cfg.partitions:
        return GroupError.UNKNOWN_TOPIC_OR_PARTITION
    if offset < 0:
        return INVALID_REQUEST
    if metadata is not None and len(metadata.encode("utf-8", "surrogatepass")) > OFFSET_METADATA_BYTES_MAX:
        return OFFSET_METADATA_TOO_LARGE
    return GroupError.NONE


def _topics_of(cls: type[Any], codes: dict[tuple[str, int], int]) -> tuple[Any, ...]:
    """Per-partition error codes as the response's ``topics`` (OffsetCommit, OffsetDelete)."""
    topic_cls = _item(cls, "topics")
    part_cls = _item(topic_cls, "partitions")
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), code in codes.items():
        by_topic.setdefault(topic, []).append(_build(part_cls, partition_index=partition, error_code=code))
    return tuple(_build(topic_cls, name=name, partitions=tuple(parts)) for name, parts in by_topic.items())


@handles(OFFSET_FETCH)
async def offset_fetch(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """v1-7 one group (v2+: topics null = every committed partition); v8+ several groups."""
    cls = _response(header)
    kg = kafka_groups(ctx)
    if hasattr(body, "groups"):
        group_cls = _item(cls, "groups")
        groups = []
        for g in body.groups:
            wanted = None if g.topics is None else [(t.name, t.partition_indexes) for t in g.topics]
            error, topics = await _fetch_group(ctx, kg, str(g.group_id), wanted, group_cls)
            groups.append(_build(group_cls, group_id=g.group_id, topics=topics, error_code=error))
        return _build(cls, groups=tuple(groups))
    wanted = None if body.topics is None else [(t.name, t.partition_indexes) for t in body.topics]
    error, topics = await _fetch_group(ctx, kg, str(body.group_id), wanted, cls)
    return _build(cls, topics=topics, error_code=error)


async def _fetch_group(ctx: Context, kg: KafkaGroups, group_id: str,
                       wanted: list[tuple[str, tuple[int, ...]]] | None,
                       holder: type[Any]) -> tuple[int, tuple[Any, ...]]:
    """One group's committed offsets as ``holder``'s ``topics`` (-1 where there is none)."""
    error = _group_error(group_id)
    if error is not None:
        return error, ()
    tps = None if wanted is None else [TopicPartition(str(t), int(p)) for t, parts in wanted for p in parts]
    found = await ctx.blocking(kg.committed, group_id, tps)
    topic_cls = _item(holder, "topics")
    part_cls = _item(topic_cls, "partitions")
    by_topic: dict[str, list[Any]] = {}
    for tp, om in found.items():
        by_topic.setdefault(tp.topic, []).append(_build(
            part_cls, partition_index=tp.partition, committed_offset=-1 if om is None else om.offset,
            committed_leader_epoch=-1, metadata="" if om is None else om.metadata, error_code=0))
    return GroupError.NONE, tuple(_build(topic_cls, name=name, partitions=tuple(parts))
                                  for name, parts in by_topic.items())


# --- administration ------------------------------------------------------------------------------


@handles(LIST_GROUPS)
async def list_groups(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Every group with members or committed offsets; v4+ filter by state, v5+ by type."""
    cls = _response(header)
    kg = kafka_groups(ctx)
    listed = await ctx.blocking(kg.list)
    states = {s.lower() for s in getattr(body, "states_filter", ())}
    types = {t.lower() for t in getattr(body, "types_filter", ())}
    if types and "classic" not in types:
        listed = []
    entry = _item(cls, "groups")
    groups = tuple(_build(entry, group_id=g.group_id, protocol_type=g.protocol_type, group_state=g.state,
                          group_type="classic")
                   for g in listed if not states or g.state.lower() in states)
    return _build(cls, error_code=GroupError.NONE, groups=groups)


@handles(DESCRIBE_GROUPS)
async def describe_groups(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Each group's state, protocol and members with their metadata and assignment bytes;
    an unknown group is "Dead" (as Kafka answers), an invalid id INVALID_GROUP_ID."""
    cls = _response(header)
    kg = kafka_groups(ctx)
    group_cls = _item(cls, "groups")
    member_cls = _item(group_cls, "members")
    out = []
    for raw in body.groups:
        group_id = str(raw)
        error = _group_error(group_id)
        if error is not None:
            out.append(_build(group_cls, error_code=error, group_id=raw, group_state="Dead", protocol_type="",
                              protocol_data="", members=(), authorized_operations=NO_AUTHORIZED_OPERATIONS))
            continue
        desc = await ctx.blocking(kg.describe, group_id)
        members = tuple(_build(member_cls, member_id=m.member_id, group_instance_id=m.group_instance_id,
                               client_id=m.client_id, client_host=m.client_host or "/embedded",
                               member_metadata=m.metadata, member_assignment=m.assignment_bytes)
                        for m in desc.members)
        out.append(_build(group_cls, error_code=GroupError.NONE, group_id=raw, group_state=desc.state,
                          protocol_type=desc.protocol_type, protocol_data=desc.protocol, members=members,
                          authorized_operations=NO_AUTHORIZED_OPERATIONS))
    return _build(cls, groups=tuple(out))


@handles(DELETE_GROUPS)
async def delete_groups(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Each group's offsets forgotten; NON_EMPTY_GROUP while it has members."""
    cls = _response(header)
    kg = kafka_groups(ctx)
    result_cls = _item(cls, "results")
    results = []
    for raw in body.groups_names:
        group_id = str(raw)
        error = _group_error(group_id)
        if error is None:
            error = await ctx.blocking(kg.delete, group_id)
        results.append(_build(result_cls, group_id=raw, error_code=error))
    return _build(cls, results=tuple(results))


@handles(OFFSET_DELETE)
async def offset_delete(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Offsets of some partitions forgotten, unless a member of the group reads their topic."""
    cls = _response(header)
    group_id = str(body.group_id)
    error = _group_error(group_id)
    if error is not None:
        return _build(cls, error_code=error, topics=())
    codes: dict[tuple[str, int], int] = {}
    wanted: list[TopicPartition] = []
    for topic in body.topics:
        for p in topic.partitions:
            key = (str(topic.name), int(p.partition_index))
            cfg = ctx.log.find_topic(key[0])
            if cfg is None or not 0 <= key[1] < cfg.partitions:
                codes[key] = GroupError.UNKNOWN_TOPIC_OR_PARTITION
            else:
                codes[key] = GroupError.NONE
                wanted.append(TopicPartition(*key))
    kg = kafka_groups(ctx)
    top, per = await ctx.blocking(kg.delete_offsets, group_id, wanted)
    if top:
        return _build(cls, error_code=top, topics=())
    for tp, code in per.items():
        codes[(tp.topic, tp.partition)] = code
    return _build(cls, error_code=GroupError.NONE, topics=_topics_of(cls, codes))
