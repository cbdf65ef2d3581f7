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


def scan(directory: Path, values: list[bytes], records: int, through_reader: bool) -> Measured:
    """W11: read a whole partition, through the owner's ``Store.read`` or another ``open_reader``.

    The reader is opened in this process while the store is closed, which reads
    exactly as another process would (no lock, the files as they are).
    """
    import eventstore

    path = directory / "store"
    with eventstore.open(path, durability="none") as store:
        load(store, values, records, 1)
        if not through_reader:
            seconds = _scan(store, records)
    if through_reader:
        with eventstore.open_reader(path) as reader:
            seconds = _scan(reader, records)
    how = "StoreReader.read (open_reader)" if through_reader else "Store.read (the owner)"
    return Measured(seconds, f"{how}, max_records=5000")


def _scan(source: Any, records: int) -> float:
    offset = 0
    with Timer() as timer:
        while offset < records:  # bounded: every read returns records until the end
            got = source.read(TOPIC, 0, offset, max_records=5000)
            if not got:
                break
            offset = got[-1].offset + 1
    if offset != records:
        raise RuntimeError(f"read {offset} of {records} records")
    return timer.seconds


_W11_WRITER = """
import sys, time, eventstore
store = eventstore.open(sys.argv[1], durability="fsync")
store.create_topic(sys.argv[2], exist_ok=True)
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(sys.argv[3])):
    time.sleep(float(sys.argv[4]))
    store.append(sys.argv[2], str(time.time_ns()).encode(), partition=0)
store.close()
"""
W11_PAUSE_S = 0.01


def cross_process_latency(directory: Path, records: int) -> Measured:
    """W11: another process appends (fsync); this one waits with ``StoreReader.wait_for``."""
    import subprocess
    import sys

    import eventstore

    path = directory / "store"
    child = subprocess.Popen([sys.executable, "-c", _W11_WRITER, str(path), TOPIC, str(records),
                              str(W11_PAUSE_S)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    latencies: list[float] = []
    try:
        assert child.stdin is not None and child.stdout is not None
        if child.stdout.readline() != b"ready\n":
            raise RuntimeError("the writer process did not start")
        with eventstore.open_reader(path) as reader, Timer() as timer:
            child.stdin.write(b"go\n")
            child.stdin.flush()
            position = 0
            deadline = time.monotonic() + 60 + records * W11_PAUSE_S
            while len(latencies) < records and time.monotonic() < deadline:  # bounded
                if reader.wait_for(TOPIC, 0, position, 1.0):
                    for r in reader.read(TOPIC, 0, position):
                        latencies.append((time.time_ns() - int(r.value or b"0")) / 1e6)
                        position = r.offset + 1
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if len(latencies) != records:
        raise RuntimeError(f"received {len(latencies)} of {records} records")
    latencies.sort()
    last = len(latencies) - 1
    pct: dict[str, float | int | str] = {
        f"p{q}_ms": latencies[min(last, int(len(latencies) * q / 100))] for q in (50, 99)}
    poll = eventstore.reader.DEFAULT_POLL_INTERVAL_MS
    return Measured(timer.seconds, f"writer process in fsync mode, poll every {poll} ms", pct)
