"""Kafka's group protocol in the store's one coordinator, without a network.

JoinGroup barrier, protocol choice, SyncGroup hand-over, heartbeats, sessions,
MEMBER_ID_REQUIRED, static membership, LeaveGroup, fenced commits and the
administration calls, on a fake clock (``KafkaGroups(coordinator, clock)``). The
Hypothesis state machine at the end runs joins, syncs, heartbeats, leaves, commits
and clock ticks in random order and checks, after every step, that a stable
generation's assignment gives every partition to exactly one member and that
generations only increase.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import eventstore
from eventstore import InvalidArgumentError, OffsetAndMetadata, TopicPartition
from eventstore.groups.consumer_protocol import (
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from eventstore.groups.kafka import (
    GroupError,
    JoinRequest,
    JoinResult,
    Pending,
    SyncRequest,
    SyncResult,
)
from eventstore.groups.kafka_groups import KafkaGroups

TP = TopicPartition
E = GroupError


class Clock:
    """Monotonic seconds that move only when a test says so (starting at the real clock, so
    that calls which read the real one never see this one behind it)."""

    def __init__(self) -> None:
        import time

        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kg(store: eventstore.Store, clock: Clock) -> KafkaGroups:
    store.create_topic("t", partitions=4)
    return KafkaGroups(store.groups, clock)


def sub(*topics: str) -> bytes:
    return encode_subscription(topics)


def jreq(member_id: str = "", *, protocols: list[tuple[str, bytes]] | None = None, session_ms: int = 10_000,
         rebalance_ms: int = 30_000, instance: str | None = None, required: bool = False,
         client: str = "c", protocol_type: str = "consumer") -> JoinRequest:
    return JoinRequest(member_id=member_id, protocol_type=protocol_type,
                       protocols=protocols if protocols is not None else [("range", sub("t"))],
                       session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms,
                       group_instance_id=instance, client_id=client, client_host="/127.0.0.1",
                       require_known_member_id=required)


def done(p: Pending[Any]) -> Any:
    assert p.done, "the group should have answered"
    return p.result


def join_one(kg: KafkaGroups, group: str = "g", **kw: Any) -> JoinResult:
    result: JoinResult = done(kg.join(group, jreq(**kw)))
    assert result.error == E.NONE, result
    return result


def assign_all(kg: KafkaGroups, group: str, leader: JoinResult,
               parts: dict[str, list[TopicPartition]]) -> SyncResult:
    """The leader's SyncGroup with the given assignment."""
    req = SyncRequest(leader.member_id, leader.generation,
                      assignments={m: encode_assignment(tps) for m, tps in parts.items()})
    result: SyncResult = done(kg.sync(group, req))
    return result


# --- the consumer protocol's bytes ---------------------------------------------------------


def test_consumer_protocol_bytes_round_trip_and_garbage_reads_as_nothing() -> None:
    assert decode_subscription(encode_subscription(["b", "a"])) == ["a", "b"]
    tps = [TP("a", 2), TP("a", 0), TP("b", 1)]
    assert decode_assignment(encode_assignment(tps)) == sorted(tps)
    for garbage in (b"", b"\x00", b"\x00\x00\x7f\xff\xff\xff", b"\x00\x00\x00\x00\x00\x01\x00\x09ab"):
        assert decode_subscription(garbage) == []
        assert decode_assignment(garbage) == []


def test_a_real_clients_consumer_protocol_bytes_decode_both_ways() -> None:
    """kafka-python's own encoder at version 3 (owned partitions, generation, rack) and decoder."""
    from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription

    owned = [ConsumerProtocolSubscription.TopicPartition(topic="x", partitions=[1])]
    raw = ConsumerProtocolSubscription(topics=["y", "x"], user_data=b"ud", owned_partitions=owned,
                                       generation_id=3, rack_id=None, version=3).encode()
    assert decode_subscription(bytes(raw)) == ["x", "y"]
    parts = [ConsumerProtocolAssignment.TopicPartition(topic="x", partitions=[2, 0])]
    raw = ConsumerProtocolAssignment(assigned_partitions=parts, user_data=None, version=0).encode()
    assert decode_assignment(bytes(raw)) == [TP("x", 0), TP("x", 2)]
    back = ConsumerProtocolAssignment.decode(encode_assignment([TP("a", 1), TP("a", 0)]))
    assert [(p.topic, p.partitions) for p in back.assigned_partitions] == [("a", [0, 1])]


def test_the_group_error_codes_are_kafkas() -> None:
    from kio.schema.errors import ErrorCode

    for code in E:
        assert ErrorCode(code.value).name.upper() == code.name


# --- join and sync -------------------------------------------------------------------------


def test_a_lone_member_joins_leads_and_gets_its_own_assignment(kg: KafkaGroups) -> None:
    r = join_one(kg)
    assert r.leader == r.member_id and r.generation == 1 and r.protocol_name == "range"
    assert [m.member_id for m in r.members] == [r.member_id]
    assert decode_subscription(r.members[0].metadata) == ["t"]
    s = assign_all(kg, "g", r, {r.member_id: [TP("t", p) for p in range(4)]})
    assert s.error == E.NONE and len(decode_assignment(s.assignment)) == 4
    desc = kg.describe("g")
    assert desc.state == "Stable" and desc.protocol_type == "consumer" and desc.protocol == "range"
    [m] = desc.members
    assert m.kind == "kafka" and m.topics == ["t"] and len(m.assignment) == 4
    assert m.client_host == "/127.0.0.1"


def test_member_id_required_round_trip(kg: KafkaGroups) -> None:
    first: JoinResult = done(kg.join("g", jreq(required=True)))
    assert first.error == E.MEMBER_ID_REQUIRED and first.member_id.startswith("c-")
    again = join_one(kg, member_id=first.member_id, required=True)
    assert again.member_id == first.member_id and again.generation == 1


def test_an_unknown_member_id_is_refused(kg: KafkaGroups) -> None:
    join_one(kg)
    r: JoinResult = done(kg.join("g", jreq("nobody")))
    assert r.error == E.UNKNOWN_MEMBER_ID
    assert kg.heartbeat("g", "nobody", 1) == E.UNKNOWN_MEMBER_ID
    assert kg.heartbeat("other", "nobody", 1) == E.UNKNOWN_MEMBER_ID


def test_the_join_barrier_waits_for_every_known_member(kg: KafkaGroups) -> None:
    a = join_one(kg, client="a")
    assign_all(kg, "g", a, {a.member_id: [TP("t", p) for p in range(4)]})
    pb = kg.join("g", jreq(client="b"))
    assert not pb.done  # a must rejoin first
    assert kg.heartbeat("g", a.member_id, a.generation) == E.REBALANCE_IN_PROGRESS
    assert kg.describe("g").state == "PreparingRebalance"
    pa = kg.join("g", jreq(a.member_id))
    ra, rb = done(pa), done(pb)
    assert ra.generation == rb.generation == 2
    assert ra.leader == a.member_id == rb.leader  # the leader stays the leader
    assert {m.member_id for m in ra.members} == {a.member_id, rb.member_id} and rb.members == []
    # the follower's SyncGroup waits for the leader's
    sb = kg.sync("g", SyncRequest(rb.member_id, 2))
    assert not sb.done
    assert kg.describe("g").state == "CompletingRebalance"
    split = {a.member_id: [TP("t", 0), TP("t", 1)], rb.member_id: [TP("t", 2), TP("t", 3)]}
    sa = assign_all(kg, "g", ra, split)
    assert decode_assignment(sa.assignment) == [TP("t", 0), TP("t", 1)]
    assert decode_assignment(done(sb).assignment) == [TP("t", 2), TP("t", 3)]
    assert kg.heartbeat("g", rb.member_id, 2) == E.NONE
    assert kg.heartbeat("g", rb.member_id, 1) == E.ILLEGAL_GENERATION


def test_members_that_do_not_rejoin_in_the_rebalance_timeout_are_removed(kg: KafkaGroups,
                                                                          clock: Clock) -> None:
    a = join_one(kg, client="a", rebalance_ms=5_000)
    assign_all(kg, "g", a, {a.member_id: []})
    pb = kg.join("g", jreq(client="b", rebalance_ms=5_000))
    clock.advance(4.9)
    kg.expire("g")
    assert not pb.done
    deadline = kg.next_deadline("g")
    assert deadline is not None and abs(deadline - (clock.now + 0.1)) < 1e-6
    clock.advance(0.2)
    kg.expire("g")
    rb = done(pb)
    assert rb.error == E.NONE and rb.leader == rb.member_id and rb.generation == 2
    assert [m.member_id for m in kg.describe("g").members] == [rb.member_id]
    assert kg.heartbeat("g", a.member_id, 1) == E.UNKNOWN_MEMBER_ID


def test_session_expiry_removes_a_member_and_rebalances(kg: KafkaGroups, clock: Clock) -> None:
    a = join_one(kg, client="a", session_ms=1_000)
    pb = kg.join("g", jreq(client="b", session_ms=1_000))
    ra = done(kg.join("g", jreq(a.member_id, session_ms=1_000)))
    rb = done(pb)
    assign_all(kg, "g", ra, {a.member_id: [TP("t", 0)], rb.member_id: [TP("t", 1)]})
    done(kg.sync("g", SyncRequest(rb.member_id, ra.generation)))
    for _ in range(2):  # a heartbeats, b is silent
        clock.advance(0.4)
        assert kg.heartbeat("g", a.member_id, ra.generation) == E.NONE
    clock.advance(0.4)
    # b's session ran out after 1 s: it is gone and a must rejoin
    assert kg.heartbeat("g", a.member_id, ra.generation) == E.REBALANCE_IN_PROGRESS
    r = done(kg.join("g", jreq(a.member_id, session_ms=1_000)))
    assert r.generation == ra.generation + 1 and [m.member_id for m in r.members] == [a.member_id]


# --- the initial rebalance delay (group.initial.rebalance.delay.ms) -----------------------


@pytest.fixture
def delayed(store: eventstore.Store, clock: Clock) -> KafkaGroups:
    store.create_topic("t", partitions=4)
    return KafkaGroups(store.groups, clock, initial_rebalance_delay_s=3.0)


def tick(kg: KafkaGroups, clock: Clock, seconds: float) -> None:
    clock.advance(seconds)
    kg.expire("g")


def test_the_first_join_of_an_empty_group_waits_the_initial_delay(delayed: KafkaGroups, clock: Clock) -> None:
    first: JoinResult = done(delayed.join("g", jreq(required=True)))
    assert first.error == E.MEMBER_ID_REQUIRED  # a member id given out starts no wait
    pa = delayed.join("g", jreq(first.member_id, required=True))
    assert not pa.done and delayed.describe("g").state == "PreparingRebalance"
    deadline = delayed.next_deadline("g")
    assert deadline is not None and abs(deadline - (clock.now + 3.0)) < 1e-6
    tick(delayed, clock, 2.9)
    assert not pa.done  # every member has joined, and still the join waits
    tick(delayed, clock, 0.1)
    ra = done(pa)
    assert ra.error == E.NONE and ra.generation == 1 and ra.leader == first.member_id


def test_a_member_joining_during_the_wait_starts_another(delayed: KafkaGroups, clock: Clock) -> None:
    pa = delayed.join("g", jreq(client="a"))
    tick(delayed, clock, 1.0)
    pb = delayed.join("g", jreq(client="b"))
    tick(delayed, clock, 2.0)  # the first wait is over, but b joined during it
    assert not pa.done and not pb.done
    deadline = delayed.next_deadline("g")
    assert deadline is not None and abs(deadline - (clock.now + 3.0)) < 1e-6
    tick(delayed, clock, 3.0)
    ra, rb = done(pa), done(pb)
    assert ra.generation == rb.generation == 1  # one generation for both, not one each
    assert ra.leader == ra.member_id and {m.member_id for m in ra.members} == {ra.member_id, rb.member_id}


def test_the_waits_never_pass_the_first_members_rebalance_timeout(delayed: KafkaGroups, clock: Clock) -> None:
    pending = [delayed.join("g", jreq(client="m0", rebalance_ms=5_000))]
    for i in range(1, 5):  # a member every 2 s would extend the wait forever
        tick(delayed, clock, 2.0)
        if pending[0].done:
            break
        pending.append(delayed.join("g", jreq(client=f"m{i}", rebalance_ms=5_000)))
    # waits of 3 s and then 2 s (the 5 s budget): m2 joined during the second wait, and yet the
    # join completed when it ended, with the three members that had joined
    assert len(pending) == 3
    results = [done(p) for p in pending[:3]]
    assert {r.generation for r in results} == {1}
    assert {m.member_id for m in results[0].members} == {r.member_id for r in results}


def test_a_group_with_members_rebalances_without_the_delay(delayed: KafkaGroups, clock: Clock) -> None:
    pa = delayed.join("g", jreq(client="a"))
    tick(delayed, clock, 3.0)
    ra = done(pa)
    assign_all(delayed, "g", ra, {ra.member_id: [TP("t", p) for p in range(4)]})
    pb = delayed.join("g", jreq(client="b"))
    ra2, rb = done(delayed.join("g", jreq(ra.member_id))), done(pb)  # no wait: the group was not empty
    assert ra2.generation == rb.generation == 2
    # once every member has left, the group is empty again and the next rebalance waits again
    assign_all(delayed, "g", ra2, {ra2.member_id: [], rb.member_id: []})
    delayed.leave("g", [(ra2.member_id, None), (rb.member_id, None)])
    assert delayed.describe("g").state == "Empty"
    pc = delayed.join("g", jreq(client="c"))
    assert not pc.done
    tick(delayed, clock, 3.0)
    assert done(pc).generation == 4  # the leaving made generation 3, an empty one


def test_a_member_leaving_during_the_wait_is_not_in_the_generation(delayed: KafkaGroups,
                                                                    clock: Clock) -> None:
    pa = delayed.join("g", jreq(client="a"))
    pb = delayed.join("g", jreq(client="b"))
    tick(delayed, clock, 0.5)
    rb_id = next(m.member_id for m in delayed.describe("g").members if m.client_id == "b")
    delayed.leave("g", [(rb_id, None)])
    assert done(pb).error == E.UNKNOWN_MEMBER_ID and not pa.done
    tick(delayed, clock, 6.0)
    ra = done(pa)
    assert [m.member_id for m in ra.members] == [ra.member_id]


def test_no_common_protocol_is_inconsistent_group_protocol(kg: KafkaGroups) -> None:
    join_one(kg, protocols=[("range", sub("t"))])
    r = done(kg.join("g", jreq(protocols=[("roundrobin", sub("t"))])))
    assert r.error == E.INCONSISTENT_GROUP_PROTOCOL and "range" in r.message
    r = done(kg.join("g", jreq(protocol_type="connect")))
    assert r.error == E.INCONSISTENT_GROUP_PROTOCOL
    assert done(kg.join("h", jreq(protocols=[]))).error == E.INCONSISTENT_GROUP_PROTOCOL


def test_the_protocol_all_members_support_is_chosen(kg: KafkaGroups) -> None:
    offers = [("cooperative-sticky", sub("t")), ("range", sub("t"))]
    a = join_one(kg, client="a", protocols=offers)
    pb = kg.join("g", jreq(client="b", protocols=[("roundrobin", sub("t")), ("range", sub("t"))]))
    ra = done(kg.join("g", jreq(a.member_id, protocols=offers)))
    assert ra.protocol_name == done(pb).protocol_name == "range"


def test_session_timeouts_out_of_bounds_are_refused(kg: KafkaGroups) -> None:
    assert done(kg.join("g", jreq(session_ms=10))).error == E.INVALID_SESSION_TIMEOUT
    assert done(kg.join("g", jreq(session_ms=3_600_000))).error == E.INVALID_SESSION_TIMEOUT


def test_a_sync_in_the_wrong_generation_or_during_a_rebalance_is_refused(kg: KafkaGroups) -> None:
    a = join_one(kg, client="a")
    assert done(kg.sync("g", SyncRequest(a.member_id, 7))).error == E.ILLEGAL_GENERATION
    assert done(kg.sync("g", SyncRequest("x", 1))).error == E.UNKNOWN_MEMBER_ID
    assert done(kg.sync("g", SyncRequest(a.member_id, 1, protocol_name="roundrobin"))).error \
        == E.INCONSISTENT_GROUP_PROTOCOL
    kg.join("g", jreq(client="b"))
    assert done(kg.sync("g", SyncRequest(a.member_id, 1))).error == E.REBALANCE_IN_PROGRESS


def test_a_waiting_sync_learns_of_a_new_rebalance(kg: KafkaGroups) -> None:
    a = join_one(kg, client="a")
    pb = kg.join("g", jreq(client="b"))
    ra = done(kg.join("g", jreq(a.member_id)))
    rb = done(pb)
    sb = kg.sync("g", SyncRequest(rb.member_id, rb.generation))
    kg.join("g", jreq(client="c"))  # before the leader's sync
    assert done(sb).error == E.REBALANCE_IN_PROGRESS
    assert ra.generation == 2


# --- leave ------------------------------------------------------------------------------------


def test_leave_group_rebalances_the_rest_and_batches(kg: KafkaGroups) -> None:
    a = join_one(kg, client="a")
    pb = kg.join("g", jreq(client="b"))
    done(kg.join("g", jreq(a.member_id)))
    rb = done(pb)
    assert kg.leave("g", [(rb.member_id, None), ("ghost", None)]) == [E.NONE, E.UNKNOWN_MEMBER_ID]
    assert kg.heartbeat("g", a.member_id, 2) == E.REBALANCE_IN_PROGRESS
    r = done(kg.join("g", jreq(a.member_id)))
    assert r.generation == 3 and len(r.members) == 1
    assert kg.leave("g", [(a.member_id, None)]) == [E.NONE]
    desc = kg.describe("g")
    assert desc.state == "Empty" and desc.members == [] and desc.generation == 4
    assert kg.leave("nope", [("x", None)]) == [E.UNKNOWN_MEMBER_ID]


def test_leaving_while_others_wait_in_the_barrier_completes_it(kg: KafkaGroups) -> None:
    a = join_one(kg, client="a")
    pb = kg.join("g", jreq(client="b"))
    assert not pb.done
    assert kg.leave("g", [(a.member_id, None)]) == [E.NONE]
    rb = done(pb)
    assert rb.error == E.NONE and rb.leader == rb.member_id


# --- static membership ------------------------------------------------------------------------


def test_a_static_member_comes_back_without_a_rebalance(kg: KafkaGroups) -> None:
    a = join_one(kg, client="a", instance="i-a")
    pb = kg.join("g", jreq(client="b", instance="i-b"))
    ra = done(kg.join("g", jreq(a.member_id, instance="i-a")))
    rb = done(pb)
    gen = ra.generation
    assign_all(kg, "g", ra, {a.member_id: [TP("t", 0), TP("t", 1)], rb.member_id: [TP("t", 2), TP("t", 3)]})
    done(kg.sync("g", SyncRequest(rb.member_id, gen, group_instance_id="i-b")))
    # b restarts: no member id, same instance id
    rb2 = done(kg.join("g", jreq(client="b", instance="i-b")))
    assert rb2.error == E.NONE and rb2.generation == gen and rb2.member_id != rb.member_id
    assert rb2.leader == a.member_id and rb2.members == []
    s = done(kg.sync("g", SyncRequest(rb2.member_id, gen, group_instance_id="i-b")))
    assert decode_assignment(s.assignment) == [TP("t", 2), TP("t", 3)]
    assert kg.describe("g").state == "Stable"
    assert kg.heartbeat("g", a.member_id, gen) == E.NONE  # nobody rebalanced
    # the old incarnation is fenced
    assert kg.heartbeat("g", rb.member_id, gen, "i-b") == E.FENCED_INSTANCE_ID
    late = {TP("t", 2): OffsetAndMetadata(1)}
    assert kg.commit("g", rb.member_id, gen, "i-b", late) == E.FENCED_INSTANCE_ID
    assert kg.leave("g", [(rb.member_id, "i-b")]) == [E.FENCED_INSTANCE_ID]
    assert kg.leave("g", [("", "i-b")]) == [E.NONE]


def test_a_static_leader_coming_back_keeps_the_generation(kg: KafkaGroups) -> None:
    a = join_one(kg, client="a", instance="i-a")
    assign_all(kg, "g", a, {a.member_id: [TP("t", 0)]})
    a2 = done(kg.join("g", jreq(client="a", instance="i-a")))
    assert a2.error == E.NONE and a2.generation == a.generation
    assert a2.leader == a.member_id != a2.member_id  # it acts as a follower: it gets its assignment
    s = done(kg.sync("g", SyncRequest(a2.member_id, a2.generation, group_instance_id="i-a")))
    assert decode_assignment(s.assignment) == [TP("t", 0)]


# --- offsets -------------------------------------------------------------------------------------


def test_commits_are_fenced_by_member_and_generation(kg: KafkaGroups, store: eventstore.Store) -> None:
    a = join_one(kg, client="a")
    off = {TP("t", 0): OffsetAndMetadata(3, "meta")}
    assert kg.commit("g", a.member_id, a.generation, None, off) == E.REBALANCE_IN_PROGRESS  # not synced
    assign_all(kg, "g", a, {a.member_id: [TP("t", 0)]})
    assert kg.commit("g", a.member_id, a.generation, None, off) == E.NONE
    assert kg.commit("g", a.member_id, a.generation + 1, None, off) == E.ILLEGAL_GENERATION
    assert kg.commit("g", "x", a.generation, None, off) == E.UNKNOWN_MEMBER_ID
    assert kg.commit("g", "", -1, None, off) == E.UNKNOWN_MEMBER_ID  # the group has members
    assert store.group_offsets("g") == {TP("t", 0): 3}
    assert kg.committed("g", None) == {TP("t", 0): OffsetAndMetadata(3, "meta")}
    assert kg.committed("g", [TP("t", 1)]) == {TP("t", 1): None}
    kg.leave("g", [(a.member_id, None)])
    assert kg.commit("g", "", -1, None, {TP("t", 1): OffsetAndMetadata(5)}) == E.NONE  # standalone
    assert store.group_offsets("g") == {TP("t", 0): 3, TP("t", 1): 5}


def test_list_describe_delete(kg: KafkaGroups, store: eventstore.Store) -> None:
    a = join_one(kg, client="a")
    assign_all(kg, "g", a, {a.member_id: [TP("t", 0)]})
    kg.commit("g", a.member_id, a.generation, None, {TP("t", 0): OffsetAndMetadata(0)})
    assert [(x.group_id, x.state) for x in kg.list()] == [("g", "Stable")]
    assert kg.describe("nothing").state == "Dead"
    assert kg.delete("g") == E.NON_EMPTY_GROUP
    assert kg.delete("nothing") == E.GROUP_ID_NOT_FOUND
    top, per = kg.delete_offsets("g", [TP("t", 0)])
    assert top == E.NONE and per == {TP("t", 0): E.GROUP_SUBSCRIBED_TO_TOPIC}
    kg.leave("g", [(a.member_id, None)])
    assert [(x.group_id, x.state) for x in kg.list()] == [("g", "Empty")]
    top, per = kg.delete_offsets("g", [TP("t", 0)])
    assert per == {TP("t", 0): E.NONE} and store.group_offsets("g") == {}
    kg.commit("g", "", -1, None, {TP("t", 1): OffsetAndMetadata(0)})
    assert kg.delete("g") == E.NONE
    assert store.list_groups() == [] and kg.describe("g").state == "Dead"


def test_store_admin_sees_kafka_members(kg: KafkaGroups, store: eventstore.Store) -> None:
    store.append("t", b"x", partition=1)
    a = join_one(kg, client="a")
    assign_all(kg, "g", a, {a.member_id: [TP("t", p) for p in range(4)]})
    assert store.list_groups() == ["g"]
    assert store.lag("g") == {TP("t", 0): 0, TP("t", 1): 1, TP("t", 2): 0, TP("t", 3): 0}
    with pytest.raises(eventstore.GroupNotEmptyError):
        store.reset_group_offsets("g", "latest", topics=["t"])
    kg.leave("g", [(a.member_id, None)])
    store.reset_group_offsets("g", "latest", topics=["t"])
    assert store.lag("g")[TP("t", 1)] == 0


# --- embedded and Kafka members do not mix --------------------------------------------------------


def test_embedded_and_kafka_members_refuse_each_other(kg: KafkaGroups, store: eventstore.Store) -> None:
    a = join_one(kg, client="a")
    with pytest.raises(InvalidArgumentError, match="Kafka clients"):
        store.consumer("t", group_id="g")
    kg.leave("g", [(a.member_id, None)])
    with store.consumer("t", group_id="g") as c:
        c.poll(timeout_ms=0)
        r = done(kg.join("g", jreq()))
        assert r.error == E.INCONSISTENT_GROUP_PROTOCOL and "embedded" in r.message
        desc = kg.describe("g")
        [m] = desc.members
        assert m.kind == "embedded" and decode_subscription(m.metadata) == ["t"]
        assert decode_assignment(m.assignment_bytes) == [TP("t", p) for p in range(4)]
    assert join_one(kg).generation > desc.generation  # generations go on increasing


def test_an_embedded_consumer_joins_once_a_pending_kafka_member_id_lapsed(
        kg: KafkaGroups, store: eventstore.Store) -> None:
    import time

    assert done(kg.join("g", jreq(required=True, session_ms=100))).error == E.MEMBER_ID_REQUIRED
    with pytest.raises(InvalidArgumentError, match="Kafka clients"):
        store.consumer("t", group_id="g")
    time.sleep(0.2)  # the id given out is forgotten after its session timeout (real time here)
    with store.consumer("t", group_id="g") as c:
        c.poll(timeout_ms=0)
        assert len(c.assignment()) == 4


# --- a state machine ------------------------------------------------------------------------------

MEMBERS = ["m0", "m1", "m2", "m3"]
STATIC = {"m2": "i-m2", "m3": "i-m3"}  # clients with a group.instance.id


class GroupMachine(RuleBasedStateMachine):
    """Clients that join, sync (the leader assigns round-robin), heartbeat, leave, commit, fall
    silent and (static ones) restart under a new member id, in random order, against one group
    on a fake clock."""

    @initialize(delay=st.sampled_from([0.0, 0.4]))
    def start(self, delay: float) -> None:
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.store = eventstore.open(self.tmp.name)
        self.store.create_topic("t", partitions=5)
        self.clock = Clock()
        self.kg = KafkaGroups(self.store.groups, self.clock, initial_rebalance_delay_s=delay)
        self.ids: dict[str, str] = {}  # client -> member id
        self.joins: dict[str, Pending[JoinResult]] = {}
        self.gens: dict[str, int] = {}  # client -> generation it joined
        self.syncs: dict[str, Pending[SyncResult]] = {}
        self.assigned: dict[str, list[TopicPartition]] = {}
        self.last_generation = 0

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
            self.tmp.cleanup()

    def _collect(self) -> None:
        for _ in range(3):  # a leader's answer may complete syncs: bounded passes
            self._collect_once()

    def _collect_once(self) -> None:
        for client, p in list(self.joins.items()):
            if p.done:
                del self.joins[client]
                r = p.result
                if r.error in (E.NONE, E.MEMBER_ID_REQUIRED):
                    self.ids[client] = r.member_id
                if r.error == E.NONE:
                    self.gens[client] = r.generation
                    if r.leader == r.member_id:
                        self._lead(client, r)
                elif r.error in (E.UNKNOWN_MEMBER_ID, E.FENCED_INSTANCE_ID):
                    self.ids.pop(client, None)
        for client, s in list(self.syncs.items()):
            if s.done:
                del self.syncs[client]
                if s.result.error == E.NONE:
                    self.assigned[client] = decode_assignment(s.result.assignment)

    def _lead(self, client: str, r: JoinResult) -> None:
        members = sorted(m.member_id for m in r.members)
        parts: dict[str, list[TopicPartition]] = {m: [] for m in members}
        for p in range(5):
            parts[members[p % len(members)]].append(TP("t", p))
        self.syncs[client] = self.kg.sync("g", SyncRequest(
            r.member_id, r.generation, assignments={m: encode_assignment(t) for m, t in parts.items()}))

    @rule(client=st.sampled_from(MEMBERS), session=st.sampled_from([500, 2_000]))
    def join(self, client: str, session: int) -> None:
        if client in self.joins:
            return
        self.joins[client] = self.kg.join("g", jreq(self.ids.get(client, ""), client=client, required=True,
                                                    session_ms=session, rebalance_ms=1_000,
                                                    instance=STATIC.get(client)))
        self._collect()

    @rule(client=st.sampled_from(sorted(STATIC)))
    def restart(self, client: str) -> None:
        """A static member's process starts again: it knows only its instance id."""
        for state in (self.ids, self.gens, self.assigned, self.syncs, self.joins):
            state.pop(client, None)  # type: ignore[attr-defined]
        self.joins[client] = self.kg.join("g", jreq("", client=client, required=True, session_ms=2_000,
                                                    rebalance_ms=1_000, instance=STATIC[client]))
        self._collect()

    @rule(client=st.sampled_from(MEMBERS))
    def sync(self, client: str) -> None:
        if client in self.ids and client in self.gens and client not in self.syncs:
            self.syncs[client] = self.kg.sync("g", SyncRequest(self.ids[client], self.gens[client]))
            self._collect()

    @rule(client=st.sampled_from(MEMBERS))
    def heartbeat(self, client: str) -> None:
        if client in self.ids:
            code = self.kg.heartbeat("g", self.ids[client], self.gens.get(client, -1))
            assert code in (E.NONE, E.REBALANCE_IN_PROGRESS, E.ILLEGAL_GENERATION, E.UNKNOWN_MEMBER_ID)
            self._collect()

    @rule(client=st.sampled_from(MEMBERS))
    def leave(self, client: str) -> None:
        if client in self.ids:
            self.kg.leave("g", [(self.ids.pop(client), None)])
            self.assigned.pop(client, None)
            self._collect()

    @rule(client=st.sampled_from(MEMBERS))
    def commit(self, client: str) -> None:
        if client in self.ids and self.assigned.get(client):
            code = self.kg.commit("g", self.ids[client], self.gens.get(client, -1), None,
                                  {tp: OffsetAndMetadata(0) for tp in self.assigned[client]})
            assert code in (E.NONE, E.REBALANCE_IN_PROGRESS, E.ILLEGAL_GENERATION, E.UNKNOWN_MEMBER_ID)

    @rule(seconds=st.sampled_from([0.1, 0.6, 1.5]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.kg.expire("g")
        self._collect()

    @invariant()
    def stable_generations_own_every_partition_once(self) -> None:
        if not hasattr(self, "kg"):
            return
        desc = self.kg.describe("g")
        assert desc.generation >= self.last_generation
        self.last_generation = desc.generation
        if desc.state == "Stable":
            event(f"stable with {len(desc.members)} member(s)")
            owners: dict[TopicPartition, int] = {}
            for m in desc.members:
                for tp in m.assignment:
                    owners[tp] = owners.get(tp, 0) + 1
            assert owners == {TP("t", p): 1 for p in range(5)}, desc
        waiting = [p for p in self.joins.values() if not p.done]
        if waiting:
            deadline = self.kg.next_deadline("g")
            assert deadline is not None  # a wait always has a timeout that ends it


GroupMachine.TestCase.settings = settings(max_examples=int(os.environ.get("ES_GROUP_EXAMPLES", "60")),
                                          stateful_step_count=40, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_group_machine = GroupMachine.TestCase
