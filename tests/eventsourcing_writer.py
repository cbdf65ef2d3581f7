"""A process recorder writing commits until it is killed (for test_eventsourcing_commits.py).

``python eventsourcing_writer.py <store> <durability> <x> <y>``: for i = 1, 2, ...
records version i of originators x and y with the tracking record
("Upstream", i), in one insert, and prints ``ACK i`` once it returns.
"""

from __future__ import annotations

import sys
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, StoredEvent, Tracking


def main(path: str, durability: str, x: str, y: str) -> None:
    factory = InfrastructureFactory.construct({
        "PERSISTENCE_MODULE": "eventstore.eventsourcing", "EVENTSTORE_PATH": path,
        "EVENTSTORE_DURABILITY": durability,
    })
    recorder = factory.process_recorder()
    start = (recorder.max_tracking_id("Upstream") or 0) + 1
    print("READY", flush=True)
    i = start
    while True:  # until killed
        events = [StoredEvent(UUID(o), i, "Moved", b"%d" % i) for o in (x, y)]
        recorder.insert_events(events, tracking=Tracking("Upstream", i))
        print("ACK", i, flush=True)
        i += 1


if __name__ == "__main__":
    main(*sys.argv[1:5])
