"""The Kafka-style consumer API: assignment, positions, seeking, pausing, offsets, commits,
fetching (max_records, fairness), the blocking iterator and live tailing."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import pytest

import eventstore
from eventstore import (
    CommitFailedError,
    IllegalStateError,
    InvalidArgumentError,
    Message,
    NoOffsetForPartitionError,
    OffsetAndMetadata,
    OffsetAndTimestamp,
    PartitionNotFoundError,
    TopicNotFoundError,
    TopicPartition,
)
from eventstore.catalog import cursors

TP = TopicPartition
TS0 = 1_700_000_000_000


def fill(store: eventstore.Store, topic: str, partition: int, n: int, *, start: int = 0,
         ts0: int | None = None) -> None:
    msgs = [Message(value=b"%s-%d-%d" % (topic.encode(), partition, i),
                    timestamp_ms=None if ts0 is None else ts0 + i * 10)
            for i in range(start, start + n)]
    store.append_batch(topic, msgs, partition=partition)


def offsets_of(batch: dict[TopicPartition, list[eventstore.Record]]) -> dict[TopicPartition, list[int]]:
    return {tp: [r.offset for r in recs] for tp, recs in batch.items()}


def drain(consumer: eventstore.Consumer, **kw: object) -> list[eventstore.Record]:
    out: list[eventstore.Record] = []
    while True:
        batch = consumer.poll(timeout_ms=0, **kw)  # type: ignore[arg-type]
        if not batch:
            return out
        for recs in batch.values():
            out.extend(recs)


@pytest.fixture
def two(store: eventstore.Store) -> eventstore.Store:
    """Topic "t" with 2 partitions of 10 records each (timestamps TS0 + 10*i)."""
    store.create_topic("t", 2)
    fill(store, "t", 0, 10, ts0=TS0)
    fill(store, "t", 1, 10, ts0=TS0)
    return store


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    {"auto_offset_reset": "smallest"},
    {"partition_assignment_strategy": "sticky"},
    {"max_poll_records": 0},
    {"max_poll_interval_ms": 1.5},
    {"session_timeout_ms": -1},
    {"auto_commit_interval_ms": 0},
    {"group_id": ""},
    {"no_such_option": 1},
])
def test_bad_configuration_is_rejected(two: eventstore.Store, config: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        two.consumer(**config)


def test_subscribe_unknown_topic(two: eventstore.Store) -> None:
    with pytest.raises(TopicNotFoundError):
        two.consumer("nope", group_id="g")


# --- assign / subscribe -----------------------------------------------------------------------------


def test_assign_poll_position_and_seek(two: eventstore.Store) -> None:
    tp0, tp1 = TP("t", 0), TP("t", 1)
    c = two.consumer(auto_offset_reset="earliest")
    assert c.assignment() == set()
    c.assign([tp0])
    assert c.assignment() == {tp0}
    assert c.position(tp0) == 0
    batch = c.poll(timeout_ms=0)
    assert offsets_of(batch) == {tp0: list(range(10))}
    assert batch[tp0][3].value == b"t-0-3" and batch[tp0][3].topic == "t"
    assert c.position(tp0) == 10
    c.seek(tp0, 4)
    assert offsets_of(c.poll(timeout_ms=0)) == {tp0: list(range(4, 10))}
    c.seek_to_beginning(tp0)
    assert c.position(tp0) == 0
    c.seek_to_end()
    assert c.position(tp0) == 10
    assert c.poll(timeout_ms=0) == {}
    with pytest.raises(IllegalStateError):
        c.position(tp1)
    with pytest.raises(IllegalStateError):
        c.seek(tp1, 0)
    with pytest.raises(InvalidArgumentError):
        c.seek(tp0, -1)
    with pytest.raises(PartitionNotFoundError):
        c.assign([TP("t", 2)])
    c.assign([tp1])  # replaces the assignment
    assert c.assignment() == {tp1}
    assert offsets_of(c.poll(timeout_ms=0)) == {tp1: list(range(10))}
    c.close()


def test_seek_past_the_end_follows_reset_policy(two: eventstore.Store) -> None:
    tp0 = TP("t", 0)
    c = two.consumer(auto_offset_reset="earliest")
    c.assign([tp0])
    c.seek(tp0, 50)
    assert offsets_of(c.poll(timeout_ms=0)) == {}
    assert c.position(tp0) == 0
    assert len(drain(c)) == 10


def test_latest_is_the_default_reset(two: eventstore.Store) -> None:
    tp0 = TP("t", 0)
    c = two.consumer()
    c.assign([tp0])
    assert c.poll(timeout_ms=0) == {}
    assert c.position(tp0) == 10
    fill(two, "t", 0, 2, start=10)
    assert offsets_of(c.poll(timeout_ms=0)) == {tp0: [10, 11]}


def test_reset_none_without_commit_raises(two: eventstore.Store) -> None:
    c = two.consumer(group_id="g", auto_offset_reset="none")
    c.assign([TP("t", 0)])
    with pytest.raises(NoOffsetForPartitionError):
        c.poll(timeout_ms=0)
    with pytest.raises(NoOffsetForPartitionError):
        c.position(TP("t", 0))
    c.commit({TP("t", 0): 7})  # a standalone consumer may commit
    assert offsets_of(c.poll(timeout_ms=0)) == {TP("t", 0): [7, 8, 9]}


def test_subscribe_and_assign_rules(two: eventstore.Store) -> None:
    no_group = two.consumer()
    with pytest.raises(IllegalStateError):
        no_group.subscribe(["t"])
    with pytest.raises(IllegalStateError):
        no_group.poll(timeout_ms=0)
    c = two.consumer("t", group_id="g", auto_offset_reset="earliest")
    assert c.subscription() == {"t"}
    with pytest.raises(IllegalStateError):
        c.assign([TP("t", 0)])
    assert len(drain(c)) == 20
    assert c.assignment() == {TP("t", 0), TP("t", 1)}
    c.unsubscribe()
    assert c.subscription() is None
    assert c.assignment() == set()
    with pytest.raises(IllegalStateError):
        c.poll(timeout_ms=0)
    c.assign([TP("t", 1)])
    assert c.assignment() == {TP("t", 1)}
    with pytest.raises(IllegalStateError):
        c.subscribe(["t"])
    with pytest.raises(InvalidArgumentError):
        two.consumer(group_id="g2").subscribe([])
    c.close()


def test_unsubscribe_drops_a_manual_assignment(two: eventstore.Store) -> None:
    two.create_topic("u", 1)
    fill(two, "u", 0, 3)
    c = two.consumer(group_id="g", auto_offset_reset="earliest")
    c.assign([TP("u", 0)])
    c.unsubscribe()
    assert c.assignment() == set()
    c.subscribe(["t"])
    got = {r.topic for r in drain(c)}
    assert got == {"t"}


def test_subscribe_pattern(two: eventstore.Store) -> None:
    two.create_topic("orders.eu", 1)
    two.create_topic("orders.us", 1)
    fill(two, "orders.eu", 0, 2)
    fill(two, "orders.us", 0, 3)
    c = two.consumer(group_id="g", auto_offset_reset="earliest")
    c.subscribe(pattern=r"orders\..*")
    assert c.subscription() == {"orders.eu", "orders.us"}
    assert Counter(r.topic for r in drain(c)) == {"orders.eu": 2, "orders.us": 3}
    c.close()


def _poll_until(consumers: list[eventstore.Consumer], want: int,
                timeout_s: float = 5.0) -> list[eventstore.Record]:
    out: list[eventstore.Record] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:  # bounded by the deadline
        for c in consumers:
            for recs in c.poll(timeout_ms=10).values():
                out.extend(recs)
    return out


def test_pattern_subscription_follows_topics_created_and_deleted(two: eventstore.Store) -> None:
    c = two.consumer(group_id="g", auto_offset_reset="earliest")
    other = two.consumer(group_id="g", auto_offset_reset="earliest")
    c.subscribe(pattern=r"orders\..*")  # nothing matches yet: Kafka allows it, and so do we
    other.subscribe(["t"], pattern=r"orders\..*")
    assert c.subscription() == set() and other.subscription() == {"t"}
    assert c.poll(timeout_ms=0) == {}
    two.create_topic("orders.eu", 2)
    fill(two, "orders.eu", 0, 3)
    fill(two, "orders.eu", 1, 4)
    got = _poll_until([c, other], 7 + 20)
    for _ in range(3):  # settle the rebalance, then nothing more may come
        got += _poll_until([c, other], 1, timeout_s=0.05)
    assert Counter(r.topic for r in got) == {"orders.eu": 7, "t": 20}
    assert c.subscription() == other.subscription() - {"t"} == {"orders.eu"}
    owned = c.assignment() | other.assignment()
    assert {tp for tp in owned if tp.topic == "orders.eu"} == {TP("orders.eu", 0), TP("orders.eu", 1)}
    assert not c.assignment() & other.assignment()
    two.delete_topic("orders.eu")
    deadline = time.monotonic() + 5
    while c.subscription() and time.monotonic() < deadline:  # bounded by the deadline
        c.poll(timeout_ms=50)
        other.poll(timeout_ms=0)
    assert c.subscription() == set() and other.subscription() == {"t"}
    c.close()
    other.close()


@pytest.mark.parametrize("pattern", ["orders(", 5])
def test_bad_pattern_is_rejected(two: eventstore.Store, pattern: object) -> None:
    c = two.consumer(group_id="g")
    with pytest.raises(eventstore.InvalidArgumentError, match="pattern"):
        c.subscribe(pattern=pattern)  # type: ignore[arg-type]
    assert c.subscription() is None
    c.close()


def test_topic_metadata(two: eventstore.Store) -> None:
    c = two.consumer()
    assert c.topics() == {"t"}
    assert c.partitions_for_topic("t") == {0, 1}


# --- pause / resume ---------------------------------------------------------------------------------


def test_pause_and_resume(two: eventstore.Store) -> None:
    tp0, tp1 = TP("t", 0), TP("t", 1)
    c = two.consumer(auto_offset_reset="earliest")
    c.assign([tp0, tp1])
    c.pause(tp0)
    assert c.paused() == {tp0}
    got = drain(c)
    assert {r.partition for r in got} == {1} and len(got) == 10
    fill(two, "t", 0, 1, start=10)
    assert c.poll(timeout_ms=50) == {}  # an append to a paused partition does not count
    c.resume(tp0)
    assert c.paused() == set()
    assert [r.offset for r in drain(c)] == list(range(11))
    with pytest.raises(IllegalStateError):
        c.pause(TP("t", 9))


# --- offsets ------------------------------------------------------------------------------------------


def test_beginning_end_offsets_and_offsets_for_times(two: eventstore.Store) -> None:
    tp0, tp1 = TP("t", 0), TP("t", 1)
    c = two.consumer()
    assert c.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
    assert c.end_offsets([tp0, tp1]) == {tp0: 10, tp1: 10}
    assert c.highwater(tp1) == 10
    found = c.offsets_for_times({tp0: TS0 + 35, tp1: TS0 - 5})
    assert found == {tp0: OffsetAndTimestamp(4, TS0 + 40), tp1: OffsetAndTimestamp(0, TS0)}
    assert c.offsets_for_times({tp0: TS0 + 10_000}) == {tp0: None}


def test_commit_committed_and_metadata(two: eventstore.Store) -> None:
    tp0, tp1 = TP("t", 0), TP("t", 1)
    c = two.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    assert c.committed(tp0) is None
    c.poll(timeout_ms=0, max_records=3)
    c.poll(timeout_ms=0, max_records=3)
    c.commit()
    committed = {tp: c.committed(tp) for tp in (tp0, tp1)}
    positions = {tp: c.position(tp) for tp in (tp0, tp1)}
    assert committed == positions
    c.commit({tp0: 5, tp1: OffsetAndMetadata(6, "note")})
    assert (c.committed(tp0), c.committed(tp1)) == (5, 6)
    assert cursors.get(two.log.catalog, "g", tp1) == OffsetAndMetadata(6, "note")
    assert two.group_offsets("g") == {tp0: 5, tp1: 6}
    with pytest.raises(InvalidArgumentError):
        c.commit({tp0: -1})
    with pytest.raises(InvalidArgumentError):
        c.commit({("t", 0): 1})  # type: ignore[dict-item]
    with pytest.raises(CommitFailedError):
        c.commit({TP("t", 7): 1})  # not owned
    assert two.group_offsets("g") == {tp0: 5, tp1: 6}
    seen: list[tuple[object, object]] = []
    c.commit_async({tp0: 8}, callback=lambda offsets, error: seen.append((offsets, error)))
    assert seen == [({tp0: 8}, None)] and c.committed(tp0) == 8
    c.commit_async({TP("t", 7): 1}, callback=lambda offsets, error: seen.append((offsets, error)))
    assert isinstance(seen[-1][1], CommitFailedError)
    c.close()
    with pytest.raises(IllegalStateError):
        two.consumer().commit({tp0: 1})
    with pytest.raises(IllegalStateError):
        two.consumer().committed(tp0)


def test_commit_rejects_non_str_metadata(two: eventstore.Store) -> None:
    tp0 = TP("t", 0)
    c = two.consumer(group_id="g")
    c.assign([tp0])
    try:
        with pytest.raises(InvalidArgumentError):
            c.commit({tp0: OffsetAndMetadata(1, 123)})  # type: ignore[arg-type]
    finally:
        assert c.committed(tp0) is None
        assert two.group_offsets("g") == {}


def test_new_member_resumes_from_committed(two: eventstore.Store) -> None:
    tp0 = TP("t", 0)
    c = two.consumer(group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([tp0])
    c.poll(timeout_ms=0, max_records=4)
    c.commit()
    c.close()
    d = two.consumer("t", group_id="g", auto_offset_reset="earliest")
    got = drain(d)
    assert [r.offset for r in got if r.partition == 0] == list(range(4, 10))
    assert len([r for r in got if r.partition == 1]) == 10
    d.close()


def test_close_commits_with_auto_commit(two: eventstore.Store) -> None:
    tp0 = TP("t", 0)
    c = two.consumer("t", group_id="g", auto_offset_reset="earliest")
    c.poll(timeout_ms=0, max_records=3)
    pos = {tp: c.position(tp) for tp in c.assignment()}
    c.close()
    assert two.group_offsets("g") == pos
    c.close()  # idempotent
    assert c.closed
    with pytest.raises(IllegalStateError):
        c.poll(timeout_ms=0)
    d = two.consumer("t", group_id="h", auto_offset_reset="earliest")
    d.poll(timeout_ms=0, max_records=3)
    d.close(autocommit=False)
    assert two.group_offsets("h") == {}
    with two.consumer(group_id="k", auto_offset_reset="earliest") as e:
        e.assign([tp0])
        e.poll(timeout_ms=0)
    assert e.closed


def test_auto_commit_only_covers_records_returned_by_earlier_polls(two: eventstore.Store) -> None:
    c = two.consumer("t", group_id="g", auto_offset_reset="earliest", auto_commit_interval_ms=1)
    time.sleep(0.01)
    batch = c.poll(timeout_ms=0, max_records=3)
    [(tp, records)] = batch.items()
    assert [r.offset for r in records] == [0, 1, 2]
    # the process dies while handling these three records: they must be delivered again
    committed = c.committed(tp)
    assert committed is None or committed <= 0, committed


def test_poll_update_offsets_false(two: eventstore.Store) -> None:
    tp0 = TP("t", 0)
    c = two.consumer(auto_offset_reset="earliest")
    c.assign([tp0])
    assert offsets_of(c.poll(timeout_ms=0, max_records=3, update_offsets=False)) == {tp0: [0, 1, 2]}
    assert c.position(tp0) == 0
    assert offsets_of(c.poll(timeout_ms=0, max_records=3)) == {tp0: [0, 1, 2]}
    assert c.position(tp0) == 3


# --- fetching -------------------------------------------------------------------------------------------


def test_max_records_and_max_poll_records(two: eventstore.Store) -> None:
    c = two.consumer(auto_offset_reset="earliest", max_poll_records=4)
    c.assign([TP("t", 0), TP("t", 1)])
    sizes = []
    while batch := c.poll(timeout_ms=0):
        sizes.append(sum(len(v) for v in batch.values()))
    assert sum(sizes) == 20 and max(sizes) == 4
    c.seek_to_beginning()
    assert sum(len(v) for v in c.poll(timeout_ms=0, max_records=7).values()) == 7
    for bad in (0, -1, 1.5):
        with pytest.raises(InvalidArgumentError):
            c.poll(timeout_ms=0, max_records=bad)  # type: ignore[arg-type]


def test_records_come_in_offset_order_without_gaps(store: eventstore.Store) -> None:
    store.create_topic("t", 1)
    for i in range(50):  # many small batches, and one big one
        fill(store, "t", 0, 1 + i % 4, start=i * 10)
    c = store.consumer(auto_offset_reset="earliest")
    c.assign([TP("t", 0)])
    got = [r.offset for r in drain(c, max_records=3)]
    assert got == list(range(store.offsets("t", 0)[1]))


def test_fairness_no_partition_starves(store: eventstore.Store) -> None:
    store.create_topic("f", 4)
    for p in range(4):
        fill(store, "f", p, 400)
    c = store.consumer(auto_offset_reset="earliest")
    c.assign([TP("f", p) for p in range(4)])
    counts: Counter[int] = Counter()
    for i in range(1, 41):
        for tp, recs in c.poll(timeout_ms=0, max_records=10).items():
            counts[tp.partition] += len(recs)
        if i % 4 == 0:  # every partition gets its turn within one lap
            assert max(counts.values()) - min(counts[p] for p in range(4)) <= 10, counts
    assert set(counts) == {0, 1, 2, 3}
    # one partition far ahead of the others still does not starve them
    fill(store, "f", 0, 5000, start=400)
    fresh: Counter[int] = Counter()
    for _ in range(8):
        for tp, recs in c.poll(timeout_ms=0, max_records=25).items():
            fresh[tp.partition] += len(recs)
    assert all(fresh[p] > 0 for p in range(4)), fresh


def test_blocking_iterator_with_consumer_timeout(two: eventstore.Store) -> None:
    c = two.consumer(auto_offset_reset="earliest", consumer_timeout_ms=200)
    c.assign([TP("t", 0), TP("t", 1)])
    t0 = time.monotonic()
    got = list(c)
    elapsed = time.monotonic() - t0
    assert sorted((r.partition, r.offset) for r in got) == [(p, o) for p in (0, 1) for o in range(10)]
    for p in (0, 1):
        assert [r.offset for r in got if r.partition == p] == list(range(10))
    assert 0.19 <= elapsed < 2.0
    fill(two, "t", 1, 1, start=10)
    assert [r.offset for r in c] == [10]


def test_iterator_sees_records_appended_while_waiting(two: eventstore.Store) -> None:
    c = two.consumer(consumer_timeout_ms=3000)
    c.assign([TP("t", 0)])
    timer = threading.Timer(0.1, lambda: fill(two, "t", 0, 1, start=10))
    timer.start()
    try:
        assert next(iter(c)).value == b"t-0-10"
    finally:
        timer.join()


@pytest.mark.parametrize("durability", ["none", "fsync"])
@pytest.mark.parametrize("mode", ["assign", "subscribe"])
def test_live_tailing_wakes_promptly(open_store, durability: str, mode: str) -> None:
    store = open_store(durability=durability)
    store.create_topic("live", 3)
    if mode == "assign":
        c = store.consumer()
        c.assign([TP("live", p) for p in range(3)])
    else:
        c = store.consumer("live", group_id="tail")
    assert c.poll(timeout_ms=0) == {}  # joins, takes its partitions, positions at the end
    latencies = []
    for i in range(3):
        appended_at: list[float] = []

        def append(i: int, appended_at: list[float]) -> None:
            time.sleep(0.15)
            appended_at.append(time.monotonic())
            store.append("live", b"v%d" % i, partition=i)

        t = threading.Thread(target=append, args=(i, appended_at))
        t.start()
        t0 = time.monotonic()
        batch = c.poll(timeout_ms=5000)
        woke = time.monotonic()
        t.join()
        assert offsets_of(batch) == {TP("live", i): [0]}
        assert woke - t0 >= 0.1
        latencies.append(woke - appended_at[0])
    assert max(latencies) < 0.5, latencies
    c.close()


def test_metrics_of_a_group_member(two: eventstore.Store) -> None:
    c = two.consumer("t", group_id="g", auto_offset_reset="earliest", max_poll_interval_ms=100,
                     max_poll_records=4)
    assert len(list(itertools.islice(c, 6))) == 6  # iterating polls too: 4 of one partition, 2 of the other
    m = c.metrics()
    assert m["records_consumed"] == 8 and m["polls"] == 2  # two polls of 4; 6 handed out so far
    # the first read of each partition fetched all its 10 records (one batch) ahead of the polls
    assert m["log_reads"] == 2 and m["bytes_fetched"] == two.statistics().size_bytes
    assert m["assigned_partitions"] == 2 and m["rebalances"] == 1
    assert sorted(m["records_lag"].values()) == [6, 8] and m["records_lag_max"] == 8
    c.commit()
    assert c.metrics()["commits"] == 1
    time.sleep(0.2)  # no poll for max_poll_interval_ms: the next member to poll expires this one
    other = two.consumer("t", group_id="g", auto_offset_reset="earliest")
    other.poll(timeout_ms=0)
    with pytest.raises(CommitFailedError):
        c.commit({TP("t", 0): 1})
    m = c.metrics()
    assert (m["commits"], m["commit_failures"]) == (1, 1)
    other.close()
    c.close()


def test_poll_timeout_without_data(two: eventstore.Store) -> None:
    c = two.consumer()
    c.assign([TP("t", 0)])
    t0 = time.monotonic()
    assert c.poll(timeout_ms=150) == {}
    assert 0.14 <= time.monotonic() - t0 < 1.0


def test_store_closed_under_consumer(open_store) -> None:
    store = open_store()
    store.create_topic("t", 1)
    c = store.consumer(auto_offset_reset="earliest")
    c.assign([TP("t", 0)])
    store.close()
    with pytest.raises(eventstore.StoreClosedError):
        c.poll(timeout_ms=0)
    c.close()
    assert c.closed
