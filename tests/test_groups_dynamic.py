"""Consumer groups whose topics change under them, and member sessions.

Part 1: pattern subscriptions follow topics created, grown and deleted while the
group consumes. Several consumers (pattern and named subscriptions mixed) run in
real threads, a producer appends continuously and a seeded random schedule
creates, alters and deletes topics. At every step no partition has two owners;
in the end every partition of every subscribed topic has an owner, and every
record of the surviving topics was processed (delivered and committed) exactly
once, never delivered twice within one generation, and no exception escaped poll.

Part 2: sessions. A consumer busy between polls keeps its partitions for as long
as it exists (whatever holds it: a local, a closure, a rebalance listener); one
that exceeds max_poll_interval_ms is removed and fenced; one that becomes garbage
without close() loses its partitions after session_timeout_ms; close() removes at
once.
"""

from __future__ import annotations

import contextlib
import gc
import random
import re
import threading
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

import eventstore
from eventstore import (
    CommitFailedError,
    Message,
    TopicNotFoundError,
    TopicPartition,
)
from eventstore.client import consumer as consumer_module

TP = TopicPartition
STRATEGIES = ["range", "roundrobin", "cooperative-sticky"]
PATTERN = r"p\..*"


def owners(store: eventstore.Store, group: str) -> dict[TopicPartition, str]:
    """tp -> client_id of its owner, asserting that no partition has two owners."""
    desc = store.describe_group(group)
    out: dict[TopicPartition, str] = {}
    for m in desc.members:
        for tp in m.owned:
            assert tp not in out, f"{tp} owned by {out[tp]} and {m.client_id}: {desc}"
            out[tp] = m.client_id
    return out


def fill(store: eventstore.Store, topic: str, partition: int, n: int) -> None:
    store.append_batch(topic, [Message(value=b"v%d" % i) for i in range(n)], partition=partition)


def wait_for(cond: Callable[[], bool], step: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # bounded by the deadline
        assert time.monotonic() < deadline, "condition not reached in time"
        step()


# --- part 1: pattern subscriptions under a changing set of topics -----------------------------------


class Worker:
    """One consumer of the group, polling and committing every batch in its own thread."""

    def __init__(self, harness: Harness, index: int, named: list[str], pattern: str | None) -> None:
        self.h = harness
        self.name = f"c{index}"
        self.named = named
        self.pattern = pattern
        self.rng = random.Random(harness.seed * 100 + index)
        self.consumer: eventstore.Consumer | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, name=self.name)

    def expected_topics(self, existing: set[str]) -> set[str]:
        rx = re.compile(self.pattern) if self.pattern else None
        return set(self.named) | {t for t in existing if rx is not None and rx.fullmatch(t)}

    def run(self) -> None:
        h = self.h
        try:
            c = h.store.consumer(group_id="g", client_id=self.name, auto_offset_reset="earliest",
                                 enable_auto_commit=False, partition_assignment_strategy=h.strategy,
                                 max_poll_interval_ms=30_000, session_timeout_ms=10_000)
            c.subscribe(self.named, pattern=self.pattern)
            self.consumer = c
            self.ready.set()
            while not h.stop.is_set():  # bounded: the test sets stop before its deadline
                batch = c.poll(timeout_ms=self.rng.choice([0, 5, 20]),
                               max_records=self.rng.randint(1, 40))
                assert c._member is not None
                gen = c._member.generation  # the generation this poll delivered in
                mine = c.assignment()
                with h.lock:
                    for tp, records in batch.items():
                        assert tp in mine, f"{self.name} got {tp} without owning it"
                        offsets = [r.offset for r in records]
                        assert offsets == list(range(offsets[0], offsets[-1] + 1)), offsets
                        for o in offsets:
                            h.deliveries[(tp, o)].append((self.name, gen))
                if batch:
                    c.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
                    with h.lock:
                        for tp, recs in batch.items():
                            for r in recs:
                                h.processed[(tp, r.offset)] += 1
            c.close()
        except BaseException as e:  # reported by the main thread
            h.errors.append((self.name, e))
            self.ready.set()


class Harness:
    def __init__(self, store: eventstore.Store, strategy: str, seed: int) -> None:
        self.store = store
        self.strategy = strategy
        self.seed = seed
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stop_producing = threading.Event()
        self.errors: list[tuple[str, BaseException]] = []
        self.deliveries: dict[tuple[TopicPartition, int], list[tuple[str, int]]] = defaultdict(list)
        self.processed: Counter[tuple[TopicPartition, int]] = Counter()
        self.deleted: set[str] = set()

    def produce(self) -> None:
        rng = random.Random(self.seed)
        try:
            while not self.stop_producing.is_set():  # bounded: stopped by the test
                topics = self.store.topics()
                cfg = rng.choice(topics)
                with contextlib.suppress(TopicNotFoundError):  # deleted meanwhile
                    fill(self.store, cfg.name, rng.randrange(cfg.partitions), rng.randint(1, 5))
                time.sleep(0.001)
        except BaseException as e:
            self.errors.append(("producer", e))


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pattern_members_follow_topics_created_altered_and_deleted(
        store: eventstore.Store, strategy: str, seed: int) -> None:
    rng = random.Random(seed)
    store.create_topic("t", 2)
    store.create_topic("p.0", 2)
    store.create_topic("p.1", 1)
    store.create_topic("q.0", 1)  # matches no pattern: nobody may be assigned it
    h = Harness(store, strategy, seed)
    workers = [
        Worker(h, 0, [], PATTERN),
        Worker(h, 1, ["t"], PATTERN),
        Worker(h, 2, ["t"], None),
        Worker(h, 3, ["p.0"], None),  # a named subscription to a topic that may be deleted
    ]
    producer = threading.Thread(target=h.produce)
    next_topic = 2
    try:
        producer.start()
        for w in workers:
            w.thread.start()
        for w in workers:
            assert w.ready.wait(5)
        assert not h.errors, h.errors
        end = time.monotonic() + 1.5
        while time.monotonic() < end and not h.errors:  # the schedule: bounded by time
            existing = {c.name: c for c in store.topics()}
            action = rng.choice(["create", "create", "alter", "alter", "delete", "other", "wait"])
            if action == "create":
                store.create_topic(f"p.{next_topic}", rng.randint(1, 3))
                next_topic += 1
            elif action == "alter":
                name = rng.choice(sorted(existing))
                store.alter_topic(name, partitions=existing[name].partitions + rng.randint(1, 2))
            elif action == "delete":
                doomed = sorted(n for n in existing if n.startswith("p."))
                if len(doomed) > 1:
                    name = rng.choice(doomed)
                    store.delete_topic(name)
                    h.deleted.add(name)
            elif action == "other":
                store.create_topic(f"q.{next_topic}", 1)
                next_topic += 1
            deadline = time.monotonic() + rng.choice([0.01, 0.03, 0.08])
            while time.monotonic() < deadline:
                owned = owners(store, "g")  # exclusivity, checked under the group lock
                assert not {tp for tp in owned if tp.topic.startswith("q.")}, owned
                time.sleep(0.003)
        h.stop_producing.set()
        producer.join()
        assert not h.errors, h.errors

        # settle: subscriptions follow the surviving topics and every partition gets an owner
        existing = {c.name: c.partitions for c in store.topics()}
        expected = {w.name: w.expected_topics(set(existing)) for w in workers}
        subscribed = set().union(*expected.values()) & set(existing)
        everything = {(TP(t, p), o) for t in subscribed for p in range(existing[t])
                      for o in range(store.offsets(t, p)[1])}

        def settled() -> bool:
            desc = store.describe_group("g")
            topics = {m.client_id: set(m.topics) for m in desc.members}
            owned = owners(store, "g")
            with h.lock:
                done = everything <= set(h.processed)
            return (desc.state == "Stable" and topics == expected and done
                    and set(owned) == {TP(t, p) for t in subscribed for p in range(existing[t])})

        wait_for(lambda: settled() or bool(h.errors), lambda: time.sleep(0.01), timeout_s=6)
        assert not h.errors, h.errors
    finally:
        h.stop_producing.set()
        h.stop.set()
        producer.join()
        for w in workers:
            w.thread.join(5)
    assert not h.errors, h.errors
    assert store.describe_group("g").members == []

    # nothing delivered twice within one generation
    for key, seen in h.deliveries.items():
        dup = [g for g, n in Counter(g for _, g in seen).items() if n > 1]
        assert not dup, f"{key} delivered twice in generation(s) {dup}: {seen}"
    # every record of the surviving topics processed exactly once, none of other topics
    live = {k: n for k, n in h.processed.items() if k[0].topic not in h.deleted}
    assert set(live) == everything, "some record was lost or came from an unsubscribed topic"
    twice = {k: n for k, n in live.items() if n != 1}
    assert not twice, f"records processed and committed more than once: {twice}"
    assert not {k for k in h.deliveries if k[0].topic.startswith("q.")}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_topic_deleted_under_its_owner(store: eventstore.Store, strategy: str) -> None:
    """No exception escapes poll; the partitions leave the group; the other topic goes on."""
    store.create_topic("p.a", 2)
    store.create_topic("p.b", 2)
    for p in range(2):
        fill(store, "p.a", p, 5)
        fill(store, "p.b", p, 5)
    cfg: dict[str, Any] = {"group_id": "g", "auto_offset_reset": "earliest",
                           "partition_assignment_strategy": strategy}
    a = store.consumer(client_id="a", **cfg)
    a.subscribe(pattern=PATTERN)
    b = store.consumer("p.a", client_id="b", **cfg)  # by name: the topic stays in its subscription
    wait_for(lambda: owners(store, "g").keys() == {TP(t, p) for t in ("p.a", "p.b") for p in range(2)},
             lambda: [c.poll(timeout_ms=5) for c in (a, b)])
    store.delete_topic("p.a")
    for p in range(2):
        fill(store, "p.b", p, 3)
    got: list[tuple[str, int, int]] = []

    def step() -> None:
        for c in (a, b):
            for tp, recs in c.poll(timeout_ms=5).items():
                got.extend((tp.topic, tp.partition, r.offset) for r in recs)

    wait_for(lambda: set(owners(store, "g")) == {TP("p.b", 0), TP("p.b", 1)}
             and a.subscription() == {"p.b"} and store.describe_group("g").state == "Stable", step)
    assert b.subscription() == {"p.a"}
    assert {m.client_id: m.topics for m in store.describe_group("g").members} == {
        "a": ["p.b"], "b": ["p.a"]}
    assert not any(t == "p.a" for t, _, _ in got)
    assert a.assignment() | b.assignment() == {TP("p.b", 0), TP("p.b", 1)}
    a.close()
    b.close()


def test_topic_recreated_with_fewer_partitions_under_its_owner(store: eventstore.Store) -> None:
    store.create_topic("p.a", 4)
    c = store.consumer(group_id="g", auto_offset_reset="earliest")
    c.subscribe(pattern=PATTERN)
    wait_for(lambda: len(c.assignment()) == 4, lambda: c.poll(timeout_ms=5))
    with mock.patch.object(consumer_module, "_EXPIRY_CHECK_S", 10.0):
        c.poll(timeout_ms=0)  # an expiry check now; the next one is far away
        store.delete_topic("p.a")
        store.create_topic("p.a", 2)
        c.poll(timeout_ms=0)
    wait_for(lambda: c.assignment() == {TP("p.a", 0), TP("p.a", 1)}, lambda: c.poll(timeout_ms=5))
    c.close()


def test_deleted_topic_leaves_no_cursor_behind(store: eventstore.Store) -> None:
    store.create_topic("p.a", 1)
    fill(store, "p.a", 0, 5)
    c = store.consumer(group_id="g", auto_offset_reset="earliest", enable_auto_commit=True)
    c.subscribe(pattern=PATTERN)
    wait_for(lambda: bool(c.assignment()) and c.position(TP("p.a", 0)) == 5,
             lambda: c.poll(timeout_ms=5))
    store.delete_topic("p.a")
    wait_for(lambda: not c.assignment(), lambda: c.poll(timeout_ms=5))
    store.create_topic("p.a", 1)
    fill(store, "p.a", 0, 8)
    got: list[int] = []
    deadline = time.monotonic() + 1
    while len(got) < 8 and time.monotonic() < deadline:  # bounded by the deadline
        for recs in c.poll(timeout_ms=10).values():
            got.extend(r.offset for r in recs)
    c.close()
    assert got == list(range(8)), f"records of the re-created topic lost: got {got}"


# --- part 2: sessions ------------------------------------------------------------------------------


def _pair(store: eventstore.Store, **cfg: Any) -> tuple[eventstore.Consumer, eventstore.Consumer]:
    store.create_topic("t", 4)
    for p in range(4):
        fill(store, "t", p, 5)
    base: dict[str, Any] = {"group_id": "g", "auto_offset_reset": "earliest", "enable_auto_commit": False}
    a = store.consumer("t", client_id="a", **base, **cfg)
    b = store.consumer("t", client_id="b", **base, **cfg)
    wait_for(lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2
             and store.describe_group("g").state == "Stable",
             lambda: [a.poll(timeout_ms=5), b.poll(timeout_ms=5)])
    return a, b


def _poll_for(consumer: eventstore.Consumer, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # bounded by time
        consumer.poll(timeout_ms=10)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_busy_consumer_in_a_thread_keeps_its_partitions(store: eventstore.Store, strategy: str) -> None:
    """Held only by the closure a worker thread runs, busy for 8 session timeouts."""
    cfg: dict[str, Any] = {"session_timeout_ms": 60, "max_poll_interval_ms": 5000,
                           "partition_assignment_strategy": strategy}
    a, b = _pair(store, **cfg)
    owned = a.assignment()
    member_ids = {m.client_id: m.member_id for m in store.describe_group("g").members}
    result: dict[str, Any] = {}

    def worker(c: eventstore.Consumer = a) -> None:
        try:
            batch = c.poll(timeout_ms=0)
            time.sleep(0.5)  # "processing"
            c.commit()
            result["batch"] = batch
            result["after"] = c.assignment()
        except BaseException as e:
            result["error"] = e

    del a
    t = threading.Thread(target=worker)
    t.start()
    _poll_for(b, 0.3)
    assert {tp for tp, o in owners(store, "g").items() if o == "a"} == owned
    t.join()
    assert "error" not in result, result
    assert result["after"] == owned
    assert {m.client_id: m.member_id for m in store.describe_group("g").members} == member_ids
    b.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_consumer_past_max_poll_interval_is_removed_and_fenced(
        store: eventstore.Store, strategy: str) -> None:
    cfg: dict[str, Any] = {"session_timeout_ms": 5000, "max_poll_interval_ms": 150,
                           "partition_assignment_strategy": strategy}
    a, b = _pair(store, **cfg)
    a_parts = a.assignment()
    _poll_for(b, 0.4)  # a is busy; b polls and expires it
    assert set(owners(store, "g")) == {TP("t", p) for p in range(4)}
    assert [m.client_id for m in store.describe_group("g").members] == ["b"]
    before = store.group_offsets("g")
    with pytest.raises(CommitFailedError):
        a.commit()
    with pytest.raises(CommitFailedError):
        a.commit({tp: 1 for tp in a_parts})
    assert store.group_offsets("g") == before
    # it polls again: a new member, sharing again
    wait_for(lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2,
             lambda: [a.poll(timeout_ms=5), b.poll(timeout_ms=5)])
    owners(store, "g")
    a.close()
    b.close()


def test_lone_consumer_past_max_poll_interval_cannot_commit(store: eventstore.Store) -> None:
    store.create_topic("t", 1)
    fill(store, "t", 0, 3)
    c = store.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False,
                       max_poll_interval_ms=100, session_timeout_ms=100)
    wait_for(lambda: c.assignment() != set() and c.position(TP("t", 0)) == 3,
             lambda: c.poll(timeout_ms=5))
    time.sleep(0.3)
    try:
        with pytest.raises(CommitFailedError):
            c.commit()
    finally:
        c.close()


def test_dropped_consumer_loses_its_partitions_after_session_timeout(store: eventstore.Store) -> None:
    """The session runs from the dropped consumer's last heartbeat (its last poll), so that is
    where the clock starts: a slow machine may only see the partitions move later, never
    earlier."""
    a, b = _pair(store, session_timeout_ms=400, max_poll_interval_ms=60_000)
    a_parts = a.assignment()
    dropped = weakref.ref(a)
    heartbeat_at = time.monotonic()  # a's last heartbeat is at or after this
    a.poll(timeout_ms=0)
    del a  # never closed: it goes at once (no collection needed), nothing heartbeats for it
    assert dropped() is None

    def a_gone() -> bool:
        held = {tp for tp, o in owners(store, "g").items() if o == "a"}
        assert held in (a_parts, set()), held
        if held:
            return False
        # not before the session timeout (measured after this check saw it, so never early)
        assert time.monotonic() - heartbeat_at >= 0.4
        return True

    # ... and after it: b takes everything over
    wait_for(lambda: a_gone() and len(b.assignment()) == 4, lambda: b.poll(timeout_ms=10), timeout_s=5)
    assert [m.client_id for m in store.describe_group("g").members] == ["b"]
    b.close()


class Holder:
    """A rebalance listener holding its consumer (a reference cycle once subscribed)."""

    def __init__(self) -> None:
        self.consumer: eventstore.Consumer | None = None
        self.events: list[str] = []
        self.errors: list[BaseException] = []

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.events.append("revoked")
        try:
            assert self.consumer is not None
            self.consumer.commit()
        except BaseException as e:
            self.errors.append(e)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.events.append("assigned")


def _listened(store: eventstore.Store, holder: Holder, **cfg: Any) -> None:
    c = store.consumer(group_id="g", client_id="a", auto_offset_reset="earliest",
                       enable_auto_commit=False, **cfg)
    holder.consumer = c
    c.subscribe(["t"], listener=holder)


def test_consumer_held_by_its_listener(store: eventstore.Store) -> None:
    store.create_topic("t", 4)
    for p in range(4):
        fill(store, "t", p, 5)
    cfg: dict[str, Any] = {"session_timeout_ms": 60, "max_poll_interval_ms": 10_000}
    holder = Holder()
    _listened(store, holder, **cfg)  # the only reference to the consumer: holder.consumer
    b = store.consumer("t", group_id="g", client_id="b", auto_offset_reset="earliest",
                       enable_auto_commit=False, **cfg)

    # (no local function may keep a reference to holder: it is dropped below)
    wait_for(lambda: store.describe_group("g").state == "Stable" and len(b.assignment()) == 2,
             lambda h=holder: [h.consumer.poll(timeout_ms=5) if h.consumer else None,
                               b.poll(timeout_ms=5)])
    assert holder.errors == []
    a_parts = holder.consumer.assignment() if holder.consumer else set()
    gc.collect()
    _poll_for(b, 0.3)  # five session timeouts: the holder keeps it alive
    assert {tp for tp, o in owners(store, "g").items() if o == "a"} == a_parts
    # once the holder itself is garbage, the cycle is collected and the session lapses
    del holder
    gc.collect()
    wait_for(lambda: len(b.assignment()) == 4, lambda: b.poll(timeout_ms=10), timeout_s=5)
    assert [m.client_id for m in store.describe_group("g").members] == ["b"]
    b.close()


def test_consumer_held_by_a_closure(store: eventstore.Store) -> None:
    store.create_topic("t", 4)
    for p in range(4):
        fill(store, "t", p, 5)
    cfg: dict[str, Any] = {"group_id": "g", "auto_offset_reset": "earliest", "enable_auto_commit": False,
                           "session_timeout_ms": 60, "max_poll_interval_ms": 10_000}

    def make() -> Callable[[], dict[TopicPartition, list[eventstore.Record]]]:
        c = store.consumer("t", client_id="a", **cfg)

        def step() -> dict[TopicPartition, list[eventstore.Record]]:
            batch = c.poll(timeout_ms=5)
            if batch:
                c.commit()
            return batch

        step.consumer_assignment = c.assignment  # type: ignore[attr-defined]
        return step

    step = make()
    b = store.consumer("t", client_id="b", **cfg)
    wait_for(lambda: store.describe_group("g").state == "Stable" and len(b.assignment()) == 2,
             lambda s=step: [s(), b.poll(timeout_ms=5)])
    a_parts = step.consumer_assignment()  # type: ignore[attr-defined]
    gc.collect()
    _poll_for(b, 0.3)
    assert {tp for tp, o in owners(store, "g").items() if o == "a"} == a_parts
    step()  # still works, keeps what it had
    assert step.consumer_assignment() == a_parts  # type: ignore[attr-defined]
    del step
    gc.collect()
    wait_for(lambda: len(b.assignment()) == 4, lambda: b.poll(timeout_ms=10), timeout_s=5)
    b.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_close_removes_immediately(store: eventstore.Store, strategy: str) -> None:
    a, b = _pair(store, session_timeout_ms=60_000, max_poll_interval_ms=60_000,
                 partition_assignment_strategy=strategy)
    gen = store.describe_group("g").generation
    t0 = time.monotonic()
    a.close()
    desc = store.describe_group("g")
    assert [m.client_id for m in desc.members] == ["b"] and desc.generation == gen + 1
    assert all(o == "b" for o in owners(store, "g").values())
    wait_for(lambda: len(b.assignment()) == 4, lambda: b.poll(timeout_ms=5), timeout_s=2)
    assert time.monotonic() - t0 < 2
    b.close()
    assert store.describe_group("g").state == "Empty"
