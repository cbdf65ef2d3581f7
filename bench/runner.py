"""Runs the workloads, prints a table per workload and builds the JSON report.

Every system runs inside the same process, one after another, so that the ratios between
them are not skewed by the CPU speed drifting between runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import tempfile
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench import (
    acls,
    consuming,
    dcb,
    failover,
    mirror,
    network,
    operations,
    remote,
    replicate_lag,
    replication,
    sourcing,
)
from bench.base import Measured, Progress, Skipped, System, make_values
from bench.peers import PEERS
from bench.workloads import EventStore, build_store, probe

Row = dict[str, Any]
Metrics = dict[str, float | None]
Echo = Callable[[str], None]

MAIN = "eventstore"


@dataclass(frozen=True)
class Target:
    """A goal for one metric of a workload, e.g. ``eventstore/lmdb >= 3.0``."""

    metric: str
    op: str  # ">=" or "<="
    threshold: float

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


@dataclass
class Context:
    """What a workload needs: where to put data, how much of it, and whom to tell."""

    root: Path
    scale: float
    progress: Progress
    systems: tuple[System, ...]
    values: list[bytes] = field(default_factory=make_values)
    errors: int = 0

    def scaled(self, count: int) -> int:
        return max(1, round(count * self.scale))

    def measure(
        self,
        workload: str,
        system: System,
        records: int,
        action: Callable[[Path], Measured],
        variant: str | None = None,
    ) -> Row:
        """Run ``action`` in a fresh directory (removed afterwards) and describe the result."""
        label = f"{workload} {system.name}" + (f" ({variant})" if variant else "")
        self.progress(f"{label}: {records:,} records")
        row: Row = {"system": system.name}
        if variant:
            row["variant"] = variant
        directory = Path(tempfile.mkdtemp(prefix=f"{workload}-{system.name}-", dir=self.root))
        try:
            measured = action(directory)
        except Skipped as skip:
            return {**row, **result(0, None), "skipped": skip.reason}
        except Exception as exc:
            self.errors += 1
            self.progress(f"{label}: failed\n{traceback.format_exc()}")
            message = str(exc).splitlines()[0] if str(exc) else ""
            return {**row, **result(0, None), "error": f"{type(exc).__name__}: {message}"}
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        row |= result(records, measured.seconds)
        return {**row, "config": measured.config, **measured.extra}


def result(records: int, seconds: float | None) -> Row:
    """The figures every result row has."""
    per_second = records / seconds if seconds else None
    return {"records": records, "seconds": seconds, "records_per_s": per_second}


def rate(rows: list[Row], system: str, variant: str | None = None) -> float | None:
    for row in rows:
        if row["system"] == system and row.get("variant") == variant:
            per_second: float | None = row["records_per_s"]
            return per_second
    return None


def ratios(rows: list[Row], variant: str | None = None, suffix: str = "") -> Metrics:
    """eventstore's records/s divided by each peer's, for the peers that ran."""
    ours = rate(rows, MAIN, variant)
    out: Metrics = {}
    for row in rows:
        if row["system"] == MAIN or row.get("variant") != variant:
            continue
        theirs = row["records_per_s"]
        if theirs is not None:
            out[f"{MAIN}/{row['system']}{suffix}"] = ours / theirs if ours is not None else None
    return out


# ------------------------------------------------------------------------------ workloads
#
# Each workload returns its rows, its ratios and any further metrics its targets refer to.

WorkloadResult = tuple[list[Row], Metrics, Metrics]


def w1_batched_durable(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(1_000_000)
    batch = min(1_000, records)
    rows = [
        ctx.measure(
            "W1",
            s,
            records,
            partial(s.append_batches, values=ctx.values, records=records, batch=batch),
        )
        for s in ctx.systems
    ]
    return rows, ratios(rows), {}


def w2_single_nondurable(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(100_000)
    rows = [
        ctx.measure("W2", s, records, partial(s.append_singles, values=ctx.values, records=records))
        for s in ctx.systems
    ]
    return rows, ratios(rows), {f"{MAIN} records/s": rate(rows, MAIN)}


W3_APPENDS = {1: 2_000, 8: 20_000, 64: 20_000}


def w3_threads_durable(ctx: Context) -> WorkloadResult:
    rows: list[Row] = []
    all_ratios: Metrics = {}
    metrics: Metrics = {}
    for threads, total in W3_APPENDS.items():
        per_thread = max(1, ctx.scaled(total) // threads)
        variant = f"{threads} thread" + ("s" if threads > 1 else "")
        step = [
            ctx.measure(
                "W3",
                s,
                threads * per_thread,
                partial(
                    s.append_threads, values=ctx.values, threads=threads, per_thread=per_thread
                ),
                variant,
            )
            for s in ctx.systems
        ]
        rows += step
        all_ratios |= ratios(step, variant, suffix=f" @{threads}")
        metrics[f"{MAIN} records/s @{threads}"] = rate(step, MAIN, variant)
    return rows, all_ratios, metrics


def w4_full_scan(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(1_000_000)

    def load_and_scan(system: System, directory: Path) -> Measured:
        ctx.progress(f"W4 {system.name}: loading")
        system.load(directory, ctx.values, records)
        ctx.progress(f"W4 {system.name}: scanning")
        return system.scan(directory, records)

    rows = [ctx.measure("W4", s, records, partial(load_and_scan, s)) for s in ctx.systems]
    return rows, ratios(rows), {}


def w8_large_store(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(10_000_000)
    store = ctx.root / "W8-store"
    eventstore = ctx.systems[0]
    opened: dict[str, Any] = {}

    def build(_: Path) -> Measured:
        return Measured(build_store(store, ctx.values, records), "durability=none")

    def open_store(_: Path) -> Measured:
        opened.update(probe("open", store))
        extra = {"process_wall_seconds": opened["wall_seconds"]}
        return Measured(opened["open_seconds"], "eventstore.open(path) in a fresh process", extra)

    def scan(_: Path) -> Measured:
        figures = probe("scan", store)
        if figures["records"] != records:
            raise RuntimeError(f"scanned {figures['records']} of {records} records")
        memory = ("max_rss_mb", "rss_before_open_mb", "rss_anon_mb", "rss_file_mb", "ru_maxrss_mb")
        extra = {key: figures[key] for key in memory if key in figures}
        return Measured(figures["scan_seconds"], "read loop in a fresh process", extra)

    try:
        rows = [ctx.measure("W8", eventstore, records, build, "build")]
        if "error" not in rows[0]:
            rows.append(ctx.measure("W8", eventstore, records, open_store, "open"))
            rows[-1]["records_per_s"] = None  # a rate means nothing for opening
            rows.append(ctx.measure("W8", eventstore, records, scan, "scan"))
    finally:
        shutil.rmtree(store, ignore_errors=True)
    metrics: Metrics = {
        "open seconds": opened.get("open_seconds"),
        "open process wall seconds": opened.get("wall_seconds"),
        "scan peak RSS MB": rows[2].get("max_rss_mb") if len(rows) > 2 else None,
    }
    return rows, {}, metrics


def w9_poll_throughput(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(1_000_000)
    main = ctx.systems[0]
    rows = [
        ctx.measure("W9", main, records,
                    partial(consuming.poll_throughput, values=ctx.values, records=records,
                            max_poll_records=n), f"max_poll_records={n}")
        for n in (500, 5_000)
    ]
    return rows, {}, {f"{MAIN} records/s @500": rate(rows, MAIN, "max_poll_records=500"),
                      f"{MAIN} records/s @5000": rate(rows, MAIN, "max_poll_records=5000")}


def w10_tail_latency(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(2_000)
    main = ctx.systems[0]
    rows = [
        ctx.measure("W10", main, records,
                    partial(consuming.tail_latency, records=records, durability=mode), mode)
        for mode in ("none", "fsync")
    ]
    metrics: Metrics = {f"p99 ms ({row.get('variant')})": row.get("p99_ms") for row in rows}
    return rows, {}, metrics


def w11_other_process(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(1_000_000)
    main = ctx.systems[0]
    rows = [
        ctx.measure("W11", main, records,
                    partial(consuming.scan, values=ctx.values, records=records, through_reader=r),
                    "open_reader" if r else "owner")
        for r in (False, True)
    ]
    latency = ctx.scaled(200)
    rows.append(ctx.measure("W11", main, latency,
                            partial(consuming.cross_process_latency, records=latency), "latency"))
    owner, reader = rate(rows, MAIN, "owner"), rate(rows, MAIN, "open_reader")
    metrics: Metrics = {
        "reader/owner scan": reader / owner if reader and owner else None,
        "cross-process p50 ms": rows[2].get("p50_ms"),
        "cross-process p99 ms": rows[2].get("p99_ms"),
    }
    return rows, {}, metrics


@dataclass(frozen=True)
class Workload:
    title: str
    run: Callable[[Context], WorkloadResult]
    targets: tuple[Target, ...]
    #: Which systems take part; peers only where the workload compares with them.
    peers: bool = True


WORKLOADS: dict[str, Workload] = {
    "W1": Workload(
        "1,000,000 appends in batches of 1,000, durable per batch",
        w1_batched_durable,
        (Target("eventstore/physical", ">=", 0.80), Target("eventstore/lmdb", ">=", 3.0)),
    ),
    "W2": Workload(
        "100,000 single appends, not durable",
        w2_single_nondurable,
        (Target("eventstore records/s", ">=", 500_000), Target("eventstore/lmdb", ">=", 3.5)),
    ),
    "W3": Workload(
        "durable single appends from 1, 8 and 64 threads",
        w3_threads_durable,
        (
            Target("eventstore records/s @1", ">=", 4_000),
            Target("eventstore records/s @64", ">=", 50_000),
        ),
    ),
    "W4": Workload(
        "full scan of 1,000,000 records",
        w4_full_scan,
        (Target("eventstore/lmdb", ">=", 1.0),),
    ),
    "W5": Workload("read one 10,000-event stream among 50 interleaved streams", sourcing.w5_read_stream,
                   (Target("eventstore ms", "<=", 3.0), Target("eventstore first ms", "<=", 3.0)),
                   peers=False),
    "W6": Workload("rebuild a 10,000-event aggregate by replay", sourcing.w6_rebuild,
                   (Target("eventstore ms", "<=", 10.0),), peers=False),
    "W7": Workload("save one event per aggregate, durable, from 1 and 64 threads", sourcing.w7_save,
                   (Target("eventstore saves/s @1", ">=", 4_000),
                    Target("eventstore saves/s @64", ">=", 40_000)), peers=False),
    "W8": Workload(
        "open and scan a store of 10,000,000 records",
        w8_large_store,
        (Target("open seconds", "<=", 0.3), Target("scan peak RSS MB", "<=", 100)),
        peers=False,
    ),
    "W9": Workload(
        "consume a 1,000,000-record topic through poll (group member)",
        w9_poll_throughput,
        (Target("eventstore records/s @500", ">=", 4_000_000),),
        peers=False,
    ),
    "W10": Workload(
        "append-to-poll latency of a consumer waiting in poll",
        w10_tail_latency,
        (Target("p99 ms (none)", "<=", 1.0),),
        peers=False,
    ),
    "W11": Workload(
        "read a store another process owns (open_reader): scan, and append-to-read latency",
        w11_other_process,
        (),
        peers=False,
    ),
    "W12": Workload(
        "an eventsourcing application on eventstore.eventsourcing vs on SQLite",
        sourcing.w12_library_on_eventstore,
        (Target("eventsourcing-on-eventstore/eventsourcing (repository.get)", ">=", 20.0),
         Target("eventsourcing-on-eventstore/eventsourcing (app.save @1)", ">=", 1.0)),
        peers=False,
    ),
    # Networked mode: es serve beside Tansu, through confluent-kafka (bench/network.py)
    "W13": Workload("DCB: conditional appends (2-tag query; 1 thread and 64, durable) and "
                    "read_events of 10,000 matching among 1,000,000, beside the library's popo recorder",
                    dcb.w13, (Target("eventstore appends/s @1", ">=", 4_000),
                              Target("eventstore read_events ms", "<=", 5.0)), peers=False),
    "N1": Workload("produce 200,000 records over the network, acks=all (es serve in fsync mode; again over "
                   "SASL_SSL with SCRAM-SHA-512)",
                   network.n1, (Target("eventstore/tansu", ">=", 1.0),
                                Target("sasl_ssl/plaintext", ">=", 0.7)), peers=False),
    "N2": Workload("consume 200,000 records over the network from the beginning, in a group",
                   network.n2, (Target("eventstore/tansu", ">=", 1.0),), peers=False),
    "N3": Workload("produce-to-consume latency through the server at 1,000 records/s",
                   network.n3, (Target("eventstore fsync p99 ms", "<=", 5.0),), peers=False),
    "N4": Workload("server RSS when idle and with 1,000 idle connections",
                   network.n4, (Target("eventstore RSS MB with connections", "<=", 200.0),),
                   peers=False),
    # The remote store (eventstore.connect) against the embedded one (bench/remote.py)
    "R1": Workload("append_to_stream (1 thread) and read_stream (10,000 events): remote vs embedded",
                   remote.r1, (), peers=False),
    # Replication (bench/replication.py; docs/replication.md)
    "RP1": Workload("a fresh follower's catch-up of 200,000 records vs the leader's W1 append rate",
                    replication.rp1, (Target("catch-up/append", ">=", 0.8),), peers=False),
    "RP2": Workload("produce 200,000 records with acks=all and 1 follower vs acks=1, same server",
                    replication.rp2, (Target("acks=all/acks=1", ">=", 0.6),), peers=False),
    "RP3": Workload("replication lag: produce at 1,000 records/s until a follower's readers see it",
                    replication.rp3, (Target("follower lag p99 ms", "<=", 20.0),), peers=False),
    "RP3R": Workload("replication lag of es replicate beside an embedded app appending at 1,000 records/s",
                     replicate_lag.r3_replicate, (), peers=False),
    "RP4": Workload("automatic failover, 10 kills: leader SIGKILL to the first acks=all write on the next",
                    failover.rp4, (Target("failover max s", "<=", 5.0),), peers=False),
    # Authorization (bench/acls.py; docs/operations.md, 2)
    "N1A": Workload("N1 with 1,000 ACLs defined vs none (every request decided by the authorizer)",
                    acls.n1_acls, (Target("ACLs/none", ">=", 0.95),), peers=False),
    # Operations (bench/operations.py; docs/operations.md, 4)
    "OPS1": Workload("a /metrics scrape of es serve with 1,000 partitions (HTTP GET, median of 20)",
                     operations.ops1, (Target("scrape p50 ms", "<=", 100.0),), peers=False),
    # es mirror into a Kafka-protocol broker, beside N1 into the same one (bench/mirror.py)
    "R5": Workload("mirror a 1,000,000-record store into Tansu (es mirror), beside N1's produce",
                   mirror.r5, (), peers=False),
}


# ---------------------------------------------------------------------------------- output


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"


def _extra(key: str, value: object) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.4f}" if key.endswith("seconds") else f"{value:,.1f}"


def _notes(row: Row) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return f"ERROR: {row['error']}"
    known = {"system", "variant", "records", "seconds", "records_per_s", "config"}
    extras = [f"{key}={_extra(key, value)}" for key, value in row.items() if key not in known]
    return "; ".join([row.get("config", ""), *extras]).strip("; ")


def format_table(name: str, report: dict[str, Any]) -> str:
    """A plain-text table of one workload's report: a row per system, then ratios, targets."""
    header = ("system", "variant", "records", "seconds", "records/s", "notes")
    lines = [
        (
            row["system"],
            row.get("variant", ""),
            _number(row["records"]) if row["seconds"] is not None else "-",
            _number(row["seconds"], 3),
            _number(row["records_per_s"]),
            _notes(row),
        )
        for row in report["results"]
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header) - 1)]
    right = {2, 3, 4}

    def render(cells: tuple[str, ...]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells[:-1], widths, strict=True))
        ]
        return "  " + "  ".join([*parts, cells[-1]]).rstrip()

    out = [f"{name}: {report['title']}", render(header), *map(render, lines)]
    if report["ratios"]:
        shown = ", ".join(f"{k} {_number(v, 2)}" for k, v in report["ratios"].items())
        out += textwrap.wrap(shown, 100, initial_indent="  ratios: ", subsequent_indent=" " * 10)
    for metric, target in report["targets"].items():
        verdict = "met" if report["met"][metric] else "NOT met"
        out.append(
            f"  target {metric} {target['op']} {target['threshold']:g}: "
            f"{_figure(target['value'])} ({verdict})"
        )
    return "\n".join(out)


def _environment() -> dict[str, Any]:
    import lmdb

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "lmdb": ".".join(map(str, lmdb.version())),
    }
    for package in ("eventsourcing", "eventstore"):
        try:
            module = __import__(package)
            versions[package] = getattr(module, "__version__", "unknown")
        except Exception:  # not installed, or not importable at the moment
            versions[package] = None
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "versions": versions}


# ------------------------------------------------------------------------------------ run


def _silent(_message: str) -> None:
    pass


def run(
    workloads: list[str] | None = None,
    scale: float = 1.0,
    out_json: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    echo: Echo | None = print,
) -> dict[str, Any]:
    """Run the named workloads (default: all) and return the report.

    ``scale`` multiplies every record count. Data goes to a temporary directory created
    under ``base_dir`` (default: the current directory, so the disk measured is the one the
    project lives on) and removed at the end. Each finished workload's table is passed to
    ``echo``; progress messages go to ``progress``. The report is written to ``out_json``
    when given.
    """
    names = list(dict.fromkeys(name.upper() for name in workloads or WORKLOADS))
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    if not scale > 0:
        raise ValueError("scale must be positive")

    parent = Path(base_dir) if base_dir is not None else Path.cwd()
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-", dir=parent))
    ctx_progress: Progress = progress or _silent
    everyone: tuple[System, ...] = (EventStore(), *PEERS)
    document: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scale": scale,
        "environment": _environment(),
        "workloads": [],
    }
    errors = 0
    try:
        for name in names:
            workload = WORKLOADS[name]
            systems = everyone if workload.peers else everyone[:1]
            ctx = Context(root, scale, ctx_progress, systems)
            ctx_progress(f"{name}: {workload.title} (scale {scale:g})")
            rows, found_ratios, metrics = workload.run(ctx)
            errors += ctx.errors
            report = _report(name, workload, rows, found_ratios, metrics)
            document["workloads"].append(report)
            if echo is not None:
                echo(format_table(name, report) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    document["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    document["errors"] = errors
    document["all_targets_met"] = all(
        all(report["met"].values()) for report in document["workloads"]
    )
    if out_json is not None:
        path = Path(out_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def _report(
    name: str, workload: Workload, rows: list[Row], found_ratios: Metrics, metrics: Metrics
) -> dict[str, Any]:
    values = found_ratios | metrics
    targets = {
        t.metric: {"op": t.op, "threshold": t.threshold, "value": values.get(t.metric)}
        for t in workload.targets
    }
    return {
        "workload": name,
        "title": workload.title,
        "results": rows,
        "ratios": found_ratios,
        "metrics": metrics,
        "targets": targets,
        "met": {t.metric: t.met(values.get(t.metric)) for t in workload.targets},
    }
