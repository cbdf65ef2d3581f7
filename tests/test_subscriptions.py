"""Subscriptions: catch-up then live, in order, each event once; stream, category and ``$all``;
close and cancel; the async facade under asyncio and trio."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import eventstore
import eventstore.aio
from eventstore.aio import subscriptions as aio_subscriptions
from eventstore.errors import InvalidArgumentError, StoreClosedError
from eventstore.sourcing import subscriptions
from eventstore.sourcing.events import NewEvent, RecordedEvent, StreamMetadata
from eventstore.sourcing.subscriptions import (
    Subscription,
    subscribe_to_all,
    subscribe_to_category,
    subscribe_to_stream,
)

_WAIT_S = 10.0


def ev(type_: str = "T", data: bytes = b"") -> NewEvent:
    return NewEvent(type=type_, data=data)


def listeners(store: eventstore.Store) -> int:
    return store.streams.positions.watcher_count()


def drain(subscription: Subscription, count: int, timeout_s: float = _WAIT_S) -> list[RecordedEvent]:
    """Exactly ``count`` events (fails if they do not come within ``timeout_s``)."""
    out: list[RecordedEvent] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count:  # bounded by the deadline
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(out)} of {count} events came"
        out.extend(subscription.next_batch(count - len(out), remaining))
    return out


@pytest.fixture
def store(open_store: Callable[..., eventstore.Store]) -> Iterator[eventstore.Store]:
    s = open_store()
    yield s
    if not s.closed:
        assert listeners(s) == 0, "a subscription left its listener behind"


# --- catch-up, then live ------------------------------------------------------------------------


def test_history_then_live_events_in_position_order(store: eventstore.Store) -> None:
    for i in range(30):
        store.append_to_stream(f"order-{i % 4}", [ev("A"), ev("B")])
    with subscribe_to_all(store, page_events=7) as subscription:  # pages smaller than the history
        history = drain(subscription, 60)
        assert [e.position for e in history] == list(range(60))
        assert subscription.checkpoint == 59
        assert subscription.next(0) is None and subscription.caught_up
        threading.Timer(0.05, lambda: store.append_to_stream("order-9", [ev("C")])).start()
        live = subscription.next(_WAIT_S)
        assert live is not None and (live.position, live.stream_id, live.type) == (60, "order-9", "C")
        assert subscription.checkpoint == 60


def test_from_position_resumes_after_a_checkpoint(store: eventstore.Store) -> None:
    for i in range(10):
        store.append_to_stream(f"a-{i}", [ev()])
    with subscribe_to_all(store) as first:
        drain(first, 4)
        checkpoint = first.checkpoint
    assert checkpoint == 3
    with subscribe_to_all(store, from_position=checkpoint + 1) as second:
        assert [e.position for e in drain(second, 6)] == list(range(4, 10))


def test_from_none_delivers_only_events_to_come(store: eventstore.Store) -> None:
    store.append_to_stream("a-1", [ev(), ev()])
    with subscribe_to_all(store, from_position=None) as everything, \
            subscribe_to_stream(store, "a-1", from_version=None) as one:
        assert everything.next(0) is None and one.next(0) is None
        store.append_to_stream("a-1", [ev("new")])
        assert everything.next(_WAIT_S).position == 2  # type: ignore[union-attr]
        assert one.next(_WAIT_S).version == 2  # type: ignore[union-attr]


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_concurrent_writers_every_event_once_in_order(
    open_store: Callable[..., eventstore.Store], durability: str
) -> None:
    """Writers append to many streams while subscriptions catch up and go live."""
    store = open_store(durability=durability)
    writers, appends_each = 4, 150
    streams = [f"{cat}-{i}" for cat in ("order", "user") for i in range(10)]
    for sid in streams[:5]:  # some history before the subscriptions start
        store.append_to_stream(sid, [ev("h")] * 3)
    one_stream = "order-3"

    def write(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(appends_each):
            store.append_to_stream(rng.choice(streams), [ev(f"w{seed}")] * (i % 3 + 1))

    targets: dict[str, int] = {}  # how many each reader must get, known once the writers are done
    results: dict[str, list[RecordedEvent]] = {}

    def read(name: str, subscription: Subscription) -> None:
        got: list[RecordedEvent] = []
        deadline = time.monotonic() + _WAIT_S * 3
        with subscription:
            while name not in targets or len(got) < targets[name]:  # bounded by the deadline
                assert time.monotonic() < deadline
                got.extend(subscription.next_batch(50, 0.2))
        results[name] = got

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    readers = [
        threading.Thread(target=read, args=("all", subscribe_to_all(store, page_events=64))),
        threading.Thread(target=read, args=("order", subscribe_to_category(store, "order"))),
        threading.Thread(target=read, args=("stream", subscribe_to_stream(store, one_stream))),
    ]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join()
    store.streams.flush()  # returns once what another thread is flushing is in the index too
    everything = store.read_all(0, None)
    orders = [e for e in everything if e.stream_id.startswith("order-")]
    mine = store.read_stream(one_stream)
    targets.update(all=len(everything), order=len(orders), stream=len(mine))
    for r in readers:
        r.join(_WAIT_S * 3)
        assert not r.is_alive()

    assert len(everything) == 15 + 2 * appends_each * writers  # batches of 1, 2, 3 events
    assert [e.position for e in results["all"]] == [e.position for e in everything]  # once, in order
    assert results["all"] == everything
    assert results["order"] == orders
    assert results["stream"] == mine
    assert [e.version for e in mine] == list(range(len(mine)))
    last_version: dict[str, int] = {}
    for e in results["all"]:  # per stream, versions in order with no gap
        assert e.version == last_version.get(e.stream_id, -1) + 1
        last_version[e.stream_id] = e.version
    assert listeners(store) == 0


def test_never_delivers_at_or_above_the_watermark(store: eventstore.Store) -> None:
    """A position appended but not yet below the watermark stays invisible until it is."""
    store.append_to_stream("a-1", [ev()])
    positions = store.streams.positions
    held = positions.reserve(1)  # an append in flight elsewhere: the watermark stops at it
    try:
        store.append_to_stream("a-2", [ev()])
        with subscribe_to_all(store) as everything, subscribe_to_stream(store, "a-2") as one:
            assert [e.position for e in everything.next_batch(10, 0)] == [0]
            assert one.next_batch(10, 0) == []
            positions.complete(held)  # abandoned: a permanent gap, and the watermark moves on
            assert [e.position for e in everything.next_batch(10, _WAIT_S)] == [held + 1]
            assert [e.stream_id for e in one.next_batch(10, _WAIT_S)] == ["a-2"]
    finally:
        positions.complete(held)


def test_idle_waiting_reads_nothing(store: eventstore.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """No busy polling: a caught-up subscription reads again only when the watermark moves."""
    store.append_to_stream("a-1", [ev()])
    calls: list[tuple[Any, ...]] = []
    read_all = store.streams.read_all  # what a subscription reads $all with

    def counted(*args: Any) -> list[RecordedEvent]:
        calls.append(args)
        return read_all(*args)

    monkeypatch.setattr(store.streams, "read_all", counted)
    with subscribe_to_all(store) as subscription:
        assert subscription.next(0) is not None
        calls.clear()
        assert subscription.next(0.3) is None
        assert len(calls) == 0  # at the watermark: not even a read
        store.append_to_stream("a-1", [ev()])
        assert subscription.next(_WAIT_S) is not None
        assert len(calls) == 1


# --- categories and streams ----------------------------------------------------------------------


def test_category_takes_only_its_streams(store: eventstore.Store) -> None:
    store.append_to_stream("order-1", [ev("in")])
    store.append_to_stream("orderline-1", [ev("out")])  # another category with the same start
    store.append_to_stream("order-2", [ev("in")])
    store.append_to_stream("user-order-3", [ev("out")])
    store.set_stream_metadata("order-1", StreamMetadata(custom={"a": 1}))  # $$order-1: not in it
    with subscribe_to_category(store, "order") as orders, subscribe_to_all(store) as everything:
        got = orders.next_batch(100, 0)
        assert [(e.stream_id, e.type) for e in got] == [("order-1", "in"), ("order-2", "in")]
        assert orders.checkpoint == got[-1].position and orders.source == "$ce-order"
        assert [e.stream_id for e in everything.next_batch(100, 0)][-1] == "$$order-1"  # $all has it
        store.append_to_stream("user-1", [ev("out")])
        store.append_to_stream("order-1", [ev("live")])
        live = orders.next(_WAIT_S)
        assert live is not None and (live.stream_id, live.type) == ("order-1", "live")


def test_a_category_skips_whole_pages_of_other_streams(store: eventstore.Store) -> None:
    store.append_to_stream("user-1", [ev()] * 50)
    store.append_to_stream("order-1", [ev("x")])
    with subscribe_to_category(store, "order", page_events=10) as orders:
        event = orders.next(0)  # five pages of nothing for it, in one call
        assert event is not None and event.position == 50


def test_stream_subscription_in_version_order(store: eventstore.Store) -> None:
    store.append_to_stream("order-1", [ev(str(i)) for i in range(10)])
    store.append_to_stream("order-2", [ev()] * 3)
    with subscribe_to_stream(store, "order-1", from_version=4, page_events=3) as one:
        assert [e.version for e in drain(one, 6)] == list(range(4, 10))
        assert one.checkpoint == 9 and one.source == "order-1"
        store.append_to_stream("order-2", [ev()])
        assert one.next(0.05) is None  # other streams' events wake it, but deliver nothing
        store.append_to_stream("order-1", [ev("10")])
        assert one.next(_WAIT_S).version == 10  # type: ignore[union-attr]


def test_stream_subscription_waits_for_a_stream_to_exist_and_after_a_delete(
    store: eventstore.Store,
) -> None:
    with subscribe_to_stream(store, "order-7") as one:
        assert one.next(0) is None
        threading.Timer(0.05, lambda: store.append_to_stream("order-7", [ev("first")])).start()
        assert one.next(_WAIT_S).type == "first"  # type: ignore[union-attr]
        store.delete_stream("order-7")
        assert one.next(0.05) is None
        store.append_to_stream("order-7", [ev("revived")])
        revived = one.next(_WAIT_S)
        assert revived is not None and (revived.type, revived.version) == ("revived", 1)


def test_stream_subscription_passes_a_page_of_aged_out_events(store: eventstore.Store) -> None:
    store.append_to_stream("order-1", [ev("old")] * 5)
    store.set_stream_metadata("order-1", StreamMetadata(max_age_ms=500))
    time.sleep(0.6)  # the old events age out; the new one has 500 ms to be read
    store.append_to_stream("order-1", [ev("new")])
    with subscribe_to_stream(store, "order-1", page_events=2) as one:
        event = one.next(0)
        assert event is not None and (event.type, event.version) == ("new", 5)


# --- close, timeouts, errors ---------------------------------------------------------------------


def test_close_wakes_a_waiting_reader_and_ends_iteration(store: eventstore.Store) -> None:
    store.append_to_stream("a-1", [ev()])
    subscription = subscribe_to_all(store)
    got: list[RecordedEvent] = []
    reader = threading.Thread(target=lambda: got.extend(subscription))
    reader.start()
    time.sleep(0.1)
    assert listeners(store) == 1
    subscription.close()
    reader.join(_WAIT_S)
    assert not reader.is_alive() and len(got) == 1
    assert listeners(store) == 0
    store.append_to_stream("a-1", [ev()])
    assert subscription.next(0) is None and subscription.next_batch() == []
    subscription.close()  # idempotent


def test_a_forgotten_subscription_stops_listening(store: eventstore.Store) -> None:
    subscription = subscribe_to_all(store)
    assert listeners(store) == 1
    del subscription
    gc.collect()
    assert listeners(store) == 0


def test_next_times_out(store: eventstore.Store) -> None:
    with subscribe_to_category(store, "none") as subscription:
        start = time.monotonic()
        assert subscription.next(0.1) is None
        assert 0.09 <= time.monotonic() - start < 2


def test_a_closed_store_ends_a_wait(store: eventstore.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriptions, "CLOSED_CHECK_S", 0.05)
    subscription = subscribe_to_all(store)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            subscription.next(None)
        except StoreClosedError as e:
            errors.append(e)

    reader = threading.Thread(target=wait)
    reader.start()
    time.sleep(0.1)
    store.close()
    reader.join(_WAIT_S)
    assert not reader.is_alive() and len(errors) == 1
    subscription.close()


@pytest.mark.parametrize("call", [
    lambda s: subscribe_to_all(s, -1),
    lambda s: subscribe_to_all(s, 0.5),  # type: ignore[arg-type]
    lambda s: subscribe_to_all(s, page_events=0),
    lambda s: subscribe_to_category(s, "a-b"),
    lambda s: subscribe_to_category(s, ""),
    lambda s: subscribe_to_stream(s, ""),
    lambda s: subscribe_to_stream(s, "a-1", -2),
])
def test_bad_arguments(store: eventstore.Store, call: Callable[[eventstore.Store], Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        call(store)
    assert listeners(store) == 0


def test_bad_next_arguments(store: eventstore.Store) -> None:
    with subscribe_to_all(store) as subscription:
        with pytest.raises(InvalidArgumentError):
            subscription.next_batch(0)
        with pytest.raises(InvalidArgumentError):
            subscription.next(float("nan"))


# --- async, under asyncio and trio ---------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def astore(store_path: Path) -> AsyncIterator[eventstore.aio.Store]:
    async with await eventstore.aio.open(store_path) as s:
        yield s
        assert listeners(s.blocking) == 0, "an async subscription left its listener behind"


@pytest.mark.anyio
async def test_async_for_history_then_live_from_a_thread(astore: eventstore.aio.Store) -> None:
    blocking = astore.blocking
    for i in range(20):
        blocking.append_to_stream(f"order-{i % 3}", [ev()])

    def later() -> None:
        time.sleep(0.05)
        for i in range(20, 30):
            blocking.append_to_stream(f"order-{i % 3}", [ev()])

    got: list[int] = []
    with anyio.fail_after(_WAIT_S):
        async with aio_subscriptions.subscribe_to_all(astore, page_events=8) as subscription:
            threading.Thread(target=later).start()
            async for event in subscription:
                got.append(event.position)
                if len(got) == 30:
                    break
            assert subscription.checkpoint == 29 and subscription.caught_up
    assert got == list(range(30))


@pytest.mark.anyio
async def test_async_category_and_stream(astore: eventstore.aio.Store) -> None:
    blocking = astore.blocking
    blocking.append_to_stream("order-1", [ev("a")] * 3)
    blocking.append_to_stream("user-1", [ev("b")])
    async with aio_subscriptions.subscribe_to_category(astore, "order") as orders, \
            aio_subscriptions.subscribe_to_stream(astore, "user-1") as user:
        assert [e.type for e in await orders.next_batch(10, 0)] == ["a"] * 3
        assert orders.checkpoint == 2
        assert (await user.next(0)).type == "b"  # type: ignore[union-attr]
        assert await orders.next(0.05) is None
        blocking.append_to_stream("order-2", [ev("c")])  # on the loop thread: wakes directly
        with anyio.fail_after(_WAIT_S):
            event = await orders.next()
        assert event is not None and (event.stream_id, event.position) == ("order-2", 4)


@pytest.mark.anyio
async def test_cancelling_a_wait_loses_nothing(astore: eventstore.aio.Store) -> None:
    blocking = astore.blocking
    async with aio_subscriptions.subscribe_to_all(astore) as subscription:
        with anyio.move_on_after(0.1) as scope:
            await subscription.next()
        assert scope.cancelled_caught
        assert listeners(blocking) == 1  # only the blocking subscription's own
        blocking.append_to_stream("a-1", [ev("x"), ev("y")])
        with anyio.CancelScope() as cancelled:
            cancelled.cancel()
            await subscription.next_batch(1, _WAIT_S)  # cancelled before or after its read
        with anyio.fail_after(_WAIT_S):
            assert [e.type for e in await subscription.next_batch(10)] == ["x", "y"]
        assert subscription.checkpoint == 1


@pytest.mark.anyio
async def test_a_read_under_way_when_cancelled_is_kept(
    astore: eventstore.aio.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    astore.blocking.append_to_stream("a-1", [ev(str(i)) for i in range(5)])
    async with aio_subscriptions.subscribe_to_all(astore) as subscription:
        read = subscription.blocking.next_batch

        def slow_read(max_events: int, timeout_s: float | None) -> list[RecordedEvent]:
            time.sleep(0.2)  # the task is cancelled meanwhile
            return read(max_events, timeout_s)

        monkeypatch.setattr(subscription.blocking, "next_batch", slow_read)
        got: list[RecordedEvent] = []
        with anyio.move_on_after(0.05):
            got.extend(await subscription.next_batch(2))
            await anyio.sleep(1)
        got.extend(await subscription.next_batch(10, 0))
        assert [e.type for e in got] == ["0", "1", "2", "3", "4"]
        assert subscription.checkpoint == 4


@pytest.mark.anyio
async def test_async_close_ends_iteration(astore: eventstore.aio.Store) -> None:
    subscription = aio_subscriptions.subscribe_to_all(astore)
    got: list[RecordedEvent] = []

    async def iterate() -> None:
        async for event in subscription:
            got.append(event)

    with anyio.fail_after(_WAIT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(iterate)
            await anyio.sleep(0.05)
            await subscription.close()
    assert got == [] and subscription.closed
    assert await subscription.next(0) is None
