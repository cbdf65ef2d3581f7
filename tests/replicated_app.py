"""An application that serves its store in-process and appends in ``"replicated"``
durability, for tests/test_cluster.py's kill cycles.

    python replicated_app.py DATA NODE_ID [LEADER_HOST:PORT]

Without a leader it leads (and makes the topic ``t`` with 2 partitions); with one it
follows that leader until promoted (``es promote``). Either way it keeps appending
unique values: each append the store answered is printed as ``ack TOPIC PARTITION
OFFSET VALUE`` once it returned, so the test knows exactly what was acknowledged; an
append refused (a follower, too few in-sync replicas, written but not known replicated,
a follower that has not learned the topic yet) is not. It prints ``listening
HOST:PORT`` first. SIGTERM stops it cleanly; the test also kills it with SIGKILL at
random points.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import eventstore
from eventstore.errors import NotEnoughReplicasError, NotLeaderError, TopicNotFoundError

TOPIC = "t"
PARTITIONS = 2
REFUSED_PAUSE_S = 0.02


def main(data: str, node_id: int, leader: str | None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with eventstore.open(data, durability="replicated") as store:
        options = {"node_id": node_id, "min_insync_replicas": 2, "replica_lag_ms": 2000}
        if leader is not None:
            options["replica_of"] = leader
        handle = store.serve("127.0.0.1:0", **options)
        if leader is None:
            store.create_topic(TOPIC, PARTITIONS, exist_ok=True)
        print(f"listening 127.0.0.1:{handle.address[1]}", flush=True)
        count = 0
        while not stop.is_set():  # bounded by the test: SIGTERM or SIGKILL
            value = f"app{node_id}-{os.getpid()}-{count}"
            count += 1
            try:
                done = store.append(TOPIC, value.encode(), partition=count % PARTITIONS)
            except (NotLeaderError, NotEnoughReplicasError, TopicNotFoundError):  # following; no catalog yet
                time.sleep(REFUSED_PAUSE_S)
                continue
            print(f"ack {done.topic} {done.partition} {done.offset} {value}", flush=True)
        handle.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
