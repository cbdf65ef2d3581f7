"""Bucket counts of what the log measures on itself: append and fsync latencies, batches and
records per fsync (docs/operations.md, "Metrics").

The embedded core keeps plain counts, with no metrics library: ``store.metrics()`` reads
them as they are, and a Prometheus collector (``eventstore.metrics``) turns them into
histograms at scrape time. One observation costs a bisect and a short lock.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

__all__ = ["COUNT_BUCKETS", "LATENCY_BUCKETS_S", "Histogram", "HistogramSnapshot", "LogTimings"]

#: Upper bounds (seconds) of the latency buckets: 50 µs to 10 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0)
#: Upper bounds of the batches (records) per fsync buckets.
COUNT_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative counts per upper bound (the last is +Inf), their sum and count."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int


class Histogram:
    """Counts of observations per bucket; safe to observe from any thread."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for c in counts:  # bounded by the buckets
            running += c
            cumulative.append(running)
        return HistogramSnapshot((*self._bounds, float("inf")), tuple(cumulative), total, running)


class LogTimings:
    """One log's histograms, shared by its partitions."""

    __slots__ = ("append_seconds", "batches_per_fsync", "fsync_seconds", "records_per_fsync")

    def __init__(self) -> None:
        self.append_seconds = Histogram(LATENCY_BUCKETS_S)
        """From an append call to its records durable per the mode (written, when the caller
        waits for durability later: a Produce shares one barrier)."""
        self.fsync_seconds = Histogram(LATENCY_BUCKETS_S)
        self.batches_per_fsync = Histogram(COUNT_BUCKETS)
        self.records_per_fsync = Histogram(COUNT_BUCKETS)
