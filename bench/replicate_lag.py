"""R3 part 2: the lag of ``es replicate`` beside an embedded application at 1,000 msgs/s
(docs/replication.md, 4.1).

An application process (this module run as ``python -m bench.replicate_lag STORE RATE
COUNT ACKS``) appends with fsync at RATE, noting each record's acknowledgement time; ``es
replicate`` serves its store; an ``es serve --replica-of`` follower copies it. This
process reads the follower's store beside it (``open_reader``, every millisecond) and
notes when each record lands there. The lag of a record is its landing time on the
follower minus the moment the application's append returned: what a crash of the
application's machine at that moment would have lost at most.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bench.base import Measured, System
from bench.network import DEADLINE_SECONDS, free_port, stop, wait_accepting
from bench.replication import es_serve

if TYPE_CHECKING:
    from bench.runner import Context, Metrics, Row, WorkloadResult

TOPIC = "t"
RATE = 1_000
SECONDS = 10
POLL_SECONDS = 0.001


class Replicated(System):
    name = "eventstore"


def app(path: str, rate: float, count: int, acks_path: str) -> None:
    """The application: appends ``count`` records at ``rate``; writes ``<value> <ns>`` for
    each to ``acks_path`` (a file: a pipe nobody reads yet would stall it)."""
    import eventstore

    with eventstore.open(path, durability="fsync") as store, open(acks_path, "w") as acks:
        store.create_topic(TOPIC, partitions=1)
        print("READY", flush=True)
        sys.stdin.readline()  # "GO": the follower is up, so every lag is a steady state's
        next_at = time.monotonic()
        for i in range(count):  # bounded by count
            store.append(TOPIC, b"r%d" % i, partition=0)
            acks.write(f"r{i} {time.time_ns()}\n")
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))


def lag_ms(directory: Path, count: int) -> list[float]:
    """Run the three processes; every record's lag in ms."""
    app_dir = directory / "app"
    acks_path = directory / "acks.txt"
    application = subprocess.Popen(
        [sys.executable, "-m", "bench.replicate_lag", str(app_dir), str(RATE), str(count), str(acks_path)],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    assert application.stdout is not None and application.stdin is not None
    assert application.stdout.readline().strip() == b"READY"
    port = free_port()
    log_path = directory / "replicate.log"
    with log_path.open("wb") as log:
        replicate = subprocess.Popen(
            [sys.executable, "-m", "eventstore.cli", "replicate", "--data", str(app_dir),
             "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_accepting(replicate, port, log_path)
            with es_serve(directory, "follower", "--replica-of", f"127.0.0.1:{port}", "--replica-id", "1"):
                landed = _watch(directory / "follower", count, functools.partial(_go, application.stdin))
        finally:
            stop(replicate)
            application.wait(DEADLINE_SECONDS)
    application.stdin.close()
    application.stdout.close()
    acked = dict(line.split() for line in acks_path.read_text().splitlines())
    return [(landed[value] - int(ns)) / 1e6 for value, ns in acked.items() if value in landed]


def _watch(follower: Path, count: int, start: Callable[[], object]) -> dict[str, int]:
    """``start()`` once the follower has the topic, then when each record is first readable
    in the follower's store (ns since the epoch)."""
    import eventstore

    landed: dict[str, int] = {}
    deadline = time.monotonic() + SECONDS + DEADLINE_SECONDS
    while not (follower / "topics" / TOPIC).exists():  # bounded by the deadline
        if time.monotonic() > deadline:
            raise RuntimeError("the follower never made the topic")
        time.sleep(POLL_SECONDS)
    start()
    offset = 0
    with eventstore.open_reader(follower) as reader:
        while offset < count:  # bounded by the deadline
            if time.monotonic() > deadline:
                raise RuntimeError(f"the follower has {offset} of {count} records")
            try:
                records = reader.read(TOPIC, 0, offset, max_records=1000)
            except eventstore.EventStoreError:  # the topic appears before its first segment
                records = []
            now = time.time_ns()
            for r in records:
                landed[(r.value or b"").decode()] = now
            offset += len(records)
            time.sleep(POLL_SECONDS)
    return landed


def _go(stdin: IO[bytes]) -> None:
    stdin.write(b"GO\n")
    stdin.flush()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def r3_replicate(ctx: Context) -> WorkloadResult:
    count = ctx.scaled(RATE * SECONDS)
    lags: list[float] = []

    def action(directory: Path) -> Measured:
        lags.extend(lag_ms(directory, count))
        return Measured(count / RATE, f"app fsync at {RATE}/s; es replicate --poll-ms 5; 1 follower",
                        {"p50_ms": round(percentile(lags, 0.5), 2),
                         "p99_ms": round(percentile(lags, 0.99), 2)})

    row: Row = ctx.measure("RP3R", Replicated(), count, action, "es replicate beside an app")
    metrics: Metrics = {"es replicate lag p50 ms": percentile(lags, 0.5) if lags else None,
                        "es replicate lag p99 ms": percentile(lags, 0.99) if lags else None}
    return [row], metrics, {}


if __name__ == "__main__":
    app(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
