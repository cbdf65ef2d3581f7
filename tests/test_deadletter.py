"""Dead letters: retries with backoff, parking poison records in ``<topic>.dlq`` with the
headers that say where they came from and why, committing, and replaying them."""

from __future__ import annotations

import threading

import pytest

import eventstore
from eventstore import (
    DeadLetterProcessor,
    InvalidArgumentError,
    Message,
    ProcessingStats,
    TopicPartition,
    replay_dead_letters,
)
from eventstore.client.deadletter import DLQ_HEADERS

TP = TopicPartition


class Poison(Exception):
    pass


class Handler:
    """Fails on values starting with b"bad"; on b"flaky" only for its first ``flaky`` attempts."""

    def __init__(self, flaky: int = 0) -> None:
        self.calls: list[bytes] = []
        self.ok: list[bytes] = []
        self.flaky = flaky

    def __call__(self, record: eventstore.Record) -> None:
        value = record.value or b""
        self.calls.append(value)
        if value.startswith(b"bad"):
            raise Poison(f"cannot handle {value.decode()}")
        if value.startswith(b"flaky") and self.calls.count(value) <= self.flaky:
            raise TimeoutError("try again")
        self.ok.append(value)


@pytest.fixture
def orders(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("orders", 2)
    values = [b"ok-0", b"bad-1", b"ok-2", b"flaky-3", b"ok-4", b"bad-5", b"ok-6"]
    store.append_batch("orders", [Message(value=v, key=b"k%d" % i, partition=i % 2,
                                          headers=[("trace", b"t%d" % i)])
                                  for i, v in enumerate(values)])
    return store


def processor(store: eventstore.Store, handler: Handler, sleeps: list[float],
              **kw: object) -> DeadLetterProcessor:
    consumer = store.consumer("orders", group_id="workers", auto_offset_reset="earliest",
                              enable_auto_commit=False)
    return DeadLetterProcessor(consumer, handler, sleep=sleeps.append, **kw)  # type: ignore[arg-type]


def dlq_records(store: eventstore.Store, topic: str = "orders.dlq") -> list[eventstore.Record]:
    out = []
    for p in range(store.topic(topic).partitions):
        out += store.read(topic, p, store.offsets(topic, p)[0], max_records=1000)
    return out


def test_retries_with_backoff_then_parks_and_commits(orders: eventstore.Store) -> None:
    store = orders
    handler = Handler(flaky=2)
    sleeps: list[float] = []
    proc = processor(store, handler, sleeps, retries=3, backoff_ms=100, backoff_multiplier=2.0,
                     max_backoff_ms=300)
    stats = proc.run(max_polls=3, poll_timeout_ms=0)
    assert isinstance(stats, ProcessingStats)
    # every good record handled once, the flaky one after two failures; nothing blocked
    assert sorted(handler.ok) == [b"flaky-3", b"ok-0", b"ok-2", b"ok-4", b"ok-6"]
    assert handler.calls.count(b"bad-1") == 4 and handler.calls.count(b"bad-5") == 4
    assert handler.calls.count(b"flaky-3") == 3
    # two poison records x 3 retries (0.1, 0.2, 0.3 capped) + the flaky record's two retries
    assert sorted(sleeps) == sorted([0.1, 0.2, 0.3] * 2 + [0.1, 0.2])
    assert (stats.processed, stats.dead_lettered, stats.retried) == (5, 2, 8)
    assert stats.batches >= 1
    parked = sorted(dlq_records(store), key=lambda r: r.value or b"")
    assert [r.value for r in parked] == [b"bad-1", b"bad-5"]
    for rec, (partition, offset) in zip(parked, [(1, 0), (1, 2)], strict=True):
        h = dict(rec.headers)
        assert h["trace"] == b"t%d" % (1 if offset == 0 else 5)
        assert h["es.dlq.topic"] == b"orders"
        assert h["es.dlq.partition"] == b"%d" % partition
        assert h["es.dlq.offset"] == b"%d" % offset
        assert h["es.dlq.exception"] == b"Poison"
        assert h["es.dlq.message"] == b"cannot handle " + rec.value
        assert h["es.dlq.attempts"] == b"4"
        assert int(h["es.dlq.timestamp"]) > 0
        assert rec.key == b"k%d" % (1 if offset == 0 else 5)
    assert store.group_offsets("workers") == {TP("orders", 0): 4, TP("orders", 1): 3}
    assert store.lag("workers") == {TP("orders", 0): 0, TP("orders", 1): 0}
    proc.consumer.close()


def test_no_retries_and_zero_backoff(orders: eventstore.Store) -> None:
    handler = Handler()
    sleeps: list[float] = []
    proc = processor(orders, handler, sleeps, retries=0, backoff_ms=0)
    proc.run(max_polls=2, poll_timeout_ms=0)
    assert handler.calls.count(b"bad-1") == 1 and sleeps == []
    headers = [dict(r.headers) for r in dlq_records(orders)]
    assert sorted(h["es.dlq.attempts"] for h in headers) == [b"1", b"1"]
    # the flaky record gets no second chance either
    assert sorted(r.value for r in dlq_records(orders)) == [b"bad-1", b"bad-5"]
    proc.consumer.close()


def test_parked_exactly_once_across_a_restart(orders: eventstore.Store) -> None:
    store = orders
    sleeps: list[float] = []
    proc = processor(store, Handler(), sleeps, retries=1, backoff_ms=1)
    proc.run(max_polls=2, poll_timeout_ms=0)
    proc.consumer.close()
    store.append("orders", b"bad-7", partition=0)
    again = processor(store, Handler(), sleeps, retries=1, backoff_ms=1)
    again.run(max_polls=2, poll_timeout_ms=0)
    again.consumer.close()
    assert sorted(r.value for r in dlq_records(store)) == [b"bad-1", b"bad-5", b"bad-7"]


def test_run_until_stopped(orders: eventstore.Store) -> None:
    stop = threading.Event()
    handler = Handler()
    proc = processor(orders, handler, [], retries=0)
    t = threading.Thread(target=proc.run, kwargs={"stop": stop, "poll_timeout_ms": 20})
    t.start()
    try:
        orders.append("orders", b"ok-late", partition=1)
        for _ in range(500):
            if b"ok-late" in handler.ok:
                break
            threading.Event().wait(0.01)
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive() and b"ok-late" in handler.ok
    proc.consumer.close()


def test_custom_suffix_and_partitions(orders: eventstore.Store) -> None:
    proc = processor(orders, Handler(), [], retries=0, dlq_suffix=".parked", dlq_partitions=3)
    proc.run(max_polls=2, poll_timeout_ms=0)
    assert orders.topic("orders.parked").partitions == 3
    assert len(dlq_records(orders, "orders.parked")) == 2
    proc.consumer.close()


def test_a_dlq_topic_made_beforehand_is_used_as_it_is(orders: eventstore.Store) -> None:
    orders.create_topic("orders.dlq", partitions=2, retention_ms=86_400_000)
    proc = processor(orders, Handler(), [], retries=0)  # dlq_partitions=1 by default
    proc.run(max_polls=2, poll_timeout_ms=0)
    proc.consumer.close()
    assert orders.topic("orders.dlq").partitions == 2
    assert sorted(r.value for r in dlq_records(orders)) == [b"bad-1", b"bad-5"]


@pytest.mark.parametrize("kw", [{"retries": -1}, {"retries": 1.5}, {"backoff_ms": -1},
                                {"backoff_multiplier": 0.5}, {"max_backoff_ms": -1}])
def test_bad_processor_config(orders: eventstore.Store, kw: dict) -> None:
    consumer = orders.consumer("orders", group_id="g")
    with pytest.raises(InvalidArgumentError):
        DeadLetterProcessor(consumer, Handler(), **kw)
    consumer.close()
    with pytest.raises(InvalidArgumentError):
        DeadLetterProcessor(orders.consumer(), Handler())


@pytest.mark.parametrize("handler", ["nothandler", None, 42])
def test_a_handler_that_cannot_be_called_is_refused(orders: eventstore.Store, handler: object) -> None:
    consumer = orders.consumer("orders", group_id="g")
    with pytest.raises(InvalidArgumentError, match="handler must be callable"):
        DeadLetterProcessor(consumer, handler)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="sleep must be callable"):
        DeadLetterProcessor(consumer, Handler(), sleep=0.1)  # type: ignore[arg-type]
    consumer.close()


def test_replay_sends_parked_records_back_once(orders: eventstore.Store) -> None:
    store = orders
    proc = processor(store, Handler(), [], retries=0)
    proc.run(max_polls=2, poll_timeout_ms=0)
    proc.consumer.close()
    before = {p: store.offsets("orders", p)[1] for p in range(2)}
    assert replay_dead_letters(store, "orders.dlq") == 2
    replayed = [r for p in range(2) for r in store.read("orders", p, before[p])]
    assert sorted(r.value for r in replayed) == [b"bad-1", b"bad-5"]
    for r in replayed:
        names = [k for k, _ in r.headers]
        assert not set(names) & set(DLQ_HEADERS)
        assert names == ["trace", "es.txn"]  # only the replay's own transaction header
        assert r.key in (b"k1", b"k5")
    # idempotent: a second run replays nothing
    assert replay_dead_letters(store, "orders.dlq") == 0
    assert {p: store.offsets("orders", p)[1] for p in range(2)} == {
        p: before[p] + sum(1 for r in replayed if r.partition == p) for p in range(2)}
    assert store.group_offsets("orders.dlq.replay") == {TP("orders.dlq", 0): 2}
    # the replayed records are processed again (and, still failing, parked again)
    again = processor(store, Handler(), [], retries=0)
    again.run(max_polls=2, poll_timeout_ms=0)
    again.consumer.close()
    assert sorted(r.value for r in dlq_records(store)) == [b"bad-1", b"bad-1", b"bad-5", b"bad-5"]
    assert replay_dead_letters(store, "orders.dlq") == 2
    assert replay_dead_letters(store, "orders.dlq") == 0


def test_replay_in_steps_and_with_own_group(orders: eventstore.Store) -> None:
    store = orders
    proc = processor(store, Handler(), [], retries=0)
    proc.run(max_polls=2, poll_timeout_ms=0)
    proc.consumer.close()
    assert replay_dead_letters(store, "orders.dlq", max_records=1) == 1
    assert replay_dead_letters(store, "orders.dlq", max_records=5) == 1
    assert replay_dead_letters(store, "orders.dlq") == 0
    assert replay_dead_letters(store, "orders.dlq", group_id="audit") == 2
    assert replay_dead_letters(store, "orders.dlq", group_id="audit") == 0
    with pytest.raises(eventstore.TopicNotFoundError):
        replay_dead_letters(store, "nothing.dlq")
