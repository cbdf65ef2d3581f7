"""The process the projection crash test kills: it appends events and projects them, live.

``python projection_worker.py <store> <target events> <seed>`` opens the store,
then at once

* appends events (1 to 4 per append, random types, to random streams) from a
  thread until the store holds ``<target events>``, and
* runs the ``TypeCounter`` projection over ``$all`` in small batches, printing
  one line per committed batch, flushed::

      OPEN <checkpoint, -1 for none>
      C <checkpoint> <events handled>
      ...
      DONE <checkpoint> <events handled>

``DONE`` comes once every event is appended and projected. The test SIGKILLs
the process at random moments and starts it again.

``TypeCounter`` counts events per type, and checks on the way that each
stream's events come once each, in version order: it keeps the last version
seen per stream in its state, so an event applied twice (or one skipped)
makes ``handle`` raise, and the process exits with a traceback.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable

import eventstore
from eventstore.sourcing.events import NewEvent, RecordedEvent
from eventstore.sourcing.projections import (
    Projection,
    ProjectionCheckpoint,
    ProjectionRunner,
    ProjectionState,
)

NAME = "types"
TYPES = ("created", "paid", "shipped", "cancelled", "refunded")
STREAMS = tuple(f"{category}-{n}" for category in ("order", "user") for n in range(12))
TYPE_PREFIX = b"t\x00"
VERSION_PREFIX = b"v\x00"
BATCH_EVENTS = 16


class TypeCounter(Projection):
    """Events per type; raises if a stream's events arrive twice, out of order or with a gap."""

    def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
        key = VERSION_PREFIX + event.stream_id.encode()
        last = state.get(key)
        expected = 0 if last is None else int.from_bytes(last, "big") + 1
        if event.version != expected:
            raise RuntimeError(
                f"{event.stream_id} version {event.version} arrived when {expected} was due: "
                "an event was applied twice or skipped"
            )
        state.put(key, event.version.to_bytes(8, "big"))
        state.add(TYPE_PREFIX + event.type.encode())


def runner(store: eventstore.Store,
           on_commit: Callable[[ProjectionCheckpoint], object] | None = None) -> ProjectionRunner:
    return ProjectionRunner(store, TypeCounter(), name=NAME, batch_events=BATCH_EVENTS,
                            on_commit=on_commit)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _append(store: eventstore.Store, target: int, rng: random.Random, done: threading.Event,
            projection: ProjectionRunner) -> None:
    positions = store.streams.positions
    try:
        while positions.watermark < target:  # bounded by the target
            count = min(rng.randint(1, 4), target - positions.watermark)
            events = [NewEvent(type=rng.choice(TYPES)) for _ in range(count)]
            store.append_to_stream(rng.choice(STREAMS), events)
    finally:
        done.set()
        projection.stop()


def main(path: str, target: int, seed: int) -> None:
    store = eventstore.open(path)

    def committed(checkpoint: ProjectionCheckpoint) -> None:
        _say(f"C {checkpoint.position} {checkpoint.events}")

    projection = runner(store, committed)
    start = projection.checkpoint
    _say(f"OPEN {-1 if start is None else start}")
    done = threading.Event()
    writer = threading.Thread(target=_append,
                              args=(store, target, random.Random(seed), done, projection))
    writer.start()
    projection.run()  # live, until the writer has appended everything and stops it
    writer.join()
    projection.catch_up()
    record = projection.checkpoint_record()
    assert record is not None
    _say(f"DONE {record.position} {record.events}")
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
