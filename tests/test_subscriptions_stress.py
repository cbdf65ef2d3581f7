"""Subscriptions under stress: catching up while writers append, and the switch to live.

Every test compares what subscriptions delivered with the log itself (``read_all`` after
the writers stopped, filtered the way each subscription filters): each event exactly once,
in position (stream: version) order, nothing before the start, nothing missing after it.
Subscriptions start at random moments (before any event, mid-stream, from a middle
position, from the end, past the end), are closed and resumed from their checkpoint,
consume slowly, are cancelled (async), and follow a stream that is deleted and truncated.

Every wait is bounded by a deadline; each test takes a few seconds at most.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import eventstore
import eventstore.aio
from eventstore.aio import subscriptions as aio_subscriptions
from eventstore.errors import StreamNotFoundError
from eventstore.sourcing.events import AppendResult, NewEvent, RecordedEvent
from eventstore.sourcing.subscriptions import Subscription

_WAIT_S = 8.0  # the most any drain may take
CATEGORIES = ("order", "user")
STREAMS = [f"{cat}-{i}" for cat in CATEGORIES for i in range(6)]


def ev(type_: str = "T") -> NewEvent:
    return NewEvent(type=type_)


def listeners(store: eventstore.Store) -> int:
    return store.streams.positions.watcher_count()


def watermark(store: eventstore.Store) -> int:
    return store.streams.positions.watermark


@pytest.fixture
def store_factory(open_store: Callable[..., eventstore.Store]) -> Iterator[Callable[..., eventstore.Store]]:
    opened: list[eventstore.Store] = []

    def _open(**kwargs: object) -> eventstore.Store:
        s = open_store(**kwargs)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        if not s.closed:
            assert listeners(s) == 0, "a subscription left its listener behind"


# --- writers -------------------------------------------------------------------------------------


@dataclass
class Writers:
    """Threads appending batches of 1..3 events to random streams until stopped (or a cap)."""

    store: eventstore.Store
    count: int = 3
    streams: list[str] = field(default_factory=lambda: list(STREAMS))
    max_appends: int = 400
    pause_s: float = 0.0
    seed: int = 0
    results: list[AppendResult] = field(default_factory=list)
    timed: list[tuple[float, float, AppendResult]] = field(default_factory=list)  # start, end, result
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Writers:
        self.threads = [threading.Thread(target=self._run, args=(self.seed * 100 + w,), daemon=True)
                        for w in range(self.count)]
        for t in self.threads:
            t.start()
        return self

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for i in range(self.max_appends):  # bounded by the cap
                if self.stop.is_set():
                    return
                sid = rng.choice(self.streams)
                began = time.monotonic()
                result = self.store.append_to_stream(sid, [ev(f"w{seed}.{i}")] * rng.randint(1, 3))
                self.timed.append((began, time.monotonic(), result))
                self.results.append(result)
                if self.pause_s:
                    time.sleep(rng.random() * self.pause_s)
        except BaseException as e:  # reported by join
            self.errors.append(e)

    def finish(self) -> None:
        """Let the writers make all their appends, then join them."""
        for t in self.threads:
            t.join(_WAIT_S)
        self.join()

    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(_WAIT_S)
            assert not t.is_alive(), "a writer did not stop"
        assert not self.errors, self.errors

    def wait_appends(self, n: int, timeout_s: float = _WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        n = min(n, self.count * self.max_appends)
        while len(self.results) < n:  # bounded by the deadline
            assert time.monotonic() < deadline, f"writers made only {len(self.results)} appends"
            assert not self.errors, self.errors
            time.sleep(0.002)


# --- what a subscription must deliver ------------------------------------------------------------


@dataclass
class Spec:
    """A subscription's source and start, and so what it must deliver from a log."""

    kind: str  # "all", "category" or "stream"
    start: int  # position (stream: version) of the first event it may deliver
    name: str = ""  # category or stream id

    def expected(self, log: list[RecordedEvent]) -> list[RecordedEvent]:
        if self.kind == "all":
            return [e for e in log if e.position >= self.start]
        if self.kind == "category":
            prefix = self.name + "-"
            return [e for e in log if e.position >= self.start and e.stream_id.startswith(prefix)]
        return [e for e in log if e.stream_id == self.name and e.version >= self.start]

    def key(self, e: RecordedEvent) -> int:
        return e.version if self.kind == "stream" else e.position


def check_delivery(spec: Spec, got: list[RecordedEvent], log: list[RecordedEvent],
                   label: str = "") -> None:
    """Each expected event once, in order, and nothing else."""
    where = f"{label} {spec}"
    keys = [spec.key(e) for e in got]
    assert keys == sorted(set(keys)), f"{where}: out of order or repeated"
    want = spec.expected(log)
    got_keys, want_keys = set(keys), [spec.key(e) for e in want]
    missing = [k for k in want_keys if k not in got_keys]
    extra = sorted(got_keys - set(want_keys))
    assert not missing and not extra, f"{where}: missing {missing[:10]}, extra {extra[:10]}"
    assert got == want, f"{where}: delivered events differ from the log's"
    if spec.kind == "stream":
        assert keys == list(range(spec.start, spec.start + len(keys))), f"{where}: version gap"


def drain(subscription: Subscription, count: int, rng: random.Random,
          timeout_s: float = _WAIT_S) -> list[RecordedEvent]:
    """Exactly ``count`` events in batches of random size, then check that no more come."""
    got: list[RecordedEvent] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:  # bounded by the deadline
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{subscription!r}: only {len(got)} of {count} events came"
        got.extend(subscription.next_batch(rng.choice([1, 2, 7, 100]), min(remaining, 0.5)))
    got.extend(subscription.next_batch(100, 0.02))  # anything more is an error, caught by the check
    return got


def take(subscription: Subscription, count: int) -> list[RecordedEvent]:
    """Exactly ``count`` events, asking for no more than are still wanted."""
    got: list[RecordedEvent] = []
    deadline = time.monotonic() + _WAIT_S
    while len(got) < count:  # bounded by the deadline
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{subscription!r}: only {len(got)} of {count} events came"
        got.extend(subscription.next_batch(count - len(got), min(remaining, 0.5)))
    return got


def open_sync(store: eventstore.Store, kind: str, name: str, start: int | None,
              page_events: int) -> tuple[Subscription, Spec]:
    if kind == "all":
        sub = store.subscribe_to_all(start, page_events=page_events)
    elif kind == "category":
        sub = store.subscribe_to_category(name, start, page_events=page_events)
    else:
        sub = store.subscribe_to_stream(name, start, page_events=page_events)
    # the cursor a subscription starts from (None: the watermark, or the stream's next version)
    return sub, Spec(kind, sub._cursor, name)


def random_start(store: eventstore.Store, kind: str, name: str, rng: random.Random) -> int | None:
    choice = rng.random()
    if choice < 0.3:
        return 0
    if choice < 0.5:
        return None
    if kind == "stream":
        version = store.stream_version(name)
        return rng.randint(0, (version or 0) + 1)
    return rng.randint(0, watermark(store))  # a middle position


# --- 1. catch-up to live under concurrent writers (blocking API) ----------------------------------


@pytest.mark.parametrize("durability", ["none", "fsync"])
@pytest.mark.parametrize("seed", [1, 2])
def test_subscriptions_started_at_random_moments_get_every_event_once(
    store_factory: Callable[..., eventstore.Store], durability: str, seed: int
) -> None:
    store = store_factory(durability=durability)
    rng = random.Random(seed)
    writers = Writers(store, count=3, max_appends=600 if durability == "none" else 250, seed=seed)
    plan = [(kind, name) for kind, name in
            [("all", ""), ("category", "order"), ("category", "user"),
             ("stream", "order-1"), ("stream", "user-2"), ("stream", "order-99")]
            for _ in range(2)]
    rng.shuffle(plan)
    subs: list[tuple[Subscription, Spec]] = []
    # two before any event, from the beginning and from "now"
    subs.append(open_sync(store, "all", "", 0, 16))
    subs.append(open_sync(store, "category", "user", None, 3))
    consumed: dict[int, list[RecordedEvent]] = {}
    done = threading.Event()
    errors: list[BaseException] = []

    def consume(i: int, sub: Subscription, crng: random.Random) -> None:
        got = consumed.setdefault(i, [])
        deadline = time.monotonic() + _WAIT_S
        try:
            while not done.is_set():  # bounded by the deadline
                assert time.monotonic() < deadline, "consumer never told to stop"
                got.extend(sub.next_batch(crng.choice([1, 5, 50]), 0.05))
        except BaseException as e:
            errors.append(e)

    readers: list[threading.Thread] = []

    def start_reader(i: int, sub: Subscription) -> None:
        t = threading.Thread(target=consume, args=(i, sub, random.Random(seed * 1000 + i)), daemon=True)
        t.start()
        readers.append(t)

    for i, (sub, _) in enumerate(subs):
        start_reader(i, sub)
    writers.start()
    for kind, name in plan:  # the rest at random moments while the writers append
        writers.wait_appends(len(writers.results) + rng.randint(0, 40))
        subs.append(open_sync(store, kind, name, random_start(store, kind, name, rng),
                              rng.choice([1, 4, 32, 500])))
        start_reader(len(subs) - 1, subs[-1][0])
    writers.join()
    log = store.read_all(0, None)
    assert len(log) >= len(writers.results)
    assert [e.position for e in log] == list(range(len(log)))  # no failed append: no gap

    # let the consumers catch up with the final end, then stop them
    deadline = time.monotonic() + _WAIT_S
    while any(len(consumed.get(i, [])) < len(spec.expected(log))
              for i, (_, spec) in enumerate(subs)):  # bounded by the deadline
        if time.monotonic() > deadline or errors:
            break
        time.sleep(0.01)
    time.sleep(0.05)  # room for an extra (wrong) event to arrive
    done.set()
    for t in readers:
        t.join(_WAIT_S)
        assert not t.is_alive()
    assert not errors, errors
    for i, (sub, spec) in enumerate(subs):
        got = consumed[i]
        check_delivery(spec, got, log, f"subscription {i}")
        if got:
            assert sub.checkpoint == spec.key(got[-1])
        assert sub.caught_up
        sub.close()
    assert listeners(store) == 0


def test_many_subscriptions_opened_and_drained_while_writing(
    store_factory: Callable[..., eventstore.Store],
) -> None:
    """Each subscription is drained past the end of the log as it was when it opened, while
    writers keep appending: the switch to live happens with appends in flight."""
    store = store_factory(durability="none")
    rng = random.Random(7)
    writers = Writers(store, count=3, max_appends=600, pause_s=0.0005).start()
    try:
        checked = while_writing = 0
        deadline = time.monotonic() + 60.0  # a slow machine gets time; a fast one stops sooner
        while time.monotonic() < deadline:  # bounded by the deadline
            writing = len(writers.results) < writers.count * writers.max_appends
            kind = rng.choice(["all", "category", "stream"])
            name = {"all": "", "category": rng.choice(CATEGORIES), "stream": rng.choice(STREAMS)}[kind]
            sub, spec = open_sync(store, kind, name, random_start(store, kind, name, rng),
                                  rng.choice([1, 8, 500]))
            with sub:
                time.sleep(rng.random() * 0.01)
                target = len(spec.expected(store.read_all(0, None)))  # all appended so far
                got = drain(sub, target, rng)
                last = got[-1].position if got else -1
                # what came past the target too: compare with the log up to the last delivered
                log = [e for e in store.read_all(0, None) if e.position <= last]
                check_delivery(spec, got, log, f"check {checked}")
                assert len(got) >= target
                checked += 1
                while_writing += writing
            if checked >= 10 and (while_writing >= 5 or not writing):
                break
        assert checked >= 10
        assert while_writing >= 3  # the switch to live was tried with appends in flight
    finally:
        writers.join()


# --- 2. the async API under asyncio and trio -----------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def astore(store_path: Path) -> AsyncIterator[eventstore.aio.Store]:
    async with await eventstore.aio.open(store_path, durability="none") as s:
        yield s
        assert listeners(s.blocking) == 0, "an async subscription left its listener behind"


def open_async(astore: eventstore.aio.Store, kind: str, name: str, start: int | None,
               page_events: int) -> tuple[aio_subscriptions.Subscription, Spec]:
    if kind == "all":
        sub = aio_subscriptions.subscribe_to_all(astore, start, page_events=page_events)
    elif kind == "category":
        sub = aio_subscriptions.subscribe_to_category(astore, name, start, page_events=page_events)
    else:
        sub = aio_subscriptions.subscribe_to_stream(astore, name, start, page_events=page_events)
    return sub, Spec(kind, sub.blocking._cursor, name)


@pytest.mark.anyio
async def test_async_subscriptions_under_writer_threads_and_tasks(astore: eventstore.aio.Store) -> None:
    store = astore.blocking
    rng = random.Random(11)
    writers = Writers(store, count=2, max_appends=200, seed=3).start()

    async def task_writer(seed: int) -> None:
        wrng = random.Random(seed)
        for _ in range(150):
            sid = wrng.choice(STREAMS)
            if wrng.random() < 0.5:  # on the loop thread: it calls the listeners itself
                store.append_to_stream(sid, [ev(f"t{seed}")] * wrng.randint(1, 3))
            else:
                await anyio.to_thread.run_sync(store.append_to_stream, sid, [ev(f"t{seed}")])
            await anyio.sleep(0)

    consumed: dict[int, list[RecordedEvent]] = {}
    subs: list[tuple[aio_subscriptions.Subscription, Spec]] = []
    done = anyio.Event()

    async def consume(i: int, sub: aio_subscriptions.Subscription, use_for: bool) -> None:
        got = consumed.setdefault(i, [])
        crng = random.Random(i)
        if use_for:
            async for event in sub:  # ends when the subscription is closed
                got.append(event)
                if crng.random() < 0.05:
                    await anyio.sleep(0.001)
        else:
            while not done.is_set():  # bounded by fail_after
                got.extend(await sub.next_batch(crng.choice([1, 3, 600]), 0.05))

    with anyio.fail_after(_WAIT_S):
        async with anyio.create_task_group() as readers:
            subs.append(open_async(astore, "all", "", 0, 8))
            readers.start_soon(consume, 0, subs[0][0], True)
            async with anyio.create_task_group() as task_writers:
                task_writers.start_soon(task_writer, 1)
                task_writers.start_soon(task_writer, 2)
                for n in range(10):
                    await anyio.sleep(rng.random() * 0.03)
                    kind = ["all", "category", "stream"][n % 3]
                    name = {"all": "", "category": rng.choice(CATEGORIES),
                            "stream": rng.choice(STREAMS)}[kind]
                    subs.append(open_async(astore, kind, name, random_start(store, kind, name, rng),
                                           rng.choice([1, 16, 500])))
                    readers.start_soon(consume, len(subs) - 1, subs[-1][0], n % 2 == 0)
                await anyio.to_thread.run_sync(writers.join)
            log = await anyio.to_thread.run_sync(store.read_all, 0, None)
            while any(len(consumed.get(i, [])) < len(spec.expected(log))
                      for i, (_, spec) in enumerate(subs)):  # bounded by fail_after
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)  # room for an extra (wrong) event to arrive
            done.set()
            for sub, _ in subs:
                await sub.close()
    assert len(log) >= 450
    for i, (sub, spec) in enumerate(subs):
        check_delivery(spec, consumed[i], log, f"async subscription {i}")
        if consumed[i]:
            assert sub.checkpoint == spec.key(consumed[i][-1])


# --- 3. starting at the end, past the end, and resuming from a checkpoint -------------------------


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_starting_at_and_past_the_end_while_writing(
    store_factory: Callable[..., eventstore.Store], durability: str
) -> None:
    """``from_position`` at the end or beyond it (any int ≥ 0 is accepted): exactly the events
    at or after it, once the log reaches it; ``from_version`` past a stream's end likewise."""
    store = store_factory(durability=durability)
    rng = random.Random(5)
    store.append_to_stream("order-1", [ev()] * 3)
    writers = Writers(store, count=2, max_appends=300, seed=5).start()
    subs: list[tuple[Subscription, Spec]] = []
    try:
        for _ in range(4):
            writers.wait_appends(len(writers.results) + 40)
            end = watermark(store)
            for kind, name, start in [("all", "", end), ("all", "", end + rng.randint(1, 200)),
                                      ("category", "order", end), ("category", "user", end + 50)]:
                sub = open_sync(store, kind, name, start, rng.choice([1, 64]))[0]
                subs.append((sub, Spec(kind, start, name)))
            sid = rng.choice(STREAMS)
            version = store.stream_version(sid)
            nxt = 0 if version is None else version + 1
            for start in (nxt, nxt + rng.randint(1, 20)):
                sub = open_sync(store, "stream", sid, start, 4)[0]
                subs.append((sub, Spec("stream", start, sid)))
    finally:
        writers.join()
    log = store.read_all(0, None)
    for i, (sub, spec) in enumerate(subs):
        with sub:
            check_delivery(spec, drain(sub, len(spec.expected(log)), rng), log, f"subscription {i}")
    # at rest: from the very end, and past it, nothing until appended; then exactly the new ones
    end = watermark(store)
    assert end == log[-1].position + 1
    with store.subscribe_to_all(end) as at_end, store.subscribe_to_all(end + 2) as past, \
            store.subscribe_to_stream("order-1", store.stream_version("order-1") + 2) as ahead:  # type: ignore[operator]
        assert at_end.next(0.05) is None and past.next(0) is None and ahead.next(0) is None
        assert at_end.caught_up and past.caught_up and ahead.caught_up
        store.append_to_stream("order-1", [ev("n0"), ev("n1"), ev("n2"), ev("n3")])
        assert [e.type for e in drain(at_end, 4, rng)] == ["n0", "n1", "n2", "n3"]
        assert [e.type for e in drain(past, 2, rng)] == ["n2", "n3"]
        assert [e.type for e in drain(ahead, 3, rng)] == ["n1", "n2", "n3"]  # versions v+2..v+4


def _resume_loop(store: eventstore.Store, kind: str, name: str, rng: random.Random,
                 writers: Writers, out: list[RecordedEvent], errors: list[BaseException]) -> None:
    """Read a few batches, close, reopen from ``checkpoint + 1``; until caught up after the writers."""
    try:
        start = 0
        deadline = time.monotonic() + _WAIT_S
        while True:  # bounded by the deadline
            assert time.monotonic() < deadline, "never caught up"
            finished = not writers.running()
            sub = open_sync(store, kind, name, start, rng.choice([2, 16, 500]))[0]
            with sub:
                got: list[RecordedEvent] = []
                for _ in range(rng.randint(1, 4)):  # bounded
                    got.extend(sub.next_batch(rng.choice([1, 3, 10]), 0.01))
                out.extend(got)
                if sub.checkpoint is not None:
                    assert got and sub.checkpoint == (got[-1].version if kind == "stream"
                                                      else got[-1].position)
                    start = sub.checkpoint + 1
                if finished and not got and sub.caught_up:
                    return
    except BaseException as e:
        errors.append(e)


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_close_and_resume_from_the_checkpoint_loses_and_repeats_nothing(
    store_factory: Callable[..., eventstore.Store], durability: str
) -> None:
    """A subscription's page is read ahead of what it delivers; closing drops the rest, and a
    new one from ``checkpoint + 1`` must deliver exactly the events after the last delivered."""
    store = store_factory(durability=durability)
    writers = Writers(store, count=2, max_appends=300, seed=9, pause_s=0.0005)
    sources = [("all", ""), ("category", "order"), ("stream", "user-3"), ("stream", "order-0")]
    outs: list[list[RecordedEvent]] = [[] for _ in sources]
    errors: list[BaseException] = []
    readers = [threading.Thread(target=_resume_loop, daemon=True,
                                args=(store, kind, name, random.Random(i), writers, outs[i], errors))
               for i, (kind, name) in enumerate(sources)]
    writers.start()
    for t in readers:
        t.start()
    writers.finish()
    for t in readers:
        t.join(_WAIT_S)
        assert not t.is_alive()
    assert not errors, errors
    log = store.read_all(0, None)
    assert len(log) >= 600
    for (kind, name), out in zip(sources, outs, strict=True):
        check_delivery(Spec(kind, 0, name), out, log, "resumed")
    assert listeners(store) == 0


@pytest.mark.anyio
async def test_async_resume_and_cancellation_lose_and_repeat_nothing(astore: eventstore.aio.Store) -> None:
    """The facade reads pages ahead of what it hands out; cancelled calls and a close, then a
    resume from the facade's ``checkpoint + 1``, must still give every event once."""
    store = astore.blocking
    writers = Writers(store, count=2, max_appends=300, seed=13, pause_s=0.0005).start()
    sources = [("all", ""), ("category", "user"), ("stream", "order-2")]
    outs: list[list[RecordedEvent]] = [[] for _ in sources]

    async def resume_loop(i: int, kind: str, name: str) -> None:
        rng = random.Random(i)
        start = 0
        out = outs[i]
        while True:  # bounded by fail_after
            finished = not writers.running()
            sub = open_async(astore, kind, name, start, rng.choice([2, 16, 500]))[0]
            async with sub:
                got: list[RecordedEvent] = []
                for _ in range(rng.randint(1, 4)):
                    with anyio.move_on_after(rng.choice([0, 0.0005, 0.002, 0.02])):
                        got.extend(await sub.next_batch(rng.choice([1, 3, 10]), 0.02))
                out.extend(got)
                if sub.checkpoint is not None:
                    assert got and sub.checkpoint == (got[-1].version if kind == "stream"
                                                      else got[-1].position)
                    start = sub.checkpoint + 1
                if finished and not got and sub.caught_up:
                    return

    with anyio.fail_after(_WAIT_S):
        async with anyio.create_task_group() as tg:
            for i, (kind, name) in enumerate(sources):
                tg.start_soon(resume_loop, i, kind, name)
            await anyio.to_thread.run_sync(writers.finish)
    log = store.read_all(0, None)
    assert len(log) >= 600
    for (kind, name), out in zip(sources, outs, strict=True):
        check_delivery(Spec(kind, 0, name), out, log, "async resumed")


@pytest.mark.anyio
async def test_async_cancelled_calls_under_load_lose_nothing(astore: eventstore.aio.Store) -> None:
    """One subscription, many calls cancelled at random points while writers append."""
    store = astore.blocking
    writers = Writers(store, count=2, max_appends=400, seed=17, pause_s=0.0003).start()
    rng = random.Random(17)
    got: list[RecordedEvent] = []
    with anyio.fail_after(_WAIT_S):
        async with aio_subscriptions.subscribe_to_all(astore, 0, page_events=7) as sub:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, writers.finish)
                while writers.running():  # bounded by fail_after
                    with anyio.move_on_after(rng.choice([0, 0.0002, 0.001, 0.01])):
                        got.extend(await sub.next_batch(rng.choice([1, 2, 50])))
            log = store.read_all(0, None)
            while len(got) < len(log):  # bounded by fail_after
                got.extend(await sub.next_batch(100, 0.5))
            got.extend(await sub.next_batch(100, 0.02))
    check_delivery(Spec("all", 0), got, log, "cancelled calls")


# --- 4. a slow consumer --------------------------------------------------------------------------


@pytest.mark.parametrize("page_events", [3, 500])
def test_a_slow_consumer_falls_behind_and_still_gets_everything(
    store_factory: Callable[..., eventstore.Store], page_events: int
) -> None:
    store = store_factory(durability="none")
    writers = Writers(store, count=2, max_appends=500, seed=21).start()
    subs = [(store.subscribe_to_all(0, page_events=page_events), Spec("all", 0)),
            (store.subscribe_to_category("user", 0, page_events=page_events), Spec("category", 0, "user")),
            (store.subscribe_to_stream("order-4", 0, page_events=page_events), Spec("stream", 0, "order-4"))]
    outs: list[list[RecordedEvent]] = [[] for _ in subs]
    done = threading.Event()

    def slow(sub: Subscription, out: list[RecordedEvent]) -> None:
        deadline = time.monotonic() + _WAIT_S
        while not done.is_set() and time.monotonic() < deadline:  # bounded by the deadline
            event = sub.next(0.05)
            if event is not None:
                out.append(event)
                time.sleep(0.0002)  # slower than the writers

    readers = [threading.Thread(target=slow, args=(sub, out), daemon=True)
               for (sub, _), out in zip(subs, outs, strict=True)]
    for t in readers:
        t.start()
    writers.finish()
    log = store.read_all(0, None)
    assert len(log) >= 2000
    assert len(outs[0]) < len(log), "the consumer was not slower than the writers"
    deadline = time.monotonic() + _WAIT_S
    while any(len(out) < len(spec.expected(log)) for (_, spec), out in zip(subs, outs, strict=True)):
        assert time.monotonic() < deadline, [len(out) for out in outs]  # bounded by the deadline
        time.sleep(0.01)
    time.sleep(0.05)
    done.set()
    for t in readers:
        t.join(_WAIT_S)
        assert not t.is_alive()
    for (sub, spec), out in zip(subs, outs, strict=True):
        check_delivery(spec, out, log, "slow")
        sub.close()


# --- 5. deletion and truncation under a live subscription -----------------------------------------


def _visible(store: eventstore.Store, sid: str) -> list[RecordedEvent]:
    try:
        return store.read_stream(sid)
    except StreamNotFoundError:
        return []


@pytest.mark.parametrize("page_events", [2, 500])  # 500: events read ahead must be hidden too
def test_delete_and_truncate_hide_events_from_a_stream_subscription(
    store: eventstore.Store, page_events: int
) -> None:
    """Documented: while a stream is deleted nothing is delivered, appending revives it with the
    next versions; truncation hides the events below a version. A subscription behind the
    deletion or truncation point must not deliver the hidden events afterwards."""
    rng = random.Random(1)
    store.append_to_stream("order-1", [ev(f"v{i}") for i in range(10)])
    with store.subscribe_to_stream("order-1", 0, page_events=page_events) as one, \
            store.subscribe_to_all(0) as everything:
        assert [e.version for e in take(one, 4)] == [0, 1, 2, 3]  # behind: 4..9 not delivered
        store.delete_stream("order-1")
        assert one.next(0.05) is None  # deleted: nothing
        store.append_to_stream("order-1", [ev("revived")])
        revived = take(one, 1)
        assert [(e.version, e.type) for e in revived] == [(10, "revived")]
        assert _visible(store, "order-1") == revived
        store.append_to_stream("order-1", [ev(f"v{i}") for i in range(11, 20)])
        assert [e.version for e in take(one, 2)] == [11, 12]
        store.truncate_stream("order-1", 16)  # 13..15 not delivered yet: hidden now
        rest = drain(one, 4, rng)
        assert [e.version for e in rest] == [16, 17, 18, 19]
        assert _visible(store, "order-1") == rest
        # $all is the log: it has every event, hidden ones and the metadata events too
        log = store.read_all(0, None)
        check_delivery(Spec("all", 0), drain(everything, len(log), rng), log, "$all")
        assert [e.stream_id for e in log].count("$$order-1") == 2


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_deletes_and_truncations_while_writing_and_subscribed(
    store_factory: Callable[..., eventstore.Store], durability: str
) -> None:
    """Writers append to a stream that is deleted and truncated meanwhile. Whatever a stream
    subscription delivers is in version order, once, as logged; everything at or above the
    final floor is delivered; no event hidden before the subscription reached it is delivered
    by one that subscribes after; ``$all`` and the category get exactly the log."""
    store = store_factory(durability=durability)
    rng = random.Random(3)
    sid = "order-1"
    store.append_to_stream(sid, [ev()] * 5)
    writers = Writers(store, count=2, streams=[sid, sid, "order-2", "user-1"], max_appends=300,
                      seed=3, pause_s=0.001).start()
    fast = store.subscribe_to_stream(sid, 0, page_events=4)
    slow = store.subscribe_to_stream(sid, 0, page_events=64)
    everything = store.subscribe_to_all(0, page_events=32)
    orders = store.subscribe_to_category("order", 0)
    outs: dict[str, list[RecordedEvent]] = {"fast": [], "slow": []}
    done = threading.Event()

    def consume(name: str, sub: Subscription, pause_s: float) -> None:
        deadline = time.monotonic() + _WAIT_S
        while not done.is_set() and time.monotonic() < deadline:  # bounded by the deadline
            outs[name].extend(sub.next_batch(5, 0.02))
            time.sleep(pause_s)

    readers = [threading.Thread(target=consume, args=("fast", fast, 0), daemon=True),
               threading.Thread(target=consume, args=("slow", slow, 0.01), daemon=True)]
    for t in readers:
        t.start()
    try:
        for n in range(6):
            writers.wait_appends(len(writers.results) + 30)
            if n % 2 == 0:
                store.delete_stream(sid)
            else:
                store.truncate_stream(sid, max(0, (store.stream_version(sid) or 0) - rng.randint(0, 5)))
    finally:
        writers.join()
    final_floor = store.get_stream_metadata(sid).truncate_before or 0
    visible = _visible(store, sid)
    log = store.read_all(0, None)
    by_version = {e.version: e for e in log if e.stream_id == sid}
    deadline = time.monotonic() + _WAIT_S
    while any(not out or out[-1].version < by_version[max(by_version)].version for out in outs.values()):
        if time.monotonic() > deadline or not visible:
            break
        time.sleep(0.01)
    time.sleep(0.05)
    done.set()
    for t in readers:
        t.join(_WAIT_S)
        assert not t.is_alive()
    for name, out in outs.items():
        versions = [e.version for e in out]
        assert versions == sorted(set(versions)), f"{name}: out of order or repeated"
        assert all(by_version[e.version] == e for e in out), f"{name}: not the logged events"
        assert [e for e in out if e.version >= final_floor] == visible, f"{name}: visible events"
    # a subscription opened now sees only what is visible
    with store.subscribe_to_stream(sid, 0) as late:
        assert drain(late, len(visible), rng) == visible
    with everything, orders:
        check_delivery(Spec("all", 0), drain(everything, len(log), rng), log, "$all")
        check_delivery(Spec("category", 0, "order"),
                       drain(orders, len(Spec("category", 0, "order").expected(log)), rng), log, "order")
    fast.close()
    slow.close()


# --- from_position=None: "only events to come" ---------------------------------------------------


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_from_none_under_writers_delivers_what_starts_after_it(
    store_factory: Callable[..., eventstore.Store], durability: str
) -> None:
    """Every append begun after ``subscribe_*(None)`` returned is delivered, and the stream
    subscription never delivers an append that had returned before it was opened."""
    store = store_factory(durability=durability)
    rng = random.Random(23)
    writers = Writers(store, count=3, max_appends=250, seed=23, streams=["order-1", "order-2", "user-1"])
    writers.start()
    opened: list[tuple[Subscription, str, str, float, float]] = []
    try:
        for _ in range(8):
            writers.wait_appends(len(writers.results) + rng.randint(5, 30))
            kind, name = rng.choice([("all", ""), ("category", "order"), ("stream", "order-1")])
            t0 = time.monotonic()
            sub = open_sync(store, kind, name, None, 16)[0]
            opened.append((sub, kind, name, t0, time.monotonic()))
    finally:
        writers.join()
    log = store.read_all(0, None)
    for sub, kind, name, t0, t1 in opened:
        with sub:
            spec = Spec(kind, sub._cursor, name)
            got = drain(sub, len(spec.expected(log)), rng)
            check_delivery(spec, got, log, "from None")
            delivered = {(e.stream_id, e.position) for e in got}
            for began, ended, result in writers.timed:
                sid = result.stream_id
                if not (kind == "all" or sid == name or (kind == "category" and sid.startswith(name + "-"))):
                    continue
                if began > t1:
                    assert (sid, result.position) in delivered, "an append begun after it is missing"
                if ended < t0:
                    assert (sid, result.position) not in delivered, "an append returned before it came"


@pytest.mark.parametrize("kind", ["all", "category"])
def test_from_none_does_not_deliver_an_append_that_returned_before(
    store: eventstore.Store, kind: str
) -> None:
    store.append_to_stream("order-1", [ev()])
    positions = store.streams.positions
    held = positions.reserve(1)  # an append in flight on some partition: the watermark stops at it
    try:
        before = store.append_to_stream("order-2", [ev("returned-before")])  # position 2, returned
        sub = (store.subscribe_to_all(None) if kind == "all"
               else store.subscribe_to_category("order", None))
    finally:
        positions.complete(held)  # the in-flight append is done (here: abandoned)
    with sub:
        store.append_to_stream("order-3", [ev("to-come")])
        got = sub.next_batch(10, 1.0)
        assert [e.type for e in got][-1:] == ["to-come"]
        assert before.position not in [e.position for e in got], [(e.position, e.type) for e in got]


# --- closing from another thread, sharing an async subscription between tasks -------------------


def test_close_from_another_thread_mid_stream_then_resume(
    store_factory: Callable[..., eventstore.Store],
) -> None:
    """``close`` may come from any thread while ``for event in subscription`` runs under load:
    iteration stops, what was delivered is a gapless prefix, and resuming completes it."""
    store = store_factory(durability="none")
    rng = random.Random(29)
    writers = Writers(store, count=2, max_appends=400, seed=29, pause_s=0.0003).start()
    got: list[RecordedEvent] = []
    for _ in range(6):
        start = got[-1].position + 1 if got else 0
        sub = store.subscribe_to_category("order", start, page_events=rng.choice([1, 10, 500]))
        this: list[RecordedEvent] = []
        reader = threading.Thread(target=this.extend, args=(sub,), daemon=True)  # iterates
        reader.start()
        time.sleep(rng.random() * 0.05)
        sub.close()
        reader.join(_WAIT_S)
        assert not reader.is_alive(), "close did not end the iteration"
        assert sub.checkpoint == (this[-1].position if this else None)
        got.extend(this)
    writers.finish()
    log = store.read_all(0, None)
    spec = Spec("category", 0, "order")
    with store.subscribe_to_category("order", got[-1].position + 1 if got else 0) as rest:
        got.extend(drain(rest, len(spec.expected(log)) - len(got), rng))
    check_delivery(spec, got, log, "closed and resumed")


@pytest.mark.anyio
async def test_tasks_sharing_an_async_subscription_get_each_event_once(
    astore: eventstore.aio.Store,
) -> None:
    """Several tasks reading one async subscription: each event goes to exactly one of them,
    each task sees increasing positions, and together they miss nothing."""
    store = astore.blocking
    writers = Writers(store, count=2, max_appends=300, seed=31, pause_s=0.0003).start()
    per_task: list[list[RecordedEvent]] = [[] for _ in range(3)]
    done = anyio.Event()

    async def read(i: int, sub: aio_subscriptions.Subscription) -> None:
        rng = random.Random(i)
        while not done.is_set():  # bounded by fail_after
            per_task[i].extend(await sub.next_batch(rng.choice([1, 4, 30]), 0.02))

    with anyio.fail_after(_WAIT_S):
        async with aio_subscriptions.subscribe_to_all(astore, 0, page_events=16) as sub, \
                anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(read, i, sub)
            await anyio.to_thread.run_sync(writers.finish)
            log = store.read_all(0, None)
            while sum(map(len, per_task)) < len(log):  # bounded by fail_after
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            done.set()
    for events in per_task:
        positions = [e.position for e in events]
        assert positions == sorted(set(positions))
    together = sorted((e for events in per_task for e in events), key=lambda e: e.position)
    check_delivery(Spec("all", 0), together, log, "shared")
