"""A consume-transform-produce worker for the exactly-once tests, run in a child process.

``python txn_worker.py consume <store> <seed>`` opens the store (durability "fsync"),
consumes topic ``in`` as group ``xform`` and, for every polled batch, appends one
derived record per input record to topic ``out`` and commits the batch's offsets in
one ``consumer.transaction()``. It prints ``READY`` once the store is open, ``B <n>``
after each committed batch and ``DONE`` when the input is exhausted. The parent
SIGKILLs it at random moments and starts it again on the same store.

``python txn_worker.py relay-crash <store> <mode>`` runs one such transaction with
``eventstore.transactions.relay`` replaced so that the process dies after the catalog
commit: ``raise`` (relay raises before appending anything), ``exit`` (the process exits
before appending anything) or ``partial`` (it exits after the first partition's
append). The store is never closed.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

IN, OUT, GROUP = "in", "out", "xform"


def derived(value: bytes) -> bytes:
    return b"out:" + value


def source_header(partition: int, offset: int) -> tuple[str, bytes]:
    return ("src", b"%d:%d" % (partition, offset))


def transform(consumer: Any, batch: dict) -> None:
    with consumer.transaction() as tx:
        for records in batch.values():
            for r in records:
                tx.append(OUT, derived(r.value), key=r.key, headers=[source_header(r.partition, r.offset)])


def open_consumer(store: Any, max_records: int = 500) -> Any:
    return store.consumer(IN, group_id=GROUP, auto_offset_reset="earliest", enable_auto_commit=False,
                          max_poll_records=max_records)


def consume(path: str, seed: int) -> None:
    import eventstore

    rng = random.Random(seed)
    store = eventstore.open(path, durability="fsync")
    print("READY", flush=True)
    consumer = open_consumer(store)
    batches = 0
    while True:
        batch = consumer.poll(timeout_ms=0, max_records=rng.randint(1, 7))
        if not batch:
            if consumer.assignment() and all(v == 0 for v in store.lag(GROUP).values()):
                break
            continue
        transform(consumer, batch)
        batches += 1
        print("B", batches, flush=True)
    consumer.close()
    store.close()
    print("DONE", flush=True)


def relay_crash(path: str, mode: str) -> None:
    import eventstore
    from eventstore import transactions

    real_relay = transactions.relay

    def crashing_relay(store: Any, entry: Any, **kw: Any) -> Any:
        if mode == "raise":
            raise RuntimeError("simulated crash between the catalog commit and the relay")
        if mode == "exit":
            os._exit(0)
        appended = 0
        real_append = store.append_batch

        def append_then_die(*args: Any, **kwargs: Any) -> Any:
            nonlocal appended
            if appended == 1:
                os._exit(0)
            appended += 1
            return real_append(*args, **kwargs)

        store.append_batch = append_then_die
        return real_relay(store, entry, **kw)

    transactions.relay = crashing_relay
    store = eventstore.open(path, durability="fsync")
    consumer = open_consumer(store, max_records=6)
    batch: dict = {}
    while not batch:
        batch = consumer.poll(timeout_ms=100)
    print("BATCH", " ".join(f"{tp.partition}:{r.offset}" for tp, rs in batch.items() for r in rs),
          flush=True)
    try:
        transform(consumer, batch)
    except RuntimeError as e:
        print("RAISED", e, flush=True)
    os._exit(0)  # a crash: no close, no checkpoint


if __name__ == "__main__":
    if sys.argv[1] == "consume":
        consume(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "relay-crash":
        relay_crash(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")
