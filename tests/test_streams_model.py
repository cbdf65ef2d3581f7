"""Model-based and concurrency tests of the stream append path (``eventstore/sourcing/streams.py``).

1. ``StreamsMachine``: a Hypothesis state machine comparing the store with a plain
   in-memory model of streams. Streams come from a small pool in two categories
   (``order-1..4``, ``cart-1..3``) in a store with 2 stream partitions, so streams
   share partitions; the head cache holds 2 heads and appenders flush after 3
   staged appends, so evictions and flushes happen all the time. Rules: appends
   under every kind of expected version, idempotent retries, reads (forwards,
   backwards, limits), ``stream_version``, ``list_streams``, ``read_all``,
   soft delete, truncate, metadata (max count), flush, reopen, and dropping the
   derived index (rebuilt from the log).
2. Threads appending to a small pool of streams with optimistic expected
   versions, ``ANY`` and idempotent retries, then every result is checked against
   what the log and the index hold (also after a reopen and an index rebuild).
3. Regressions: retries the version check alone would let through (``STREAM_EXISTS``,
   ``NO_STREAM`` after a delete, ``ANY`` batched behind another append to its stream).

The semantics modelled are the code's (``streams.py``), read there and in README.md:

* ``NO_STREAM`` passes when the stream has no event or is soft-deleted;
  ``STREAM_EXISTS`` when it has events and is not deleted; an int must equal the
  last version (even on a deleted stream: ``-1`` is refused there).
* Metadata is an event of ``$$<stream>`` (in ``read_all`` too). ``set_stream_metadata``
  replaces the whole metadata; ``delete_stream`` keeps it but sets ``deleted`` and
  ``truncate_before = last + 1``; ``truncate_stream`` keeps it but sets
  ``truncate_before``. A stream is deleted while ``deleted`` and
  ``truncate_before > last``: appending revives it, versions continue.
* Reads see versions from ``max(truncate_before, last - max_count + 1)``;
  ``stream_version`` ignores deletion; ``read_stream(backwards=True,
  from_version=0)`` reads from the end (``Store.read_stream`` maps 0 to -1).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from siblings import close_checked

import eventstore
from eventstore import (
    AppendResult,
    NewEvent,
    StreamMetadata,
    StreamNotFoundError,
    StreamState,
    WrongExpectedVersionError,
    partition_for_key,
)
from eventstore.sourcing import staging as staging_module
from eventstore.sourcing.streams import Streams

POOL = ["order-1", "order-2", "order-3", "order-4", "cart-1", "cart-2", "cart-3"]
CATEGORIES = ["order", "cart"]
STREAM_PARTITIONS = 2
META = "$$"

streams_ids = st.sampled_from(POOL)
expected_kinds = st.sampled_from(["any", "no_stream", "stream_exists", "right", "wrong"])
EventSpec = tuple[bytes, str, bytes, int]  # id, type, data, position


def category(sid: str) -> str:
    return sid.removeprefix(META).split("-", 1)[0]


def partition_of(sid: str) -> int:
    return partition_for_key(sid.removeprefix(META).encode(), STREAM_PARTITIONS)


def as_tuple(e: Any) -> tuple[str, int, str, bytes, bytes, int]:
    return (e.stream_id, e.version, e.type, e.data, e.id_bytes, e.position)


def streams_of(store: eventstore.Store) -> Streams:
    return store.streams


@dataclass
class MStream:
    """A stream in the model: its events (version = index) and its metadata (None: never set)."""

    events: list[EventSpec] = field(default_factory=list)
    meta: StreamMetadata | None = None


@dataclass
class Appended:
    stream_id: str
    events: list[NewEvent]
    expected: int | StreamState
    result: AppendResult


class StreamsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="es-streams-model-")
        self.path = os.path.join(self.tmp, "store")
        self.store: eventstore.Store | None = None
        self.model: dict[str, MStream] = {}  # every head the store has, "$$" streams included
        self.next_position = 0
        self.counter = 0
        self.appended: list[Appended] = []

    # --- helpers -----------------------------------------------------------------------

    @property
    def s(self) -> eventstore.Store:
        assert self.store is not None
        return self.store

    def open(self) -> None:
        self.store = eventstore.open(self.path, durability="none", stream_partitions=STREAM_PARTITIONS)

    def new_events(self, n: int, kind: str = "Happened") -> list[NewEvent]:
        out = []
        for _ in range(n):
            self.counter += 1
            out.append(NewEvent(type=kind, data=b"%d" % self.counter, metadata=b"m%d" % self.counter,
                                id=uuid.UUID(int=self.counter)))
        return out

    def last(self, sid: str) -> int:
        m = self.model.get(sid)
        return -1 if m is None else len(m.events) - 1

    def deleted(self, sid: str) -> bool:
        m = self.model.get(sid)
        if m is None or m.meta is None:
            return False
        return m.meta.deleted and (m.meta.truncate_before or 0) > self.last(sid)

    def floor(self, sid: str) -> int:
        meta = self.model[sid].meta
        if meta is None:
            return 0
        floor = meta.truncate_before or 0
        if meta.max_count is not None:
            floor = max(floor, self.last(sid) - meta.max_count + 1)
        return max(0, floor)

    def accepts(self, sid: str, expected: int | StreamState) -> bool:
        current = self.last(sid)
        if expected is StreamState.ANY:
            return True
        if expected is StreamState.NO_STREAM:
            return current < 0 or self.deleted(sid)
        if expected is StreamState.STREAM_EXISTS:
            return current >= 0 and not self.deleted(sid)
        return expected == current

    def model_append(self, sid: str, events: list[NewEvent]) -> AppendResult:
        m = self.model.setdefault(sid, MStream())
        for e in events:
            m.events.append((e.id.bytes, e.type, e.data, self.next_position))
            self.next_position += 1
        return AppendResult(sid, len(m.events) - 1, self.next_position - 1)

    def model_set_meta(self, sid: str, meta: StreamMetadata) -> AppendResult:
        self.model.setdefault(sid, MStream()).meta = meta
        self.counter += 1
        data = msgspec.json.encode(meta)
        m = self.model.setdefault(META + sid, MStream())
        m.events.append((b"", "$metadata", data, self.next_position))  # id: whatever the store chose
        self.next_position += 1
        return AppendResult(META + sid, len(m.events) - 1, self.next_position - 1)

    def partition_end(self, sid: str) -> int:
        cat = category(sid)
        if cat not in {cfg.name for cfg in self.s.topics()}:
            return 0
        return self.s.offsets(cat, partition_of(sid))[1]

    def model_read(self, sid: str, from_version: int, limit: int | None,
                   backwards: bool) -> list[tuple[str, int, str, bytes, bytes, int]]:
        events = self.model[sid].events
        last, floor = len(events) - 1, self.floor(sid)
        if backwards:
            if from_version == 0:
                from_version = -1  # Store.read_stream: backwards from 0 means from the end
            top = last if from_version < 0 else min(from_version, last)
            low = floor if limit is None else max(floor, top - limit + 1)
            versions = list(range(top, low - 1, -1))
        else:
            first = max(from_version, floor)
            end = last if limit is None else min(last, first + limit - 1)
            versions = list(range(first, end + 1))
        return [(sid, v, events[v][1], events[v][2], events[v][0], events[v][3]) for v in versions]

    def expected_for(self, sid: str, kind: str, delta: int) -> int | StreamState:
        current = self.last(sid)
        if kind == "any":
            return StreamState.ANY
        if kind == "no_stream":
            return StreamState.NO_STREAM
        if kind == "stream_exists":
            return StreamState.STREAM_EXISTS
        if kind == "right":
            return current
        wrong = current + delta
        if wrong < -1:
            wrong = current + 1 + abs(delta)
        return wrong

    # --- setup -------------------------------------------------------------------------

    @initialize(seeds=st.lists(st.tuples(streams_ids, st.integers(1, 3)), max_size=6))
    def open_store(self, seeds: list[tuple[str, int]]) -> None:
        """Open the store and give some streams a few events (rules are often switched off)."""
        self.open()
        for sid, n in seeds:
            self.append_checked(sid, self.new_events(n), StreamState.ANY)

    def teardown(self) -> None:
        close_checked(self.store, self.tmp)

    # --- appends ---------------------------------------------------------------------------

    def append_checked(self, sid: str, events: list[NewEvent], expected: int | StreamState) -> None:
        """Append; the model says whether it is accepted, with what result, and what is written."""
        ok = self.accepts(sid, expected)
        end = self.partition_end(sid)
        try:
            result = self.s.append_to_stream(sid, events, expected_version=expected)
        except WrongExpectedVersionError as e:
            assert not ok, f"{sid} at {self.last(sid)} (deleted={self.deleted(sid)}) refused {expected}"
            assert (e.stream_id, e.expected, e.actual) == (sid, expected, self.last(sid))
            assert self.partition_end(sid) == end, "a refused append wrote records"
            return
        assert ok, f"{sid} at {self.last(sid)} (deleted={self.deleted(sid)}) accepted {expected}"
        want = self.model_append(sid, events)
        assert result == want
        assert self.partition_end(sid) == end + len(events)
        self.appended.append(Appended(sid, events, expected, result))

    @rule(sid=streams_ids, n=st.integers(1, 3), kind=expected_kinds, delta=st.sampled_from([-2, -1, 1, 2]),
          typ=st.sampled_from(["Placed", "Paid"]))
    def append(self, sid: str, n: int, kind: str, delta: int, typ: str) -> None:
        expected = self.expected_for(sid, kind, delta)
        event(f"append {kind}: {'accepted' if self.accepts(sid, expected) else 'refused'}"
              + (" (deleted stream)" if self.deleted(sid) else ""))
        self.append_checked(sid, self.new_events(n, typ), expected)

    @precondition(lambda self: any(self.deleted(sid) for sid in POOL))
    @rule(data=st.data(), kinds=st.lists(expected_kinds, min_size=1, max_size=3))
    def append_to_a_deleted_stream(self, data: st.DataObject, kinds: list[str]) -> None:
        """Appends to a soft-deleted stream: it may stay deleted (truncate_before ahead) or revive."""
        sid = data.draw(st.sampled_from([sid for sid in POOL if self.deleted(sid)]), label="deleted")
        for kind in kinds:
            event(f"append {kind} to a deleted stream: "
                  + ("accepted" if self.accepts(sid, self.expected_for(sid, kind, 1)) else "refused"))
            self.append_checked(sid, self.new_events(1), self.expected_for(sid, kind, 1))

    @rule(steps=st.lists(st.tuples(streams_ids, st.integers(1, 2), expected_kinds), min_size=2, max_size=8))
    def burst(self, steps: list[tuple[str, int, str]]) -> None:
        """Several appends with no read between them: staged updates pile up, appenders flush."""
        for sid, n, kind in steps:
            self.append_checked(sid, self.new_events(n), self.expected_for(sid, kind, 1))

    @precondition(lambda self: self.appended)
    @rule(data=st.data(), original=st.booleans())
    def retry(self, data: st.DataObject, original: bool) -> None:
        """Send an earlier successful append again: its original result, nothing written."""
        old = data.draw(st.sampled_from(self.appended), label="retried")
        expected = old.expected if original else StreamState.ANY
        event(f"retry with {'original' if original else 'ANY'} expected version")
        end = self.partition_end(old.stream_id)
        result = self.s.append_to_stream(old.stream_id, old.events, expected_version=expected)
        assert result == old.result
        assert self.partition_end(old.stream_id) == end, "an idempotent retry wrote records"

    @precondition(lambda self: self.appended)
    @rule(data=st.data())
    def partial_retry_is_refused(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from(self.appended), label="retried")
        end = self.partition_end(old.stream_id)
        with pytest.raises(eventstore.InvalidArgumentError):
            self.s.append_to_stream(old.stream_id, [old.events[0], *self.new_events(1)], StreamState.ANY)
        assert self.partition_end(old.stream_id) == end

    # --- reads --------------------------------------------------------------------------

    @rule(sid=streams_ids, from_version=st.integers(-1, 12), limit=st.none() | st.integers(0, 5),
          backwards=st.booleans())
    def read_stream(self, sid: str, from_version: int, limit: int | None, backwards: bool) -> None:
        if self.last(sid) < 0 or self.deleted(sid):
            with pytest.raises(StreamNotFoundError) as info:
                self.s.read_stream(sid, from_version=from_version, limit=limit, backwards=backwards)
            deleted = self.last(sid) >= 0 and self.deleted(sid)  # no event: "does not exist" first
            assert info.value.deleted == deleted
            event("read_stream: not found" + (" (deleted)" if deleted else ""))
            return
        got = self.s.read_stream(sid, from_version=from_version, limit=limit, backwards=backwards)
        assert [as_tuple(e) for e in got] == self.model_read(sid, from_version, limit, backwards)
        for e in got:
            assert (e.topic, e.partition) == (category(sid), partition_of(sid))
        event(f"read_stream: {min(len(got), 3)}+ events")

    @rule()
    def versions_and_lists(self) -> None:
        for sid in POOL:
            want = self.last(sid)
            assert self.s.stream_version(sid) == (None if want < 0 else want), sid
            assert self.s.get_stream_metadata(sid) == (self.model[sid].meta if sid in self.model
                                                       and self.model[sid].meta is not None
                                                       else StreamMetadata())
        alive = sorted(sid for sid in POOL if self.last(sid) >= 0 and not self.deleted(sid))
        for cat in CATEGORIES:
            assert self.s.list_streams(cat) == [sid for sid in alive if category(sid) == cat]
        assert self.s.list_streams() == sorted(alive)

    @rule(data=st.data())
    def read_all(self, data: st.DataObject) -> None:
        everything = self.s.read_all(from_position=0, limit=None)
        positions = [e.position for e in everything]
        assert positions == list(range(self.next_position)), "read_all: not every position, in order"
        per_stream: dict[str, list[Any]] = {}
        for e in everything:
            per_stream.setdefault(e.stream_id, []).append(e)
            assert (e.topic, e.partition) == (category(e.stream_id), partition_of(e.stream_id))
        assert set(per_stream) == {sid for sid, m in self.model.items() if m.events}
        for sid, events in per_stream.items():
            m = self.model[sid].events
            assert [e.version for e in events] == list(range(len(m)))
            if sid.startswith(META):
                got_meta = [(e.type, msgspec.json.decode(e.data, type=StreamMetadata), e.position)
                            for e in events]
                want_meta = [(t, msgspec.json.decode(d, type=StreamMetadata), p) for _, t, d, p in m]
                assert got_meta == want_meta
            else:
                assert [(e.id_bytes, e.type, e.data, e.position) for e in events] == m
        if self.next_position:  # a window of it
            start = data.draw(st.integers(0, self.next_position), label="from_position")
            limit = data.draw(st.none() | st.integers(0, 6), label="limit")
            window = self.s.read_all(from_position=start, limit=limit)
            want = everything[start:] if limit is None else everything[start:start + limit]
            assert [as_tuple(e) for e in window] == [as_tuple(e) for e in want]

    # --- lifecycle ------------------------------------------------------------------------

    @rule(sid=streams_ids)
    def delete_stream(self, sid: str) -> None:
        last = self.last(sid)
        if last < 0:
            with pytest.raises(StreamNotFoundError):
                self.s.delete_stream(sid)
            return
        was_deleted = self.deleted(sid)
        meta = msgspec.structs.replace(self.model[sid].meta or StreamMetadata(), deleted=True,
                                       truncate_before=last + 1)
        result = self.s.delete_stream(sid)
        assert result == self.model_set_meta(sid, meta)
        event("delete_stream" + (" (again)" if was_deleted else ""))

    @rule(sid=streams_ids, before=st.integers(0, 8))
    def truncate_stream(self, sid: str, before: int) -> None:
        if sid not in self.model:
            with pytest.raises(StreamNotFoundError):
                self.s.truncate_stream(sid, before)
            return
        meta = msgspec.structs.replace(self.model[sid].meta or StreamMetadata(), truncate_before=before)
        result = self.s.truncate_stream(sid, before)
        assert result == self.model_set_meta(sid, meta)
        event("truncate_stream" + (" of a deleted stream" if self.deleted(sid) else ""))

    @rule(sid=streams_ids, max_count=st.none() | st.integers(0, 4),
          truncate_before=st.none() | st.integers(-3, 3), deleted=st.booleans())
    def set_stream_metadata(self, sid: str, max_count: int | None, truncate_before: int | None,
                            deleted: bool) -> None:
        """Replace the metadata; ``truncate_before`` is drawn around the next version, so that
        a deleted stream may stay deleted through an append or two."""
        if truncate_before is not None:
            truncate_before = max(0, self.last(sid) + 1 + truncate_before)
        meta = StreamMetadata(max_count=max_count, truncate_before=truncate_before, deleted=deleted)
        event("set_stream_metadata" + (" before any event" if self.last(sid) < 0 else ""))
        result = self.s.set_stream_metadata(sid, meta)
        assert result == self.model_set_meta(sid, meta)

    @rule()
    def flush(self) -> None:
        streams = streams_of(self.s)
        evictions = streams.staging.evictions
        streams.flush()
        event("flush evicted heads" if streams.staging.evictions > evictions else "flush evicted nothing")

    @rule()
    def reopen(self) -> None:
        self.s.close()
        self.open()

    @rule()
    def drop_the_index_and_reopen(self) -> None:
        self.s.close()
        shutil.rmtree(os.path.join(self.path, "index"), ignore_errors=True)
        self.open()


MACHINE_SETTINGS = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_streams_match_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model, with a head cache of 2 and appenders flushing after 3 staged appends."""
    monkeypatch.setattr(staging_module, "HEADS_MAX", 2)
    monkeypatch.setattr(staging_module, "STAGED_MAX", 3)
    run_state_machine_as_test(StreamsMachine, settings=MACHINE_SETTINGS)


# --- threads --------------------------------------------------------------------------------------

THREADS = 24
OPS_PER_THREAD = 200
THREAD_POOL = ["acct-1", "acct-2", "acct-3", "acct-4", "acct-5", "bag-1", "bag-2", "bag-3"]
JOIN_TIMEOUT_S = 120.0
MAX_ATTEMPTS = 1000  # per logical append, retries on WrongExpectedVersionError included


@dataclass
class Outcome:
    """What the threads saw: every accepted append, every refused event id, every failure."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: list[tuple[str, list[NewEvent], int | StreamState, AppendResult]] = field(default_factory=list)
    refused_ids: set[bytes] = field(default_factory=set)
    retried: int = 0
    conflicts: int = 0
    longest_run: int = 0  # most conflicts in a row of one logical append
    errors: list[BaseException] = field(default_factory=list)


def _worker(store: eventstore.Store, k: int, out: Outcome, barrier: threading.Barrier,
            deadline: float) -> None:
    """Kind k % 4: 0 reads stream_version, 1 keeps its own last results, 2 appends with ANY,
    3 mixes fresh appends with resending an earlier accepted append (its original expected
    version, or ANY)."""
    rng = random.Random(1000 + k)
    kind = k % 4
    known: dict[str, int] = {}  # kind 1: the version each stream was at, as this thread last saw it
    try:
        barrier.wait(timeout=30)
        for i in range(OPS_PER_THREAD):  # bounded
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {k} still at op {i} at its deadline")
            sid = rng.choice(THREAD_POOL)
            if kind == 3 and i % 3 == 2:
                with out.lock:
                    candidates = out.accepted[-200:]
                if candidates:
                    sid, events, expected, result = rng.choice(candidates)
                    if i % 2:
                        expected = StreamState.ANY  # a retry that states nothing about versions
                    again = store.append_to_stream(sid, events, expected)
                    assert again == result, f"retry of {result} returned {again}"
                    with out.lock:
                        out.retried += 1
                    continue
            for _attempt in range(MAX_ATTEMPTS):  # bounded
                events = [NewEvent(type=f"T{k}", data=b"%d:%d" % (k, i)) for _ in range(1 + rng.randrange(3))]
                expected: int | StreamState
                if kind == 0:
                    v = store.stream_version(sid)
                    expected = -1 if v is None else v
                elif kind == 2:
                    expected = StreamState.ANY
                elif sid in known:
                    expected = known[sid]
                else:
                    expected = StreamState.NO_STREAM if kind == 1 else -1
                try:
                    result = store.append_to_stream(sid, events, expected)
                except WrongExpectedVersionError as e:
                    known[sid] = e.actual
                    with out.lock:
                        out.refused_ids.update(ev.id.bytes for ev in events)
                        out.conflicts += 1
                        out.longest_run = max(out.longest_run, _attempt + 1)
                    if _attempt >= 3:  # back off: under group commit a writer that re-reads its
                        # version before resending queues behind those that do not, every time
                        time.sleep(rng.uniform(0, 0.002 * min(_attempt, 10)))
                    continue
                known[sid] = result.next_expected_version
                with out.lock:
                    out.accepted.append((sid, events, expected, result))
                break
            else:
                raise AssertionError(f"worker {k}: {MAX_ATTEMPTS} conflicts in a row on {sid}")
    except BaseException as e:  # reported by the test
        with out.lock:
            out.errors.append(e)


def _verify(store: eventstore.Store, out: Outcome) -> None:
    everything = store.read_all(from_position=0, limit=None)
    positions = [e.position for e in everything]
    assert all(a < b for a, b in itertools.pairwise(positions)), "read_all: positions not increasing"
    assert positions == list(range(len(everything))), "read_all: a gap without a failed append"
    ids = [e.id_bytes for e in everything]
    assert len(ids) == len(set(ids)), "an event id is stored more than once"
    accepted_ids = {e.id.bytes for _, events, _, _ in out.accepted for e in events}
    assert set(ids) == accepted_ids, "read_all holds other events than those accepted"
    assert not out.refused_ids & set(ids), "events of a refused append were stored"
    by_id = {e.id_bytes: e for e in everything}
    per_stream: dict[str, list[Any]] = {}
    for e in everything:
        per_stream.setdefault(e.stream_id, []).append(e)
    for sid, events in per_stream.items():
        assert [e.version for e in events] == list(range(len(events))), f"{sid}: versions not contiguous"
        stored = store.read_stream(sid)
        assert [as_tuple(e) for e in stored] == [as_tuple(e) for e in events], sid
        assert store.stream_version(sid) == len(events) - 1
    assert sorted(store.list_streams()) == sorted(per_stream)
    for sid, events, expected, result in out.accepted:
        n = len(events)
        assert result.stream_id == sid
        got = [by_id[e.id.bytes] for e in events]
        assert [g.stream_id for g in got] == [sid] * n
        assert [g.version for g in got] == list(range(result.next_expected_version - n + 1,
                                                       result.next_expected_version + 1)), result
        assert [g.position for g in got] == list(range(result.position - n + 1, result.position + 1)), result
        if isinstance(expected, int):
            assert result.next_expected_version == expected + n
        elif expected is StreamState.NO_STREAM:
            assert result.next_expected_version == n - 1
    report = store.check()
    assert report.ok, report.problems


@pytest.mark.parametrize("heads", ["tiny", "default"])
@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_threads_appending_with_expected_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  heads: str, durability: str) -> None:
    if heads == "tiny":
        monkeypatch.setattr(staging_module, "HEADS_MAX", 2)
        monkeypatch.setattr(staging_module, "STAGED_MAX", 8)
    path = tmp_path / "store"
    out = Outcome()
    barrier = threading.Barrier(THREADS)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    store = eventstore.open(path, durability=durability, stream_partitions=2)  # type: ignore[arg-type]
    try:
        threads = [threading.Thread(target=_worker, args=(store, k, out, barrier, deadline), daemon=True)
                   for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 5)
        assert not any(t.is_alive() for t in threads), "a worker is stuck"
        assert not out.errors, out.errors[:3]
        assert out.accepted and out.retried and out.conflicts
        _verify(store, out)
        if heads == "tiny":
            assert streams_of(store).staging.evictions > 0
    finally:
        store.close()
    with eventstore.open(path, durability=durability, stream_partitions=2) as store:  # type: ignore[arg-type]
        _verify(store, out)
    shutil.rmtree(path / "index")
    with eventstore.open(path, durability=durability, stream_partitions=2) as store:  # type: ignore[arg-type]
        _verify(store, out)
        # appends after the rebuild continue every stream and the global order
        last = store.read_all(0, None)[-1].position
        for sid in THREAD_POOL:
            v = store.stream_version(sid)
            if v is not None:
                r = store.append_to_stream(sid, [NewEvent(type="After")], v)
                assert r.next_expected_version == v + 1 and r.position == last + 1
                last = r.position


# --- regressions: retries the version check alone lets through ----------------------------------


def test_retry_with_stream_exists_is_idempotent(store: eventstore.Store) -> None:
    store.append_to_stream("order-1", [NewEvent(type="A")])
    batch = [NewEvent(type="B")]
    first = store.append_to_stream("order-1", batch, StreamState.STREAM_EXISTS)
    again = store.append_to_stream("order-1", batch, StreamState.STREAM_EXISTS)
    assert again == first
    assert [e.version for e in store.read_stream("order-1")] == [0, 1]


def test_retry_with_no_stream_after_a_delete_is_idempotent(store: eventstore.Store) -> None:
    batch = [NewEvent(type="A")]
    first = store.append_to_stream("cart-1", batch, StreamState.NO_STREAM)
    store.delete_stream("cart-1")
    again = store.append_to_stream("cart-1", batch, StreamState.NO_STREAM)
    assert again == first
    ids = [e.id_bytes for e in store.read_all(0, None) if e.stream_id == "cart-1"]
    assert ids == [batch[0].id.bytes]


def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # bounded by the deadline
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_any_retry_batched_behind_another_append_is_idempotent(store: eventstore.Store) -> None:
    old = [NewEvent(type="Old")]
    first = store.append_to_stream("acct-1", old, StreamState.NO_STREAM)
    streams = streams_of(store)
    topic, partition = "acct", store.read_stream("acct-1")[0].partition
    plog = store.log.partition(topic, partition)
    queue = streams._queue(topic, partition)
    results: dict[str, Any] = {}

    def send(name: str, events: list[NewEvent]) -> None:
        try:
            results[name] = store.append_to_stream("acct-1", events, StreamState.ANY)
        except BaseException as e:  # reported below
            results[name] = e

    threads = [threading.Thread(target=send, args=("blocker", [NewEvent(type="Blocker")]), daemon=True),
               threading.Thread(target=send, args=("new", [NewEvent(type="New")]), daemon=True),
               threading.Thread(target=send, args=("retry", old), daemon=True)]
    with plog._lock:  # hold the partition: the blocker leads alone, the next two queue behind it
        threads[0].start()
        _wait_until(lambda: queue.leader.locked() and not queue.items)
        threads[1].start()
        _wait_until(lambda: len(queue.items) == 1)
        threads[2].start()
        _wait_until(lambda: len(queue.items) == 2)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert results["retry"] == first, results
    ids = [e.id_bytes for e in store.read_stream("acct-1")]
    assert ids.count(old[0].id.bytes) == 1, [e.type for e in store.read_stream("acct-1")]


@pytest.mark.parametrize("expected", [1, StreamState.ANY, StreamState.STREAM_EXISTS])
def test_the_same_append_twice_in_one_batch_is_written_once(
        store: eventstore.Store, expected: int | StreamState) -> None:
    """Two threads resending one request at once: the leader combines both; the second gets
    the first's result (its event ids are in no index yet) and nothing is written twice."""
    store.append_to_stream("acct-2", [NewEvent(type="Open")], StreamState.NO_STREAM)
    topic, partition = "acct", store.read_stream("acct-2")[0].partition
    plog = store.log.partition(topic, partition)
    queue = streams_of(store)._queue(topic, partition)
    same = [NewEvent(type="Deposit"), NewEvent(type="Fee")]
    results: dict[str, Any] = {}

    def send(name: str, events: list[NewEvent], version: int | StreamState) -> None:
        try:
            results[name] = store.append_to_stream("acct-2", events, version)
        except BaseException as e:  # reported below
            results[name] = e

    blocker = threading.Thread(target=send, args=("blocker", [NewEvent(type="Other")], StreamState.ANY),
                               daemon=True)
    twins = [threading.Thread(target=send, args=(name, same, expected), daemon=True)
             for name in ("first", "second")]
    with plog._lock:  # hold the partition: the blocker leads alone, the twins queue behind it
        blocker.start()
        _wait_until(lambda: queue.leader.locked() and not queue.items)
        for n, t in enumerate(twins, 1):
            t.start()
            _wait_until(lambda n=n: len(queue.items) == n)
    for t in (blocker, *twins):
        t.join(10)
    assert not any(t.is_alive() for t in (blocker, *twins))
    assert results["first"] == results["second"], results  # (1: the version after the blocker's)
    assert [e.type for e in store.read_stream("acct-2")] == ["Open", "Other", "Deposit", "Fee"]


def test_retries_with_the_original_expected_version_or_any_are_idempotent(
        store: eventstore.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retries the machine relies on, after flushes and evictions (a tiny head cache)."""
    monkeypatch.setattr(staging_module, "HEADS_MAX", 1)
    batch = [NewEvent(type="A"), NewEvent(type="B")]
    first = store.append_to_stream("order-7", batch, StreamState.NO_STREAM)
    for sid in ("order-8", "order-9", "cart-8"):
        store.append_to_stream(sid, [NewEvent(type="X")])
    for flush in (False, True):
        if flush:
            streams_of(store).flush()
        assert store.append_to_stream("order-7", batch, StreamState.NO_STREAM) == first
        assert store.append_to_stream("order-7", batch, StreamState.ANY) == first
        assert store.append_to_stream("order-7", batch, -1) == first
    assert [e.type for e in store.read_stream("order-7")] == ["A", "B"]
    assert streams_of(store).staging.evictions > 0
