"""``es demo``: a real run of the embedded store — append, reopen, replay — with figures."""

from __future__ import annotations

import json
import time
import zlib
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .. import store as store_module
from ..records import Message, Record
from .app import DataOption, app

TOPIC = "demo.orders"
PARTITIONS = 3
BATCH_RECORDS = 1000


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=console, transient=True,
    )


def _order(i: int) -> Message:
    customer = f"customer-{i % 997}"
    value = json.dumps({"order": i, "customer": customer, "total_cents": (i * 7919) % 100_000})
    return Message(key=customer.encode(), value=value.encode(), headers=[("source", b"es-demo")])


@app.command()
def demo(
    data: DataOption = store_module.DEFAULT_PATH,
    records: Annotated[int, typer.Option(min=1, help="Records for the log part.")] = 100_000,
    orders: Annotated[int, typer.Option(min=1, help="Orders for the shop part.")] = 2_000,
) -> None:
    """The log (append, reopen, replay) and an event-sourced shop (services, projection, DLQ)."""
    console = Console()
    ok = _log_demo(console, data, records)
    _shop_demo(console, data, orders)
    if not ok:
        raise typer.Exit(1)


def _shop_demo(console: Console, data: str, orders: int) -> None:
    """Run the e-commerce example (``eventstore.examples.ecommerce``) and print its summary."""
    from ..examples import ecommerce

    with _progress(console) as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        summary = ecommerce.run(data, orders, progress=report)
    table = Table(title=f"event-sourced shop: {orders:,} orders through 4 services", show_header=False)
    rate = summary["orders"] / max(summary["seconds"], 1e-9)
    table.add_row("time", f"{summary['seconds']:.2f} s for the whole flow ({rate:,.0f} orders/s)")
    for name, count in summary["events_per_type"].items():
        table.add_row(name, f"{count:,}")
    table.add_row("revenue", f"{summary['revenue_cents'] / 100:,.2f}")
    table.add_row("lag", ", ".join(f"{g} {n}" for g, n in summary["lag"].items()))
    table.add_row("dead letters", f"{summary['dead_lettered']} (the poison order, in order.dlq)")
    table.add_row("fraud alerts", str(summary["fraud_alerts"]))
    sample = summary["sample_order"]
    table.add_row("rebuilt order", f"{sample['id']} v{sample['version']}: {sample['status']}, "
                                   f"{sample['total_cents'] / 100:.2f}")
    console.print(table)


def _log_demo(console: Console, data: str, records: int) -> bool:
    """Append orders to a 3-partition topic, reopen the store, replay it, print figures."""
    figures: list[tuple[str, str]] = []
    with store_module.open(data) as store:
        store.create_topic(TOPIC, partitions=PARTITIONS, exist_ok=True)
        run_starts = [store.offsets(TOPIC, p)[1] for p in range(PARTITIONS)]
        crc = 0
        started = time.perf_counter()
        with _progress(console) as progress:
            task = progress.add_task("append", total=records)
            for first in range(0, records, BATCH_RECORDS):  # bounded by records
                batch = [_order(i) for i in range(first, min(first + BATCH_RECORDS, records))]
                store.append_batch(TOPIC, batch)
                for m in batch:
                    crc = zlib.crc32(m.value or b"", crc)
                progress.advance(task, len(batch))
        append_s = time.perf_counter() - started
        figures.append(("appended", f"{records:,} records in {append_s:.2f} s "
                                    f"({records / append_s:,.0f}/s, fsync per batch)"))

    started = time.perf_counter()
    store = store_module.open(data)
    open_s = time.perf_counter() - started
    with store:
        figures.append(("reopened", f"in {open_s * 1000:.1f} ms, "
                                    f"{len(store.recovery_events)} recovery events"))
        total, replay_crc, replay_s = _replay(store, console, run_starts)
        figures.append(("replayed", f"{total:,} records in {replay_s:.3f} s "
                                    f"({total / max(replay_s, 1e-9):,.0f}/s)"))
        figures.append(("verified", "values match what was appended" if replay_crc == crc
                        else "MISMATCH between appended and replayed values"))
        stats = store.statistics()
        for p in stats.partition_stats:
            if p.topic == TOPIC:
                figures.append((f"partition {p.partition}",
                                f"{_offset_range(p.log_start_offset, p.end_offset)}, "
                                f"{p.size_bytes / 1e6:.1f} MB in {p.segments} segment(s)"))
        figures.append(("store", f"{stats.size_bytes / 1e6:.1f} MB, {stats.records:,} records "
                                 f"in {stats.topics} topic(s), durability={stats.durability}"))
    table = Table(title=f"eventstore demo on {data}", show_header=False)
    for name, text in figures:
        table.add_row(name, text)
    console.print(table)
    return replay_crc == crc


def _offset_range(start: int, end: int) -> str:
    """Offsets as ``es produce`` prints them: ``first..last``, both inclusive (last = end - 1)."""
    if end <= start:
        return f"no records (next offset {end})"
    return f"offsets {start}..{end - 1} ({end - start:,} records)"


def _replay(
    store: store_module.Store, console: Console, run_starts: list[int]
) -> tuple[int, int, float]:
    """Read every partition from its start (timed), then checksum this run's values in order."""
    ends = [store.offsets(TOPIC, p) for p in range(PARTITIONS)]
    total = sum(end - start for start, end in ends)
    batches: list[tuple[int, list[Record]]] = []
    started = time.perf_counter()
    with _progress(console) as progress:
        task = progress.add_task("replay", total=total)
        for p, (start, end) in enumerate(ends):
            offset = start
            while offset < end:  # bounded: each read advances
                batch = store.read(TOPIC, p, offset, max_records=10_000)
                offset = batch[-1].offset + 1
                batches.append((p, batch))
                progress.advance(task, len(batch))
    replay_s = time.perf_counter() - started
    ours = [r for p, batch in batches for r in batch if r.offset >= run_starts[p]]
    crc = 0
    for _, value in sorted((json.loads(r.value or b"{}")["order"], r.value or b"") for r in ours):
        crc = zlib.crc32(value, crc)
    return total, crc, replay_s
