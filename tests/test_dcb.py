"""Dynamic consistency boundaries (docs/format.md section 18): reads and conditional appends
against the library's in-memory reference recorder (a Hypothesis state machine), 64 threads
racing conditional appends, one global order with stream events, the tag index rebuilt after
deletion and after a crash between the log write and the index, bad input, the async API."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
from eventsourcing.dcb.popo import InMemoryDCBRecorder
from eventsourcing.persistence import IntegrityError
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import eventstore
from eventstore import (
    AppendCondition,
    ConditionFailedError,
    InvalidArgumentError,
    NewEvent,
    Query,
    QueryItem,
    SequencedEvent,
    StreamState,
    TaggedEvent,
)
from eventstore.sourcing import dcb as dcb_module
from eventstore.sourcing.dcb import DCB, DCB_TOPIC

TAGS = ["a", "b", "c", "d"]
TYPES = ["T1", "T2", "T3"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[eventstore.Store]:
    s = eventstore.open(str(tmp_path / "store"))
    try:
        yield s
    finally:
        s.close()


def _q(*items: tuple[list[str], list[str]]) -> Query:
    return Query([QueryItem(types, tags) for types, tags in items])


# --- the model: the library's in-memory recorder -------------------------------------------

tag_lists = st.lists(st.sampled_from(TAGS), max_size=3, unique=True)
items = st.tuples(st.lists(st.sampled_from(TYPES), max_size=2, unique=True), tag_lists)
queries = st.lists(items, max_size=3)
events = st.lists(st.tuples(st.sampled_from(TYPES), st.binary(max_size=8), tag_lists), min_size=1, max_size=3)


def _ref_query(query: list[tuple[list[str], list[str]]] | None) -> DCBQuery | None:
    return None if query is None else DCBQuery([DCBQueryItem(list(ty), list(tg)) for ty, tg in query])


class DCBAgainstReference(RuleBasedStateMachine):
    """Every read and every conditional append of the store answers as the library's
    ``popo`` recorder does, across reopens and a deleted tag index."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="es-dcb-model-")
        self.path = os.path.join(self.dir, "store")
        self.store = eventstore.open(self.path)
        self.model = InMemoryDCBRecorder()
        # small chunks and frequent index writes: ranges cross chunks, reads merge both
        self.saved = dcb_module.CHUNK, dcb_module.FLUSH_EVERY
        dcb_module.CHUNK, dcb_module.FLUSH_EVERY = 2, 3

    def teardown(self) -> None:
        dcb_module.CHUNK, dcb_module.FLUSH_EVERY = self.saved
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def last(self) -> int:
        return self.model.events[-1].position if self.model.events else 0

    @rule(evs=events, query=st.none() | queries, back=st.integers(0, 4))
    def append(self, evs: list[tuple[str, bytes, list[str]]], query: list[tuple[list[str], list[str]]] | None,
               back: int) -> None:
        after = max(0, self.last() - back) if back else None
        mine = [TaggedEvent(t, d, tags) for t, d, tags in evs]
        theirs = [DCBEvent(t, d, tags) for t, d, tags in evs]
        cond = None if query is None else AppendCondition(_q(*query), after)
        ref_cond = None if query is None else DCBAppendCondition(_ref_query(query), after)
        try:
            expected: int | None = self.model.append(theirs, ref_cond)
        except IntegrityError:
            expected = None
        if expected is None:
            with pytest.raises(ConditionFailedError):
                self.store.append_events(mine, cond)
        else:
            assert self.store.append_events(mine, cond) == expected

    @rule(query=st.none() | queries, after=st.none() | st.integers(0, 30),
          limit=st.none() | st.integers(0, 5))
    def read(self, query: list[tuple[list[str], list[str]]] | None, after: int | None,
             limit: int | None) -> None:
        got = self.store.read_events(None if query is None else _q(*query), after=after, limit=limit)
        ref = self.model.read(_ref_query(query), after=after, limit=limit)
        expected = [(e.position, e.event.type, e.event.data, list(e.event.tags)) for e in ref]
        assert [(e.position, e.type, e.data, list(e.tags)) for e in got.events] == expected
        assert got.head == ref.head

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = eventstore.open(self.path)

    @precondition(lambda self: bool(self.model.events))
    @rule()
    def delete_the_index(self) -> None:
        """The tag index (with the stream index it lives beside) is derived: rebuilt."""
        self.store.close()
        shutil.rmtree(os.path.join(self.path, "index"))
        self.store = eventstore.open(self.path)

    @invariant()
    def all_sees_every_dcb_event(self) -> None:
        assert len(self.store.read_all(0, None)) == len(self.model.events)


TestDCBAgainstReference = DCBAgainstReference.TestCase
TestDCBAgainstReference.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_an_event_matching_several_items_is_read_once(store: eventstore.Store) -> None:
    """Whether it is still pending (not yet in the tag index) or indexed."""
    query = _q((["A"], []), ([], ["x"]), ([], ["y"]))
    store.append_events([TaggedEvent("A", b"1", ["x", "y"])])
    store.dcb.flush()
    store.append_events([TaggedEvent("A", b"2", ["x", "y"])])
    assert store.dcb.covered() == 1  # the second is pending
    assert [e.data for e in store.read_events(query).events] == [b"1", b"2"]
    assert [e.data for e in store.read_events(query, limit=5).events] == [b"1", b"2"]


# --- concurrency -----------------------------------------------------------------------------

def test_64_threads_racing_conditional_appends(store: eventstore.Store) -> None:
    """Each thread reads its boundary, then appends if nothing matching came after what it
    read. Boundaries overlap (shared tags) or are a thread's own: every refusal is justified
    by an event after its position, every acceptance had none before it, own-tag appends are
    never refused."""
    shared = ["s0", "s1", "s2"]
    results: list[tuple[str, int | None, int | None, bool]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(64)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        rng = random.Random(n)
        tag = f"own{n}" if n % 2 else rng.choice(shared)
        try:
            barrier.wait(timeout=30)
            for _ in range(15):  # bounded
                query = _q(([], [tag]))
                head = store.read_events(query).head
                try:
                    pos = store.append_events([TaggedEvent("E", str(n).encode(), [tag, f"t{n}"])],
                                              AppendCondition(query, head))
                    outcome = (tag, head, pos, True)
                except ConditionFailedError:
                    outcome = (tag, head, None, False)
                with lock:
                    results.append(outcome)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(results) == 64 * 15
    everything = store.read_events().events
    by_tag: dict[str, list[int]] = {}
    for e in everything:
        for tag in e.tags:
            by_tag.setdefault(tag, []).append(e.position)
    refused = 0
    for tag, head, pos, ok in results:
        positions = by_tag.get(tag, [])
        floor = head or 0
        if ok:
            assert pos is not None
            # no lost conflict: nothing of the boundary between what was read and the append
            assert [p for p in positions if floor < p < pos] == []
        else:
            refused += 1
            assert tag.startswith("s"), "a thread's own boundary can never conflict"
            # no false conflict: something of the boundary did come after what was read
            assert any(p > floor for p in positions)
    assert refused > 0  # the shared boundaries did race
    accepted = sum(1 for r in results if r[3])
    assert accepted == len(everything)


def test_disjoint_appends_share_fsyncs(tmp_path: Path) -> None:
    """Concurrent appends of disjoint boundaries are combined: fewer log batches than appends."""
    with eventstore.open(str(tmp_path / "s"), durability="fsync") as s:
        barrier = threading.Barrier(16)

        def work(n: int) -> None:
            barrier.wait(timeout=30)
            for i in range(20):  # bounded
                s.append_events([TaggedEvent("E", b"", [f"k{n}-{i}"])],
                                AppendCondition(_q(([], [f"k{n}-{i}"]))))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(s.read_events().events) == 320
        offset, batches = 0, 0
        while offset < 320:  # bounded: each step passes one batch
            offset = s.log.read_batches(DCB_TOPIC, 0, offset, 1)[1]
            batches += 1
        assert offset == 320 and batches < 320


# --- one global order ----------------------------------------------------------------------------

def test_dcb_and_stream_events_share_one_order(store: eventstore.Store) -> None:
    store.append_to_stream("order-1", [NewEvent(type="Placed")])
    p1 = store.append_events(TaggedEvent("Tagged", b"x", ["t"]))
    store.append_to_stream("order-1", [NewEvent(type="Shipped")])
    p2 = store.append_events(TaggedEvent("Tagged", b"y", ["t"]))
    every = store.read_all(0, None)
    assert [e.type for e in every] == ["Placed", "Tagged", "Shipped", "Tagged"]
    assert (p1, p2) == (2, 4)  # DCB position = global position + 1
    got = store.read_events(_q(([], ["t"])))
    assert [e.position for e in got.events] == [2, 4] and got.head == 4
    # a query of types only matches DCB events, never stream events of that type
    assert store.read_events(_q((["Placed"], []))).events == []
    with store.subscribe_to_all(0) as sub:
        seen = [sub.next(timeout_s=5) for _ in range(4)]
    assert [e.type for e in seen if e is not None] == ["Placed", "Tagged", "Shipped", "Tagged"]
    # "after" counts every partition's positions: after the first Tagged, only the second
    assert [e.data for e in store.read_events(after=p1).events] == [b"y"]


def test_subscription_sees_history_then_live(store: eventstore.Store) -> None:
    store.append_events([TaggedEvent("A", b"1", ["x"]), TaggedEvent("B", b"2", ["y"])])
    with store.subscribe_events(_q(([], ["x"]))) as sub:
        first = sub.next(timeout_s=5)
        assert isinstance(first, SequencedEvent) and first.data == b"1"
        assert sub.next(timeout_s=0.2) is None
        store.append_events([TaggedEvent("C", b"3", ["y"]), TaggedEvent("D", b"4", ["x", "y"])])
        live = sub.next(timeout_s=5)
        assert live is not None and live.data == b"4" and sub.checkpoint == live.position


# --- the tag index is derived ------------------------------------------------------------------

def test_deleting_the_dcb_topic_drops_its_index(store: eventstore.Store) -> None:
    store.append_events(TaggedEvent("A", b"", ["x"]))
    store.delete_topic(DCB_TOPIC)
    assert store.read_events().events == []
    assert store.append_events(TaggedEvent("A", b"", ["x"]), AppendCondition(_q(([], ["x"]))))


_CRASH_WRITER = textwrap.dedent("""
    import os, sys
    import eventstore
    from eventstore import TaggedEvent
    from eventstore.sourcing.dcb import DCB
    store = eventstore.open(sys.argv[1], durability="fsync")
    store.append_events([TaggedEvent("A", b"indexed", ["x"])])
    store.dcb.flush()
    DCB.flush = lambda self, every=1: None  # the log is written, the tag index never is
    store.append_events([TaggedEvent("B", b"lost-index", ["x", "y"])])
    print(store.dcb.covered(), flush=True)
    os._exit(0)  # no close: as a crash right after the log write
""")


def test_crash_between_log_write_and_index_is_caught_up(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    out = subprocess.run([sys.executable, "-c", _CRASH_WRITER, path], capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1"  # the index covered the first append only
    with eventstore.open(path) as s:
        got = s.read_events(_q(([], ["y"])))
        assert [e.data for e in got.events] == [b"lost-index"]
        assert s.dcb.covered() == 2
        with pytest.raises(ConditionFailedError):
            s.append_events(TaggedEvent("C"), AppendCondition(_q((["B"], [])), after=1))


def test_index_rebuilt_after_deletion(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with eventstore.open(path) as s:
        for i in range(300):  # bounded
            s.append_events(TaggedEvent("E", str(i).encode(), [f"k{i % 7}"]))
        before = [s.read_events(_q(([], [f"k{k}"]))) for k in range(7)]
    shutil.rmtree(os.path.join(path, "index"))
    with eventstore.open(path) as s:
        assert [s.read_events(_q(([], [f"k{k}"]))) for k in range(7)] == before
        assert s.dcb.covered() == 300


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    lambda: TaggedEvent("", b""),
    lambda: TaggedEvent("T", "text"),  # type: ignore[arg-type]
    lambda: TaggedEvent("T", b"", "ab"),
    lambda: TaggedEvent("T", b"", ["a\x00b"]),
    lambda: QueryItem(tags=[1]),  # type: ignore[list-item]
    lambda: Query(["a"]),  # type: ignore[list-item]
])
def test_bad_values_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        bad()  # type: ignore[operator]


def test_bad_calls_write_nothing(store: eventstore.Store) -> None:
    for call in (lambda: store.append_events([]),
                 lambda: store.append_events(["x"]),  # type: ignore[list-item]
                 lambda: store.append_events(TaggedEvent("T"), "cond"),  # type: ignore[arg-type]
                 lambda: store.append_events(TaggedEvent("T"), AppendCondition(Query(), -1)),
                 lambda: store.read_events(after=-1),
                 lambda: store.read_events(limit=-1),
                 lambda: store.read_events("q")):  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            call()
    assert store.read_all(0, None) == []
    assert isinstance(store.dcb, DCB)


# --- async ----------------------------------------------------------------------------------

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_async_api(tmp_path: Path) -> None:
    async with await eventstore.aio.open(str(tmp_path / "s")) as s:
        assert await s.append_events([TaggedEvent("A", b"1", ["x"])]) == 1
        with pytest.raises(ConditionFailedError):
            await s.append_events(TaggedEvent("B"), AppendCondition(_q(([], ["x"]))))
        got = await s.read_events(_q(([], ["x"])), after=0, limit=10)
        assert [e.data for e in got.events] == [b"1"] and got.head == 1
        sub = s.subscribe_events(_q(([], ["x"])))
        try:
            first = await sub.next(timeout_s=5)
            assert first is not None and first.data == b"1"
            await s.append_events(TaggedEvent("C", b"2", ["x"]))
            with anyio.fail_after(10):
                live = await sub.next(timeout_s=5)
            assert live is not None and live.data == b"2"
        finally:
            await sub.close()


# --- SIGKILL ----------------------------------------------------------------------------------

_KILLED_WRITER = textwrap.dedent("""
    import sys, threading
    import eventstore
    from eventstore import AppendCondition, ConditionFailedError, Query, QueryItem, TaggedEvent
    store = eventstore.open(sys.argv[1], durability="fsync")
    out = threading.Lock()
    print("READY", flush=True)

    def work(w):
        n = 0
        while True:  # until killed
            tag = "k%d" % (n % 3)
            query = Query([QueryItem(tags=[tag])])
            head = store.read_events(query).head
            data = b"%d-%d" % (w, n)
            try:
                event = TaggedEvent("E", data, [tag, "all"])
                pos = store.append_events([event], AppendCondition(query, head))
                with out:
                    print("ACK", tag, head or 0, pos, data.decode(), flush=True)
            except ConditionFailedError:
                pass
            n += 1

    for w in range(4):
        threading.Thread(target=work, args=(w,), daemon=True).start()
    threading.Event().wait()
""")


@pytest.mark.slow
def test_sigkill_during_conditional_appends(tmp_path: Path) -> None:
    """Killed at random moments, four racing writer threads' acknowledged appends are all there after reopen,
    each with no event of its boundary between what it read and itself, and the tag index
    agrees with the log."""
    path = str(tmp_path / "store")
    rng = random.Random(14)
    acked: list[tuple[str, int, int, bytes]] = []
    for _ in range(4):  # bounded: four kills
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, path],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY"
            for _ in range(rng.randint(20, 200)):  # bounded
                parts = proc.stdout.readline().split()
                if parts and parts[0] == "ACK":
                    acked.append((parts[1], int(parts[2]), int(parts[3]), parts[4].encode()))
        finally:
            proc.kill()  # SIGKILL
            proc.wait(timeout=20)
        with eventstore.open(path) as s:
            every = s.read_events().events
            by_pos = {e.position: e for e in every}
            for tag, head, pos, data in acked:
                assert by_pos[pos].data == data and tag in by_pos[pos].tags
                assert [e.position for e in every if tag in e.tags and head < e.position < pos] == []
            for k in ("k0", "k1", "k2", "all"):
                assert s.read_events(_q(([], [k]))).events == [e for e in every if k in e.tags]
            assert [e.position - 1 for e in every] == [e.position for e in s.read_all(0, None)]
    assert len(acked) > 20


# --- the benchmark workload ---------------------------------------------------------------------

def test_bench_w13_runs_at_a_tiny_scale(tmp_path: Path) -> None:
    from bench.runner import run

    report = run(["W13"], scale=0.002, base_dir=tmp_path, progress=lambda _: None, echo=None)
    (workload,) = report["workloads"]
    assert report["errors"] == 0
    metrics = workload["metrics"]
    assert metrics["eventstore appends/s @1"] > 0 and metrics["eventstore read_events ms"] > 0
    assert {row["variant"] for row in workload["results"]} >= {"append, 1 thread", "read_events"}


def test_append_to_stream_cannot_write_the_tagged_events_stream(tmp_path: Path) -> None:
    """``$dcb`` is written by append_events only: a plain stream append would skip the condition."""
    with eventstore.open(tmp_path / "s") as store:
        store.append_events([TaggedEvent(type="Opened", data=b"{}", tags=["account:1"])])
        with pytest.raises(InvalidArgumentError, match="append_events"):
            store.append_to_stream("$dcb", [NewEvent(type="Opened")], StreamState.ANY)
        assert [e.type for e in store.read_events().events] == ["Opened"]
