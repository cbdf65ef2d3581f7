"""The eventstore side of every workload, and the open/scan measurements of W8.

``eventstore`` is imported only when a measurement starts, so the benchmark package imports
(and its peers run) even while the store is incomplete.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.base import (
    LOAD_BATCH,
    SCAN_CHUNK,
    Measured,
    System,
    Timer,
    batches_of,
    check_count,
    run_in_threads,
)

if TYPE_CHECKING:
    from types import ModuleType

TOPIC = "bench"
PROBE = Path(__file__).with_name("probe.py")


def _eventstore() -> ModuleType:
    import eventstore

    return eventstore


def scan_store(store: Any, topic: str = TOPIC, partition: int = 0) -> int:
    """Read a partition from start to end through ``store.read``; return the record count."""
    offset, end = store.offsets(topic, partition)
    count = nbytes = 0
    while offset < end:
        records = store.read(topic, partition, offset, max_records=SCAN_CHUNK)
        if not records:
            break
        for record in records:
            nbytes += len(record.value or b"")
        count += len(records)
        offset = records[-1].offset + 1
    return count


def _statistics(store: Any) -> dict[str, float | int | str]:
    """The fsyncs the store made (how appends shared durability barriers) and its bytes on
    disk per record (to compare with the physical limit's assumed record size)."""
    stats = store.statistics() if hasattr(store, "statistics") else None
    if stats is None:
        return {}
    figures: dict[str, float | int | str] = {"fsyncs": stats.fsyncs}
    if stats.records:
        figures["bytes_per_record"] = stats.size_bytes / stats.records
    return figures


class EventStore(System):
    """This project's store: one topic with a single partition."""

    name = "eventstore"

    @staticmethod
    def _create(root: Path, durability: str) -> Any:
        store = _eventstore().open(str(root / "store"), durability=durability)
        store.create_topic(TOPIC, partitions=1)
        return store

    def append_batches(self, root: Path, values: list[bytes], records: int, batch: int) -> Measured:
        store = self._create(root, "fsync")
        try:
            with Timer() as timer:
                for part in batches_of(values, records, batch):
                    store.append_batch(TOPIC, part, partition=0)
            extra = _statistics(store)
        finally:
            store.close()
        return Measured(timer.seconds, "durability=fsync, append_batch", extra)

    def append_singles(self, root: Path, values: list[bytes], records: int) -> Measured:
        store = self._create(root, "none")
        pool = len(values)
        try:
            with Timer() as timer:
                for i in range(records):
                    store.append(TOPIC, values[i % pool], partition=0)
        finally:
            with Timer() as closing:
                store.close()
        return Measured(
            timer.seconds, "durability=none, append", {"close_seconds": closing.seconds}
        )

    def append_threads(
        self, root: Path, values: list[bytes], threads: int, per_thread: int
    ) -> Measured:
        store = self._create(root, "fsync")
        pool = len(values)

        def worker(first: int) -> None:
            for i in range(first, first + per_thread):
                store.append(TOPIC, values[i % pool], partition=0)

        try:
            seconds = run_in_threads([partial(worker, n * per_thread) for n in range(threads)])
            extra = _statistics(store)
        finally:
            store.close()
        return Measured(seconds, "durability=fsync, append from every thread", extra)

    def load(self, root: Path, values: list[bytes], records: int) -> None:
        build_store(root / "store", values, records)

    def scan(self, root: Path, records: int) -> Measured:
        store = _eventstore().open(str(root / "store"), durability="none")
        try:
            with Timer() as timer:
                count = scan_store(store)
        finally:
            store.close()
        check_count(self.name, records, count)
        return Measured(timer.seconds, f"read(max_records={SCAN_CHUNK:,}) loop")


def build_store(path: Path, values: list[bytes], records: int) -> float:
    """Create a store of ``records`` records (durability none, batches of LOAD_BATCH), close
    it, and return the seconds taken."""
    with Timer() as timer:
        store = _eventstore().open(str(path), durability="none")
        try:
            store.create_topic(TOPIC, partitions=1)
            for part in batches_of(values, records, LOAD_BATCH):
                store.append_batch(TOPIC, part, partition=0)
        finally:
            store.close()
    return timer.seconds


def _import_root() -> str:
    """The directory ``eventstore`` is imported from (a package's parent, or a module's)."""
    spec = importlib.util.find_spec("eventstore")
    if spec is None:
        raise ModuleNotFoundError("eventstore")
    if spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))).resolve().parent)
    return str(Path(spec.origin or ".").resolve().parent)


def probe(mode: str, path: Path) -> dict[str, Any]:
    """Run ``probe.py`` in a fresh interpreter; return its figures plus ``wall_seconds``.

    The child finds ``eventstore`` where this process found it, installed or not.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_import_root(), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(PROBE), mode, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        details = done.stderr.strip() or done.stdout.strip()
        last = details.splitlines()[-1] if details else ""
        raise RuntimeError(f"probe {mode} exited with {done.returncode}: {last}\n{details}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["wall_seconds"] = wall
    return figures
