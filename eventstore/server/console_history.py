"""The console's history (docs/operations.md, 6): consumer-group lag per partition and the
store's throughput, sampled every few seconds into a bounded in-memory ring.

Charts over "the last minutes" need figures from before anyone opened the page, so the
HTTP port runs :func:`sample_forever` beside its listener. One sample reads the store's
statistics and every group's committed offsets (a worker thread, as a scrape does); the ring
keeps :data:`HISTORY_SAMPLES` of them and each holds at most :data:`SERIES_MAX` lag values,
so memory stays bounded whatever the store holds. Nothing is kept across restarts.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from ..errors import EventStoreError
from .context import Broker

__all__ = ["HISTORY_SAMPLES", "SERIES_MAX", "History", "Sample", "history_of", "sample_forever"]

log = logging.getLogger("eventstore.server")

SAMPLE_INTERVAL_S = 5.0
"""Seconds between samples (read before each wait, so a test may shorten it)."""
HISTORY_SAMPLES = 120
"""Samples kept: ten minutes at the default interval."""
SERIES_MAX = 1000
"""Lag values one sample keeps (group, topic, partition): the first ones in sorted order."""

LagKey = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Sample:
    """The store's counters and every group's lag at one moment."""

    time_ms: int
    monotonic: float
    records_in: int
    """Records appended since the store opened (the store's own counter)."""
    records_committed: int
    """Sum of every group's committed offsets: what groups have consumed and committed."""
    bytes_in: float
    bytes_out: float
    """Bytes of record batches produced and fetched through this server."""
    lag: dict[LagKey, int]


class History:
    """The ring of samples of one server; appended by the sampler, read by the API."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque(maxlen=HISTORY_SAMPLES)
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def group_lag(self, group: str) -> dict[str, Any]:
        """The group's lag per partition over the kept samples: times, and one series per
        partition (None where a sample did not have it)."""
        samples = self.samples()
        keys = sorted({(t, p) for s in samples for (g, t, p) in s.lag if g == group})
        return {
            "t": [s.time_ms for s in samples],
            "series": [{"topic": t, "partition": p, "lag": [s.lag.get((group, t, p)) for s in samples]}
                       for t, p in keys],
        }

    def throughput(self) -> list[dict[str, Any]]:
        """Rates between consecutive samples, per second."""
        samples = self.samples()
        out = []
        for before, after in itertools.pairwise(samples):  # bounded by the ring
            span = after.monotonic - before.monotonic
            if span <= 0:
                continue
            out.append({
                "t": after.time_ms,
                "records_in_per_s": max(0.0, (after.records_in - before.records_in) / span),
                "records_committed_per_s": max(
                    0.0, (after.records_committed - before.records_committed) / span),
                "bytes_in_per_s": max(0.0, (after.bytes_in - before.bytes_in) / span),
                "bytes_out_per_s": max(0.0, (after.bytes_out - before.bytes_out) / span),
            })
        return out


def history_of(broker: Broker) -> History:
    """The broker's history (made on first use)."""
    history = broker.state.setdefault(__name__, History())
    assert isinstance(history, History)
    return history


def take_sample(broker: Broker) -> Sample:
    """Read the figures now (blocking: a worker thread's job)."""
    stats = broker.log.statistics()
    groups = broker.groups
    lag: dict[LagKey, int] = {}
    committed = 0
    for group in sorted(groups.list_groups()):  # bounded by the store's groups
        committed += sum(groups.group_offsets(group).values())
        for tp, value in sorted(groups.lag(group).items()):  # bounded by the group's partitions
            if len(lag) < SERIES_MAX:
                lag[(group, tp.topic, tp.partition)] = value
    metrics = broker.metrics
    return Sample(int(time.time() * 1000), time.monotonic(), stats.appended_records, committed,
                  _total(metrics.bytes_in.collect()), _total(metrics.bytes_out.collect()), lag)


def _total(families: Iterable[Any]) -> float:
    """The sum of a labelled counter's ``_total`` samples."""
    return float(sum(s.value for f in families for s in f.samples if s.name.endswith("_total")))


async def sample_forever(broker: Broker) -> None:
    """Sample every :data:`SAMPLE_INTERVAL_S` until cancelled (with the HTTP port)."""
    history = history_of(broker)
    while not broker.stopping:  # until the server stops (or the task is cancelled)
        try:
            history.add(await anyio.to_thread.run_sync(take_sample, broker))
        except EventStoreError as e:  # a sample missed; the store closed: nothing more to sample
            if broker.log.closed:
                return
            log.warning("console: lag and throughput sample failed: %s", e)
        await anyio.sleep(SAMPLE_INTERVAL_S)
