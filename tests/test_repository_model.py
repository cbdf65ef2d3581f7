"""Model-based tests of the event-sourcing layer: repository + snapshots, upcasting, projections.

1. ``RepositoryMachine``: a Hypothesis state machine over a ``Repository`` with
   ``snapshot_every=3``. Rules create aggregates, load them, run commands on
   loaded copies, save copies (stale ones too: the second save of two copies
   loaded at one version must raise ``WrongExpectedVersionError`` and keep its
   events pending), append foreign (unknown-type) events, reopen the store,
   delete a snapshot, drop the derived index (snapshots go with it), switch to a
   class with another ``snapshot_version`` whose state means something else (so
   a snapshot of the other schema must be ignored, case S2), soft-delete and
   truncate streams. The model: per stream, every event ever appended, the
   ``truncate_before`` floor and the ``deleted`` flag (semantics of streams.py,
   as in ``test_streams_model.py``); ``repo.get`` must equal a plain fold of the
   visible events and a load by a repository without snapshots.
2. Upcasting: one event type written under schema v1, v2 and v3 by three
   "programs" (three registries), read back by each: older versions are upcast,
   newer ones and unknown types come back as the raw ``RecordedEvent``; also
   through ``Repository.get`` (the replay fast path with mixed schemas).
3. ``ProjectionMachine``: a ``ProjectionRunner`` run in steps (catch-up, a
   "crash" raised from ``on_commit`` right after a checkpoint commits, a
   ``handle`` that fails mid-batch, ``stop()``), interleaved with appends,
   runner restarts, store reopens and ``reset``. Its state records every
   position it handled, so an event applied twice or skipped shows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from siblings import close_checked

import eventstore
from eventstore import NewEvent, RecordedEvent, StreamNotFoundError, WrongExpectedVersionError
from eventstore.errors import InvalidArgumentError
from eventstore.sourcing.aggregate import Aggregate
from eventstore.sourcing.projections import (
    Projection,
    ProjectionCheckpoint,
    ProjectionRunner,
    ProjectionState,
    decode_counter,
)
from eventstore.sourcing.repository import Repository
from eventstore.sourcing.types import Event, EventRegistry, event_type

# --- the aggregate under test -----------------------------------------------------------------

REGISTRY = EventRegistry()


@event_type("RMOpened", registry=REGISTRY)
class Opened(Event):
    owner: str


@event_type("RMAdded", registry=REGISTRY)
class Added(Event):
    n: int


@event_type("RMRenamed", registry=REGISTRY)
class Renamed(Event):
    name: str


class Tally(Aggregate):
    """``total`` adds ``n`` per ``Added``; ``applied`` counts every event handled (unknown ones too)."""

    aggregate_name = "RMTally"
    snapshot_version = 1
    factor = 1

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.total = 0
        self.names: list[str] = []
        self.applied = 0
        self.unknown = 0

    def add(self, n: int) -> None:
        self.trigger_event(Added, n=n)

    def rename(self, name: str) -> None:
        self.trigger_event(Renamed, name=name)

    def apply_Opened(self, e: Opened) -> None:
        self.owner = e.owner
        self.applied += 1

    def apply_Added(self, e: Added) -> None:
        self.total += self.factor * e.n
        self.applied += 1

    def apply_Renamed(self, e: Renamed) -> None:
        self.names = [*self.names, e.name]
        self.applied += 1

    def apply_RecordedEvent(self, e: RecordedEvent) -> None:
        self.unknown += 1
        self.applied += 1


class TallyV2(Tally):
    """The same aggregate (same name) in a newer program: ``total`` now means 10 times the sum."""

    aggregate_name = "RMTally"
    snapshot_version = 2
    factor = 10


MEvent = tuple[str, Any]  # ("Opened", owner) | ("Added", n) | ("Renamed", name) | ("Foreign", None)


def fold(cls: type[Tally], events: list[MEvent]) -> dict[str, Any]:
    """The state a replay of ``events`` must give, computed without the aggregate."""
    state: dict[str, Any] = {"owner": "", "total": 0, "names": [], "applied": 0, "unknown": 0}
    for kind, value in events:
        state["applied"] += 1
        if kind == "Opened":
            state["owner"] = value
        elif kind == "Added":
            state["total"] += cls.factor * value
        elif kind == "Renamed":
            state["names"] = [*state["names"], value]
        else:
            state["unknown"] += 1
    return state


class MStream:
    def __init__(self) -> None:
        self.events: list[MEvent] = []  # by version
        self.floor = 0  # truncate_before
        self.deleted = False

    @property
    def last(self) -> int:
        return len(self.events) - 1

    def is_deleted(self) -> bool:
        return self.deleted and self.floor > self.last

    def visible(self, upto: int | None = None) -> list[MEvent] | None:
        """The events a read sees (up to version ``upto``), None if a load must raise StreamNotFound."""
        if self.last < 0 or self.is_deleted():
            return None
        end = self.last if upto is None else min(upto, self.last)
        seen = self.events[self.floor:end + 1]
        return seen or None


class Copy:
    """An aggregate held by the test: what it was loaded with and what it recorded since."""

    def __init__(self, agg: Tally, base: list[MEvent], loaded_version: int) -> None:
        self.agg = agg
        self.base = base
        self.loaded_version = loaded_version
        self.pending: list[MEvent] = []


POOL = ["tally-1", "tally-2", "tally-3"]
ids = st.sampled_from(POOL)
EVERY = 3


class RepositoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="es-repo-model-")
        self.path = os.path.join(self.tmp, "store")
        self.model: dict[str, MStream] = {sid: MStream() for sid in POOL}
        self.copies: list[Copy] = []
        self.cls: type[Tally] = Tally
        self.store: eventstore.Store | None = None
        self.open()

    def open(self) -> None:
        self.store = eventstore.open(self.path, durability="none", stream_partitions=2)

    @property
    def s(self) -> eventstore.Store:
        assert self.store is not None
        return self.store

    def repo(self, cls: type[Tally] | None = None, every: int | None = EVERY) -> Repository[Tally]:
        return Repository(self.s, cls or self.cls, snapshot_every=every, registry=REGISTRY)

    def teardown(self) -> None:
        close_checked(self.store, self.tmp)

    def state_of(self, agg: Tally) -> dict[str, Any]:
        return {k: getattr(agg, k) for k in ("owner", "total", "names", "applied", "unknown")}

    def check_copy(self, copy: Copy) -> None:
        assert self.state_of(copy.agg) == fold(type(copy.agg), copy.base + copy.pending)
        assert copy.agg.version == copy.loaded_version + len(copy.pending)
        assert len(copy.agg.pending_events) == len(copy.pending)

    # --- rules --------------------------------------------------------------------------

    @rule(sid=ids, owner=st.sampled_from(["ann", "bob"]))
    def create(self, sid: str, owner: str) -> None:
        agg = self.cls(sid)
        agg.trigger_event(Opened, owner=owner)
        copy = Copy(agg, [], -1)
        copy.pending.append(("Opened", owner))
        self.copies.append(copy)
        self.check_copy(copy)

    @rule(sid=ids, owner=st.sampled_from(["ann", "bob"]), adds=st.lists(st.integers(-9, 9), max_size=4))
    def create_and_save(self, sid: str, owner: str, adds: list[int]) -> None:
        """Open a new aggregate, run a few commands and save it (refused if the stream exists)."""
        agg = self.cls(sid)
        agg.trigger_event(Opened, owner=owner)
        copy = Copy(agg, [], -1)
        copy.pending.append(("Opened", owner))
        for n in adds:
            agg.add(n)
            copy.pending.append(("Added", n))
        self.copies.append(copy)
        self.save_copy(copy)

    @precondition(lambda self: self.copies)
    @rule(data=st.data(), adds=st.lists(st.integers(-9, 9), min_size=1, max_size=4))
    def command_and_save(self, data: st.DataObject, adds: list[int]) -> None:
        copy = data.draw(st.sampled_from(self.copies))
        for n in adds:
            copy.agg.add(n)
            copy.pending.append(("Added", n))
        self.save_copy(copy)

    @rule(sid=ids)
    def load(self, sid: str) -> None:
        visible = self.model[sid].visible()
        if visible is None:
            with pytest.raises(StreamNotFoundError):
                self.repo().get(sid)
            return
        agg = self.repo().get(sid)
        copy = Copy(agg, list(visible), self.model[sid].last)
        self.check_copy(copy)
        self.copies.append(copy)

    @precondition(lambda self: self.copies)
    @rule(data=st.data(), op=st.sampled_from(["add", "rename"]), n=st.integers(-5, 5))
    def command(self, data: st.DataObject, op: str, n: int) -> None:
        copy = data.draw(st.sampled_from(self.copies))
        if op == "add":
            copy.agg.add(n)
            copy.pending.append(("Added", n))
        else:
            copy.agg.rename(f"n{n}")
            copy.pending.append(("Renamed", f"n{n}"))
        self.check_copy(copy)

    @precondition(lambda self: self.copies)
    @rule(data=st.data())
    def save(self, data: st.DataObject) -> None:
        self.save_copy(data.draw(st.sampled_from(self.copies)))

    def save_copy(self, copy: Copy) -> None:
        stream = self.model[copy.agg.id]
        repo = self.repo(type(copy.agg))
        if not copy.pending:
            assert repo.save(copy.agg) is None
            return
        expected = copy.loaded_version  # the version the pending events follow
        if expected == stream.last:
            result = repo.save(copy.agg)
            assert result is not None and result.next_expected_version == stream.last + len(copy.pending)
            stream.events.extend(copy.pending)
            copy.base = copy.base + copy.pending
            copy.pending = []
            copy.loaded_version = stream.last
        else:
            before = self.s.stream_version(copy.agg.id)
            pending = copy.agg.pending_events
            with pytest.raises(WrongExpectedVersionError):
                repo.save(copy.agg)
            assert copy.agg.pending_events == pending  # kept, for a retry after a reload
            assert self.s.stream_version(copy.agg.id) == before  # nothing written
        self.check_copy(copy)

    @rule(data=st.data())
    def stale_pair(self, data: st.DataObject) -> None:
        """Two copies loaded at one version: the first save wins, the second conflicts."""
        sid = data.draw(ids)
        if self.model[sid].visible() is None:
            return
        repo = self.repo()
        a, b = repo.get(sid), repo.get(sid)
        a.add(1)
        b.add(2)
        assert repo.save(a) is not None
        self.model[sid].events.append(("Added", 1))
        with pytest.raises(WrongExpectedVersionError):
            repo.save(b)
        assert b.pending_events == [Added(n=2)] and b.version == a.version
        retry = repo.get(sid)  # the documented recovery: reload, run the command again, save
        retry.add(2)
        assert repo.save(retry) is not None
        self.model[sid].events.append(("Added", 2))

    @rule(sid=ids)
    def foreign_event(self, sid: str) -> None:
        """Another program appends a type this one does not know (read raw, never an error)."""
        stream = self.model[sid]
        if stream.last < 0:
            return
        self.s.append_to_stream(sid, [NewEvent(type="RMSomethingNew", data=b'{"x":1}')], stream.last)
        stream.events.append(("Foreign", None))

    @rule()
    def reopen(self) -> None:
        self.s.close()
        self.open()

    @rule(sid=ids)
    def delete_snapshot(self, sid: str) -> None:
        self.repo().snapshots.delete(sid)

    @rule()
    def drop_the_index(self) -> None:
        """The index is derived (rebuilt from the log); snapshots live in it and go with it."""
        self.s.close()
        shutil.rmtree(os.path.join(self.path, "index"), ignore_errors=True)
        self.open()
        for sid in POOL:
            assert self.repo().snapshots.get(sid) is None

    @rule()
    def switch_snapshot_version(self) -> None:
        self.cls = TallyV2 if self.cls is Tally else Tally

    @rule(sid=ids)
    def delete_stream(self, sid: str) -> None:
        stream = self.model[sid]
        if stream.last < 0:
            with pytest.raises(StreamNotFoundError):
                self.s.delete_stream(sid)
            return
        self.s.delete_stream(sid)
        stream.deleted = True
        stream.floor = stream.last + 1

    @rule(sid=ids, data=st.data())
    def truncate_stream(self, sid: str, data: st.DataObject) -> None:
        """Move the truncation floor, up or down (lowering it shows hidden events again)."""
        stream = self.model[sid]
        if stream.last < 0:
            return
        before = data.draw(st.integers(0, stream.last + 1))
        self.s.truncate_stream(sid, before)
        stream.floor = before

    @rule(sid=ids, data=st.data())
    def load_at_version(self, sid: str, data: st.DataObject) -> None:
        """``get(version=v)``, on truncated and deleted streams too."""
        stream = self.model[sid]
        upto = data.draw(st.integers(0, max(0, stream.last + 1)))
        visible = stream.visible(upto)
        for repo in (self.repo(), self.repo(every=None)):
            if visible is None:
                with pytest.raises(StreamNotFoundError):
                    repo.get(sid, version=upto)
            else:
                agg = repo.get(sid, version=upto)
                assert self.state_of(agg) == fold(self.cls, visible)
                assert agg.version == min(upto, stream.last)

    # --- the invariant --------------------------------------------------------------------

    @invariant()
    def every_load_is_a_full_replay(self) -> None:
        if self.store is None:
            return
        for sid in POOL:
            stream = self.model[sid]
            visible = stream.visible()
            plain, snap = self.repo(every=None), self.repo()
            if visible is None:
                for repo in (plain, snap):
                    with pytest.raises(StreamNotFoundError):
                        repo.get(sid)
                continue
            want = fold(self.cls, visible)
            full = plain.get(sid)
            loaded = snap.get(sid)  # may use a snapshot, may write one
            again = snap.get(sid)  # most likely from the snapshot just written
            for agg in (full, loaded, again):
                assert self.state_of(agg) == want, (sid, agg.version, self.repo().snapshots.get(sid))
                assert agg.version == stream.last and agg.pending_events == []
            snapshot = snap.snapshots.get(sid)
            if snapshot is not None:
                assert snapshot.version <= stream.last


REPO_SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_repository_matches_the_model() -> None:
    run_state_machine_as_test(RepositoryMachine, settings=REPO_SETTINGS)


def _saved_tally(store: eventstore.Store, amounts: tuple[int, ...]) -> None:
    tally = Tally("tally-1")
    for n in amounts:
        tally.add(n)
    Repository(store, Tally, registry=REGISTRY).save(tally)  # no snapshot


def test_get_at_a_version_of_a_truncated_stream_stops_at_that_version(tmp_path: Any) -> None:
    with eventstore.open(tmp_path / "s", durability="none") as store:
        _saved_tally(store, (1, 10, 100))  # versions 0, 1, 2
        store.truncate_stream("tally-1", 1)
        for every in (None, 3):
            repo = Repository(store, Tally, snapshot_every=every, registry=REGISTRY)
            at_1 = repo.get("tally-1", version=1)
            assert (at_1.version, at_1.total) == (1, 10)
            with pytest.raises(StreamNotFoundError):
                repo.get("tally-1", version=0)  # version 0 is hidden


@pytest.mark.parametrize("hide", ["truncate_before", "max_count"])
def test_a_snapshot_taken_while_events_were_hidden_is_not_used_once_they_show(
        tmp_path: Any, hide: str) -> None:
    with eventstore.open(tmp_path / "s", durability="none") as store:
        _saved_tally(store, (1, 10, 100))
        if hide == "truncate_before":
            store.truncate_stream("tally-1", 1)
        else:
            store.set_stream_metadata("tally-1", eventstore.StreamMetadata(max_count=2))
        repo = Repository(store, Tally, snapshot_every=2, registry=REGISTRY)
        assert repo.get("tally-1").total == 110  # replays 2 visible events
        assert repo.snapshots.get("tally-1") is None, "a snapshot of a partial replay was written"
        if hide == "truncate_before":
            store.truncate_stream("tally-1", 0)  # every event visible again
        else:
            store.set_stream_metadata("tally-1", eventstore.StreamMetadata())
        plain = Repository(store, Tally, registry=REGISTRY).get("tally-1")
        assert plain.total == 111
        assert repo.get("tally-1").total == 111


def test_saving_a_class_another_repository_does_not_handle_is_refused(tmp_path: Any) -> None:
    with eventstore.open(tmp_path / "s", durability="none") as store:
        agg = Tally("tally-1")
        agg.trigger_event(Opened, owner="ann")

        class Other(Aggregate):
            pass

        with pytest.raises(InvalidArgumentError):
            Repository(store, Other, registry=REGISTRY).save(agg)  # type: ignore[arg-type]
        assert agg.pending_events == [Opened(owner="ann")]


# --- upcasting ---------------------------------------------------------------------------------


def _programs() -> tuple[EventRegistry, EventRegistry, EventRegistry, dict[int, type[Event]]]:
    """Three programs' registries of one event type ``RMItem``: schema 1, 2 and 3."""
    r1, r2, r3 = EventRegistry(), EventRegistry(), EventRegistry()

    @event_type("RMItem", registry=r1)
    class ItemV1(Event):
        qty: int

    @event_type("RMItem", version=2, upcast_from={1: lambda d: {"qty": d["qty"], "unit": "pcs"}},
                registry=r2)
    class ItemV2(Event):
        qty: int
        unit: str

    @event_type("RMItem", version=3, upcast_from={
        1: lambda d: {"qty": d["qty"], "unit": "pcs"},
        2: lambda d: {"amount": d["qty"], "unit": d["unit"], "note": "from2"},
    }, registry=r3)
    class ItemV3(Event):
        amount: int
        unit: str
        note: str = ""

    return r1, r2, r3, {1: ItemV1, 2: ItemV2, 3: ItemV3}


R1, R2, R3, ITEMS = _programs()
REGS = {1: R1, 2: R2, 3: R3}


def expected_item(written: int, qty: int, unit: str, reader: int) -> Any:
    """What program ``reader`` must decode an item written by program ``written`` to (None: raw)."""
    if written > reader:
        return None
    # the value as written, then upcast one version at a time
    as_written: dict[int, dict[str, Any]] = {1: {"qty": qty}, 2: {"qty": qty, "unit": unit},
                                             3: {"amount": qty, "unit": unit, "note": "orig"}}
    value = as_written[written]
    for v in range(written, reader):
        if v == 1:
            value = {"qty": value["qty"], "unit": "pcs"}
        else:
            value = {"amount": value["qty"], "unit": value["unit"], "note": "from2"}
    return ITEMS[reader](**value)


def make_item(written: int, qty: int, unit: str) -> Event:
    if written == 1:
        return ITEMS[1](qty=qty)
    if written == 2:
        return ITEMS[2](qty=qty, unit=unit)
    return ITEMS[3](amount=qty, unit=unit, note="orig")


class Basket(Aggregate):
    aggregate_name = "RMBasket"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.seen: list[Any] = []

    def when(self, event: Any) -> None:  # overriding ``when``: the decode_all replay path
        self.seen.append(event)


class FastBasket(Aggregate):
    """Dispatch by ``apply_<Class>``: the replay-table fast path."""

    aggregate_name = "RMFastBasket"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.seen: list[Any] = []

    def apply_Event(self, e: Any) -> None:
        self.seen.append(e)

    def apply_RecordedEvent(self, e: RecordedEvent) -> None:
        self.seen.append(e)


items = st.lists(st.tuples(st.sampled_from([1, 2, 3, 0]), st.integers(-(2**40), 2**40),
                           st.sampled_from(["kg", "pcs", "l"])), min_size=1, max_size=12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(written=items)
def test_upcasting_v1_v2_v3_and_unknown_types(tmp_path_factory: pytest.TempPathFactory,
                                             written: list[tuple[int, int, str]]) -> None:
    path = tmp_path_factory.mktemp("upcast") / "s"
    with eventstore.open(path, durability="none") as store:
        for w, qty, unit in written:  # each event appended by the program of schema w (0: unknown type)
            if w == 0:
                ev = NewEvent(type="RMUnknown", data=b'{"qty":%d}' % qty)
            else:
                ev = REGS[w].encode(make_item(w, qty, unit))
            store.append_to_stream("basket-1", [ev])
        recorded = store.read_stream("basket-1")
        assert len(recorded) == len(written)
        for reader, registry in REGS.items():
            want = [None if w == 0 else expected_item(w, qty, unit, reader) for w, qty, unit in written]
            one_by_one = [registry.decode(r) for r in recorded]
            in_bulk = registry.decode_all(recorded)
            for got in (one_by_one, in_bulk):
                for rec, expect, out in zip(recorded, want, got, strict=True):
                    if expect is None:  # unknown type, or written by a newer program
                        assert out is rec
                    else:
                        assert out == expect and type(out) is ITEMS[reader]
            classes: tuple[type[Basket | FastBasket], ...] = (Basket, FastBasket)
            for cls in classes:
                for every in (None, 2):
                    agg = Repository(store, cls, registry=registry, snapshot_every=every).get("basket-1")
                    assert len(agg.seen) == len(written) and agg.version == len(written) - 1
                    for rec, expect, out in zip(recorded, want, agg.seen, strict=True):
                        if expect is None:
                            assert isinstance(out, RecordedEvent) and out.id == rec.id
                        else:
                            assert out == expect and type(out) is ITEMS[reader]


def test_reregistering_a_newer_version_in_the_same_registry_switches_the_fast_path(
        tmp_path: Any) -> None:
    """A program that registers v2 later (same registry): replay caches must follow the registration."""
    registry = EventRegistry()

    @event_type("RMLate", registry=registry)
    class Late(Event):
        qty: int

    class Holder(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.seen: list[Any] = []

        def apply_Event(self, e: Any) -> None:
            self.seen.append(e)

    with eventstore.open(tmp_path / "s", durability="none") as store:
        store.append_to_stream("late-1", [registry.encode(Late(qty=3))])
        repo = Repository(store, Holder, registry=registry)
        assert repo.get("late-1").seen == [Late(qty=3)]  # builds and caches the replay table

        class Late2(Event):  # "the same class defined again", as a reloaded module would
            qty: int
            unit: str

        Late2.__qualname__ = Late.__qualname__
        Late2.__module__ = Late.__module__
        registry.register(Late2, "RMLate", 2, {1: lambda d: {**d, "unit": "pcs"}})
        store.append_to_stream("late-1", [registry.encode(Late2(qty=4, unit="kg"))])
        assert repo.get("late-1").seen == [Late2(qty=3, unit="pcs"), Late2(qty=4, unit="kg")]


# --- projections -------------------------------------------------------------------------------

_POS = struct.Struct(">q")


class Crash(Exception):
    """Stands for the process dying (raised from ``on_commit`` or ``handle``)."""


class Recorder(Projection):
    """Keeps one key per position handled; a second visit bumps a ``dup`` counter."""

    category: str | None = None

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at  # position at which handle raises (before changing anything)

    def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
        if self.fail_at is not None and event.position == self.fail_at:
            raise Crash(f"handle failed at {event.position}")
        key = b"p" + _POS.pack(event.position)
        if state.get(key) is not None:
            state.add(b"dup")
        state.put(key, event.stream_id.encode())
        state.add(b"n:" + event.type.encode())


class OrderRecorder(Recorder):
    category = "order"


PROJ_STREAMS = ["order-1", "order-2", "cart-1"]


class ProjectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="es-proj-model-")
        self.path = os.path.join(self.tmp, "store")
        self.store: eventstore.Store | None = eventstore.open(self.path, durability="none")
        self.batch = 3
        self.kinds: dict[str, type[Recorder]] = {"all": Recorder, "orders": OrderRecorder}
        self.runners: dict[str, ProjectionRunner] = {}
        self.counter = 0

    @property
    def s(self) -> eventstore.Store:
        assert self.store is not None
        return self.store

    def runner(self, name: str, projection: Recorder | None = None, **kw: Any) -> ProjectionRunner:
        if projection is not None or name not in self.runners:
            r = ProjectionRunner(self.s, projection or self.kinds[name](), name=name,
                                 batch_events=self.batch, **kw)
            if projection is not None:
                return r
            self.runners[name] = r
        return self.runners[name]

    def source_events(self, name: str) -> list[RecordedEvent]:
        events = self.s.read_all(0, None)
        if name == "orders":
            return [e for e in events if e.stream_id.startswith("order-")]
        assert all(e.stream_id.startswith("$$") == (e.type == "$metadata") for e in events)
        return events

    def teardown(self) -> None:
        try:
            if self.store is not None and not self.store.closed:
                self.store.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(sid=st.sampled_from(PROJ_STREAMS), n=st.integers(1, 5))
    def append(self, sid: str, n: int) -> None:
        events = []
        for _ in range(n):
            self.counter += 1
            events.append(NewEvent(type="t" + str(self.counter % 3), data=b"%d" % self.counter))
        self.s.append_to_stream(sid, events)

    @rule(appends=st.lists(st.tuples(st.sampled_from(PROJ_STREAMS), st.integers(1, 4)), max_size=6))
    def append_burst(self, appends: list[tuple[str, int]]) -> None:
        for sid, n in appends:
            self.append(sid, n)

    @rule(sid=st.sampled_from(PROJ_STREAMS), delete=st.booleans())
    def metadata_event(self, sid: str, delete: bool) -> None:
        """``$metadata`` events of ``$$<stream>``: in ``$all``, not in a category."""
        if self.s.stream_version(sid) is None:
            return
        if delete:
            self.s.delete_stream(sid)
        else:
            self.s.truncate_stream(sid, 1)

    @rule(name=st.sampled_from(["all", "orders"]))
    def catch_up(self, name: str) -> None:
        self.runner(name).catch_up()
        events = self.source_events(name)
        assert self.runner(name).checkpoint == (events[-1].position if events else None)

    @rule(name=st.sampled_from(["all", "orders"]), commits=st.integers(1, 3))
    def crash_after_a_checkpoint(self, name: str, commits: int) -> None:
        """The process dies right after the ``commits``-th batch committed; a new runner resumes."""
        seen: list[ProjectionCheckpoint] = []

        def on_commit(cp: ProjectionCheckpoint) -> None:
            seen.append(cp)
            if len(seen) >= commits:
                raise Crash("after commit")

        before = self.runner(name).checkpoint_record()
        runner = self.runner(name, self.kinds[name](), on_commit=on_commit)
        with contextlib.suppress(Crash):
            runner.catch_up()
        if seen:
            assert runner.checkpoint_record() == seen[-1]  # the checkpoint of the crash is durable
            assert seen[-1].events - (before.events if before else 0) <= commits * self.batch
        self.runners.pop(name, None)  # restart: the next step uses a fresh runner

    @rule(name=st.sampled_from(["all", "orders"]), data=st.data())
    def handle_fails_mid_batch(self, name: str, data: st.DataObject) -> None:
        """``handle`` raises: the batch's state and checkpoint are discarded together."""
        before = self.runner(name).checkpoint_record()
        start = 0 if before is None else before.position + 1
        pending = [e for e in self.source_events(name) if e.position >= start]
        if not pending:
            return
        at = data.draw(st.sampled_from(pending[: 2 * self.batch])).position
        runner = self.runner(name, self.kinds[name](fail_at=at))
        state_before = runner.items()
        with pytest.raises(Crash):
            runner.catch_up()
        after = runner.checkpoint_record()
        # everything before the failing event's batch is committed, nothing from that batch
        assert after is None or after.position < at
        if after == before:
            assert runner.items() == state_before
        self.runners.pop(name, None)

    @rule(name=st.sampled_from(["all", "orders"]))
    def stop_from_on_commit(self, name: str) -> None:
        runner: ProjectionRunner

        def on_commit(cp: ProjectionCheckpoint) -> None:
            runner.stop()

        runner = self.runner(name, self.kinds[name](), on_commit=on_commit)
        handled = runner.run(idle_timeout_s=0)
        assert handled <= self.batch  # stop() lets the batch in hand commit, then run returns
        self.runners.pop(name, None)  # its on_commit would stop every later run too

    @rule()
    def reopen(self) -> None:
        self.s.close()
        self.store = eventstore.open(self.path, durability="none")
        self.runners.clear()

    @rule(name=st.sampled_from(["all", "orders"]))
    def reset(self, name: str) -> None:
        runner = self.runner(name)
        runner.reset()
        assert runner.checkpoint is None and runner.items() == []

    @invariant()
    def state_is_a_fold_of_the_handled_prefix(self) -> None:
        if self.store is None:
            return
        for name in ("all", "orders"):
            runner = self.runner(name)
            record = runner.checkpoint_record()
            state = dict(runner.items())
            assert b"dup" not in state, f"{name}: an event was applied twice"
            events = self.source_events(name)
            handled = [] if record is None else [e for e in events if e.position <= record.position]
            assert record is None or record.events == len(handled)
            want: dict[bytes, bytes] = {b"p" + _POS.pack(e.position): e.stream_id.encode() for e in handled}
            counts: dict[bytes, int] = {}
            for e in handled:
                counts[b"n:" + e.type.encode()] = counts.get(b"n:" + e.type.encode(), 0) + 1
            got_positions = {k: v for k, v in state.items() if k.startswith(b"p")}
            assert got_positions == want, f"{name}: events skipped or foreign"
            got_counts = {k: decode_counter(v) for k, v in state.items() if k.startswith(b"n:")}
            assert got_counts == counts


PROJ_SETTINGS = settings(max_examples=50, stateful_step_count=40, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_projection_state_is_each_event_exactly_once() -> None:
    run_state_machine_as_test(ProjectionMachine, settings=PROJ_SETTINGS)


def test_no_snapshot_of_an_aggregate_built_from_a_partial_stream(tmp_path: Any) -> None:
    """Saved or snapshotted by hand, an aggregate that missed hidden events is never snapshotted."""
    with eventstore.open(tmp_path / "s", durability="none") as store:
        _saved_tally(store, (1, 10, 100))
        store.truncate_stream("tally-1", 1)
        repo = Repository(store, Tally, snapshot_every=1, registry=REGISTRY)
        tally = repo.get("tally-1")
        tally.add(1000)
        repo.save(tally)  # crosses a multiple of snapshot_every
        assert repo.snapshots.get("tally-1") is None
        with pytest.raises(eventstore.InvalidArgumentError, match="hid some of its events"):
            repo.take_snapshot(tally)
        store.truncate_stream("tally-1", 0)
        assert repo.get("tally-1").total == 1111  # a whole replay: now a snapshot may be taken
        assert repo.snapshots.get("tally-1") is not None
        assert repo.get("tally-1").total == 1111
