"""The owner a backup runs beside, in a child process (tests/test_backup.py).

``python backup_writer.py STORE`` makes topic ``w`` (2 partitions, small segments, so the
backup meets rolls) and appends forever, alternating native appends of a few records and
Kafka batches (``Log.append_kafka``), printing ``A <partition> <end offset>`` once each call
has returned (acknowledged in ``fsync`` mode). The test stops it by its pid.
"""

from __future__ import annotations

import sys

import eventstore
from eventstore.wire import batch as kb


def main(path: str) -> None:
    with eventstore.open(path) as store:
        if "w" not in {cfg.name for cfg in store.topics()}:
            store.create_topic("w", partitions=2, segment_bytes=8192)
        print("READY", flush=True)
        i = 0
        while True:  # bounded by the test, which kills this process
            p = i % 2
            if i % 3 == 2:
                rows = [(j, 1_000 + i, b"k%d" % i, b"kafka-%d-%d" % (i, j), ()) for j in range(3)]
                result = store.log.append_kafka("w", p, kb.encode_batch(rows, partition_leader_epoch=-1))
                end = result.base_offset + 3
            else:
                metas = store.append_batch("w", [eventstore.Message(value=b"native-%d-%d" % (i, j), key=b"k")
                                                 for j in range(2)], partition=p)
                end = metas[-1].offset + 1
            print(f"A {p} {end}", flush=True)
            i += 1


if __name__ == "__main__":
    main(sys.argv[1])
