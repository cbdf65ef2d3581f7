"""A writer for the truncation kill tests: run with ``EVENTSTORE_KILL_AT=<point>:<n>``.

``python truncate_writer.py PATH OPERATION`` fills a partition (native and Kafka
batches, three leader epochs, several segments), prints ``B <end>`` (flushed), then
truncates it to offset ``CUT`` (``truncate``) or resets it to start at ``RESET_AT``
(``reset``), printing ``A <end>`` once the call returned; ``storage/faults.py``
SIGKILLs it at the chosen step of the operation first.
"""

from __future__ import annotations

import sys

CUT = 13
RESET_AT = 500
SEGMENT_BYTES = 1024


def value(i: int) -> bytes:
    return b"%d|" % i + b"v" * 60


def main(path: str, operation: str) -> None:
    import eventstore
    from eventstore.wire import batch as kb

    store = eventstore.open(path)
    store.create_topic("t", segment_bytes=SEGMENT_BYTES)
    offset = 0
    for i in range(12):
        if i in (4, 8):
            store.log.set_leader_epoch(i // 4)
        count = 1 + i % 3
        values = [value(offset + j) for j in range(count)]
        if i % 2:
            rows = [(j, 0, None, v, []) for j, v in enumerate(values)]
            store.log.append_kafka("t", 0, kb.encode_batch(rows))
        else:
            store.append_batch("t", values)
        offset += count
    print(f"B {store.offsets('t', 0)[1]}", flush=True)
    if operation == "truncate":
        end = store.log.truncate("t", 0, CUT)
    else:
        store.log.reset_partition("t", 0, RESET_AT)
        end = RESET_AT
    print(f"A {end}", flush=True)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
