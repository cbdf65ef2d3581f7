"""Consumer groups in one process: sharing partitions, rebalancing on joins, leaves and
timeouts, fencing, durable cursors, retention and the group administration calls.

The property test at the end drives several consumers of one group from a single
thread through a random schedule of joins, polls with per-batch commits, closes,
crashes (a member that simply stops polling) and clock ticks, on a fake clock so
that expiry is deterministic.
"""

from __future__ import annotations

import gc
import tempfile
import threading
import time
import weakref
from collections import Counter, defaultdict
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventstore
from eventstore import (
    CommitFailedError,
    GroupNotEmptyError,
    IllegalStateError,
    InvalidArgumentError,
    Message,
    NoOffsetForPartitionError,
    OffsetAndMetadata,
    TopicPartition,
)
from eventstore.catalog import cursors
from eventstore.client import consumer as consumer_module
from eventstore.groups import membership as membership_module

TP = TopicPartition
TS0 = 1_700_000_000_000
STRATEGIES = ["range", "roundrobin", "cooperative-sticky"]


def fill(store: eventstore.Store, topic: str, partition: int, n: int, *, ts0: int | None = None) -> None:
    start = store.offsets(topic, partition)[1]
    msgs = [Message(value=b"%s-%d-%d" % (topic.encode(), partition, i),
                    timestamp_ms=None if ts0 is None else ts0 + i * 10)
            for i in range(start, start + n)]
    store.append_batch(topic, msgs, partition=partition)


def owned_by_member(store: eventstore.Store, group: str) -> dict[str, set[TopicPartition]]:
    """client_id -> partitions its member owns, checking that no partition has two owners."""
    desc = store.describe_group(group)
    owners: dict[TopicPartition, str] = {}
    out: dict[str, set[TopicPartition]] = {}
    for m in desc.members:
        assert m.client_id not in out, f"two members for one consumer: {desc}"
        out[m.client_id] = set(m.owned)
        for tp in m.owned:
            assert tp not in owners, f"{tp} owned by {owners[tp]} and {m.member_id}"
            owners[tp] = m.member_id
    return out


def poll_until(consumers: list[eventstore.Consumer], done: Any, *, timeout_s: float = 5.0,
               commit: bool = False) -> dict[int, list[eventstore.Record]]:
    """Poll every consumer in turn until ``done()`` holds; returns the records each got."""
    got: dict[int, list[eventstore.Record]] = defaultdict(list)
    deadline = time.monotonic() + timeout_s
    while True:
        for i, c in enumerate(consumers):
            batch = c.poll(timeout_ms=0)
            for recs in batch.values():
                got[i].extend(recs)
            if commit and batch:
                c.commit()
        if done():
            return got
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def stable(store: eventstore.Store, group: str, members: int) -> bool:
    desc = store.describe_group(group)
    return desc.state == "Stable" and len(desc.members) == members


class Recorder:
    """A rebalance listener that logs callbacks and may commit while partitions are revoked."""

    def __init__(self, commit_on_revoke: bool = False) -> None:
        self.consumer: eventstore.Consumer | None = None
        self.events: list[tuple[str, set[TopicPartition]]] = []
        self.commit_on_revoke = commit_on_revoke
        self.commit_errors: list[Exception] = []

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.events.append(("revoked", set(revoked)))
        if self.commit_on_revoke and self.consumer is not None:
            assert revoked <= self.consumer.assignment(), "revoked after release"
            try:
                self.consumer.commit()
            except Exception as e:  # recorded for the test to look at
                self.commit_errors.append(e)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.events.append(("assigned", set(assigned)))


@pytest.fixture
def topic4(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("t", 4)
    for p in range(4):
        fill(store, "t", p, 5)
    return store


# --- sharing and rebalancing ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_members_share_partitions(topic4: eventstore.Store, strategy: str) -> None:
    store = topic4
    cs = [store.consumer("t", group_id="g", client_id=f"c{i}", auto_offset_reset="earliest",
                         partition_assignment_strategy=strategy, enable_auto_commit=False)
          for i in range(3)]
    got = poll_until(cs, lambda: stable(store, "g", 3), commit=True)
    owned = owned_by_member(store, "g")
    assignments = [c.assignment() for c in cs]
    assert [owned[f"c{i}"] for i in range(3)] == assignments
    assert set().union(*assignments) == {TP("t", p) for p in range(4)}
    assert sorted(len(a) for a in assignments) == [1, 1, 2]
    desc = store.describe_group("g")
    assert desc.protocol == strategy and desc.generation >= 3
    assert all(m.assignment == m.owned and m.topics == ["t"] for m in desc.members)
    delivered = Counter((r.partition, r.offset) for recs in got.values() for r in recs)
    assert delivered == Counter({(p, o): 1 for p in range(4) for o in range(5)})
    for i, recs in got.items():
        assert {TP(r.topic, r.partition) for r in recs} <= assignments[i]
    for c in cs:
        c.close()
    assert store.describe_group("g").state == "Empty"


def test_close_rebalances_to_the_rest(topic4: eventstore.Store) -> None:
    store = topic4
    a = store.consumer("t", group_id="g", client_id="a", auto_offset_reset="earliest",
                       enable_auto_commit=False)
    b = store.consumer("t", group_id="g", client_id="b", auto_offset_reset="earliest",
                       enable_auto_commit=False)
    poll_until([a, b], lambda: stable(store, "g", 2), commit=True)
    gen = store.describe_group("g").generation
    a.close()
    assert store.describe_group("g").generation == gen + 1
    poll_until([b], lambda: b.assignment() == {TP("t", p) for p in range(4)})
    assert owned_by_member(store, "g") == {"b": b.assignment()}
    for p in range(4):
        fill(store, "t", p, 1)
    got = poll_until([b], lambda: all(b.position(TP("t", p)) == 6 for p in range(4)), commit=True)
    assert sorted((r.partition, r.offset) for r in got[0]) == [(p, 5) for p in range(4)]
    b.close()


def test_strategies_cannot_be_mixed(topic4: eventstore.Store) -> None:
    a = topic4.consumer("t", group_id="g", partition_assignment_strategy="range")
    with pytest.raises(InvalidArgumentError):
        topic4.consumer("t", group_id="g", partition_assignment_strategy="roundrobin")
    a.close()


def test_added_partitions_are_assigned(topic4: eventstore.Store) -> None:
    store = topic4
    a = store.consumer("t", group_id="g", auto_offset_reset="earliest")
    poll_until([a], lambda: len(a.assignment()) == 4)
    store.alter_topic("t", partitions=6)
    fill(store, "t", 5, 3)
    got = poll_until([a], lambda: len(a.assignment()) == 6 and a.position(TP("t", 5)) == 3,
                     timeout_s=3)
    assert [r.offset for r in got[0] if r.partition == 5] == [0, 1, 2]
    a.close()


def test_eager_listener_commits_before_release(topic4: eventstore.Store) -> None:
    store = topic4
    rec = Recorder(commit_on_revoke=True)
    a = store.consumer(group_id="g", client_id="a", auto_offset_reset="earliest",
                       enable_auto_commit=False)
    rec.consumer = a
    a.subscribe(["t"], listener=rec)
    poll_until([a], lambda: sum(a.position(tp) for tp in a.assignment()) == 20 if a.assignment() else False)
    assert rec.events == [("assigned", {TP("t", p) for p in range(4)})]
    assert store.group_offsets("g") == {}
    b = store.consumer("t", group_id="g", client_id="b", auto_offset_reset="earliest",
                       enable_auto_commit=False)
    got = poll_until([a, b], lambda: stable(store, "g", 2))
    assert rec.commit_errors == []
    # eager protocol: everything is revoked, then the new share is assigned
    assert rec.events[1] == ("revoked", {TP("t", p) for p in range(4)})
    assert rec.events[2] == ("assigned", a.assignment())
    assert store.group_offsets("g") == {TP("t", p): 5 for p in range(4)}
    assert got[1] == [], "b must start from what a committed in on_partitions_revoked"
    rec.events.clear()
    a.close()
    assert rec.events == [("revoked", {TP("t", 0), TP("t", 1)})]
    b.close()


def test_cooperative_sticky_revokes_only_what_moves(topic4: eventstore.Store) -> None:
    store = topic4
    rec = Recorder()
    a = store.consumer(group_id="g", client_id="a", auto_offset_reset="earliest",
                       enable_auto_commit=False, partition_assignment_strategy="cooperative-sticky")
    a.subscribe(["t"], listener=rec)
    poll_until([a], lambda: len(a.assignment()) == 4, commit=True)
    positions = {tp: a.position(tp) for tp in a.assignment()}
    b = store.consumer("t", group_id="g", client_id="b", auto_offset_reset="earliest",
                       enable_auto_commit=False, partition_assignment_strategy="cooperative-sticky")
    poll_until([a, b], lambda: stable(store, "g", 2), commit=True)
    [(_kind, revoked)] = [e for e in rec.events if e[0] == "revoked"]
    assert len(revoked) == 2 and revoked == b.assignment()
    kept = a.assignment()
    assert len(kept) == 2 and kept | revoked == set(positions)
    assert {tp: a.position(tp) for tp in kept} == {tp: positions[tp] for tp in kept}
    assert [e for e in rec.events if e[0] == "assigned"] == [("assigned", set(positions))]
    a.close()
    b.close()


def test_consumers_in_threads_share_exclusively(store: eventstore.Store) -> None:
    store.create_topic("t", 6)
    total = 6 * 150
    delivered: list[tuple[int, int, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        for i in range(150):
            store.append_batch("t", [Message(value=b"%d" % i, partition=p) for p in range(6)])
            if i % 10 == 0:
                time.sleep(0.002)

    def consume(name: str, lifetime_s: float) -> None:
        try:
            c = store.consumer("t", group_id="g", client_id=name, auto_offset_reset="earliest",
                               enable_auto_commit=False, max_poll_records=20)
            end = time.monotonic() + lifetime_s
            while not stop.is_set() and time.monotonic() < end:
                batch = c.poll(timeout_ms=20)
                with lock:
                    delivered.extend((r.partition, r.offset, name) for recs in batch.values() for r in recs)
                if batch:
                    c.commit()
            c.close()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=produce)]
    threads += [threading.Thread(target=consume, args=(f"c{i}", 60.0)) for i in range(3)]
    threads += [threading.Thread(target=consume, args=("short", 0.3))]
    for t in threads:
        t.start()
    late = threading.Timer(0.15, lambda: consume("late", 60.0))
    late.start()
    deadline = time.monotonic() + 20
    try:
        while len(delivered) < total and not errors and time.monotonic() < deadline:
            owned_by_member(store, "g")  # exclusivity, checked under the group lock
            time.sleep(0.003)
    finally:
        stop.set()
        for t in threads:
            t.join()
        late.join()
    assert not errors, errors
    counts = Counter((p, o) for p, o, _ in delivered)
    assert set(counts) == {(p, o) for p in range(6) for o in range(150)}
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:10]
    assert store.lag("g") == {TP("t", p): 0 for p in range(6)}
    assert store.describe_group("g").state == "Empty"


# --- timeouts and fencing ---------------------------------------------------------------------------


def test_member_that_stops_polling_is_removed_and_fenced(topic4: eventstore.Store) -> None:
    store = topic4
    cfg: dict[str, Any] = {"group_id": "g", "auto_offset_reset": "earliest", "enable_auto_commit": False,
                           "max_poll_interval_ms": 200, "session_timeout_ms": 200}
    a = store.consumer("t", client_id="a", **cfg)
    b = store.consumer("t", client_id="b", **cfg)
    got = poll_until([a, b], lambda: stable(store, "g", 2))
    a_parts = a.assignment()
    assert len(a_parts) == 2 and len(got[0]) == 10
    stale = {tp: a.position(tp) for tp in a_parts}
    # a's last poll (nothing left to read): max_poll_interval_ms runs from there
    last_poll_at = time.monotonic()  # at or before it
    assert a.poll(timeout_ms=0) == {}
    # a stops polling; b goes on and, once a is expired, takes everything over
    got = poll_until([b], lambda: len(b.assignment()) == 4, timeout_s=5, commit=True)
    assert time.monotonic() - last_poll_at >= 0.2  # not before the interval (a slow machine: later)
    assert owned_by_member(store, "g") == {"b": {TP("t", p) for p in range(4)}}
    redelivered = sorted((r.partition, r.offset) for r in got[0] if TP(r.topic, r.partition) in a_parts)
    assert redelivered == sorted((tp.partition, o) for tp in a_parts for o in range(5))  # a never committed
    fill(store, "t", 0, 2)
    poll_until([b], lambda: b.position(TP("t", 0)) == 7, commit=True)
    newer = store.group_offsets("g")
    # a's late commits fail and change nothing
    with pytest.raises(CommitFailedError):
        a.commit()
    with pytest.raises(CommitFailedError):
        a.commit({tp: OffsetAndMetadata(1) for tp in a_parts})
    with pytest.raises(CommitFailedError), a.transaction() as tx:
        tx.append("t", b"zombie output", partition=3)
    assert store.group_offsets("g") == newer
    assert store.offsets("t", 3)[1] == 5
    # a polls again: it rejoins as a new member and resumes from the committed offsets
    got = poll_until([a, b], lambda: stable(store, "g", 2), commit=True)
    assert got[0] == [] and len(a.assignment()) == 2
    assert {tp: a.position(tp) for tp in a.assignment()} == {tp: newer[tp] for tp in a.assignment()}
    assert stale != newer
    a.close()
    b.close()


def test_commit_of_a_partition_no_longer_owned_fails(topic4: eventstore.Store) -> None:
    store = topic4
    a = store.consumer("t", group_id="g", client_id="a", auto_offset_reset="earliest",
                       enable_auto_commit=False)
    poll_until([a], lambda: len(a.assignment()) == 4, commit=True)
    b = store.consumer("t", group_id="g", client_id="b", auto_offset_reset="earliest",
                       enable_auto_commit=False)
    poll_until([a, b], lambda: stable(store, "g", 2))
    lost = b.assignment()
    before = store.group_offsets("g")
    with pytest.raises(CommitFailedError):
        a.commit({tp: 1 for tp in lost})
    with pytest.raises(CommitFailedError):  # mixed: nothing at all is written
        a.commit({**{tp: 2 for tp in a.assignment()}, **{tp: 2 for tp in lost}})
    assert store.group_offsets("g") == before
    a.commit({tp: 3 for tp in a.assignment()})
    assert all(store.group_offsets("g")[tp] == 3 for tp in a.assignment())
    a.close()
    b.close()


def test_lone_member_that_stopped_polling_is_expired(topic4: eventstore.Store) -> None:
    store = topic4
    a = store.consumer("t", group_id="g", auto_offset_reset="earliest",
                       max_poll_interval_ms=50, session_timeout_ms=50)
    a.poll(timeout_ms=0)
    a.commit()
    time.sleep(0.2)
    assert store.describe_group("g").members == []
    store.reset_group_offsets("g", "earliest")


def test_member_waiting_in_poll_is_not_expired(store: eventstore.Store) -> None:
    store.create_topic("t", 2)
    cfg: dict[str, Any] = {"group_id": "g", "max_poll_interval_ms": 300, "session_timeout_ms": 300}
    a = store.consumer("t", client_id="a", **cfg)
    b = store.consumer("t", client_id="b", **cfg)
    poll_until([a, b], lambda: stable(store, "g", 2))
    waiter = threading.Thread(target=lambda: a.poll(timeout_ms=1500))
    waiter.start()
    members = set()
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        b.poll(timeout_ms=20)
        members.add(tuple(sorted(m.member_id for m in store.describe_group("g").members)))
    waiter.join()
    assert len(members) == 1, members


def test_member_busy_between_polls_keeps_its_session(store: eventstore.Store) -> None:
    """Kafka heartbeats from a background thread: a consumer that takes longer than
    session_timeout_ms over a batch keeps its partitions; only max_poll_interval_ms counts."""
    store.create_topic("t", 2)
    cfg: dict[str, Any] = {"group_id": "g", "max_poll_interval_ms": 5000, "session_timeout_ms": 50}
    a = store.consumer("t", client_id="a", **cfg)
    b = store.consumer("t", client_id="b", **cfg)
    poll_until([a, b], lambda: stable(store, "g", 2))
    owned = a.assignment()
    end = time.monotonic() + 0.4  # a is "processing": eight session timeouts without a poll
    while time.monotonic() < end:
        b.poll(timeout_ms=20)
    assert owned_by_member(store, "g")["a"] == owned
    a.poll(timeout_ms=0)
    assert a.assignment() == owned
    a.close()
    b.close()


def test_consumer_dropped_without_close_loses_its_session(store: eventstore.Store) -> None:
    store.create_topic("t", 2)
    cfg: dict[str, Any] = {"group_id": "g", "max_poll_interval_ms": 60_000, "session_timeout_ms": 50}
    a = store.consumer("t", client_id="a", **cfg)
    b = store.consumer("t", client_id="b", **cfg)
    poll_until([a, b], lambda: stable(store, "g", 2))
    del a  # never closed: nothing heartbeats for it any more
    gc.collect()
    poll_until([b], lambda: len(b.assignment()) == 2, timeout_s=5)
    assert owned_by_member(store, "g") == {"b": {TP("t", 0), TP("t", 1)}}
    b.close()


def test_dropped_consumer_goes_with_its_last_reference(store: eventstore.Store) -> None:
    """A consumer dropped without close() is freed at once, not at some later run of the cyclic
    garbage collector (which a quiet process may not make for minutes): its session lapses on
    time, with the collector off."""
    store.create_topic("t", 2)
    cfg: dict[str, Any] = {"group_id": "g", "max_poll_interval_ms": 60_000, "session_timeout_ms": 50}
    a = store.consumer("t", client_id="a", **cfg)
    b = store.consumer("t", client_id="b", **cfg)
    poll_until([a, b], lambda: stable(store, "g", 2))
    dropped = weakref.ref(a)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del a  # never closed, and no collection runs
        assert dropped() is None, [type(r).__name__ for r in gc.get_referrers(dropped())]
        poll_until([b], lambda: len(b.assignment()) == 2, timeout_s=5)
    finally:
        if enabled:
            gc.enable()
    assert owned_by_member(store, "g") == {"b": {TP("t", 0), TP("t", 1)}}
    b.close()


# --- durable cursors and retention --------------------------------------------------------------------


def test_committed_offsets_survive_reopen(open_store, store_path) -> None:
    store = open_store()
    store.create_topic("t", 2)
    fill(store, "t", 0, 10)
    fill(store, "t", 1, 10)
    c = store.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    poll_until([c], lambda: len(c.assignment()) == 2)
    c.commit({TP("t", 0): 4, TP("t", 1): OffsetAndMetadata(7, "checkpoint")})
    store.close()
    store = open_store(store_path)
    assert store.group_offsets("g") == {TP("t", 0): 4, TP("t", 1): 7}
    assert cursors.get(store.log.catalog, "g", TP("t", 1)) == OffsetAndMetadata(7, "checkpoint")
    assert store.list_groups() == ["g"]
    d = store.consumer("t", group_id="g", auto_offset_reset="none")
    assert d.committed(TP("t", 0)) == 4
    got = poll_until([d], lambda: all(d.position(tp) == 10 for tp in d.assignment()) and
                     len(d.assignment()) == 2)
    assert sorted((r.partition, r.offset) for r in got[0]) == (
        [(0, o) for o in range(4, 10)] + [(1, o) for o in range(7, 10)])
    d.close()
    assert store.lag("g") == {TP("t", 0): 0, TP("t", 1): 0}


@pytest.fixture
def retained(store: eventstore.Store) -> eventstore.Store:
    """Topic "r": small segments and byte retention, with the old head deleted; group "g"
    committed offset 0 before that."""
    store.create_topic("r", 1, segment_bytes=1024, retention_bytes=2048)
    c = store.consumer(group_id="g", enable_auto_commit=False)
    c.assign([TP("r", 0)])
    c.commit({TP("r", 0): 0})
    c.close()
    for i in range(120):
        store.append("r", b"record %03d " % i + b"x" * 60, partition=0)
    assert store.enforce_retention() > 0
    start, end = store.offsets("r", 0)
    assert 0 < start < end == 120
    return store


@pytest.mark.parametrize("mode", ["subscribe", "assign"])
def test_committed_below_log_start_follows_reset_policy(retained: eventstore.Store, mode: str) -> None:
    store = retained
    tp = TP("r", 0)
    start, end = store.offsets("r", 0)
    assert store.group_offsets("g") == {tp: 0}
    assert store.lag("g") == {tp: end - start}

    def make(reset: str) -> eventstore.Consumer:
        c = store.consumer(group_id="g", auto_offset_reset=reset, enable_auto_commit=False)
        if mode == "subscribe":
            c.subscribe(["r"])
        else:
            c.assign([tp])
        return c

    c = make("earliest")
    got = poll_until([c], lambda: tp in c.assignment() and c.position(tp) == end)
    assert [r.offset for r in got[0]] == list(range(start, end))
    c.close()
    c = make("latest")
    got = poll_until([c], lambda: tp in c.assignment())
    assert got[0] == [] and c.position(tp) == end
    c.close()
    c = make("none")
    with pytest.raises(NoOffsetForPartitionError):
        poll_until([c], lambda: False, timeout_s=1)
    c.close(autocommit=False)
    assert store.group_offsets("g") == {tp: 0}


def test_position_falling_below_log_start_while_consuming(store: eventstore.Store) -> None:
    store.create_topic("r", 1, segment_bytes=1024, retention_bytes=1024)
    tp = TP("r", 0)
    c = store.consumer(auto_offset_reset="earliest")
    c.assign([tp])
    store.append("r", b"first", partition=0)
    assert [r.offset for recs in c.poll(timeout_ms=0).values() for r in recs] == [0]
    for i in range(100):
        store.append("r", b"y" * 80 + b"%d" % i, partition=0)
    store.enforce_retention()
    start = store.offsets("r", 0)[0]
    assert start > 1
    got = poll_until([c], lambda: c.position(tp) == 101)
    assert [r.offset for r in got[0]] == list(range(start, 101))
    n = store.consumer(auto_offset_reset="none")
    n.assign([tp])
    n.seek(tp, 1)
    with pytest.raises(NoOffsetForPartitionError):
        n.poll(timeout_ms=0)


# --- administration -----------------------------------------------------------------------------------


def test_list_describe_offsets_and_lag(topic4: eventstore.Store) -> None:
    store = topic4
    assert store.list_groups() == []
    desc = store.describe_group("nobody")
    assert (desc.state, desc.generation, desc.members, desc.protocol) == ("Empty", 0, [], "")
    a = store.consumer("t", group_id="live", client_id="a", auto_offset_reset="earliest",
                       enable_auto_commit=False)
    assert store.list_groups() == ["live"]
    assert store.describe_group("live").state == "PreparingRebalance"
    assert store.lag("live") == {TP("t", p): 5 for p in range(4)}
    poll_until([a], lambda: stable(store, "live", 1))
    [member] = store.describe_group("live").members
    assert member.client_id == "a" and member.member_id.startswith("a-")
    assert member.owned == [TP("t", p) for p in range(4)]
    a.commit({TP("t", 0): 5, TP("t", 2): 1})
    assert store.group_offsets("live") == {TP("t", 0): 5, TP("t", 2): 1}
    assert store.lag("live") == {TP("t", 0): 0, TP("t", 1): 5, TP("t", 2): 4, TP("t", 3): 5}
    b = store.consumer("t", group_id="live", client_id="b")
    assert store.describe_group("live").state == "PreparingRebalance"
    b.close()
    a.close()
    assert store.describe_group("live").state == "Empty"
    assert store.list_groups() == ["live"]  # it has committed offsets
    # a group that never committed and has no members is not listed
    store.consumer("t", group_id="ghost").close()
    assert store.list_groups() == ["live"]


def test_reset_group_offsets(topic4: eventstore.Store) -> None:
    store = topic4
    future = time.time_ns() // 1_000_000 + 10**8  # later than the fixture's records
    for p in range(4):
        fill(store, "t", p, 5, ts0=future + 1000 * p)  # offsets 5..9, timestamps future+1000p+10*offset
    a = store.consumer("t", group_id="g", enable_auto_commit=False)
    poll_until([a], lambda: len(a.assignment()) == 4)
    a.commit({TP("t", 0): 2})
    with pytest.raises(GroupNotEmptyError):
        store.reset_group_offsets("g", "earliest")
    with pytest.raises(GroupNotEmptyError):
        store.delete_group("g")
    a.close()
    everything = {TP("t", p): 10 for p in range(4)}
    assert store.reset_group_offsets("g", "latest") == everything  # every partition of committed topics
    assert store.reset_group_offsets("g", "latest", topics=["t"]) == everything
    assert store.group_offsets("g") == everything
    assert store.reset_group_offsets("g", "earliest") == {TP("t", p): 0 for p in range(4)}
    by_time = store.reset_group_offsets("g", future + 1075)
    assert by_time == {TP("t", 0): 10, TP("t", 1): 8, TP("t", 2): 5, TP("t", 3): 5}
    assert store.group_offsets("g") == by_time
    assert store.reset_group_offsets("g", {TP("t", 3): 1}) == {TP("t", 3): 1}
    assert store.group_offsets("g") == {**by_time, TP("t", 3): 1}
    with pytest.raises(InvalidArgumentError):
        store.reset_group_offsets("g", {TP("t", 3): 11})
    with pytest.raises(InvalidArgumentError):
        store.reset_group_offsets("g", "beginning")
    assert store.group_offsets("g") == {**by_time, TP("t", 3): 1}
    c = store.consumer("t", group_id="g", auto_offset_reset="none")
    got = poll_until([c], lambda: len(c.assignment()) == 4 and all(c.position(tp) == 10 for tp in
                                                                     c.assignment()))
    assert Counter(r.partition for r in got[0]) == {1: 2, 2: 5, 3: 9}
    c.close(autocommit=False)
    assert store.delete_group("g") == 4
    assert store.group_offsets("g") == {}
    assert store.list_groups() == []
    assert store.delete_group("g") == 0


def test_reset_group_offsets_takes_topic_partition_tuples(topic4: eventstore.Store) -> None:
    store = topic4
    # kafka-python code writes partitions as plain (topic, partition) tuples
    assert store.reset_group_offsets("g", {("t", 1): 3, TP("t", 2): 4}) == {TP("t", 1): 3, TP("t", 2): 4}
    assert store.group_offsets("g") == {TP("t", 1): 3, TP("t", 2): 4}


@pytest.mark.parametrize("to", [
    "beginning", "", -5, True, 1.5, None, ["t"], b"earliest",
    {("t",): 1}, {"t": 1}, {(0, "t"): 1}, {("t", 0, 0): 1}, {("t", 0): "1"}, {("t", 0): 1.0},
    {("t", 0): -1}, {("t", 0): True}, {("t", 0): 6},
])
def test_reset_group_offsets_refuses_a_nonsense_target(topic4: eventstore.Store, to: Any) -> None:
    store = topic4
    for group in ("fresh", "committed"):  # a group without commits too: nothing to reset is no excuse
        if group == "committed":
            store.reset_group_offsets(group, {TP("t", 0): 1})
        before = store.group_offsets(group)
        with pytest.raises(InvalidArgumentError):
            store.reset_group_offsets(group, to)
        assert store.group_offsets(group) == before


def test_reset_group_offsets_refuses_a_topic_list_that_is_a_string(topic4: eventstore.Store) -> None:
    with pytest.raises(InvalidArgumentError, match="list of topic names"):
        topic4.reset_group_offsets("g", "earliest", topics="t")  # type: ignore[arg-type]
    assert topic4.reset_group_offsets("g", "earliest", topics=["t"]) == {TP("t", p): 0 for p in range(4)}


def test_group_ids_do_not_leak_into_each_other(topic4: eventstore.Store) -> None:
    store = topic4
    try:
        c = store.consumer(group_id="a\x00b")
    except InvalidArgumentError:
        return  # rejecting such a group id is fine too
    c.assign([TP("t", 0)])
    c.commit({TP("t", 0): 1})
    c.close()
    assert store.group_offsets("a") == {}
    assert store.list_groups() == ["a\x00b"]


def test_group_api_on_closed_consumer_and_store(open_store) -> None:
    store = open_store()
    store.create_topic("t", 1)
    c = store.consumer("t", group_id="g")
    c.close()
    with pytest.raises(IllegalStateError):
        c.commit({TP("t", 0): 0})
    store.close()
    with pytest.raises(eventstore.StoreClosedError):
        store.list_groups()
    with pytest.raises(eventstore.StoreClosedError):
        store.describe_group("g")


# --- property: random joins, leaves, crashes and ticks ------------------------------------------------


class FakeTime:
    """Stands in for the ``time`` module of the consumer and coordinator: a manual monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    @staticmethod
    def time_ns() -> int:
        return time.time_ns()

    def sleep(self, seconds: float) -> None:
        self.now += seconds


TOPICS = {"a": 3, "b": 2}
INTERVAL_MS = 10_000


class Sim:
    def __init__(self, index: int, consumer: eventstore.Consumer) -> None:
        self.index = index
        self.name = f"c{index}"
        self.consumer = consumer
        self.state = "live"  # "crashed" (stopped polling) or "closed"
        self.pending: dict[TopicPartition, tuple[int, int]] | None = None  # delivered, not committed


class GroupModel:
    def __init__(self, store: eventstore.Store, clock: FakeTime, strategy: str) -> None:
        self.store = store
        self.clock = clock
        self.strategy = strategy
        self.sims: list[Sim] = []
        # (tp, offset) -> [(consumer index, generation)], and how often it was processed+committed
        self.deliveries: dict[tuple[TopicPartition, int], list[tuple[int, int]]] = defaultdict(list)
        self.processed: Counter[tuple[TopicPartition, int]] = Counter()
        self.committed: dict[TopicPartition, int] = {}

    def live(self) -> list[Sim]:
        return [s for s in self.sims if s.state == "live"]

    def join(self) -> None:
        i = len(self.sims)
        c = self.store.consumer(
            *TOPICS, group_id="g", client_id=f"c{i}", auto_offset_reset="earliest",
            enable_auto_commit=False, partition_assignment_strategy=self.strategy,
            max_poll_interval_ms=INTERVAL_MS, session_timeout_ms=INTERVAL_MS,
        )
        self.sims.append(Sim(i, c))

    def produce(self, topic: str, partition: int, n: int) -> None:
        fill(self.store, topic, partition, n)

    def poll(self, sim: Sim, max_records: int) -> dict[TopicPartition, tuple[int, int]]:
        """One poll; returns the delivered offset range [first, end) per partition."""
        batch = sim.consumer.poll(timeout_ms=0, max_records=max_records)
        gen = self.store.describe_group("g").generation
        owned = owned_by_member(self.store, "g")
        ranges = {}
        for tp, records in batch.items():
            assert tp in owned.get(sim.name, set()), f"{sim.name} got {tp} without owning it"
            first, end = records[0].offset, records[-1].offset + 1
            assert [r.offset for r in records] == list(range(first, end))
            ranges[tp] = (first, end)
            for r in records:
                key = (tp, r.offset)
                twice = [(i, g) for i, g in self.deliveries[key] if g == gen and i != sim.index]
                assert not twice, f"{key} delivered to c{sim.index} and {twice} in generation {gen}"
                self.deliveries[key].append((sim.index, gen))
        return ranges

    def process(self, sim: Sim, ranges: dict[TopicPartition, tuple[int, int]], explicit: bool) -> None:
        """Commit a polled batch; it counts as processed once that commit succeeded."""
        if not ranges:
            return
        if explicit:
            sim.consumer.commit({tp: end for tp, (_, end) in ranges.items()})
        else:
            sim.consumer.commit()
        self.mark_processed(ranges)

    def mark_processed(self, ranges: dict[TopicPartition, tuple[int, int]]) -> None:
        for tp, (first, end) in ranges.items():
            for o in range(first, end):
                self.processed[(tp, o)] += 1

    def check(self) -> None:
        owned = owned_by_member(self.store, "g")
        for sim in self.live():
            if sim.name in owned:
                # a consumer that is still a member sees at most what its member owns
                assert sim.consumer.assignment() <= owned[sim.name]
        offsets = self.store.group_offsets("g")
        for tp, off in offsets.items():
            assert off >= self.committed.get(tp, 0), f"committed offset of {tp} went back"
        self.committed = offsets


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(strategy=st.sampled_from(STRATEGIES), data=st.data())
def test_group_semantics_under_random_schedule(strategy: str, data: st.DataObject) -> None:
    clock = FakeTime()
    with tempfile.TemporaryDirectory() as directory, \
            mock.patch.object(consumer_module, "time", clock), \
            mock.patch.object(membership_module, "time", clock):
        store = eventstore.open(directory, durability="none")
        try:
            for topic, n in TOPICS.items():
                store.create_topic(topic, n)
                for p in range(n):
                    fill(store, topic, p, data.draw(st.integers(0, 6), label=f"initial {topic}/{p}"))
            run_schedule(GroupModel(store, clock, strategy), data)
            report = store.check()
            assert report.ok, report.problems
        finally:
            store.close()


def run_schedule(model: GroupModel, data: st.DataObject) -> None:
    model.join()
    steps = data.draw(st.integers(5, 45), label="steps")
    actions = ["poll", "poll", "poll", "poll", "join", "produce", "produce", "tick",
               "crash", "poll_crash", "close", "zombie"]
    for _ in range(steps):
        action = data.draw(st.sampled_from(actions), label="action")
        live = model.live()
        crashed = [s for s in model.sims if s.state == "crashed"]
        if action == "join" and len(live) < 4:
            model.join()
        elif action == "produce":
            topic = data.draw(st.sampled_from(sorted(TOPICS)), label="topic")
            model.produce(topic, data.draw(st.integers(0, TOPICS[topic] - 1)), data.draw(st.integers(1, 5)))
        elif action == "tick":
            model.clock.now += data.draw(st.sampled_from([0.2, 3.0, 11.0]), label="tick")
        elif action in ("poll", "poll_crash") and live:
            sim = data.draw(st.sampled_from(live), label="who")
            ranges = model.poll(sim, data.draw(st.integers(1, 6), label="max_records"))
            if action == "poll":
                model.process(sim, ranges, data.draw(st.booleans(), label="explicit commit"))
            else:  # it dies while handling the batch: nothing of it is committed
                sim.state, sim.pending = "crashed", ranges
        elif action == "crash" and live:
            data.draw(st.sampled_from(live), label="who").state = "crashed"
        elif action == "close" and live:
            sim = data.draw(st.sampled_from(live), label="who")
            sim.consumer.close()
            sim.state = "closed"
        elif action == "zombie" and crashed:
            # a crashed member comes back: it first tries to commit what it had in hand
            sim = data.draw(st.sampled_from(crashed), label="who")
            if sim.pending:
                before = model.store.group_offsets("g")
                try:
                    sim.consumer.commit({tp: end for tp, (_, end) in sim.pending.items()})
                except CommitFailedError:
                    assert model.store.group_offsets("g") == before, "a fenced commit wrote offsets"
                else:
                    model.mark_processed(sim.pending)
            sim.state, sim.pending = "live", None
        model.check()
    finish(model)


def finish(model: GroupModel) -> None:
    """Crashed members time out; the live ones consume everything that is left."""
    model.clock.now += INTERVAL_MS / 1000 + 1
    if not model.live():
        model.join()
    store = model.store
    idle_rounds = 0
    for _ in range(500):
        delivered = 0
        for sim in model.live():
            ranges = model.poll(sim, 50)
            delivered += len(ranges)
            model.process(sim, ranges, explicit=False)
            model.check()
        lag = store.lag("g")
        done = all(v == 0 for v in lag.values()) and store.describe_group("g").state == "Stable"
        idle_rounds = idle_rounds + 1 if delivered == 0 and done else 0
        if idle_rounds >= 2:
            break
    else:
        raise AssertionError(f"the group did not catch up: {store.describe_group('g')}")
    everything = {(TP(t, p), o) for t, n in TOPICS.items() for p in range(n)
                  for o in range(store.offsets(t, p)[1])}
    assert set(model.deliveries) == everything, "some record was never delivered"
    assert set(model.processed) == everything, "some record was lost across a rebalance"
    twice = {k: v for k, v in model.processed.items() if v != 1}
    assert not twice, f"records processed and committed more than once: {twice}"
    assert set(store.lag("g").values()) <= {0}
    # the crashed members were expired: what they still had in hand can no longer be committed
    offsets = store.group_offsets("g")
    for sim in model.sims:
        if sim.state == "crashed" and sim.pending:
            with pytest.raises(CommitFailedError):
                sim.consumer.commit({tp: end for tp, (_, end) in sim.pending.items()})
            with pytest.raises(CommitFailedError):
                sim.consumer.commit()
    assert store.group_offsets("g") == offsets
    for sim in model.sims:
        sim.consumer.close()
    assert store.describe_group("g").members == []
