"""The Kafka-style producer: futures, callbacks, flush/close, concurrency, validation, serializers."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import pytest

import eventstore
from eventstore import (
    IllegalStateError,
    InvalidArgumentError,
    PartitionNotFoundError,
    RecordMetadata,
    RecordTooLargeError,
    StoreClosedError,
    TopicNotFoundError,
    partition_for_key,
)


@pytest.fixture
def t3(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("t", 3, max_record_bytes=1000)
    return store


def read_all(store: eventstore.Store, topic: str) -> list[eventstore.Record]:
    out = []
    for p in range(store.topic(topic).partitions):
        start, end = store.offsets(topic, p)
        offset = start
        while offset < end:
            recs = store.read(topic, p, offset, max_records=1000)
            out.extend(recs)
            offset = recs[-1].offset + 1
    return out


def ends(store: eventstore.Store, topic: str) -> list[int]:
    return [store.offsets(topic, p)[1] for p in range(store.topic(topic).partitions)]


def test_send_returns_future_with_metadata(t3: eventstore.Store) -> None:
    with t3.producer() as producer:
        future = producer.send("t", b"hello", key=b"k", headers=[("h", b"1")], timestamp_ms=1234)
        meta = future.get(timeout=5)
        assert isinstance(meta, RecordMetadata)
        assert meta == RecordMetadata("t", partition_for_key(b"k", 3), 0, 1234)
        assert future.result() == meta and future.is_done() and future.done()
        assert future.succeeded() and future.exception() is None
        [rec] = t3.read("t", meta.partition, 0)
        assert (rec.key, rec.value, rec.headers, rec.timestamp_ms) == (b"k", b"hello", (("h", b"1"),), 1234)
        other = (meta.partition + 1) % 3
        explicit = producer.send("t", b"there", key=b"k", partition=other).get(timeout=5)
        assert (explicit.partition, explicit.offset) == (other, 0)
        tombstone = producer.send("t", None, key=b"k").get(timeout=5)
        assert t3.read("t", tombstone.partition, tombstone.offset)[0].value is None
        assert producer.partitions_for("t") == {0, 1, 2}


def test_same_key_same_partition_in_order(t3: eventstore.Store) -> None:
    producer = t3.producer()
    futures = [producer.send("t", b"%d" % i, key=b"user-7") for i in range(50)]
    metas = [f.get(timeout=5) for f in futures]
    assert {m.partition for m in metas} == {partition_for_key(b"user-7", 3)}
    assert [m.offset for m in metas] == list(range(50))
    producer.close()


def test_callbacks_and_errbacks(open_store, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    store.create_topic("t", 1)
    producer = store.producer()
    called: list[object] = []
    future = producer.send("t", b"x")
    future.add_callback(lambda m: called.append(("cb", m.offset)))
    future.add_errback(lambda e: called.append(("eb", e)))
    producer.flush()
    assert called == [("cb", 0)]
    future.add_callback(lambda m: called.append(("late", m.offset)))  # runs at once
    assert called[-1] == ("late", 0)
    assert future.add_errback(lambda e: called.append(("never", e))) is future
    assert len(called) == 2

    other = open_store(store.path + "-other")
    other.create_topic("t", 1)
    gate = gate_appends(other, monkeypatch)
    failing = other.producer()
    errors: list[BaseException] = []
    f = failing.send("t", b"x")
    f.add_errback(errors.append)
    f.add_callback(lambda m: errors.append(AssertionError("callback on failure")))
    other.close()  # the queued append now fails
    gate.set()
    with pytest.raises(StoreClosedError):
        f.get(timeout=5)
    assert f.is_done() and not f.succeeded() and isinstance(f.exception(), StoreClosedError)
    failing.flush(timeout=5)
    assert len(errors) == 1 and isinstance(errors[0], StoreClosedError)
    late: list[BaseException] = []
    f.add_errback(late.append)
    assert late == errors
    failing.close(timeout=5)
    producer.close()


def gate_appends(store: eventstore.Store, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make the log's append_batch (which the sender calls) wait until the returned event is
    set: it holds the sender."""
    gate = threading.Event()
    original = store.log.append_batch

    def gated(*args: object, **kwargs: object) -> object:
        assert gate.wait(10), "gate never opened"
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store.log, "append_batch", gated)
    return gate


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_failing_callback_does_not_stop_the_producer(t3: eventstore.Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    gate = gate_appends(t3, monkeypatch)
    producer = t3.producer()
    ran: list[int] = []
    first = producer.send("t", b"boom")
    first.add_callback(lambda m: 1 / 0)  # the sender is held: this runs in the sender thread
    first.add_callback(lambda m: ran.append(m.offset))
    gate.set()
    try:
        assert first.get(timeout=2).topic == "t"
        after = producer.send("t", b"after")
        assert after.get(timeout=1).topic == "t"
        producer.flush(timeout=1)
    finally:
        producer._closed = True  # a dead sender cannot be joined: do not wait on close


def test_flush_waits_for_everything(t3: eventstore.Store) -> None:
    producer = t3.producer()
    futures = [producer.send("t", b"v%d" % i) for i in range(500)]
    producer.flush(timeout=10)
    assert all(f.is_done() and f.succeeded() for f in futures)
    assert sum(ends(t3, "t")) == 500
    producer.flush(timeout=0)  # nothing pending: returns at once
    producer.close()


def test_close_sends_what_is_queued_and_is_idempotent(t3: eventstore.Store) -> None:
    producer = t3.producer()
    futures = [producer.send("t", b"v%d" % i) for i in range(200)]
    producer.close()
    assert all(f.succeeded() for f in futures)
    assert not producer._sender.is_alive()
    producer.close()
    with pytest.raises(IllegalStateError):
        producer.send("t", b"late")
    assert sum(ends(t3, "t")) == 200


def test_many_threads_send_concurrently(t3: eventstore.Store) -> None:
    producer = t3.producer(client_id="busy")
    results: dict[int, list[RecordMetadata]] = defaultdict(list)
    barrier = threading.Barrier(8)

    def send(n: int) -> None:
        barrier.wait()
        futures = [producer.send("t", b"%d:%d" % (n, i), key=b"thread-%d" % n) for i in range(250)]
        results[n] = [f.get(timeout=30) for f in futures]

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    producer.close()
    metas = [m for ms in results.values() for m in ms]
    assert len(metas) == 2000
    assert len({(m.partition, m.offset) for m in metas}) == 2000
    by_location = {(r.partition, r.offset): r.value for r in read_all(t3, "t")}
    assert len(by_location) == 2000
    for n, ms in results.items():
        assert [by_location[(m.partition, m.offset)] for m in ms] == [b"%d:%d" % (n, i) for i in range(250)]
        offsets = [m.offset for m in ms]
        assert offsets == sorted(offsets), "one thread's records to one partition are kept in order"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"topic": "nope", "value": b"x"}, TopicNotFoundError),
    ({"topic": "t", "value": "text"}, InvalidArgumentError),
    ({"topic": "t", "value": b"x", "key": 12}, InvalidArgumentError),
    ({"topic": "t", "value": b"x", "partition": 3}, PartitionNotFoundError),
    ({"topic": "t", "value": b"x", "partition": -1}, PartitionNotFoundError),
    ({"topic": "t", "value": b"x", "headers": [("h", "not bytes")]}, InvalidArgumentError),
    ({"topic": "t", "value": b"x", "headers": "h"}, InvalidArgumentError),
    ({"topic": "t", "value": b"x", "timestamp_ms": -5}, InvalidArgumentError),
    ({"topic": "t", "value": b"x", "timestamp_ms": "now"}, InvalidArgumentError),
    ({"topic": "t", "value": b"x" * 2000}, RecordTooLargeError),
])
def test_bad_input_raises_at_send_with_nothing_queued(t3: eventstore.Store, kwargs: dict,
                                                       error: type[Exception]) -> None:
    producer = t3.producer()
    with pytest.raises(error):
        producer.send(**kwargs)
    assert producer._in_flight == 0 and not producer._queue
    producer.flush(timeout=1)
    assert ends(t3, "t") == [0, 0, 0]
    assert producer.send("t", b"ok", partition=0).get(timeout=5).offset == 0
    producer.close()


def test_serializers(t3: eventstore.Store) -> None:
    producer = t3.producer(key_serializer=str.encode,
                           value_serializer=lambda v: json.dumps(v, sort_keys=True).encode())
    meta = producer.send("t", {"a": 1, "b": [2]}, key="user-1").get(timeout=5)
    [rec] = t3.read("t", meta.partition, meta.offset, max_records=1)
    assert rec.key == b"user-1" and json.loads(rec.value) == {"a": 1, "b": [2]}
    assert meta.partition == partition_for_key(b"user-1", 3)
    tomb = producer.send("t", None, key="user-1").get(timeout=5)  # None is not serialized
    assert t3.read("t", tomb.partition, tomb.offset)[0].value is None
    producer.close()
    bad = t3.producer(value_serializer=lambda v: str(v))  # returns str, not bytes
    with pytest.raises(InvalidArgumentError):
        bad.send("t", 5)
    raising = t3.producer(value_serializer=lambda v: v.encode())
    with pytest.raises(AttributeError):
        raising.send("t", 5)
    assert raising._in_flight == 0
    bad.close()
    raising.close()


def test_bad_producer_config(t3: eventstore.Store) -> None:
    with pytest.raises(InvalidArgumentError):
        t3.producer(linger_ms=5)


def test_result_and_flush_time_out(t3: eventstore.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = gate_appends(t3, monkeypatch)
    producer = t3.producer()
    future = producer.send("t", b"a", partition=1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        future.get(timeout=0.1)
    with pytest.raises(TimeoutError):
        producer.flush(timeout=0.05)
    assert time.monotonic() - t0 < 1
    assert not future.is_done() and future.exception() is None
    gate.set()
    assert future.get(timeout=5).offset == 0
    producer.close()


def test_sends_while_the_sender_is_busy_form_one_batch(t3: eventstore.Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    gate = gate_appends(t3, monkeypatch)
    producer = t3.producer()
    first = producer.send("t", b"first", partition=0)
    time.sleep(0.05)  # the sender has taken "first" and waits at the gate
    rest = [producer.send("t", b"%d" % i, partition=0) for i in range(100)]
    gate.set()
    producer.flush(timeout=10)
    assert first.get().offset == 0
    assert [f.get().offset for f in rest] == list(range(1, 101))
    assert t3.statistics().appended_batches <= 3
    producer.close()
