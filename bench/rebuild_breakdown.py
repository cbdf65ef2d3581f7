"""Where ``repository.get`` of a 10,000-event aggregate spends its time, per persistence module
of the ``eventsourcing`` library (W12's first step taken apart), all in one process run.

``python -m bench.rebuild_breakdown [events] [runs]``. For each module it loads one
aggregate of ``events`` events (W6's ``Account``), then times, each the median of
``runs`` calls, the modules and parts taken in turns: the whole ``repository.get``; the
recorder's ``select_events`` (the part a persistence module owns); the library's mapper
(``to_domain_event``: transcoder, and the domain event objects) over those stored events;
and the projection (each event's ``mutate``). For eventstore the recorder is also split
into the store's ``read_stream`` and the ``StoredEvent`` objects made from its events.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.sourcing import ON_EVENTSTORE_MODULE, EventSourcingLibrary, _eventsourcing_types

MODULES = (("eventsourcing.sqlite", "sqlite"), (ON_EVENTSTORE_MODULE, "eventstore"),
           ("eventsourcing.popo", "popo"))


class _Subject:
    """One module's application with its aggregate loaded, and its parts to time."""

    def __init__(self, module: str, root: Path, events: int) -> None:
        from eventsourcing.application import project_aggregate

        self.system = EventSourcingLibrary(module, module)
        root.mkdir()
        self.app = app = self.system._app(root)
        aggregate_id = self.system._load(app, 1, events)[0].id
        recorder, mapper = app.recorder, app.mapper
        stored = recorder.select_events(aggregate_id)
        domain = [mapper.to_domain_event(s) for s in stored]
        assert len(stored) == events

        def to_domain() -> list[Any]:
            return [mapper.to_domain_event(s) for s in stored]

        self.parts: dict[str, Callable[[], object]] = {
            "repository.get": lambda: app.repository.get(aggregate_id),
            "recorder.select_events": lambda: recorder.select_events(aggregate_id),
            "mapper.to_domain_event": to_domain,
            "project (mutate)": lambda: project_aggregate(None, domain),
        }
        if module == ON_EVENTSTORE_MODULE:
            self.parts |= _eventstore_parts(recorder, aggregate_id)


def _eventstore_parts(recorder: Any, aggregate_id: Any) -> dict[str, Callable[[], object]]:
    from eventstore.eventsourcing.mapping import stored_events, stream_id_of

    stream_id = stream_id_of(aggregate_id, recorder.purpose)
    read = recorder.store.read_stream(stream_id, 0, None)
    return {
        "  store.read_stream": lambda: recorder.store.read_stream(stream_id, 0, None),
        "  StoredEvent objects": lambda: stored_events(aggregate_id, read),
    }


def breakdown(events: int, runs: int) -> dict[str, dict[str, float]]:
    """The median (ms) of each part of each module; the modules and parts are timed in turns,
    so that a busy moment of a shared machine falls on all of them alike."""
    with tempfile.TemporaryDirectory() as root:
        subjects = {name: _Subject(module, Path(root) / name, events) for module, name in MODULES}
        try:
            times = {n: {p: list[float]() for p in s.parts} for n, s in subjects.items()}
            for _ in range(runs + 1):  # bounded by runs; the first round warms caches and is dropped
                for name, subject in subjects.items():
                    for part, fn in subject.parts.items():
                        started = time.perf_counter()
                        fn()
                        times[name][part].append(time.perf_counter() - started)
            return {n: {p: statistics.median(t[1:]) * 1e3 for p, t in parts.items()}
                    for n, parts in times.items()}
        finally:
            for subject in subjects.values():
                subject.app.close()


def main(argv: list[str]) -> None:
    events = int(argv[0]) if argv else 10_000
    runs = int(argv[1]) if len(argv) > 1 else 15
    _eventsourcing_types()
    results = breakdown(events, runs)
    names = [name for _, name in MODULES]
    print(f"repository.get of a {events:,}-event aggregate, median of {runs} (ms)")
    print(f"  {'part':<26}" + "".join(f"{n:>12}" for n in names))
    for part in results["eventstore"]:
        row = "".join(f"{results[n][part]:>12.2f}" if part in results[n] else f"{'':>12}" for n in names)
        print(f"  {part:<26}{row}")


if __name__ == "__main__":
    main(sys.argv[1:])
