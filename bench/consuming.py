"""Consumer workloads (eventstore only): poll throughput (W9) and append-to-poll latency (W10)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal

from bench.base import LOAD_BATCH, Measured, Timer

TOPIC = "bench"
W9_PARTITIONS = 3
W10_PAUSE_S = 0.0005


def load(store: Any, values: list[bytes], records: int, partitions: int) -> None:
    store.create_topic(TOPIC, partitions=partitions)
    done = 0
    p = 0
    while done < records:  # bounded by records
        n = min(LOAD_BATCH, records - done)
        store.append_batch(TOPIC, [values[(done + i) % len(values)] for i in range(n)],
                           partition=p % partitions)
        done += n
        p += 1


def poll_throughput(directory: Path, values: list[bytes], records: int,
                    max_poll_records: int) -> Measured:
    """Consume a whole topic through ``poll`` as a group member; commit at the end."""
    import eventstore

    with eventstore.open(directory / "store", durability="none") as store:
        load(store, values, records, W9_PARTITIONS)
        consumer = store.consumer(TOPIC, group_id="w9", auto_offset_reset="earliest",
                                  enable_auto_commit=False, max_poll_records=max_poll_records)
        seen = 0
        polls = 0
        with Timer() as timer:
            while seen < records:  # bounded: every poll returns records until the end
                batch = consumer.poll(timeout_ms=1000)
                if not batch:
                    break
                polls += 1
                for recs in batch.values():
                    seen += len(recs)
            consumer.commit()
        consumer.close()
    if seen != records:
        raise RuntimeError(f"consumed {seen} of {records} records")
    return Measured(timer.seconds, f"group member, max_poll_records={max_poll_records}",
                    {"polls": polls})


def tail_latency(directory: Path, records: int, durability: Literal["fsync", "none"]) -> Measured:
    """A consumer waits in ``poll``; the main thread appends one record at a time."""
    import eventstore

    latencies: list[float] = []
    with eventstore.open(directory / "store", durability=durability) as store:
        store.create_topic(TOPIC)
        consumer = store.consumer(group_id=None)
        consumer.assign([eventstore.TopicPartition(TOPIC, 0)])
        consumer.seek_to_end()
        ready = threading.Event()

        def follow() -> None:
            ready.set()
            deadline = time.monotonic() + 60
            while len(latencies) < records and time.monotonic() < deadline:
                for recs in consumer.poll(timeout_ms=1000).values():
                    now = time.perf_counter_ns()
                    latencies.extend((now - int(r.value or b"0")) / 1e6 for r in recs)

        thread = threading.Thread(target=follow)
        thread.start()
        ready.wait()
        with Timer() as timer:
            for _ in range(records):  # bounded by records
                store.append(TOPIC, str(time.perf_counter_ns()).encode(), partition=0)
                time.sleep(W10_PAUSE_S)
            thread.join()
        consumer.close()
    if len(latencies) != records:
        raise RuntimeError(f"received {len(latencies)} of {records} records")
    latencies.sort()
    pct = {f"p{q}_ms": latencies[min(len(latencies) - 1, int(len(latencies) * q / 100))]
           for q in (50, 99)}
    return Measured(timer.seconds, f"durability={durability}, one append per {W10_PAUSE_S * 1e3} ms",
                    {**pct, "max_ms": latencies[-1]})
