"""A writer for the kill-between-steps tests: run with ``EVENTSTORE_KILL_AT=<point>:<n>``.

``python step_writer.py PATH WORKLOAD`` opens the store and repeats one kind of
multi-step operation, with appends around it, until ``storage/faults.py``
SIGKILLs it at the chosen step (or it runs out of operations and prints
``DONE``). What it prints, one flushed line each, as soon as the call returned:

* ``A <topic> <partition> <offset> <seq>``: a record acknowledged (its value is
  ``crash_writer.make_value(seq, size)``, which proves itself);
* ``C <topic>``: a topic created; ``P <topic>``: about to delete it (its group
  offsets are committed); ``D <topic>``: deleted.

Workloads: ``roll`` and ``retention`` (small segments, with retention for the
second), ``checkpoint`` (``flush()`` every few appends), ``create-topic``,
``delete-topic``.
"""

from __future__ import annotations

import random
import sys
from typing import Any

from siblings import load

cw = load("crash_writer")
OPS_MAX = 400


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def append(store: Any, topic: str, partition: int, seq: int, rng: random.Random) -> None:
    value = cw.make_value(seq, rng.randint(100, 1500))
    meta = store.append(topic, value, partition=partition)
    emit(f"A {topic} {meta.partition} {meta.offset} {seq}")


def main(path: str, workload: str) -> None:
    import eventstore
    from eventstore import TopicPartition

    rng = random.Random(workload)
    store = eventstore.open(path)
    retention = 8 * 1024 if workload == "retention" else None
    store.create_topic("w", 2, segment_bytes=2048, retention_bytes=retention, exist_ok=True)
    seq = 0
    for op in range(OPS_MAX):  # bounded; the kill comes first
        append(store, "w", op % 2, seq, rng)
        seq += 1
        if workload == "checkpoint" and op % 4 == 3:
            store.flush()
        elif workload == "create-topic":
            name = f"c{op}"
            store.create_topic(name, 2, segment_bytes=2048)
            emit(f"C {name}")
            append(store, name, 1, seq, rng)
            seq += 1
        elif workload == "delete-topic":
            name = f"d{op}"
            store.create_topic(name, 2, segment_bytes=2048)
            emit(f"C {name}")
            for p in (0, 1, 1):
                append(store, name, p, seq, rng)
                seq += 1
            store.reset_group_offsets("g", {TopicPartition(name, 1): 1})
            emit(f"P {name}")
            store.delete_topic(name)
            emit(f"D {name}")
    store.close()
    emit("DONE")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
