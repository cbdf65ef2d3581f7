"""Group administration over a store: list, describe, offsets, lag, reset, delete."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..catalog import cursors
from ..errors import GroupNotEmptyError, InvalidArgumentError
from ..records import OffsetAndMetadata, TopicPartition
from ..validation import check_group_id
from .coordinator import GroupDescription

if TYPE_CHECKING:
    from ..store import Store


def _expire(store: Store, group: str | None = None) -> None:
    """Run the coordinator's expiry now, so a member nobody polls beside is still removed."""
    coordinator = store._coordinator()
    names = [group] if group is not None else coordinator.active_groups()
    for name in names:
        g = coordinator.find(name)
        if g is not None:
            g.expire()


def list_groups(store: Store) -> list[str]:
    """Groups with committed offsets or active members."""
    _expire(store)
    return sorted(set(cursors.groups(store._catalog)) | set(store._coordinator().active_groups()))


def group_offsets(store: Store, group: str) -> dict[TopicPartition, int]:
    check_group_id(group)
    return {tp: om.offset for tp, om in cursors.read_group(store._catalog, group, store._configs).items()}


def lag(store: Store, group: str) -> dict[TopicPartition, int]:
    """Per partition the group consumes: end offset - committed offset.

    Partitions of topics the group has committed to or subscribes to; a
    partition with no commit counts from its log start. A committed offset
    below the log start (retention) counts from the log start too.
    """
    _expire(store, group)
    committed = group_offsets(store, group)
    topics = {tp.topic for tp in committed}
    g = store._coordinator().find(group)
    if g is not None:
        desc = g.describe()
        topics |= {t for m in desc.members for t in m.topics}
    out: dict[TopicPartition, int] = {}
    for topic in sorted(topics):
        try:
            cfg = store.topic(topic)
        except KeyError:
            continue
        for p in range(cfg.partitions):
            tp = TopicPartition(topic, p)
            start, end = store.offsets(topic, p)
            out[tp] = end - max(committed.get(tp, start), start)
    return out


def describe_group(store: Store, group: str) -> GroupDescription:
    _expire(store, group)
    g = store._coordinator().find(group)
    if g is None:
        return GroupDescription(group_id=group, state="Empty", generation=0, protocol="", members=[])
    return g.describe()


def _require_empty(store: Store, group: str) -> None:
    _expire(store, group)
    g = store._coordinator().find(group)
    if g is not None and g.members:
        raise GroupNotEmptyError(group, len(g.members))


ResetTarget = str | int | Mapping[TopicPartition, int] | Mapping[tuple[str, int], int]
RESET_POLICIES = ("earliest", "latest")


def reset_group_offsets(
    store: Store, group: str, to: ResetTarget, topics: list[str] | None = None,
) -> dict[TopicPartition, int]:
    """Set the group's offsets: ``"earliest"``, ``"latest"``, a timestamp (ms) or explicit offsets.

    Explicit offsets are keyed by ``TopicPartition`` or plain ``(topic,
    partition)`` tuples. The others apply to every partition of ``topics``
    (default: the topics the group has committed offsets for). The group must
    have no active members. A target that means nothing is refused even when
    there is nothing to reset.
    """
    check_group_id(group)
    if isinstance(to, Mapping):
        target = _explicit_offsets(to)
    else:
        _check_target(to)
        names = _topic_names(topics) if topics is not None else sorted(
            {tp.topic for tp in group_offsets(store, group)}
        )
        target = {}
        for name in names:
            for p in range(store.topic(name).partitions):
                target[TopicPartition(name, p)] = _resolve(store, name, p, to)
    _require_empty(store, group)
    for tp, off in target.items():
        start, end = store.offsets(tp.topic, tp.partition)
        if not start <= off <= end:
            raise InvalidArgumentError(
                f"offset {off} for {tp.topic}/{tp.partition} is outside {start}..{end}"
            )
    cursors.commit(store._catalog, group, {tp: OffsetAndMetadata(o) for tp, o in target.items()},
                   time.time_ns() // 1_000_000, store._configs)
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


def _resolve(store: Store, topic: str, partition: int, to: str | int) -> int:
    start, end = store.offsets(topic, partition)
    if to == "earliest":
        return start
    if to == "latest":
        return end
    assert type(to) is int  # _check_target
    found = store.offset_for_time(topic, partition, to)
    return end if found is None else found


def delete_group(store: Store, group: str) -> int:
    """Forget a group's committed offsets; it must have no active members."""
    _require_empty(store, group)
    return cursors.delete_group(store._catalog, group)
