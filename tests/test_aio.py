"""What only the async API has to get right, under asyncio and trio: the event loop keeps running
while the store fsyncs, waits hold no thread and vanish when cancelled, and partitions wake
waiting tasks without ever waiting for an event loop themselves.

The behaviour shared with the blocking API is tested once for both in ``test_api_suite.py``.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import eventstore
import eventstore.aio
from eventstore import Record, TopicPartition
from eventstore.storage.segment import Segment

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(store_path: Path) -> AsyncIterator[eventstore.aio.Store]:
    async with await eventstore.aio.open(store_path) as s:
        yield s
        report = await s.check()
        assert report.ok, "\n".join(map(str, report.problems))


def listener_counts(store: eventstore.aio.Store, topic: str) -> list[int]:
    """How many watches each partition of ``topic`` has (a consumer's own is one)."""
    log = store.blocking.log
    return [log.partition(topic, p).listener_count() for p in range(log.topic(topic).partitions)]


async def consumed(consumer: eventstore.aio.Consumer, timeout_ms: float) -> list[bytes | None]:
    return [r.value for records in (await consumer.poll(timeout_ms)).values() for r in records]


# --- the event loop is never blocked ----------------------------------------------------------


async def test_the_loop_keeps_running_during_a_durable_append(
    store: eventstore.aio.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create_topic("orders")
    datasync = Segment.datasync

    def slow_datasync(segment: Segment) -> None:
        time.sleep(0.3)  # a slow disk
        datasync(segment)

    monkeypatch.setattr(Segment, "datasync", slow_datasync)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        started = time.monotonic()
        meta = await store.append("orders", b"v")
        elapsed_s = time.monotonic() - started
        tg.cancel_scope.cancel()
    assert meta.offset == 0
    assert elapsed_s >= 0.3
    assert ticks >= 10  # about 30 if the loop ran freely all along


async def test_many_concurrent_appenders_share_fsyncs(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders")
    offsets: list[int] = []

    async def appender(i: int) -> None:
        for j in range(3):
            offsets.append((await store.append("orders", f"{i}-{j}".encode(), partition=0)).offset)

    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(appender, i)
    assert sorted(offsets) == list(range(300))
    statistics = await store.statistics()
    assert statistics.fsyncs < 300  # group commit: one fdatasync covered several appends


async def test_an_appender_never_waits_for_a_busy_loop(store_path: Path) -> None:
    async with await eventstore.aio.open(store_path, durability="none") as store:
        await store.create_topic("orders")
        consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
        assert await consumer.poll(timeout_ms=10) == {}
        append_s: list[float] = []

        def append_from_a_thread() -> None:
            started = time.monotonic()
            store.blocking.append("orders", b"v")  # notifies the poll's listener
            append_s.append(time.monotonic() - started)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consumed, consumer, 5000)
            await anyio.sleep(0.05)  # the poll is waiting, its listener registered
            thread = threading.Thread(target=append_from_a_thread)
            thread.start()
            time.sleep(0.4)  # blocks the event loop on purpose (and so does the join)
            thread.join(timeout=1.0)
            assert append_s and append_s[0] < 0.2
        await consumer.close()


async def test_an_append_on_the_loop_thread_wakes_a_poll(store_path: Path) -> None:
    async with await eventstore.aio.open(store_path, durability="none") as store:
        await store.create_topic("orders")
        consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
        assert await consumer.poll(timeout_ms=10) == {}
        got: list[bytes | None] = []

        async def poll() -> None:
            got.extend(await consumed(consumer, 5000))

        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                await anyio.sleep(0.05)
                store.blocking.append("orders", b"v")  # the listener runs on this very thread
        assert got == [b"v"]
        await consumer.close()


# --- waiting holds no thread, and cancelling a wait leaves nothing behind ------------------------


async def test_cancelling_a_waiting_poll_leaves_the_consumer_usable(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders", partitions=2)
    consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
    assert await consumer.poll(timeout_ms=10) == {}
    idle = listener_counts(store, "orders")
    with anyio.move_on_after(0.2) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.poll, 10_000)
            await anyio.sleep(0.1)
            assert listener_counts(store, "orders") == [n + 1 for n in idle]  # waits on listeners
    assert scope.cancelled_caught
    assert listener_counts(store, "orders") == idle
    await store.append("orders", b"after", partition=1)
    assert await consumed(consumer, 2000) == [b"after"]
    await consumer.close()


async def test_cancelling_async_for_leaves_the_consumer_usable(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders")
    await store.append("orders", b"first")
    consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
    seen: list[Record] = []
    with anyio.move_on_after(0.3):
        async for record in consumer:
            seen.append(record)
    assert [r.value for r in seen] == [b"first"]
    assert listener_counts(store, "orders") == [1]  # only the consumer's own
    await store.append("orders", b"second")
    assert await consumed(consumer, 2000) == [b"second"]
    await consumer.close()


async def test_async_iteration_stops_when_the_consumer_closes(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders")
    await store.append("orders", b"v")
    consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
    seen: list[bytes | None] = []

    closed_at: list[float] = []

    async def close_soon() -> None:
        await anyio.sleep(0.2)
        await consumer.close()
        closed_at.append(time.monotonic())

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(close_soon)
            async for record in consumer:
                seen.append(record.value)
            stopped_at = time.monotonic()
    assert stopped_at - closed_at[0] < 0.2  # woken by close, not by a heartbeat slice
    assert seen == [b"v"]
    assert consumer.closed
    assert listener_counts(store, "orders") == [0]
    assert await store.group_offsets("g") == {TopicPartition("orders", 0): 1}  # auto-commit on close


async def test_wait_for_wakes_on_append_and_times_out(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders")
    assert await store.wait_for("orders", 0, 0, 0.05) is False

    async def append_soon() -> None:
        await anyio.sleep(0.1)
        await store.append("orders", b"v")

    async with anyio.create_task_group() as tg:
        tg.start_soon(append_soon)
        started = time.monotonic()
        assert await store.wait_for("orders", 0, 0, 10) is True
        assert time.monotonic() - started < 2
    assert listener_counts(store, "orders") == [0]


async def test_awaiting_a_producer_future(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders")
    async with store.producer() as producer:
        futures = [await producer.send("orders", f"v{i}".encode()) for i in range(50)]
        metas = [await f for f in futures]
        assert [m.offset for m in metas] == list(range(50))
        assert (await producer.send_and_wait("orders", b"last")).offset == 50
        assert await futures[0] == metas[0]  # a done future awaits again


# --- closing and cancellation --------------------------------------------------------------------


async def test_leaving_async_with_closes_the_store_even_when_cancelled(store_path: Path) -> None:
    with anyio.move_on_after(0.1):
        async with await eventstore.aio.open(store_path) as store:
            await store.create_topic("orders")
            await anyio.sleep(10)
    assert store.closed
    async with await eventstore.aio.open(store_path) as reopened:  # the lock was released
        assert [t.name for t in await reopened.topics()] == ["orders"]


async def test_a_transaction_cancelled_in_its_body_writes_nothing(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders")
    with anyio.move_on_after(0.05):
        async with store.transaction() as tx:
            tx.append("orders", b"v")
            await anyio.sleep(10)
    assert await store.offsets("orders", 0) == (0, 0)
    async with store.transaction() as tx:
        tx.append("orders", b"w")
    assert await store.offsets("orders", 0) == (0, 1)


# --- the public surface --------------------------------------------------------------------------

FACADES: list[tuple[type[Any], type[Any]]] = [
    (eventstore.aio.Store, eventstore.Store),
    (eventstore.aio.Consumer, eventstore.Consumer),
    (eventstore.aio.Producer, eventstore.Producer),
    (eventstore.aio.Transaction, eventstore.Transaction),
    (eventstore.aio.FutureRecordMetadata, eventstore.FutureRecordMetadata),
]


def test_exports() -> None:
    assert eventstore.aio.__all__ == [
        "Store", "StoreReader", "connect", "open", "open_reader", "RemoteStore", "Transaction",
        "Consumer", "DeadLetterProcessor", "FutureRecordMetadata", "Producer", "Subscription",
    ]
    assert all(hasattr(eventstore.aio, name) for name in eventstore.aio.__all__)
    plain_import = "import eventstore; assert eventstore.aio.open"
    subprocess.run([sys.executable, "-c", plain_import], check=True)


def _parameters(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize(("facade", "blocking"), FACADES, ids=lambda c: c.__name__)
def test_facades_take_the_arguments_of_the_blocking_methods(facade: type[Any], blocking: type[Any]) -> None:
    mirrored: list[tuple[Callable[..., Any], Callable[..., Any]]] = []
    for name, fn in vars(facade).items():
        if not name.startswith("_") and callable(fn) and hasattr(blocking, name):
            mirrored.append((fn, getattr(blocking, name)))
    assert mirrored
    for fn, blocking_fn in mirrored:
        params, blocking_params = _parameters(fn), _parameters(blocking_fn)
        assert params == [p for p in blocking_params if p[0] in {q[0] for q in params}], fn.__qualname__
        missing = [p for p in blocking_params if p not in params and p[2] is inspect.Parameter.empty
                   and p[1] not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        assert not missing, f"{fn.__qualname__} lacks required {missing}"


def test_open_takes_the_arguments_of_eventstore_open() -> None:
    params = _parameters(eventstore.aio.open)
    assert params == [p for p in _parameters(eventstore.open) if p[0] in {q[0] for q in params}]


# --- dead letters ---------------------------------------------------------------------


async def test_dead_letter_processor_with_an_async_handler(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders", partitions=2)
    values = [b"ok-0", b"bad-1", b"flaky-2", b"ok-3"]
    await store.append_batch("orders", [eventstore.Message(value=v, partition=i % 2)
                                        for i, v in enumerate(values)])
    calls: list[bytes] = []

    async def handler(record: Record) -> None:
        value = record.value or b""
        calls.append(value)
        await anyio.sleep(0)  # a real handler awaits something
        if value.startswith(b"bad") or (value.startswith(b"flaky") and calls.count(value) < 2):
            raise ValueError(f"cannot handle {value.decode()}")

    consumer = store.consumer("orders", group_id="workers", auto_offset_reset="earliest",
                              enable_auto_commit=False)
    proc = eventstore.aio.DeadLetterProcessor(consumer, handler, retries=2, backoff_ms=1)
    with anyio.fail_after(10):
        stats = await proc.run(max_polls=3, poll_timeout_ms=0)
    assert (stats.processed, stats.retried, stats.dead_lettered) == (3, 3, 1)
    assert calls.count(b"bad-1") == 3 and calls.count(b"flaky-2") == 2
    [parked] = await store.read("orders.dlq", 0, 0)
    assert parked.value == b"bad-1" and dict(parked.headers)["es.dlq.exception"] == b"ValueError"
    assert await store.group_offsets("workers") == {TopicPartition("orders", 0): 2,
                                                    TopicPartition("orders", 1): 2}
    await consumer.close()


async def test_dead_letter_processor_stops_on_an_event(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders")
    consumer = store.consumer("orders", group_id="workers", auto_offset_reset="earliest")
    seen: list[bytes | None] = []
    stop = anyio.Event()

    def handler(record: Record) -> None:  # a plain function is accepted too
        seen.append(record.value)
        stop.set()

    proc = eventstore.aio.DeadLetterProcessor(consumer, handler)
    await store.append("orders", b"one")
    with anyio.fail_after(10):
        stats = await proc.run(stop=stop, poll_timeout_ms=50)
    assert seen == [b"one"] and stats.processed == 1
    assert await consumer.committed(TopicPartition("orders", 0)) == 1
    await consumer.close()


async def test_dead_letter_processor_refuses_what_it_cannot_use(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders")
    consumer = store.consumer("orders", group_id="workers")
    with pytest.raises(eventstore.InvalidArgumentError, match="handler must be callable"):
        eventstore.aio.DeadLetterProcessor(consumer, "nothandler")
    with pytest.raises(eventstore.InvalidArgumentError, match=r"an eventstore\.aio\.Consumer, got Consumer"):
        eventstore.aio.DeadLetterProcessor(consumer.blocking, print)  # type: ignore[arg-type]
    with pytest.raises(eventstore.InvalidArgumentError, match=r"needs an eventstore\.Consumer, got Consumer"):
        eventstore.DeadLetterProcessor(consumer, print)  # type: ignore[arg-type]
    await consumer.close()


# --- the read-only reader ---------------------------------------------------------------------


async def test_reader_reads_and_waits_beside_the_owner(store: eventstore.aio.Store) -> None:
    await store.create_topic("orders", partitions=2)
    await store.append("orders", b"first", partition=1)
    async with await eventstore.aio.open_reader(store.path, poll_interval_ms=5) as reader:
        assert [c.name for c in await reader.topics()] == ["orders"]
        assert (await reader.topic("orders")).partitions == 2
        assert await reader.offsets("orders", 1) == (0, 1)
        assert [r.value for r in await reader.read("orders", 1, 0)] == [b"first"]
        assert await reader.offset_for_time("orders", 1, 0) == 0
        assert [p.end_offset for p in await reader.partition_statistics("orders")] == [0, 1]
        with anyio.fail_after(10):
            assert not await reader.wait_for("orders", 1, 1, 0.05)  # nothing new: times out

            async def later() -> None:
                await anyio.sleep(0.05)
                await store.append("orders", b"second", partition=1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(later)
                assert await reader.wait_for("orders", 1, 1, None)  # the loop kept running
        assert [r.value for r in await reader.read("orders", 1, 1)] == [b"second"]
        with pytest.raises(eventstore.TopicNotFoundError):
            await reader.offsets("ordres", 0)
    assert reader.closed
