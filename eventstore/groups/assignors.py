"""Partition assignors: pure functions from members and partitions to an assignment.

Names follow Kafka's ``partition.assignment.strategy``: ``range``,
``roundrobin`` and ``cooperative-sticky``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

from ..records import TopicPartition

Subscriptions = Mapping[str, frozenset[str]]  # member id -> topics
Partitions = Mapping[str, int]  # topic -> partition count
Assignment = dict[str, set[TopicPartition]]
Assignor = Callable[[Subscriptions, Partitions, Mapping[str, set[TopicPartition]]], Assignment]


def range_assign(subs: Subscriptions, parts: Partitions,
                 current: Mapping[str, set[TopicPartition]]) -> Assignment:
    """Per topic, contiguous ranges of partitions to its subscribers in member order."""
    out: Assignment = {m: set() for m in subs}
    for topic in sorted({t for ts in subs.values() for t in ts}):
        members = sorted(m for m, ts in subs.items() if topic in ts)
        count = parts.get(topic, 0)
        per, extra = divmod(count, len(members))
        start = 0
        for i, m in enumerate(members):
            n = per + (1 if i < extra else 0)
            out[m].update(TopicPartition(topic, p) for p in range(start, start + n))
            start += n
    return out


def roundrobin_assign(subs: Subscriptions, parts: Partitions,
                      current: Mapping[str, set[TopicPartition]]) -> Assignment:
    """All partitions, sorted, dealt one by one to the members subscribed to them."""
    out: Assignment = {m: set() for m in subs}
    members = sorted(subs)
    if not members:
        return out
    i = 0
    for topic in sorted({t for ts in subs.values() for t in ts}):
        for p in range(parts.get(topic, 0)):
            for _ in range(len(members)):  # bounded: finds a subscriber within one lap
                m = members[i % len(members)]
                i += 1
                if topic in subs[m]:
                    out[m].add(TopicPartition(topic, p))
                    break
    return out


def sticky_assign(subs: Subscriptions, parts: Partitions,
                  current: Mapping[str, set[TopicPartition]]) -> Assignment:
    """Balanced, keeping partitions where they are as far as balance allows.

    With P partitions and N members, ``P % N`` members may hold ``P // N + 1``
    and the others ``P // N``: owners keep what they can within that, the rest
    goes to the least loaded subscribers.
    """
    out: Assignment = {m: set() for m in subs}
    if not subs:
        return out
    by_topic: dict[str, list[str]] = defaultdict(list)
    for m in sorted(subs):
        for t in subs[m]:
            by_topic[t].append(m)
    all_tps = [TopicPartition(t, p) for t in sorted(by_topic) for p in range(parts.get(t, 0))]
    base, extra = divmod(len(all_tps), len(subs))
    owner_of = {tp: m for m, tps in current.items() if m in out for tp in tps}
    kept: list[TopicPartition] = []
    unassigned: list[TopicPartition] = []
    for tp in all_tps:
        owner = owner_of.get(tp)
        if owner is not None and tp.topic in subs[owner] and len(out[owner]) < base:
            out[owner].add(tp)
            kept.append(tp)
        else:
            unassigned.append(tp)
    still: list[TopicPartition] = []
    for tp in unassigned:  # up to ``extra`` owners keep one more
        owner = owner_of.get(tp)
        if (owner is not None and tp.topic in subs[owner] and extra > 0
                and len(out[owner]) == base):
            out[owner].add(tp)
            extra -= 1
        else:
            still.append(tp)
    for tp in still:
        target = min(by_topic[tp.topic], key=lambda m: (len(out[m]), m))
        out[target].add(tp)
    return out


ASSIGNORS: dict[str, Assignor] = {
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "cooperative-sticky": sticky_assign,
}
