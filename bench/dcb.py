"""W13: dynamic consistency boundaries, eventstore's tagged events beside the ``eventsourcing``
library's in-memory DCB recorder (``popo``, the reference: no disk, no durability).

* conditional appends, one event each with two tags, whose condition is a query of those two
  tags after the last position the writer saw: from 1 thread durable (fsync mode), beside
  plain ``append_to_stream`` calls (the store's own floor: one fsync each), and from 64
  threads (disjoint tags, so none conflicts: they share batches and fsyncs);
* ``read_events`` of 10,000 matching events (one tag) among 1,000,000 (at scale 1): the
  median of several reads; popo scans its whole list for each.
"""

from __future__ import annotations

import statistics
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.base import Measured, System

if TYPE_CHECKING:
    from bench.runner import Context, WorkloadResult

W13_APPENDS = 4_000
W13_THREADS = 64
W13_TOTAL = 1_000_000
W13_MATCHING_EVERY = 100  # 10,000 of 1,000,000
READ_RUNS = 7
DATA = b"x" * 100


class EventStoreDCB(System):
    name = "eventstore"

    def open(self, root: Path, durability: Any) -> Any:
        import eventstore

        return eventstore.open(root / "store", durability=durability)

    def appender(self, store: Any) -> Any:
        from eventstore import AppendCondition, Query, QueryItem, TaggedEvent

        def append(tags: list[str], after: int | None) -> int:
            cond = AppendCondition(Query([QueryItem(tags=tags)]), after)
            result: int = store.append_events([TaggedEvent("Decided", DATA, tags)], cond)
            return result
        return append

    def filler(self, store: Any) -> Any:
        from eventstore import TaggedEvent

        def fill(batch: list[tuple[str, list[str]]]) -> None:
            store.append_events([TaggedEvent(t, DATA, tags) for t, tags in batch])
        return fill

    def reader(self, store: Any) -> Any:
        from eventstore import Query, QueryItem

        def read(tag: str) -> int:
            return len(store.read_events(Query([QueryItem(tags=[tag])])).events)
        return read

    def close(self, store: Any) -> None:
        store.close()


class PopoDCB(EventStoreDCB):
    name = "eventsourcing-popo"

    def open(self, root: Path, durability: Any) -> Any:
        from eventsourcing.dcb.popo import InMemoryDCBRecorder

        return InMemoryDCBRecorder()

    def appender(self, store: Any) -> Any:
        from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem

        def append(tags: list[str], after: int | None) -> int:
            cond = DCBAppendCondition(DCBQuery([DCBQueryItem(tags=tags)]), after)
            result: int = store.append([DCBEvent("Decided", DATA, tags)], cond)
            return result
        return append

    def filler(self, store: Any) -> Any:
        from eventsourcing.dcb.api import DCBEvent

        def fill(batch: list[tuple[str, list[str]]]) -> None:
            store.append([DCBEvent(t, DATA, tags) for t, tags in batch])
        return fill

    def reader(self, store: Any) -> Any:
        from eventsourcing.dcb.api import DCBQuery, DCBQueryItem

        def read(tag: str) -> int:
            return len(list(store.read(DCBQuery([DCBQueryItem(tags=[tag])]))))
        return read

    def close(self, store: Any) -> None:
        pass


SYSTEMS: list[EventStoreDCB] = [EventStoreDCB(), PopoDCB()]


def appends(system: EventStoreDCB, root: Path, count: int) -> Measured:
    """``count`` conditional appends from one thread, each after the last position it got."""
    store = system.open(root, "fsync")
    try:
        append = system.appender(store)
        last: int | None = None
        started = time.perf_counter()
        for i in range(count):  # bounded by count
            last = append([f"student-{i % 500}", f"course-{i % 37}"], last)
        seconds = time.perf_counter() - started
    finally:
        system.close(store)
    config = "fsync, 1 thread" if system.name == "eventstore" else "in memory, 1 thread"
    return Measured(seconds, config, {"us_per_append": seconds / count * 1e6})


def stream_appends(root: Path, count: int) -> Measured:
    """The floor: ``count`` single-event ``append_to_stream`` calls, one thread, durable."""
    import eventstore
    from eventstore import NewEvent

    store = eventstore.open(root / "store", durability="fsync")
    try:
        started = time.perf_counter()
        for i in range(count):  # bounded by count
            store.append_to_stream(f"bench-{i % 500}", [NewEvent(type="Decided", data=DATA)])
        seconds = time.perf_counter() - started
    finally:
        store.close()
    return Measured(seconds, "fsync, 1 thread", {"us_per_append": seconds / count * 1e6})


def appends_threads(system: EventStoreDCB, root: Path, threads: int, per_thread: int) -> Measured:
    """Conditional appends from ``threads`` threads, each on tags of its own."""
    store = system.open(root, "fsync")
    try:
        append = system.appender(store)
        barrier = threading.Barrier(threads + 1)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            barrier.wait()
            last: int | None = None
            try:
                for i in range(per_thread):  # bounded by per_thread
                    last = append([f"w{n}", f"w{n}-{i % 10}"], last)
            except BaseException as e:
                errors.append(e)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        barrier.wait()
        started = time.perf_counter()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - started
        if errors:
            raise errors[0]
    finally:
        system.close(store)
    return Measured(seconds, f"fsync, {threads} threads")


def reads(system: EventStoreDCB, root: Path, total: int) -> Measured:
    """The median of ``READ_RUNS`` reads of the events of one tag, one in every 100."""
    store = system.open(root, "none")
    try:
        fill = system.filler(store)
        batch: list[tuple[str, list[str]]] = []
        for i in range(total):  # untimed: the events to read among
            tags = [f"other-{i % 1000}"] + (["hot"] if i % W13_MATCHING_EVERY == 0 else [])
            batch.append(("Seen", tags))
            if len(batch) == 1_000:
                fill(batch)
                batch = []
        if batch:
            fill(batch)
        read = system.reader(store)
        times = []
        for _ in range(READ_RUNS):  # bounded by READ_RUNS
            started = time.perf_counter()
            got = read("hot")
            times.append(time.perf_counter() - started)
            assert got == (total + W13_MATCHING_EVERY - 1) // W13_MATCHING_EVERY
    finally:
        system.close(store)
    median = statistics.median(times)
    return Measured(median, f"median of {READ_RUNS} reads", {"ms": median * 1e3, "first_ms": times[0] * 1e3})


def w13(ctx: Context) -> WorkloadResult:
    count, total = ctx.scaled(W13_APPENDS), ctx.scaled(W13_TOTAL)
    per_thread = max(1, ctx.scaled(W13_APPENDS * 4) // W13_THREADS)
    rows = []
    for s in SYSTEMS:
        rows.append(ctx.measure("W13", s, count, partial(appends, s, count=count), "append, 1 thread"))
    rows.append(ctx.measure("W13", SYSTEMS[0], count, partial(stream_appends, count=count),
                            "append_to_stream, 1 thread"))
    rows.append(ctx.measure("W13", SYSTEMS[0], W13_THREADS * per_thread,
                            partial(appends_threads, SYSTEMS[0], threads=W13_THREADS, per_thread=per_thread),
                            f"append, {W13_THREADS} threads"))
    for s in SYSTEMS:
        rows.append(ctx.measure("W13", s, total, partial(reads, s, total=total), "read_events"))

    def row(system: str, variant: str) -> dict[str, Any]:
        return next(r for r in rows if r["system"] == system and r.get("variant") == variant)

    def per_s(system: str, variant: str) -> float | None:
        got: float | None = row(system, variant).get("records_per_s")
        return got

    ours, popo = per_s("eventstore", "append, 1 thread"), per_s("eventsourcing-popo", "append, 1 thread")
    floor = per_s("eventstore", "append_to_stream, 1 thread")
    read_ms = row("eventstore", "read_events").get("ms")
    popo_ms = row("eventsourcing-popo", "read_events").get("ms")
    metrics = {
        "eventstore appends/s @1": ours,
        "eventstore appends/s @64": per_s("eventstore", f"append, {W13_THREADS} threads"),
        "eventstore read_events ms": read_ms,
        "eventstore/popo appends @1": ours / popo if ours and popo else None,
        "append_events/append_to_stream @1": ours / floor if ours and floor else None,
        "popo/eventstore read_events time": popo_ms / read_ms
        if isinstance(popo_ms, float) and isinstance(read_ms, float) and read_ms else None,
    }
    return rows, metrics, metrics
