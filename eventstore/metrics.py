"""The store's own figures, for ``store.metrics()`` and for Prometheus (docs/operations.md, 4).

:func:`store_metrics` reads them now: every partition's size and offsets, every consumer
group's lag per partition, and the log's append and fsync histograms
(``eventstore.storage.timings``). :class:`StoreCollector` is a Prometheus collector over
the same figures, computed at scrape time, so a thousand partitions cost nothing between
scrapes and nothing per append. ``es serve`` registers one with its registry; an
embedded application registers one with its own (``store.register_metrics(registry)``).

``prometheus_client`` is imported only when a collector is made: the embedded store does
not need it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import StoreClosedError
from .groups import GroupCoordinator
from .log import Log
from .records import PartitionStatistics, StoreStatistics
from .storage.timings import HistogramSnapshot

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["GroupLag", "StoreCollector", "StoreMetrics", "register_store_metrics", "store_metrics"]


@dataclass(frozen=True, slots=True)
class GroupLag:
    """Records a consumer group has not committed past in one partition."""

    group: str
    topic: str
    partition: int
    lag: int


@dataclass(frozen=True, slots=True)
class StoreMetrics:
    """What ``store.metrics()`` returns: a snapshot, the same figures ``/metrics`` shows."""

    statistics: StoreStatistics
    """Sizes, log start and end offsets per partition; appended batches, records, fsyncs."""
    group_lag: list[GroupLag]
    append_seconds: HistogramSnapshot
    fsync_seconds: HistogramSnapshot
    batches_per_fsync: HistogramSnapshot
    records_per_fsync: HistogramSnapshot

    @property
    def partitions(self) -> list[PartitionStatistics]:
        return self.statistics.partition_stats


def store_metrics(log: Log, groups: GroupCoordinator) -> StoreMetrics:
    """The store's figures now (``StoreClosedError`` once it is closed)."""
    timings = log.timings
    return StoreMetrics(
        statistics=log.statistics(),
        group_lag=_group_lag(groups),
        append_seconds=timings.append_seconds.snapshot(),
        fsync_seconds=timings.fsync_seconds.snapshot(),
        batches_per_fsync=timings.batches_per_fsync.snapshot(),
        records_per_fsync=timings.records_per_fsync.snapshot(),
    )


def _group_lag(groups: GroupCoordinator) -> list[GroupLag]:
    out = []
    for group in groups.list_groups():  # bounded by the store's groups
        for tp, lag in sorted(groups.lag(group).items()):  # bounded by the group's partitions
            out.append(GroupLag(group, tp.topic, tp.partition, lag))
    return out


class StoreCollector:
    """A Prometheus collector of :func:`store_metrics`, read at each scrape."""

    def __init__(self, log: Log, groups: GroupCoordinator) -> None:
        import prometheus_client.core  # noqa: F401 (fails now, not at the first scrape)

        self.log = log
        self.groups = groups

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            m = store_metrics(self.log, self.groups)
        except StoreClosedError:
            return  # a store closing under a scrape: nothing to show
        s = m.statistics
        part = ["topic", "partition"]
        size = GaugeMetricFamily("eventstore_partition_size_bytes", "Bytes of a partition's segments.",
                                 labels=part)
        start = GaugeMetricFamily("eventstore_partition_log_start_offset",
                                  "First offset a partition still holds.", labels=part)
        end = GaugeMetricFamily("eventstore_partition_log_end_offset",
                                "Offset the next record of a partition gets.", labels=part)
        segments = GaugeMetricFamily("eventstore_partition_segments", "Segment files of a partition.",
                                     labels=part)
        for p in s.partition_stats:  # bounded by the store's partitions
            key = [p.topic, str(p.partition)]
            size.add_metric(key, p.size_bytes)
            start.add_metric(key, p.log_start_offset)
            end.add_metric(key, p.end_offset)
            segments.add_metric(key, p.segments)
        yield from (size, start, end, segments)
        lag = GaugeMetricFamily("eventstore_consumer_group_lag_records",
                                "Records a consumer group has not committed past, per partition.",
                                labels=["group", "topic", "partition"])
        for g in m.group_lag:  # bounded by the groups' partitions
            lag.add_metric([g.group, g.topic, str(g.partition)], g.lag)
        yield lag
        yield GaugeMetricFamily("eventstore_topics", "Topics in the store.", value=s.topics)
        yield GaugeMetricFamily("eventstore_store_size_bytes", "Bytes of every partition's segments.",
                                value=s.size_bytes)
        yield CounterMetricFamily("eventstore_appended_batches", "Batches appended since the store opened.",
                                  value=s.appended_batches)
        yield CounterMetricFamily("eventstore_appended_records", "Records appended since the store opened.",
                                  value=s.appended_records)
        yield CounterMetricFamily("eventstore_fsyncs", "Fsyncs of segment files since the store opened.",
                                  value=s.fsyncs)
        yield _histogram("eventstore_append_duration_seconds",
                         "Append calls, from the call to the records durable per the mode.", m.append_seconds)
        yield _histogram("eventstore_fsync_duration_seconds", "Fsyncs of a partition's active segment.",
                         m.fsync_seconds)
        yield _histogram("eventstore_fsync_batches", "Batches one fsync made durable.", m.batches_per_fsync)
        yield _histogram("eventstore_fsync_records", "Records one fsync made durable.", m.records_per_fsync)


def _histogram(name: str, documentation: str, snapshot: HistogramSnapshot) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    buckets = [("+Inf" if math.isinf(bound) else repr(float(bound)), count)
               for bound, count in zip(snapshot.bounds, snapshot.cumulative, strict=True)]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=snapshot.sum)


def register_store_metrics(log: Log, groups: GroupCoordinator, registry: CollectorRegistry) -> StoreCollector:
    """Register a :class:`StoreCollector` of this store with ``registry``; returns it (to
    ``registry.unregister`` it when the store closes)."""
    collector = StoreCollector(log, groups)
    registry.register(collector)
    return collector
