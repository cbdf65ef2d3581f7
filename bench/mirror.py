"""R5: ``es mirror`` of a store into a Kafka-protocol broker (Tansu, memory storage), with
N1's produce into the same broker beside it as the reference (docs/mirror.md).

The store is filled untimed (3 partitions, 100-byte values, durability none); the timed
part is the whole mirror run, from opening both ends to the last delivery report and the
final checkpoint, as ``es mirror --data DIR --to kafka://...`` does it (in this process).
N1's figure is librdkafka producing the same number of records from memory into a fresh
Tansu (acks=all, linger.ms=5): what the broker takes from a client that reads nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.base import Measured, System
from bench.network import PARTITIONS, TOPIC, Tansu, kafka, n1_produce

if TYPE_CHECKING:
    from bench.runner import Context, Metrics, WorkloadResult

R5_RECORDS = 1_000_000
LOAD_BATCH = 10_000


class Mirror(System):
    name = "es-mirror"


def fill(path: Path, values: list[bytes], records: int) -> None:
    """A store of ``records`` records over :data:`PARTITIONS` partitions, untimed."""
    import eventstore

    pool = len(values)
    with eventstore.open(path, durability="none") as store:
        store.create_topic(TOPIC, PARTITIONS)
        for first in range(0, records, LOAD_BATCH):  # bounded by records
            items = [values[i % pool] for i in range(first, min(first + LOAD_BATCH, records))]
            store.append_batch(TOPIC, items, partition=(first // LOAD_BATCH) % PARTITIONS)


def mirror_into_tansu(directory: Path, values: list[bytes], records: int) -> Measured:
    from eventstore.mirror import mirror

    kafka()
    broker = Tansu()
    source = directory / "source"
    fill(source, values, records)
    with broker.running(directory) as server:
        started = time.perf_counter()
        copied = mirror(("data", str(source)), ("kafka", server.bootstrap),
                        checkpoint=str(directory / "mirror.json"))
        seconds = time.perf_counter() - started
    if copied != records:
        raise RuntimeError(f"mirrored {copied} of {records} records")
    return Measured(seconds, f"store ({PARTITIONS} partitions) -> {broker.config}; idempotent, acks=all")


def r5(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(R5_RECORDS)
    rows = [ctx.measure("R5", Mirror(), records, lambda d: mirror_into_tansu(d, ctx.values, records)),
            ctx.measure("R5", Tansu(), records, lambda d: n1_produce(Tansu(), d, ctx.values, records), "N1")]
    mirrored, produced = (row.get("records_per_s") for row in rows)
    ratio: Metrics = {"mirror/N1": mirrored / produced if mirrored and produced else None}
    return rows, ratio, {"mirror records/s": mirrored}
