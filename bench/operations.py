"""OPS1: a ``/metrics`` scrape of a server whose store has 1,000 partitions (docs/operations.md, 4.1).

Ten topics of 100 partitions, one record in each, one consumer group with offsets in 100 of
them; the server runs in-process (``Store.serve(http=...)``) and the scrape is an HTTP GET over
the loopback, timed from the request sent to the last byte read. The figure is the median of
``SCRAPES`` scrapes after one warm-up; the target is 100 ms.
"""

from __future__ import annotations

import http.client
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.base import Measured, System

if TYPE_CHECKING:
    from bench.runner import Context, Metrics, Row, WorkloadResult

TOPICS = 10
PARTITIONS = 100
SCRAPES = 20


class Served(System):
    name = "eventstore"


def scrape_ms(address: tuple[str, int]) -> tuple[float, int]:
    """One GET /metrics: milliseconds and bytes."""
    conn = http.client.HTTPConnection(address[0], address[1], timeout=30)
    try:
        started = time.perf_counter()
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}")
    return elapsed * 1000, len(body)


def scrapes(directory: Path) -> tuple[list[float], int]:
    import eventstore
    from eventstore import TopicPartition

    with eventstore.open(directory / "store", durability="none") as store:
        for t in range(TOPICS):  # bounded: TOPICS x PARTITIONS appends
            store.create_topic(f"t{t}", partitions=PARTITIONS)
            for p in range(PARTITIONS):
                store.append(f"t{t}", b"x", partition=p)
        store.reset_group_offsets("readers", {TopicPartition("t0", p): 0 for p in range(PARTITIONS)})
        with store.serve("127.0.0.1:0", http="127.0.0.1:0") as handle:
            assert handle.http_address is not None
            scrape_ms(handle.http_address)  # warm-up
            timed = [scrape_ms(handle.http_address) for _ in range(SCRAPES)]
    return [ms for ms, _ in timed], timed[-1][1]


def ops1(ctx: Context) -> WorkloadResult:
    figures: dict[str, float] = {}

    def action(directory: Path) -> Measured:
        timings, size = scrapes(directory)
        figures.update(p50=statistics.median(timings), worst=max(timings), size=size)
        return Measured(sum(timings) / 1000, f"{TOPICS * PARTITIONS} partitions, {SCRAPES} scrapes",
                        {"p50_ms": round(figures["p50"], 2), "max_ms": round(figures["worst"], 2),
                         "bytes": int(size)})

    row: Row = ctx.measure("OPS1", Served(), TOPICS * PARTITIONS, action)
    metrics: Metrics = {"scrape p50 ms": figures.get("p50"), "scrape max ms": figures.get("worst")}
    return [row], metrics, {}
