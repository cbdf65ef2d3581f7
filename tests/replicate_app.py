"""An embedded application for the ``es replicate`` tests and bench R3 part 2.

``python replicate_app.py STORE RATE [COUNT]`` opens the store (fsync), makes topic
``t`` (2 partitions) if missing, prints ``READY``, then appends ``COUNT`` records (forever
without it) at ``RATE`` per second, alternating partitions, and prints one line per
acknowledged append, flushed as soon as the call returns::

    A <topic> <partition> <offset> <value>

Along the way it changes its catalog as an application does: every 100 appends it
commits group ``app``'s offset of ``t``/0, and after 200 it makes topic ``u`` and
appends one record to it (what reaches a follower through ReplicaCatalog).

The tests SIGKILL it; with ``COUNT`` it prints ``DONE`` and keeps the store open until
killed (an app that stays up).
"""

from __future__ import annotations

import sys
import time

import eventstore

TOPIC = "t"
PARTITIONS = 2
GROUP = "app"
LATER = "u"


def main(path: str, rate: float, count: int | None) -> None:
    store = eventstore.open(path, durability="fsync")
    if TOPIC not in {cfg.name for cfg in store.topics()}:
        store.create_topic(TOPIC, partitions=PARTITIONS)
    print("READY", flush=True)
    interval = 1.0 / rate
    next_at = time.monotonic()
    i = 0
    while count is None or i < count:  # bounded by count, or by the test's kill
        value = b"r%d" % i
        meta = store.append(TOPIC, value, partition=i % PARTITIONS)
        print(f"A {TOPIC} {meta.partition} {meta.offset} {value.decode()}", flush=True)
        if meta.partition == 0 and i % 100 == 0:
            store.reset_group_offsets(GROUP, {(TOPIC, 0): meta.offset + 1})
        if i == 200:
            store.create_topic(LATER, partitions=1)
            later = store.append(LATER, b"u0", partition=0)
            print(f"A {LATER} 0 {later.offset} u0", flush=True)
        i += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    print("DONE", flush=True)
    while True:  # stays up until killed, as an application does
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
