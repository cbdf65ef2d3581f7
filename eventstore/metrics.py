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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import StoreClosedError
from .groups import GroupCoordinator
from .log import Log
from .records import PartitionStatistics, StoreStatistics
from .storage.timings import HistogramSnapshot

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "Family", "GroupLag", "StoreCollector", "StoreMetrics", "register_store_metrics", "render_text",
    "store_families", "store_metrics", "store_text",
]


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


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family of the store's figures, before any rendering: gauge and counter
    samples as ``(label values, value)``, or a histogram's snapshot."""

    name: str
    kind: str  # "gauge", "counter" or "histogram"
    documentation: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    histogram: HistogramSnapshot | None = None


def store_families(m: StoreMetrics) -> list[Family]:
    """The store's figures as metric families (names follow Prometheus' conventions; a
    counter's ``_total`` is added when rendered)."""
    s = m.statistics
    part = ("topic", "partition")
    keys = [(p.topic, str(p.partition)) for p in s.partition_stats]
    stats = s.partition_stats
    return [
        Family("eventstore_partition_size_bytes", "gauge", "Bytes of a partition's segments.", part,
               [(k, p.size_bytes) for k, p in zip(keys, stats, strict=True)]),
        Family("eventstore_partition_log_start_offset", "gauge", "First offset a partition still holds.",
               part, [(k, p.log_start_offset) for k, p in zip(keys, stats, strict=True)]),
        Family("eventstore_partition_log_end_offset", "gauge", "Offset the next record of a partition gets.",
               part, [(k, p.end_offset) for k, p in zip(keys, stats, strict=True)]),
        Family("eventstore_partition_segments", "gauge", "Segment files of a partition.", part,
               [(k, p.segments) for k, p in zip(keys, stats, strict=True)]),
        Family("eventstore_consumer_group_lag_records", "gauge",
               "Records a consumer group has not committed past, per partition.",
               ("group", "topic", "partition"),
               [((g.group, g.topic, str(g.partition)), g.lag) for g in m.group_lag]),
        Family("eventstore_topics", "gauge", "Topics in the store.", samples=[((), s.topics)]),
        Family("eventstore_store_size_bytes", "gauge", "Bytes of every partition's segments.",
               samples=[((), s.size_bytes)]),
        Family("eventstore_appended_batches", "counter", "Batches appended since the store opened.",
               samples=[((), s.appended_batches)]),
        Family("eventstore_appended_records", "counter", "Records appended since the store opened.",
               samples=[((), s.appended_records)]),
        Family("eventstore_fsyncs", "counter", "Fsyncs of segment files since the store opened.",
               samples=[((), s.fsyncs)]),
        Family("eventstore_append_duration_seconds", "histogram",
               "Append calls, from the call to the records durable per the mode.",
               histogram=m.append_seconds),
        Family("eventstore_fsync_duration_seconds", "histogram", "Fsyncs of a partition's segment files.",
               histogram=m.fsync_seconds),
        Family("eventstore_fsync_batches", "histogram", "Batches one fsync made durable.",
               histogram=m.batches_per_fsync),
        Family("eventstore_fsync_records", "histogram", "Records one fsync made durable.",
               histogram=m.records_per_fsync),
    ]


def render_text(families: list[Family]) -> str:
    """Prometheus' text format (0.0.4) of ``families``, written directly: prometheus-client's
    own writer costs about 25 µs a sample, too much for a thousand partitions per scrape."""
    out: list[str] = []
    for f in families:  # bounded by the families and their samples
        name = f"{f.name}_total" if f.kind == "counter" else f.name
        out.append(f"# HELP {name} {_escape_help(f.documentation)}\n# TYPE {name} {f.kind}\n")
        if f.histogram is not None:
            h = f.histogram
            for bound, count in zip(h.bounds, h.cumulative, strict=True):
                out.append(f'{name}_bucket{{le="{_bound(bound)}"}} {count}\n')
            out.append(f"{name}_sum {h.sum!r}\n{name}_count {h.count}\n")
            continue
        for values, value in f.samples:
            if values:
                pairs = ",".join(f'{label}="{_escape(v)}"' for label, v in zip(f.labels, values, strict=True))
                out.append(f"{name}{{{pairs}}} {value}\n")
            else:
                out.append(f"{name} {value}\n")
    return "".join(out)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def store_text(log: Log, groups: GroupCoordinator) -> str:
    """The store's figures in Prometheus' text format, now (empty once the store is closed)."""
    try:
        return render_text(store_families(store_metrics(log, groups)))
    except StoreClosedError:
        return ""


class StoreCollector:
    """A Prometheus collector of :func:`store_metrics`, read at each scrape (for a registry
    of the caller's; ``es serve`` writes the same families with :func:`store_text`)."""

    def __init__(self, log: Log, groups: GroupCoordinator) -> None:
        import prometheus_client.core  # noqa: F401 (fails now, not at the first scrape)

        self.log = log
        self.groups = groups

    def collect(self) -> Iterator[Any]:
        try:
            m = store_metrics(self.log, self.groups)
        except StoreClosedError:
            return  # a store closing under a scrape: nothing to show
        for family in store_families(m):  # bounded by the families
            yield _client_family(family)


def _client_family(f: Family) -> Any:
    """``f`` as prometheus-client's metric family."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    if f.histogram is not None:
        h = f.histogram
        buckets = [(_bound(bound), count) for bound, count in zip(h.bounds, h.cumulative, strict=True)]
        return HistogramMetricFamily(f.name, f.documentation, buckets=buckets, sum_value=h.sum)
    cls = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
    family = cls(f.name, f.documentation, labels=list(f.labels))
    for values, value in f.samples:  # bounded by the family's samples
        family.add_metric(list(values), value)
    return family


def register_store_metrics(log: Log, groups: GroupCoordinator, registry: CollectorRegistry) -> StoreCollector:
    """Register a :class:`StoreCollector` of this store with ``registry``; returns it (to
    ``registry.unregister`` it when the store closes)."""
    collector = StoreCollector(log, groups)
    registry.register(collector)
    return collector
