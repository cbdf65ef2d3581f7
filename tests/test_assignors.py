"""The partition assignors as pure functions: coverage, balance and stickiness.

An assignor maps (member -> subscribed topics, topic -> partition count,
member -> currently owned partitions) to member -> assigned partitions. Every
partition of a subscribed topic must go to exactly one member subscribed to
its topic, and every member must appear in the result.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eventstore import TopicPartition
from eventstore.groups.assignors import (
    ASSIGNORS,
    range_assign,
    roundrobin_assign,
    sticky_assign,
)

TP = TopicPartition
NAMES = ["a", "b", "c", "d", "e", "f"]


def tps(topic: str, *parts: int) -> set[TopicPartition]:
    return {TP(topic, p) for p in parts}


def all_partitions(subs: dict[str, frozenset[str]], parts: dict[str, int]) -> set[TopicPartition]:
    topics = {t for ts in subs.values() for t in ts}
    return {TP(t, p) for t in topics for p in range(parts.get(t, 0))}


def assert_valid(subs: dict[str, frozenset[str]], parts: dict[str, int],
                 out: dict[str, set[TopicPartition]]) -> None:
    """Every member present; every partition exactly once, to a member subscribed to its topic."""
    assert set(out) == set(subs)
    counts = Counter(tp for assigned in out.values() for tp in assigned)
    assert set(counts) == all_partitions(subs, parts)
    assert all(n == 1 for n in counts.values()), counts
    for member, assigned in out.items():
        assert all(tp.topic in subs[member] for tp in assigned), (member, assigned)


def spread(out: dict[str, set[TopicPartition]]) -> int:
    sizes = [len(v) for v in out.values()]
    return max(sizes) - min(sizes) if sizes else 0


# --- strategies ---------------------------------------------------------------------------------

partition_counts = st.dictionaries(st.sampled_from(["t0", "t1", "t2"]), st.integers(0, 9), min_size=1)


@st.composite
def same_subscriptions(draw: st.DrawFn) -> tuple[dict[str, frozenset[str]], dict[str, int]]:
    parts = draw(partition_counts)
    members = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    topics = frozenset(parts)
    return {m: topics for m in members}, parts


@st.composite
def mixed_subscriptions(draw: st.DrawFn) -> tuple[dict[str, frozenset[str]], dict[str, int]]:
    parts = draw(partition_counts)
    members = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    topics = [*sorted(parts), "missing"]  # a topic nobody created: no partitions
    subs = {m: frozenset(draw(st.sets(st.sampled_from(topics), min_size=1))) for m in members}
    return subs, parts


@st.composite
def current_owners(draw: st.DrawFn, subs: dict[str, frozenset[str]],
                   parts: dict[str, int]) -> dict[str, set[TopicPartition]]:
    """An arbitrary previous assignment, possibly naming members that have left since."""
    owners = [*sorted(subs), "gone"]
    current: dict[str, set[TopicPartition]] = {}
    for tp in sorted(all_partitions(subs, parts)):
        owner = draw(st.sampled_from([*owners, None]))
        if owner is not None:
            current.setdefault(owner, set()).add(tp)
    return current


# --- every assignor -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@given(case=mixed_subscriptions(), data=st.data())
def test_every_partition_assigned_exactly_once(name: str, case: tuple, data: st.DataObject) -> None:
    subs, parts = case
    current = data.draw(current_owners(subs, parts))
    out = ASSIGNORS[name](subs, parts, current)
    assert_valid(subs, parts, out)


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
def test_no_members_and_no_partitions(name: str) -> None:
    assign = ASSIGNORS[name]
    assert assign({}, {"t": 3}, {}) == {}
    assert assign({"a": frozenset({"t"})}, {"t": 0}, {}) == {"a": set()}
    assert assign({"a": frozenset({"nope"})}, {"t": 3}, {}) == {"a": set()}


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@given(case=same_subscriptions())
def test_assignment_is_deterministic(name: str, case: tuple) -> None:
    subs, parts = case
    assign = ASSIGNORS[name]
    reordered = dict(reversed(list(subs.items())))
    assert assign(subs, parts, {}) == assign(reordered, parts, {})


def test_single_member_gets_everything() -> None:
    subs = {"a": frozenset({"t", "u"})}
    parts = {"t": 3, "u": 2}
    for assign in ASSIGNORS.values():
        assert assign(subs, parts, {}) == {"a": tps("t", 0, 1, 2) | tps("u", 0, 1)}


# --- range ----------------------------------------------------------------------------------------


def test_range_gives_contiguous_ranges_first_members_get_the_extra() -> None:
    subs = {"a": frozenset({"t"}), "b": frozenset({"t"}), "c": frozenset({"t"})}
    out = range_assign(subs, {"t": 7}, {})
    assert out == {"a": tps("t", 0, 1, 2), "b": tps("t", 3, 4), "c": tps("t", 5, 6)}


def test_range_is_per_topic() -> None:
    subs = {"a": frozenset({"t", "u"}), "b": frozenset({"t", "u"})}
    out = range_assign(subs, {"t": 1, "u": 1}, {})
    # as in Kafka: each topic is split on its own, so "a" gets partition 0 of both
    assert out == {"a": tps("t", 0) | tps("u", 0), "b": set()}


def test_range_only_to_subscribers_of_the_topic() -> None:
    subs = {"a": frozenset({"t"}), "b": frozenset({"t", "u"}), "c": frozenset({"u"})}
    out = range_assign(subs, {"t": 4, "u": 2}, {})
    assert out == {"a": tps("t", 0, 1), "b": tps("t", 2, 3) | tps("u", 0), "c": tps("u", 1)}


@given(case=same_subscriptions())
def test_range_balanced_per_topic(case: tuple) -> None:
    subs, parts = case
    out = range_assign(subs, parts, {})
    for topic in parts:
        per_member = [sum(1 for tp in out[m] if tp.topic == topic) for m in subs]
        assert max(per_member) - min(per_member) <= 1
        for m in subs:  # contiguous
            mine = sorted(tp.partition for tp in out[m] if tp.topic == topic)
            assert mine == list(range(mine[0], mine[0] + len(mine))) if mine else True


# --- roundrobin -----------------------------------------------------------------------------------


def test_roundrobin_deals_across_topics() -> None:
    subs = {"a": frozenset({"t", "u"}), "b": frozenset({"t", "u"})}
    out = roundrobin_assign(subs, {"t": 1, "u": 1}, {})
    assert out == {"a": tps("t", 0), "b": tps("u", 0)}
    out = roundrobin_assign(subs, {"t": 3, "u": 2}, {})
    assert out == {"a": tps("t", 0, 2) | tps("u", 1), "b": tps("t", 1) | tps("u", 0)}


@given(case=same_subscriptions())
def test_roundrobin_balanced_overall(case: tuple) -> None:
    subs, parts = case
    out = roundrobin_assign(subs, parts, {})
    assert spread(out) <= 1


# --- cooperative-sticky ---------------------------------------------------------------------------


@given(case=same_subscriptions())
def test_sticky_balanced_from_scratch(case: tuple) -> None:
    subs, parts = case
    out = sticky_assign(subs, parts, {})
    assert_valid(subs, parts, out)
    assert spread(out) <= 1


@given(case=same_subscriptions())
def test_sticky_keeps_a_balanced_assignment_as_is(case: tuple) -> None:
    subs, parts = case
    first = sticky_assign(subs, parts, {})
    assert sticky_assign(subs, parts, first) == first
    # also from an assignment made by another (balanced) assignor
    other = roundrobin_assign(subs, parts, {})
    assert sticky_assign(subs, parts, other) == other


@given(case=same_subscriptions(), data=st.data())
def test_sticky_member_leaves_others_keep_everything(case: tuple, data: st.DataObject) -> None:
    subs, parts = case
    if len(subs) < 2:
        return
    before = sticky_assign(subs, parts, {})
    gone = data.draw(st.sampled_from(sorted(subs)))
    remaining = {m: t for m, t in subs.items() if m != gone}
    after = sticky_assign(remaining, parts, before)
    assert_valid(remaining, parts, after)
    for m in remaining:
        assert before[m] <= after[m], "a surviving member lost a partition it owned"
    assert spread(after) <= 1


@given(case=same_subscriptions(), data=st.data())
def test_sticky_member_joins_old_members_only_give_up(case: tuple, data: st.DataObject) -> None:
    subs, parts = case
    newcomer = data.draw(st.sampled_from([n for n in NAMES if n not in subs] or ["z"]))
    before = sticky_assign(subs, parts, {})
    grown = {**subs, newcomer: next(iter(subs.values()))}
    after = sticky_assign(grown, parts, before)
    assert_valid(grown, parts, after)
    for m in subs:
        assert after[m] <= before[m], "an existing member was handed another's partition"


def test_sticky_newcomer_gets_a_share() -> None:
    subs = {m: frozenset({"t"}) for m in ("a", "b", "c")}
    current = {"a": tps("t", 0, 1), "b": tps("t", 2, 3)}
    out = sticky_assign(subs, {"t": 4}, current)
    assert_valid(subs, {"t": 4}, out)
    assert spread(out) <= 1, out


@given(case=same_subscriptions(), data=st.data())
@example(case=({"a": frozenset({"t"}), "b": frozenset({"t"}), "c": frozenset({"t"})}, {"t": 4}),
         data=None)
def test_sticky_balanced_from_any_prior_assignment(case: tuple, data: st.DataObject | None) -> None:
    subs, parts = case
    if data is None:
        current = {"a": tps("t", 0, 1), "b": tps("t", 2, 3)}
    else:
        current = data.draw(current_owners(subs, parts))
    out = sticky_assign(subs, parts, current)
    assert_valid(subs, parts, out)
    assert spread(out) <= 1, (current, out)
