"""One suite, written once against the blocking API, run three times: through ``eventstore``
itself and through ``eventstore.aio`` on asyncio and on trio.

For the async runs, ``open_store`` returns the async store wrapped in ``Blocking``: every call
runs as a task on one event loop (an anyio blocking portal in its own thread) and the test waits
for it. So a test body is plain code, and concurrency in a test (an append arriving while a poll
waits) is a second thread whose calls run as a second task on that same loop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

import eventstore
import eventstore.aio
from eventstore import (
    CommitFailedError,
    IllegalStateError,
    InvalidArgumentError,
    InvalidTopicError,
    Message,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    RecordDeserializationError,
    RecordMetadata,
    RecordTooLargeError,
    StoreClosedError,
    StoreLockedError,
    StoreNotFoundError,
    TopicExistsError,
    TopicNotFoundError,
    TopicPartition,
    partition_for_key,
)

APIS = ["sync", "asyncio", "trio"]
_FACADES = (eventstore.aio.Store, eventstore.aio.Consumer, eventstore.aio.Producer,
            eventstore.aio.Transaction, eventstore.aio.FutureRecordMetadata, eventstore.aio.Subscription)


class Blocking:
    """An ``eventstore.aio`` object used from plain code: each call is awaited on the portal's loop.

    Plain methods run on the loop thread too, as they would in a task. Iteration and ``with``
    map to ``async for`` and ``async with``.
    """

    def __init__(self, target: Any, portal: BlockingPortal) -> None:
        self._target = target
        self._portal = portal

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = self._portal.call(functools.partial(fn, *args, **kwargs))
        return Blocking(result, self._portal) if isinstance(result, _FACADES) else result

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        return functools.partial(self._run, attr) if callable(attr) else attr

    def __iter__(self) -> Blocking:
        return self

    def __next__(self) -> Any:
        try:
            return self._run(self._target.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    def __enter__(self) -> Blocking:
        return self._run(self._target.__aenter__)  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> Any:
        return self._run(self._target.__aexit__, *exc)


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> Iterator[BlockingPortal | None]:
    """The API under test: None for the blocking one, else a portal to an event loop."""
    if request.param == "sync":
        yield None
    else:
        with start_blocking_portal(request.param) as portal:
            yield portal


@pytest.fixture
def open_store(api: BlockingPortal | None, store_path: Path) -> Iterator[Callable[..., Any]]:
    """As conftest's ``open_store``, through the API under test; checked and closed at teardown."""
    opened: list[Any] = []

    def _open(**kwargs: Any) -> Any:
        if api is None:
            store: Any = eventstore.open(store_path, **kwargs)
        else:
            store = Blocking(api.call(functools.partial(eventstore.aio.open, store_path, **kwargs)), api)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        if not store.closed:
            report = store.check()
            assert report.ok, "\n".join(map(str, report.problems))
            store.close()


def poll_values(consumer: Any, count: int, timeout_s: float = 5.0) -> list[bytes]:
    """Poll until ``count`` records arrived (or the timeout); their values, in partition order."""
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:  # bounded by the deadline
        for records in consumer.poll(timeout_ms=200).values():
            values += [r.value for r in records]
    return values


@contextlib.contextmanager
def appending_later(delay_s: float, store: Any, topic: str, value: bytes) -> Iterator[None]:
    """Append ``value`` from another thread ``delay_s`` after entering."""
    timer = threading.Timer(delay_s, store.append, (topic, value))
    timer.start()
    try:
        yield
    finally:
        timer.join()


# --- appending and reading ---------------------------------------------------------------------


def test_append_and_read_round_trip(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders", partitions=2)
    meta = store.append("orders", b"v1", key=b"k", headers=[("h", b"x")], partition=1, timestamp_ms=1234)
    assert meta == RecordMetadata("orders", 1, 0, 1234)
    [record] = store.read("orders", 1, 0)
    assert (record.offset, record.timestamp_ms, record.key, record.value) == (0, 1234, b"k", b"v1")
    assert list(record.headers) == [("h", b"x")]
    assert store.offsets("orders", 1) == (0, 1)
    assert store.offsets("orders", 0) == (0, 0)
    assert store.read("orders", 1, 1) == []


def test_append_batch_returns_metadata_in_input_order(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders", partitions=3)
    items = [b"a", (b"key", b"b"), Message(value=b"c", partition=2), None]
    metas = list(store.append_batch("orders", items))
    assert [m.partition for m in metas][1:3] == [partition_for_key(b"key", 3), 2]
    values = [store.read("orders", m.partition, m.offset, max_records=1)[0].value for m in metas]
    assert values == [b"a", b"b", b"c", None]
    assert store.append_batch("orders", []) == []


def test_keyed_records_land_on_their_partition(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders", partitions=3)
    keys = [f"customer-{i}".encode() for i in range(12)]
    for key in keys + keys:
        meta = store.append("orders", b"v", key=key)
        assert meta.partition == partition_for_key(key, 3)
    for p in range(3):
        records = store.read("orders", p, 0)
        keyed_here = [k for k in keys if partition_for_key(k, 3) == p]
        assert [r.key for r in records] == keyed_here + keyed_here


# --- consuming -----------------------------------------------------------------------------------


def test_group_commits_and_resumes_after_reopen(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders", partitions=2)
    store.append_batch("orders", [(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)])
    consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest",
                              enable_auto_commit=False)
    assert sorted(poll_values(consumer, 10)) == sorted(f"v{i}".encode() for i in range(10))
    tps = [TopicPartition("orders", p) for p in range(2)]
    assert consumer.assignment() == set(tps)
    assert [consumer.committed(tp) for tp in tps] == [None, None]
    consumer.commit()
    ends = [store.offsets("orders", p)[1] for p in range(2)]
    assert [consumer.committed(tp) for tp in tps] == ends
    assert [consumer.position(tp) for tp in tps] == ends
    consumer.close()
    store.close()

    store = open_store()
    store.append_batch("orders", [b"v10", b"v11"], partition=0)
    consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
    assert poll_values(consumer, 2) == [b"v10", b"v11"]
    consumer.close()


def test_seek_and_position_with_manual_assignment(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders")
    store.append_batch("orders", [f"v{i}".encode() for i in range(5)])
    tp = TopicPartition("orders", 0)
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([tp])
    assert consumer.position(tp) == 0
    consumer.seek(tp, 3)
    assert consumer.poll(timeout_ms=1000) == {tp: store.read("orders", 0, 3)}
    assert consumer.position(tp) == 5
    consumer.seek_to_beginning()
    assert consumer.position(tp) == 0
    consumer.close()


def test_poll_wakes_as_soon_as_a_record_is_appended(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders", partitions=2)
    consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
    deadline = time.monotonic() + 10
    while not consumer.assignment():  # a served group forms after the initial rebalance delay
        assert consumer.poll(timeout_ms=50) == {} and time.monotonic() < deadline
    with appending_later(0.1, store, "orders", b"late"):
        started = time.monotonic()
        batch = consumer.poll(timeout_ms=10_000)
        elapsed_s = time.monotonic() - started
    assert [r.value for records in batch.values() for r in records] == [b"late"]
    assert 0.05 < elapsed_s < 0.4  # woken by the append: before a 0.5 s heartbeat slice ends
    consumer.close()


def test_wait_for_returns_once_the_offset_is_written(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders")
    assert store.wait_for("orders", 0, 0, 0.05) is False
    with appending_later(0.1, store, "orders", b"v"):
        started = time.monotonic()
        assert store.wait_for("orders", 0, 0, 10.0) is True
        assert time.monotonic() - started < 2.0
    assert store.wait_for("orders", 0, 0, 0) is True


def test_iteration_yields_records_then_stops_when_idle(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders")
    store.append_batch("orders", [b"a", b"b", b"c"])
    consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest",
                              consumer_timeout_ms=300)
    with appending_later(0.1, store, "orders", b"d"):
        assert [r.value for r in consumer] == [b"a", b"b", b"c", b"d"]
    consumer.close()


def test_iteration_advances_only_past_records_handed_out(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders")
    store.append_batch("orders", [f"v{i}".encode() for i in range(6)])
    tp = TopicPartition("orders", 0)
    consumer = store.consumer("orders", group_id="g2", auto_offset_reset="earliest",
                              consumer_timeout_ms=300)
    for n, _record in enumerate(consumer):
        if n == 1:
            break
    assert consumer.position(tp) == 2  # records 2-5 were read ahead, not handed out
    consumer.close()
    assert store.group_offsets("g2") == {tp: 2}
    again = store.consumer("orders", group_id="g2", auto_offset_reset="earliest",
                           consumer_timeout_ms=300)
    assert next(iter(again)).value == b"v2"
    again.seek(tp, 0)  # a seek between two records drops what the iterator read ahead
    assert next(iter(again)).value == b"v0"
    assert again.poll(timeout_ms=1000) == {tp: store.read("orders", 0, 1)}
    assert [r.value for r in again] == []  # the poll handed out what the iterator held
    again.close()
    assert store.group_offsets("g2") == {tp: 6}


def test_deserializers_apply_to_the_records_handed_out(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders")
    store.append_batch("orders", [(b"k1", b'{"n": 1}'), (None, b'{"n": 2}'), (b"k3", None)])
    consumer = store.consumer(auto_offset_reset="earliest", consumer_timeout_ms=300,
                              key_deserializer=bytes.decode, value_deserializer=json.loads)
    tp = TopicPartition("orders", 0)
    consumer.assign([tp])
    [records] = consumer.poll(timeout_ms=1000).values()
    # None (no key, a tombstone) is not passed to a deserializer, as with the producer's serializers
    assert [(r.key, r.value) for r in records] == [("k1", {"n": 1}), (None, {"n": 2}), ("k3", None)]
    assert [r.offset for r in records] == [0, 1, 2]
    consumer.seek(tp, 0)
    assert [r.value for r in consumer] == [{"n": 1}, {"n": 2}, None]
    assert store.read("orders", 0, 0)[0].value == b'{"n": 1}'  # the log itself is untouched
    consumer.close()
    with pytest.raises(InvalidArgumentError, match="value_deserializer must be callable"):
        store.consumer("orders", group_id="g", value_deserializer="json")


def test_a_deserializer_error_names_the_record_and_can_be_skipped(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders")
    store.append_batch("orders", [b'{"n": 0}', b'{"n": 1}', b"not json", b'{"n": 3}'])
    tp = TopicPartition("orders", 0)
    consumer = store.consumer(auto_offset_reset="earliest", consumer_timeout_ms=300,
                              value_deserializer=json.loads)
    consumer.assign([tp])
    # the records before the bad one are handed out, then the next poll raises (as Kafka's Java client)
    assert [r.value for r in consumer.poll(timeout_ms=1000)[tp]] == [{"n": 0}, {"n": 1}]
    for _ in range(2):  # and raises again until the application seeks past the record
        with pytest.raises(RecordDeserializationError) as info:
            consumer.poll(timeout_ms=1000)
        e = info.value
        assert (e.topic, e.partition, e.offset, e.part) == ("orders", 0, 2, "value")
        assert "the value of the record at orders/0 offset 2" in str(e) and "JSONDecodeError" in str(e)
        assert isinstance(e.__cause__, json.JSONDecodeError)
        assert consumer.position(tp) == 2
    consumer.seek(tp, e.offset + 1)
    assert [r.value for r in consumer.poll(timeout_ms=1000)[tp]] == [{"n": 3}]
    consumer.seek(tp, 0)  # iterating: the same, one record at a time
    seen = []
    with pytest.raises(RecordDeserializationError):
        for record in consumer:
            seen.append(record.value)
    assert seen == [{"n": 0}, {"n": 1}] and consumer.position(tp) == 2
    consumer.close()


def test_metrics_count_what_the_consumer_did(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders", partitions=2)
    store.append_batch("orders", [b"aa", b"bbb"], partition=0)
    store.append_batch("orders", [(b"k", b"c")], partition=1)
    tps = [TopicPartition("orders", 0), TopicPartition("orders", 1)]
    consumer = store.consumer(group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    consumer.assign(tps)
    fresh = consumer.metrics()
    assert (fresh["polls"], fresh["records_consumed"], fresh["bytes_fetched"]) == (0, 0, 0)
    assert fresh["last_poll_ms"] is None and fresh["last_poll_seconds_ago"] is None
    assert fresh["assigned_partitions"] == 2
    before_ms = time.time_ns() // 1_000_000
    assert sum(len(rs) for rs in consumer.poll(timeout_ms=1000).values()) == 3
    assert consumer.poll(timeout_ms=0) == {}
    consumer.commit()
    on_disk = store.statistics().size_bytes  # both partitions' batches, each read once
    store.append_batch("orders", [b"x", b"y"], partition=1)
    m = consumer.metrics()
    # each poll read both partitions: the second read nothing (the fetch buffer was empty, the log at its end)
    assert (m["polls"], m["records_consumed"], m["bytes_fetched"], m["log_reads"]) == (2, 3, on_disk, 4)
    assert (m["commits"], m["commit_failures"]) == (1, 0)
    assert m["records_lag"] == {tps[0]: 0, tps[1]: 2} and m["records_lag_max"] == 2
    assert before_ms <= m["last_poll_ms"] <= time.time_ns() // 1_000_000
    assert 0 <= m["last_poll_seconds_ago"] < 5
    consumer.close()


def test_group_members_split_the_partitions(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders", partitions=4)
    first = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
    first.poll(timeout_ms=10)
    assert len(first.assignment()) == 4
    second = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
    for _ in range(50):  # each poll moves the rebalance on; bounded
        first.poll(timeout_ms=10)
        second.poll(timeout_ms=10)
        if first.assignment() and second.assignment():
            break
    assert first.assignment() | second.assignment() == {TopicPartition("orders", p) for p in range(4)}
    assert not first.assignment() & second.assignment()
    first.close()
    second.close()


def test_a_removed_member_cannot_commit(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders")
    store.append("orders", b"v")
    stale = store.consumer("orders", group_id="g", auto_offset_reset="earliest",
                           max_poll_interval_ms=100, enable_auto_commit=False)
    assert poll_values(stale, 1) == [b"v"]
    time.sleep(0.2)  # no poll for max_poll_interval_ms: the next member to poll expires this one
    fresh = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
    assert poll_values(fresh, 1) == [b"v"]
    with pytest.raises(CommitFailedError):
        stale.commit()
    fresh.commit()
    assert fresh.committed(TopicPartition("orders", 0)) == 1
    fresh.close()
    stale.close()


# --- producing -----------------------------------------------------------------------------------


def test_producer_futures_resolve_to_durable_metadata(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("orders", partitions=3)
    producer = store.producer()
    futures = [producer.send("orders", value=f"v{i}".encode(), key=b"same") for i in range(20)]
    metas = [f.result() for f in futures]
    p = partition_for_key(b"same", 3)
    assert [(m.partition, m.offset) for m in metas] == [(p, i) for i in range(20)]
    assert all(f.done() and f.exception() is None for f in futures)
    producer.send("orders", value=b"last", partition=0)
    producer.flush()
    assert [r.value for r in store.read("orders", 0, 0)] == [b"last"]
    producer.close()
    assert [r.value for r in store.read("orders", p, 0)] == [f"v{i}".encode() for i in range(20)]


# --- transactions --------------------------------------------------------------------------------


def test_transaction_writes_everything_or_nothing(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("a", partitions=2)
    store.create_topic("b")
    with store.transaction() as tx:
        tx.append("a", b"1", partition=0)
        tx.append("a", b"2", partition=1)
        tx.append("b", b"3")
    ends = [store.offsets("a", 0)[1], store.offsets("a", 1)[1], store.offsets("b", 0)[1]]
    assert ends == [1, 1, 1]
    with pytest.raises(RuntimeError, match="handler failed"), store.transaction() as tx:
        tx.append("a", b"4", partition=0)
        tx.append("b", b"5")
        raise RuntimeError("handler failed")
    assert [store.offsets("a", 0)[1], store.offsets("a", 1)[1], store.offsets("b", 0)[1]] == ends


def test_consumer_transaction_commits_output_with_offsets(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.create_topic("in")
    store.create_topic("out")
    store.append_batch("in", [b"x", b"y"])
    consumer = store.consumer("in", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    values = poll_values(consumer, 2)
    with consumer.transaction() as tx:
        for value in values:
            tx.append("out", value.upper())
    assert [r.value for r in store.read("out", 0, 0)] == [b"X", b"Y"]
    assert consumer.committed(TopicPartition("in", 0)) == 2
    consumer.close()


# --- errors --------------------------------------------------------------------------------------

ERRORS: dict[str, tuple[Callable[[Any], object], type[Exception]]] = {
    "topic exists": (lambda s: s.create_topic("orders"), TopicExistsError),
    "bad topic name": (lambda s: s.create_topic("no/slash"), InvalidTopicError),
    "unknown topic": (lambda s: s.append("ordres", b"v"), TopicNotFoundError),
    "no such partition": (lambda s: s.append("orders", b"v", partition=9), PartitionNotFoundError),
    "value not bytes": (lambda s: s.append("orders", "text"), InvalidArgumentError),
    "record too large": (lambda s: s.append("orders", b"x" * 2048), RecordTooLargeError),
    "batch item too large": (lambda s: s.append_batch("orders", [b"x" * 2048]), RecordTooLargeError),
    "offset past the end": (lambda s: s.read("orders", 0, 5), OffsetOutOfRangeError),
    "poll without topics": (lambda s: s.consumer().poll(), IllegalStateError),
    "commit without group": (lambda s: s.consumer().commit(), IllegalStateError),
    "send to unknown topic": (lambda s: s.producer().send("ordres", b"v"), TopicNotFoundError),
    "transaction to unknown topic": (lambda s: s.transaction().append("ordres", b"v"), TopicNotFoundError),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_are_the_same(open_store: Callable[..., Any], case: str) -> None:
    store = open_store()
    store.create_topic("orders", max_record_bytes=1024)
    operation, error = ERRORS[case]
    with pytest.raises(error) as excinfo:
        operation(store)
    assert type(excinfo.value) is error


def test_open_creates_a_missing_store_unless_told_not_to(open_store: Callable[..., Any],
                                                         store_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        open_store(create=False)
    assert not store_path.exists()  # nothing left behind
    store = open_store()  # create=True by default: the directory is made
    store.create_topic("orders")
    store.close()
    store = open_store(create=False)
    assert [t.name for t in store.topics()] == ["orders"]
    store.close()
    with pytest.raises(InvalidArgumentError):
        open_store(create="no")


def test_lifecycle_errors_are_the_same(open_store: Callable[..., Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        open_store(durability="sometimes")
    store = open_store()
    with pytest.raises(StoreLockedError):
        open_store()
    store.create_topic("orders")
    consumer = store.consumer("orders", group_id="g")
    consumer.close()
    with pytest.raises(IllegalStateError):
        consumer.poll()
    store.close()
    with pytest.raises(StoreClosedError):
        store.append("orders", b"v")
