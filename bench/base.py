"""Shared pieces of the benchmark: test data, the system interface and timing helpers.

Every system under test (eventstore and each peer) implements :class:`System`. Each method
runs one kind of workload in a fresh, empty directory and returns a :class:`Measured` with
the seconds spent in the measured part only (opening, schema creation and data loading are
left out). A method that
has no sensible equivalent on a system raises :class:`Skipped` with the reason.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Size of each event value, in bytes.
VALUE_SIZE = 100
#: Bytes of per-record framing assumed for the physical limit (offset, length, crc, ...).
FRAMING_SIZE = 30
#: Distinct values cycled through by the workloads; random bytes so nothing compresses.
VALUE_POOL = 1_000
#: Records per batch when loading data that is only read back (W4, W8).
LOAD_BATCH = 10_000
#: Records asked for per read call when scanning.
SCAN_CHUNK = 10_000

Progress = Callable[[str], None]


class Skipped(Exception):
    """Raised by a system that has no sensible equivalent of a workload."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def make_values(count: int = VALUE_POOL, size: int = VALUE_SIZE, seed: int = 42) -> list[bytes]:
    """Deterministic pseudo-random values, the same for every system."""
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


def batches_of(values: list[bytes], total: int, batch_size: int) -> Iterator[list[bytes]]:
    """Yield batches adding up to ``total`` records, cycling through ``values``."""
    done = 0
    while done < total:
        size = min(batch_size, total - done)
        start = done % len(values)
        batch = values[start : start + size]
        while len(batch) < size:
            batch += values[: size - len(batch)]
        yield batch
        done += size


@dataclass
class Measured:
    """Seconds spent in the measured part of a workload, plus optional extra figures."""

    seconds: float
    #: The system's settings for this workload, shown in the table.
    config: str = ""
    extra: dict[str, float | int | str] = field(default_factory=dict)


class Timer:
    """Times the body of a ``with`` block; ``seconds`` is set on exit.

    Garbage is collected first so that one system does not pay for another's leftovers.
    """

    seconds: float = 0.0

    def __enter__(self) -> Timer:
        gc.collect()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self._started


class System:
    """One system under test. Subclasses override the workloads they support."""

    #: Name used in tables, JSON and ratio keys.
    name: str = "system"

    def append_batches(self, root: Path, values: list[bytes], records: int, batch: int) -> Measured:
        """W1: durable batched appends, one durability barrier per batch."""
        raise Skipped("no equivalent")

    def append_singles(self, root: Path, values: list[bytes], records: int) -> Measured:
        """W2: non-durable single appends, one write call (transaction) per record."""
        raise Skipped("no equivalent")

    def append_threads(
        self, root: Path, values: list[bytes], threads: int, per_thread: int
    ) -> Measured:
        """W3: durable single appends issued concurrently by ``threads`` threads."""
        raise Skipped("no equivalent")

    def load(self, root: Path, values: list[bytes], records: int) -> None:
        """W4 preparation (untimed): bulk load ``records`` records without durability."""
        raise Skipped("no equivalent")

    def scan(self, root: Path, records: int) -> Measured:
        """W4: read every record loaded by :meth:`load`, in order, touching each value."""
        raise Skipped("no equivalent")


def run_in_threads(workers: list[Callable[[], None]]) -> float:
    """Run each worker on its own thread, all released at once; return the wall seconds.

    The clock starts when every thread is ready and stops when the last one finishes. The
    first exception raised by a worker is re-raised here.
    """
    ready = threading.Barrier(len(workers) + 1)
    errors: list[BaseException] = []

    def body(work: Callable[[], None]) -> None:
        ready.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(work,), daemon=True) for work in workers]
    for thread in threads:
        thread.start()
    gc.collect()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return seconds


def check_count(system: str, expected: int, got: int) -> None:
    """Fail loudly when a scan did not see every record: its timing would be meaningless."""
    if got != expected:
        raise RuntimeError(f"{system}: scanned {got} records, expected {expected}")
