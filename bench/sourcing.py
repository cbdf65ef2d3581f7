"""Event-sourcing workloads: W5 (read one stream), W6 (rebuild an aggregate), W7 (save aggregates).

The same aggregate workload runs on three systems, one after another in one process:
eventstore (streams, ``Repository``), the ``eventsourcing`` library on SQLite (a file, WAL,
synchronous=FULL: its only setting) and the ``eventsourcing`` library in memory (POPO, not
durable: a lower bound of the library's own cost). The aggregate is a bank account: one
``Opened`` event, then ``Deposited(amount, reference)`` events.

Each ``w*`` function takes the runner's ``Context`` and returns ``(rows, ratios, metrics)``.
Timed figures of W5 and W6 are the median of several runs (each preceded by a garbage
collection); ``best_ms`` is the fastest and ``first_ms`` the first, cold one (repeated runs
of eventstore's W5 are served by the decoded-chunk cache; the first is not).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.base import Measured, Skipped, System, run_in_threads

if TYPE_CHECKING:
    from bench.runner import Context, WorkloadResult

MAIN = "eventstore"
ON_EVENTSTORE_MODULE = "eventstore.eventsourcing"
#: W5: the log holds this many streams, appended to in turns of ``SAVE_BATCH`` events.
W5_STREAMS = 50
W5_EVENTS = 10_000
W6_EVENTS = 10_000
W6_SNAPSHOT_EVERY = 500
#: W7: total saves per thread count (as in W3).
W7_SAVES = {1: 2_000, 64: 20_000}
#: Events per save while loading data that is only read back.
SAVE_BATCH = 500
#: Timed runs per figure: at least ``RUNS_MIN``, at most ``RUNS_MAX``, fewer once ``RUNS_BUDGET_S``
#: seconds have gone by.
RUNS_MIN = 3
RUNS_MAX = 25
RUNS_BUDGET_S = 3.0


def _runs(action: Callable[[], object]) -> list[float]:
    """Seconds of each timed run of ``action``, in the order run (the first is the cold one)."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < RUNS_MAX:  # bounded by RUNS_MAX
        gc.collect()
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
        if len(times) >= RUNS_MIN and time.perf_counter() - started > RUNS_BUDGET_S:
            break
    return times


def _timed(action: Callable[[], object], config: str, **extra: float | int | str) -> Measured:
    runs = _runs(action)
    times = sorted(runs)
    median = statistics.median(times)
    figures: dict[str, float | int | str] = {"ms": median * 1e3, "best_ms": times[0] * 1e3,
                                             "first_ms": runs[0] * 1e3, "runs": len(times), **extra}
    return Measured(median, config, figures)


def _deposits(count: int, start: int = 0) -> Iterator[tuple[int, str]]:
    """The (amount, reference) of deposits ``start .. start+count-1``: the same for every system."""
    for i in range(start, start + count):
        yield i % 1000 + 1, f"ref-{i:08d}"


def _balance(events: int) -> int:
    """The balance of an account after ``events`` events (one Opened, then deposits)."""
    return sum(amount for amount, _ in _deposits(events - 1))


class SourcingSystem(System):
    """A system that runs the event-sourcing workloads."""

    def read_stream(self, root: Path, streams: int, events: int) -> Measured:
        """W5: load ``streams`` accounts of ``events`` events, in turns; read one of them."""
        raise Skipped("no equivalent")

    def rebuild(self, root: Path, events: int, snapshot_every: int | None) -> Measured:
        """W6: load one account of ``events`` events; load it again and again."""
        raise Skipped("no equivalent")

    def save_threads(self, root: Path, threads: int, per_thread: int) -> Measured:
        """W7: each thread saves ``per_thread`` new accounts (one event each), durably."""
        raise Skipped("no equivalent")


# ---------------------------------------------------------------------------------- eventstore


@cache
def _eventstore_types() -> tuple[Any, type[Any], type[Any]]:
    """The account aggregate on eventstore, its events in a registry of their own."""
    from eventstore.sourcing.aggregate import Aggregate
    from eventstore.sourcing.types import Event, EventRegistry, event_type

    registry = EventRegistry()

    @event_type("Opened", registry=registry)
    class Opened(Event):
        owner: str

    @event_type("Deposited", registry=registry)
    class Deposited(Event):
        amount: int
        reference: str

    class Account(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.owner = ""
            self.balance = 0

        @classmethod
        def open(cls, id: str, owner: str) -> Account:
            account = cls(id)
            account.trigger_event(Opened, owner=owner)
            return account

        def deposit(self, amount: int, reference: str) -> None:
            self.trigger_event(Deposited, amount=amount, reference=reference)

        def apply_Opened(self, event: Opened) -> None:
            self.owner = event.owner

        def apply_Deposited(self, event: Deposited) -> None:
            self.balance += event.amount

    return registry, Account, Deposited


class EventStoreSourcing(SourcingSystem):
    """eventstore: ``Repository`` saves, ``read_stream`` and ``Repository.get``."""

    name = MAIN

    @staticmethod
    def _open(root: Path, durability: str, snapshot_every: int | None = None) -> tuple[Any, Any]:
        import eventstore
        from eventstore.sourcing.repository import Repository

        registry, account_class, _ = _eventstore_types()
        store = eventstore.open(str(root / "store"), durability=durability)  # type: ignore[arg-type]
        return store, Repository(store, account_class, snapshot_every=snapshot_every, registry=registry)

    @staticmethod
    def _load(repo: Any, ids: list[str], events: int) -> list[Any]:
        """Accounts of ``events`` events each, saved ``SAVE_BATCH`` at a time, in turns."""
        _, account_class, _ = _eventstore_types()
        accounts = [account_class.open(i, "owner") for i in ids]
        for start in range(0, events - 1, SAVE_BATCH):  # bounded by events
            for account in accounts:
                for amount, reference in _deposits(min(SAVE_BATCH, events - 1 - start), start):
                    account.deposit(amount, reference)
                repo.save(account)
        return accounts

    def read_stream(self, root: Path, streams: int, events: int) -> Measured:
        store, repo = self._open(root, "none")
        try:
            ids = [f"account-{n}" for n in range(streams)]
            self._load(repo, ids, events)
            target = ids[streams // 2]

            def read() -> None:
                if len(store.read_stream(target)) != events:
                    raise RuntimeError("short read")

            return _timed(read, f"read_stream, {streams} streams in turns of {SAVE_BATCH}")
        finally:
            store.close()

    def rebuild(self, root: Path, events: int, snapshot_every: int | None) -> Measured:
        from eventstore.sourcing.repository import Repository

        store, repo = self._open(root, "none", snapshot_every)
        try:
            if snapshot_every is None:
                self._load(repo, ["account-1"], events)
            else:  # the last snapshot some way before the end, as in use
                tail = min(snapshot_every // 2, events // 4)
                self._load(repo, ["account-1"], events - tail)
                plain = Repository(store, repo.aggregate_class, registry=repo.registry)
                account = plain.get("account-1")
                for amount, reference in _deposits(tail, events - 1 - tail):
                    account.deposit(amount, reference)
                    plain.save(account)
            snapshot = repo.snapshots.get("account-1")
            expected = _balance(events)

            def rebuild() -> None:
                if repo.get("account-1").balance != expected:
                    raise RuntimeError("wrong balance")

            config = "Repository.get, replay" if snapshot_every is None else "Repository.get, snapshot + tail"
            replayed = events - 1 - snapshot.version if snapshot is not None else events
            return _timed(rebuild, config, replayed=replayed)
        finally:
            store.close()

    def save_threads(self, root: Path, threads: int, per_thread: int) -> Measured:
        return self._threads(root, threads, per_thread, through_repository=True)

    def stream_append_threads(self, root: Path, threads: int, per_thread: int) -> Measured:
        """W7 without the repository: the same events through ``append_to_stream`` (its cost alone)."""
        return self._threads(root, threads, per_thread, through_repository=False)

    def _threads(self, root: Path, threads: int, per_thread: int, through_repository: bool) -> Measured:
        store, repo = self._open(root, "fsync")
        registry, account_class, _ = _eventstore_types()

        def save(thread: int) -> None:
            for i in range(per_thread):
                repo.save(account_class.open(f"account-{thread}-{i}", "owner"))

        def append(thread: int) -> None:
            opened = account_class.open("account-0", "owner").collect_events()[0]
            for i in range(per_thread):
                store.append_to_stream(f"account-{thread}-{i}", registry.encode(opened), -1)

        worker = save if through_repository else append
        try:
            seconds = run_in_threads([partial(worker, t) for t in range(threads)])
            stats = store.statistics()
        finally:
            store.close()
        how = "Repository.save" if through_repository else "append_to_stream"
        return Measured(seconds, f"durability=fsync, {how}, new aggregate each", {"fsyncs": stats.fsyncs})


# ------------------------------------------------------------------------------- eventsourcing


@cache
def _eventsourcing_types() -> tuple[type[Any], type[Any]]:
    """The same account on the eventsourcing library (imported on first use: it is optional)."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Account(Aggregate):
        @event("Opened")
        def __init__(self, owner: str) -> None:
            self.owner = owner
            self.balance = 0

        @event("Deposited")
        def deposit(self, amount: int, reference: str) -> None:
            self.balance += amount

    class Bank(Application[Any]):
        pass

    return Bank, Account


class EventSourcingLibrary(SourcingSystem):
    """The ``eventsourcing`` library: ``Application.save``, ``recorder.select_events``,
    ``repository.get``; on SQLite (a file) or in memory (POPO)."""

    def __init__(self, name: str, module: str) -> None:
        self.name = name
        self._module = module

    @property
    def _where(self) -> str:
        if self._module == ON_EVENTSTORE_MODULE:
            return "eventstore (PERSISTENCE_MODULE=eventstore.eventsourcing), fsync"
        return "SQLite WAL, synchronous=FULL" if self._module.endswith("sqlite") else "in memory"

    def _app(self, root: Path, snapshot_every: int | None = None) -> Any:
        try:
            app_class, account_class = _eventsourcing_types()
        except ImportError as exc:
            raise Skipped("eventsourcing is not installed") from exc
        env = {"PERSISTENCE_MODULE": self._module, "SQLITE_DBNAME": str(root / "eventsourcing.db"),
               "EVENTSTORE_PATH": str(root / "eventstore-data")}
        if snapshot_every is not None:
            app_class = type("SnapshottingBank", (app_class,),
                             {"snapshotting_intervals": {account_class: snapshot_every}})
        return app_class(env=env)

    @staticmethod
    def _load(app: Any, accounts: int, events: int) -> list[Any]:
        _, account_class = _eventsourcing_types()
        opened = [account_class(owner="owner") for _ in range(accounts)]
        for start in range(0, events - 1, SAVE_BATCH):  # bounded by events
            for account in opened:
                for amount, reference in _deposits(min(SAVE_BATCH, events - 1 - start), start):
                    account.deposit(amount, reference)
                app.save(account)
        return opened

    def read_stream(self, root: Path, streams: int, events: int) -> Measured:
        app = self._app(root)
        try:
            target = self._load(app, streams, events)[streams // 2].id

            def read() -> None:
                if len(app.recorder.select_events(target)) != events:
                    raise RuntimeError("short read")

            return _timed(read, f"{self._where}, recorder.select_events")
        finally:
            app.close()

    def rebuild(self, root: Path, events: int, snapshot_every: int | None) -> Measured:
        if snapshot_every is not None:
            raise Skipped("measured for eventstore only")
        app = self._app(root)
        try:
            account_id = self._load(app, 1, events)[0].id
            expected = _balance(events)

            def rebuild() -> None:
                if app.repository.get(account_id).balance != expected:
                    raise RuntimeError("wrong balance")

            return _timed(rebuild, f"{self._where}, repository.get, replay", replayed=events)
        finally:
            app.close()

    def save_threads(self, root: Path, threads: int, per_thread: int) -> Measured:
        app = self._app(root)
        _, account_class = _eventsourcing_types()

        def worker() -> None:
            for _ in range(per_thread):
                app.save(account_class(owner="owner"))

        try:
            seconds = run_in_threads([worker] * threads)
        finally:
            app.close()
        return Measured(seconds, f"{self._where}, new aggregate per save")


SYSTEMS: tuple[SourcingSystem, ...] = (
    EventStoreSourcing(),
    EventSourcingLibrary("eventsourcing", "eventsourcing.sqlite"),
    EventSourcingLibrary("eventsourcing-popo", "eventsourcing.popo"),
)
#: W12: the library's application on eventstore's persistence module, against it on SQLite.
ON_EVENTSTORE = EventSourcingLibrary("eventsourcing-on-eventstore", ON_EVENTSTORE_MODULE)


# ---------------------------------------------------------------------------------- workloads


def _metric(rows: list[dict[str, Any]], key: str, variant: str | None = None) -> float | None:
    for row in rows:
        if row["system"] == MAIN and row.get("variant") == variant:
            value = row.get(key)
            return float(value) if isinstance(value, int | float) else None
    return None


def w5_read_stream(ctx: Context) -> WorkloadResult:
    from bench.runner import ratios

    events = ctx.scaled(W5_EVENTS)
    rows = [ctx.measure("W5", s, events, partial(s.read_stream, streams=W5_STREAMS, events=events))
            for s in SYSTEMS]
    return rows, ratios(rows), {f"{MAIN} ms": _metric(rows, "ms"),
                                f"{MAIN} first ms": _metric(rows, "first_ms")}


def w6_rebuild(ctx: Context) -> WorkloadResult:
    from bench.runner import ratios

    events = ctx.scaled(W6_EVENTS)
    rows = [ctx.measure("W6", s, events, partial(s.rebuild, events=events, snapshot_every=None))
            for s in SYSTEMS]
    variant = f"snapshot_every={W6_SNAPSHOT_EVERY}"
    main = SYSTEMS[0]
    rows.append(ctx.measure("W6", main, events,
                            partial(main.rebuild, events=events, snapshot_every=W6_SNAPSHOT_EVERY),
                            variant))
    metrics = {f"{MAIN} ms": _metric(rows, "ms"), f"{MAIN} ms ({variant})": _metric(rows, "ms", variant)}
    return rows, ratios(rows), metrics


def w7_save(ctx: Context) -> WorkloadResult:
    from bench.runner import rate, ratios

    rows: list[dict[str, Any]] = []
    found: dict[str, float | None] = {}
    metrics: dict[str, float | None] = {}
    for threads, total in W7_SAVES.items():
        per_thread = max(1, ctx.scaled(total) // threads)
        variant = f"{threads} thread" + ("s" if threads > 1 else "")
        step = [ctx.measure("W7", s, threads * per_thread,
                            partial(s.save_threads, threads=threads, per_thread=per_thread), variant)
                for s in SYSTEMS]
        main = EventStoreSourcing()
        step.append(ctx.measure("W7", main, threads * per_thread,
                                partial(main.stream_append_threads, threads=threads, per_thread=per_thread),
                                f"{variant}, append_to_stream"))
        rows += step
        found |= ratios(step, variant, suffix=f" @{threads}")
        metrics[f"{MAIN} saves/s @{threads}"] = rate(step, MAIN, variant)
    return rows, found, metrics


def w12_library_on_eventstore(ctx: Context) -> WorkloadResult:
    """The same application of the library on ``eventstore.eventsourcing`` and on SQLite:
    ``repository.get`` of a 10,000-event aggregate (W6's) and ``app.save`` of one new
    aggregate from one thread (W7's); the ratios are eventstore's rate over SQLite's."""
    from bench.runner import rate

    events = ctx.scaled(W6_EVENTS)
    saves = ctx.scaled(W7_SAVES[1])
    steps: tuple[tuple[str, int, Callable[[EventSourcingLibrary], Callable[[Path], Measured]]], ...] = (
        ("repository.get", events, lambda s: partial(s.rebuild, events=events, snapshot_every=None)),
        ("app.save @1", saves, lambda s: partial(s.save_threads, threads=1, per_thread=saves)),
    )
    peer = SYSTEMS[1]
    assert isinstance(peer, EventSourcingLibrary)
    rows: list[dict[str, Any]] = []
    found: dict[str, float | None] = {}
    for variant, records, action in steps:
        step = [ctx.measure("W12", s, records, action(s), variant) for s in (ON_EVENTSTORE, peer)]
        rows += step
        ours, theirs = rate(step, ON_EVENTSTORE.name, variant), rate(step, peer.name, variant)
        found[f"{ON_EVENTSTORE.name}/{peer.name} ({variant})"] = (
            ours / theirs if ours is not None and theirs else None)
    return rows, found, {}
