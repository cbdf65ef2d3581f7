"""R1: the remote store against the embedded one, on the same store and the same calls.

One store, opened embedded and served on 127.0.0.1 (``Store.serve``, port 0, in this
process); ``eventstore.connect`` to it. Two figures, each as remote/embedded:

* ``append_to_stream`` from one thread, one event per call, durable (fsync mode): the cost
  of a round trip and the extension codec over the embedded call;
* ``read_stream`` of one 10,000-event stream (median of several runs; the embedded reads
  after the first are served by its decoded-chunk cache, the remote ones pay encoding,
  the socket and decoding every time).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.base import Measured, System

if TYPE_CHECKING:
    from bench.runner import Context, WorkloadResult

R1_APPENDS = 2_000
R1_EVENTS = 10_000
READ_RUNS = 7
EVENT_DATA = b"x" * 100


class Remote(System):
    name = "eventstore"


def _serve(root: Path) -> tuple[Any, Any, Any]:
    """The embedded store, its server, and a remote store connected to it."""
    import eventstore

    store = eventstore.open(root / "store", durability="fsync")
    server = store.serve("127.0.0.1:0")
    return store, server, eventstore.connect(f"127.0.0.1:{server.address[1]}")


def _close(store: Any, server: Any, remote: Any) -> None:
    remote.close()
    server.close()
    store.close()


def appends(root: Path, count: int, remote: bool) -> Measured:
    """``count`` single-event appends to 50 streams in turn, from one thread."""
    from eventstore import NewEvent

    store, server, client = _serve(root)
    try:
        target = client if remote else store
        started = time.perf_counter()
        for i in range(count):  # bounded by count
            target.append_to_stream(f"bench-{i % 50}", [NewEvent(type="E", data=EVENT_DATA)])
        seconds = time.perf_counter() - started
    finally:
        _close(store, server, client)
    return Measured(seconds, "fsync, 1 thread", {"us_per_append": seconds / count * 1e6})


def reads(root: Path, events: int, remote: bool) -> Measured:
    """The median of ``READ_RUNS`` reads of one ``events``-event stream."""
    from eventstore import NewEvent

    store, server, client = _serve(root)
    try:
        for start in range(0, events, 1_000):  # untimed: the stream to read
            store.append_to_stream("long-1", [NewEvent(type="E", data=EVENT_DATA)
                                              for _ in range(min(1_000, events - start))])
        target = client if remote else store
        read: Callable[[], list[Any]] = partial(target.read_stream, "long-1")
        times = []
        for _ in range(READ_RUNS):  # bounded by READ_RUNS
            started = time.perf_counter()
            got = read()
            times.append(time.perf_counter() - started)
            assert len(got) == events
    finally:
        _close(store, server, client)
    median = statistics.median(times)
    return Measured(median, "median of 7 reads", {"ms": median * 1e3, "first_ms": times[0] * 1e3})


def r1(ctx: Context) -> WorkloadResult:
    count, events = ctx.scaled(R1_APPENDS), ctx.scaled(R1_EVENTS)
    system = Remote()
    rows = []
    for kind in ("embedded", "remote"):
        rows.append(ctx.measure("R1", system, count, partial(appends, count=count, remote=kind == "remote"),
                                f"append_to_stream, {kind}"))
    for kind in ("embedded", "remote"):
        rows.append(ctx.measure("R1", system, events, partial(reads, events=events, remote=kind == "remote"),
                                f"read_stream, {kind}"))
    by_variant = {row.get("variant"): row for row in rows}

    def ratio(call: str, key: str) -> float | None:
        local = by_variant[f"{call}, embedded"].get(key)
        far = by_variant[f"{call}, remote"].get(key)
        return far / local if isinstance(local, float) and isinstance(far, float) and local else None

    metrics = {
        "remote/embedded append_to_stream": ratio("append_to_stream", "us_per_append"),
        "remote/embedded read_stream": ratio("read_stream", "ms"),
        "remote append_to_stream us": by_variant["append_to_stream, remote"].get("us_per_append"),
        "remote read_stream ms": by_variant["read_stream, remote"].get("ms"),
    }
    return rows, metrics, metrics
