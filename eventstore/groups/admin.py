"""Group administration: list, describe, offsets, lag, reset, delete (``Store``'s group methods,
through ``GroupCoordinator``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..catalog import cursors
from ..errors import GroupNotEmptyError, InvalidArgumentError
from ..records import OffsetAndMetadata, TopicPartition
from ..validation import check_group_id
from .membership import GroupDescription

if TYPE_CHECKING:
    from ..log import Log
    from .coordinator import GroupCoordinator


def list_groups(coordinator: GroupCoordinator) -> list[str]:
    """Groups with committed offsets or active members."""
    coordinator.expire()
    return sorted(set(cursors.groups(coordinator.log.catalog)) | set(coordinator.active_groups()))


def group_offsets(coordinator: GroupCoordinator, group: str) -> dict[TopicPartition, int]:
    check_group_id(group)
    log = coordinator.log
    return {tp: om.offset for tp, om in cursors.read_group(log.catalog, group, log.topic_configs()).items()}


def lag(coordinator: GroupCoordinator, group: str) -> dict[TopicPartition, int]:
    """Per partition the group consumes: end offset - committed offset.

    Partitions of topics the group has committed to or subscribes to; a
    partition with no commit counts from its log start. A committed offset
    below the log start (retention) counts from the log start too.
    """
    coordinator.expire(group)
    committed = group_offsets(coordinator, group)
    topics = {tp.topic for tp in committed}
    log = coordinator.log
    g = coordinator.find(group)
    if g is not None:
        desc = g.describe()
        topics |= {t for m in desc.members for t in m.topics}
    out: dict[TopicPartition, int] = {}
    for topic in sorted(topics):
        try:
            cfg = log.topic(topic)
        except KeyError:
            continue
        for p in range(cfg.partitions):
            tp = TopicPartition(topic, p)
            start, end = log.offsets(topic, p)
            out[tp] = end - max(committed.get(tp, start), start)
    return out


def describe_group(coordinator: GroupCoordinator, group: str) -> GroupDescription:
    coordinator.expire(group)
    g = coordinator.find(group)
    if g is None:
        return GroupDescription(group_id=group, state="Empty", generation=0, protocol="", members=[])
    return g.describe()


def _require_empty(coordinator: GroupCoordinator, group: str) -> None:
    coordinator.expire(group)
    g = coordinator.find(group)
    if g is not None and g.members:
        raise GroupNotEmptyError(group, len(g.members))


ResetTarget = str | int | Mapping[TopicPartition, int] | Mapping[tuple[str, int], int]
RESET_POLICIES = ("earliest", "latest")


def reset_group_offsets(
    coordinator: GroupCoordinator, group: str, to: ResetTarget, topics: list[str] | None = None,
) -> dict[TopicPartition, int]:
    """Set the group's offsets: ``"earliest"``, ``"latest"``, a timestamp (ms) or explicit offsets.

    Explicit offsets are keyed by ``TopicPartition`` or plain ``(topic,
    partition)`` tuples. The others apply to every partition of ``topics``
    (default: the topics the group has committed offsets for). The group must
    have no active members. A target that means nothing is refused even when
    there is nothing to reset.
    """
    check_group_id(group)
    log = coordinator.log
    if isinstance(to, Mapping):
        target = _explicit_offsets(to)
    else:
        _check_target(to)
        names = _topic_names(topics) if topics is not None else sorted(
            {tp.topic for tp in group_offsets(coordinator, group)}
        )
        target = {}
        for name in names:
            for p in range(log.topic(name).partitions):
                target[TopicPartition(name, p)] = _resolve(log, name, p, to)
    _require_empty(coordinator, group)
    for tp, off in target.items():
        start, end = log.offsets(tp.topic, tp.partition)
        if not start <= off <= end:
            raise InvalidArgumentError(
                f"offset {off} for {tp.topic}/{tp.partition} is outside {start}..{end}"
            )
    offsets = {tp: OffsetAndMetadata(o) for tp, o in target.items()}
    coordinator.commit_offsets(group, None, -1, offsets)  # no member: the group is empty
    return target


def _check_target(to: object) -> None:
    if type(to) is str and to in RESET_POLICIES:
        return
    if type(to) is int and to >= 0:
        return
    raise InvalidArgumentError(
        "reset target must be 'earliest', 'latest', a timestamp in ms (an int ≥ 0) or a mapping "
        f"of partitions to offsets, got {to!r}"
    )


def _explicit_offsets(to: Mapping[Any, object]) -> dict[TopicPartition, int]:
    """``{TopicPartition | (topic, partition): offset}`` as ``{TopicPartition: offset}``, checked."""
    out: dict[TopicPartition, int] = {}
    for key, offset in to.items():  # bounded by the caller's mapping
        if isinstance(key, TopicPartition):
            tp = key
        elif isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str):
            tp = TopicPartition(key[0], key[1])  # the partition is checked with the topic
        else:
            raise InvalidArgumentError(
                f"reset offsets must be keyed by TopicPartition or (topic, partition), got {key!r}"
            )
        if type(offset) is not int or offset < 0:
            raise InvalidArgumentError(
                f"offset for {tp.topic}/{tp.partition} must be an int ≥ 0, got {offset!r}"
            )
        out[tp] = offset
    return out


def _topic_names(topics: object) -> list[str]:
    if isinstance(topics, (str, bytes)) or not isinstance(topics, (list, tuple, set, frozenset)) \
            or not all(isinstance(t, str) for t in topics):
        raise InvalidArgumentError(f"topics must be a list of topic names, got {topics!r}")
    return sorted(topics)


def _resolve(log: Log, topic: str, partition: int, to: str | int) -> int:
    start, end = log.offsets(topic, partition)
    if to == "earliest":
        return start
    if to == "latest":
        return end
    assert type(to) is int  # _check_target
    found = log.offset_for_time(topic, partition, to)
    return end if found is None else found


def delete_group(coordinator: GroupCoordinator, group: str) -> int:
    """Forget a group's committed offsets; it must have no active members."""
    _require_empty(coordinator, group)
    return cursors.delete_group(coordinator.log.catalog, group)
