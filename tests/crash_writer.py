"""Helpers for the durability tests, and the writer they SIGKILL.

As a script (``python crash_writer.py write|open ...``) it runs in a child
process that the crash tests kill at random or chosen moments:

* ``write`` opens a store and appends self-verifying records forever (single
  appends, multi-partition ``append_batch`` calls, multi-KB batches), printing
  one acknowledgement line per record, flushed, as soon as each call returns::

      A <topic> <partition> <offset> <seq> <xxh64 of the value>

  With ``--transactions`` it commits multi-partition transactions instead
  (``T <first seq> <count>`` before each commit), with ``--streams`` it makes
  expected-version ``append_to_stream`` calls (``P ...`` before, ``E ...`` per
  event after). ``--pause-at`` makes it die at a chosen point (inside a write,
  after a transaction's commit, before the stream index is updated).

* ``open`` only opens a store (recovering it) and prints ``OPENED``; with
  ``--pause-at`` it stops at a chosen point of recovery and prints
  ``PAUSED <point>`` so that the parent can kill it exactly there.

As a module it gives the tests the record codec (every value says which
sequence number it carries and proves it with a digest, so a record that was
never written cannot pass for one) and a few tools to inspect or doctor a store
on disk: the batch layout of a segment parsed by hand per docs/format.md,
reading and writing LMDB recovery checkpoints.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

TOPIC = "crash"
SEQ_PER_RUN = 10_000_000
_HEAD = struct.Struct(">2sQI")  # magic, sequence number, payload length
_MAGIC = b"CW"
_DIGEST_BYTES = 8


# --- the record codec -------------------------------------------------------


def payload(seq: int, size: int) -> bytes:
    """The payload bytes of record ``seq``: a pure function of (seq, size)."""
    return random.Random(seq).randbytes(size)


def make_value(seq: int, size: int) -> bytes:
    body = _HEAD.pack(_MAGIC, seq, size) + payload(seq, size)
    return body + xxhash.xxh64_digest(body)


def key_for(seq: int) -> bytes | None:
    return None if seq % 3 == 0 else b"key-%d" % seq


def headers_for(seq: int) -> list[tuple[str, bytes]]:
    return [] if seq % 4 else [("seq", b"%d" % seq), ("empty", b"")]


def digest(value: bytes | None) -> str:
    return xxhash.xxh64_hexdigest(value or b"")


TXN_HEADER = "es.txn"  # added by eventstore.transactions to every record a transaction appends


def txn_key(first: int, count: int) -> bytes:
    """The key of every record of the transaction of seqs ``first .. first + count - 1``."""
    return b"txn-%d-%d" % (first, count)


def parse_txn_key(key: bytes | None) -> tuple[int, int]:
    assert key is not None and key.startswith(b"txn-"), f"not a transaction key: {key!r}"
    _, first, count = key.split(b"-")
    return int(first), int(count)


def verify_value(value: Any, where: str = "") -> int:
    """The sequence number a writer value carries, if the value is exactly the writer's."""
    assert isinstance(value, bytes) and len(value) >= _HEAD.size + _DIGEST_BYTES, f"{where}: not ours"
    magic, seq, size = _HEAD.unpack_from(value)
    assert magic == _MAGIC and len(value) == _HEAD.size + size + _DIGEST_BYTES, f"{where}: bad framing"
    assert value == make_value(seq, size), f"{where}: value of seq {seq} does not verify"
    return int(seq)


def verify_record(record: Any, *, txn: bool = False) -> int:
    """The sequence number of ``record`` if it is exactly what the writer writes for it.

    With ``txn``, the record came from a transaction: its key names the transaction's seqs and
    its headers end with the transaction id header.
    """
    seq = verify_value(record.value, f"offset {record.offset}")
    headers = [tuple(h) for h in record.headers]
    if txn:
        first, count = parse_txn_key(record.key)
        assert first <= seq < first + count, f"offset {record.offset}: seq {seq} not in its transaction"
        assert headers and headers[-1][0] == TXN_HEADER, f"offset {record.offset}: no transaction header"
        headers = headers[:-1]
    else:
        assert record.key == key_for(seq), f"offset {record.offset}: key of seq {seq} wrong"
    assert headers == headers_for(seq), f"offset {record.offset}: headers wrong"
    return int(seq)


@dataclass(frozen=True)
class Ack:
    topic: str
    partition: int
    offset: int
    seq: int
    digest: str


def parse_stream_lines(text: str, kind: str) -> list[list[str]]:
    """The ``P`` (about to append) or ``E`` (event acknowledged) lines of a stream writer."""
    return [line.split()[1:] for line in text.split("\n")[:-1] if line.startswith(kind + " ")]


def parse_transactions(text: str) -> list[tuple[int, int]]:
    """(first seq, count) of every transaction the writer started to commit."""
    lines = [line.split() for line in text.split("\n")[:-1] if line.startswith("T ")]
    return [(int(first), int(count)) for _, first, count in lines]


def parse_acks(text: str) -> list[Ack]:
    """The acknowledgements in a writer's output; a torn last line is not one."""
    acks = []
    for line in text.split("\n")[:-1]:  # whatever follows the last newline is incomplete
        if line.startswith("A "):
            _, topic, p, offset, seq, dig = line.split()
            acks.append(Ack(topic, int(p), int(offset), int(seq), dig))
    return acks


# --- reading a whole store back ----------------------------------------------


def read_all(store: Any, topic: str, partition: int) -> list[Any]:
    """Every record of a partition, from its log start to its end offset."""
    start, end = store.offsets(topic, partition)
    out: list[Any] = []
    offset = start
    while offset < end:  # bounded: every read returns at least one record or we stop
        batch = store.read(topic, partition, offset, max_records=5000)
        assert batch, f"empty read at {offset} below the end offset {end}"
        out.extend(batch)
        offset = batch[-1].offset + 1
    return out


# --- on-disk inspection (docs/format.md, sections 2, 6) -----------------------

_PREFIX = struct.Struct(">qiib")  # base_offset, batch_length, partition_leader_epoch, magic
_COUNT = struct.Struct(">i")
RECORD_COUNT_AT = 39  # docs/format.md 2.1: record_count int32 at position 39 of a native batch


@dataclass(frozen=True)
class BatchSpan:
    position: int
    size: int
    base_offset: int
    record_count: int

    @property
    def end(self) -> int:
        return self.position + self.size

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.record_count


def batch_layout(data: bytes) -> list[BatchSpan]:
    """The batches of a well-formed segment, parsed from their prefixes by hand."""
    spans = []
    position = 0
    while position < len(data):  # bounded: each batch is at least 52 bytes
        base, length, _epoch, magic = _PREFIX.unpack_from(data, position)
        assert magic == 0x45 and length >= 40, f"not a native batch at {position}"
        (count,) = _COUNT.unpack_from(data, position + RECORD_COUNT_AT)
        spans.append(BatchSpan(position, 12 + length, base, count))
        position += 12 + length
    assert position == len(data), "segment ends inside a batch"
    return spans


def segment_files(partition_dir: Path, suffix: str = ".log") -> list[Path]:
    """The segment files of a partition directory with ``suffix``, by base offset."""
    return sorted(p for p in partition_dir.iterdir() if p.name[20:] == suffix and p.name[:20].isdigit())


def _catalog(store_dir: Path, db: bytes = b"checkpoints") -> Any:
    import lmdb

    from eventstore.catalog import keys

    env = lmdb.open(str(store_dir / "catalog"), max_dbs=len(keys.ALL_DBS) + 4, subdir=True)
    return env, env.open_db(db)


def outbox_entries(store_dir: Path) -> int:
    """How many committed transactions of a closed store wait in the outbox to be relayed."""
    env, db = _catalog(store_dir, b"outbox")
    try:
        with env.begin() as txn:
            return int(txn.stat(db)["entries"])
    finally:
        env.close()


def read_checkpoint(store_dir: Path, topic: str, partition: int) -> list[int] | None:
    """The recovery checkpoint of a partition of a closed store, as its six integers."""
    import msgspec

    from eventstore.catalog import keys, sealed

    env, db = _catalog(store_dir)
    try:
        with env.begin() as txn:
            raw = txn.get(keys.partition_key(topic, partition), db=db)
    finally:
        env.close()
    if raw is None:
        return None
    payload = sealed.opened(keys.partition_key(topic, partition), raw)
    assert payload is not None, "the checkpoint fails its checksum"
    return list(msgspec.msgpack.decode(payload))


def write_checkpoint(store_dir: Path, topic: str, partition: int, checkpoint: list[int]) -> None:
    """Overwrite the recovery checkpoint of a partition of a closed store."""
    import msgspec

    from eventstore.catalog import keys, sealed

    env, db = _catalog(store_dir)
    try:
        with env.begin(write=True) as txn:
            key = keys.partition_key(topic, partition)
            txn.put(key, sealed.seal(key, msgspec.msgpack.encode(checkpoint)), db=db)
    finally:
        env.close()


# --- the child processes -----------------------------------------------------


def _size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.70:
        return rng.randint(0, 300)
    if r < 0.95:
        return rng.randint(300, 4000)
    return rng.randint(4000, 16000)


def _emit(out: Any, lines: Iterator[str]) -> None:
    out.write("".join(lines))
    out.flush()


def _write(args: argparse.Namespace) -> None:
    import eventstore
    from eventstore import Message

    store = eventstore.open(args.path, durability=args.durability, fsync_interval_ms=args.interval_ms)
    store.create_topic(TOPIC, args.partitions, segment_bytes=args.segment_bytes, exist_ok=True)
    partitions = store.topic(TOPIC).partitions
    out = sys.stdout
    _emit(out, iter([f"OPEN {os.getpid()}\n"]))
    rng = random.Random(args.seed)
    seq = args.run * SEQ_PER_RUN
    versions = {s: store.stream_version(s) for s in STREAMS} if args.streams else {}
    deadline = time.monotonic() + args.max_seconds
    for op in range(args.ops):  # bounded by --ops and --max-seconds
        if op == args.crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if time.monotonic() > deadline:
            break
        if args.transactions:
            seq = _transaction(store, out, rng, seq, partitions)
            continue
        if args.streams:
            seq = _stream_append(store, out, rng, seq, versions)
            continue
        kind = rng.random()
        if kind < 0.55:  # one record
            value = make_value(seq, _size(rng))
            p = rng.randrange(partitions)
            meta = store.append(TOPIC, value, key=key_for(seq), headers=headers_for(seq) or None, partition=p)
            _emit(out, iter([f"A {TOPIC} {meta.partition} {meta.offset} {seq} {digest(value)}\n"]))
            seq += 1
            continue
        big = kind >= 0.85  # a multi-KB batch to one partition; else a few records over several
        n = rng.randint(5, 30) if big else rng.randint(2, 12)
        fixed = rng.randrange(partitions)
        items = []
        for _ in range(n):
            size = rng.randint(1000, 8000) if big else _size(rng)
            part = fixed if big else rng.randrange(partitions)
            items.append((seq, size, Message(
                value=make_value(seq, size), key=key_for(seq), headers=headers_for(seq) or None,
                partition=part,
            )))
            seq += 1
        metas = store.append_batch(TOPIC, [m for _, _, m in items])
        _emit(out, (
            f"A {TOPIC} {meta.partition} {meta.offset} {s} {digest(m.value)}\n"
            for (s, _size_, m), meta in zip(items, metas, strict=True)
        ))
    store.close()
    _emit(out, iter(["DONE\n"]))


def _transaction(store: Any, out: Any, rng: random.Random, seq: int, partitions: int) -> int:
    """One transaction of 1..6 records over random partitions; returns the next seq.

    ``T <first> <count>`` is printed before the commit, the acknowledgements after it returns.
    """
    count = rng.randint(1, 6)
    key = txn_key(seq, count)
    txn = store.transaction()
    values = []
    for s in range(seq, seq + count):
        value = make_value(s, _size(rng))
        values.append((s, value))
        txn.append(TOPIC, value, key=key, headers=headers_for(s) or None, partition=rng.randrange(partitions))
    _emit(out, iter([f"T {seq} {count}\n"]))
    metas = txn.commit()
    _emit(out, (
        f"A {TOPIC} {meta.partition} {meta.offset} {s} {digest(value)}\n"
        for (s, value), meta in zip(values, metas, strict=True)
    ))
    return seq + count


STREAMS = [f"acct-{i}" for i in range(5)]  # category "acct": the topic the streams live in


def event_id(seq: int) -> Any:
    import uuid

    return uuid.UUID(int=seq + 1)


def stream_events(first: int, count: int, sizes: list[int]) -> list[Any]:
    from eventstore.sourcing.events import NewEvent

    return [NewEvent(type="deposit", data=make_value(s, size), id=event_id(s))
            for s, size in zip(range(first, first + count), sizes, strict=True)]


def _stream_append(store: Any, out: Any, rng: random.Random, seq: int, versions: dict[str, Any]) -> int:
    """Append 1..4 events to a random stream at its expected version; returns the next seq.

    ``P <stream> <expected> <first seq> <sizes...>`` is printed before the append (so the parent
    can retry it), ``E <stream> <version> <position> <seq>`` for each event after it returns.
    """
    stream = rng.choice(STREAMS)
    count = rng.randint(1, 4)
    sizes = [_size(rng) for _ in range(count)]
    current = versions[stream]
    expected = -1 if current is None else current
    _emit(out, iter([f"P {stream} {expected} {seq} {' '.join(map(str, sizes))}\n"]))
    result = store.append_to_stream(stream, stream_events(seq, count, sizes), expected)
    assert result.next_expected_version == expected + count
    versions[stream] = result.next_expected_version
    first_position = result.position - count + 1
    _emit(out, (
        f"E {stream} {expected + 1 + i} {first_position + i} {seq + i}\n" for i in range(count)
    ))
    return seq + count


def _install_stream_kill(after: int) -> None:
    """SIGKILL after the ``after``-th stream append is in the log but before it is indexed."""
    from eventstore.sourcing import staging

    index_append = staging.Staging.stage
    seen = [0]

    def indexing(self: Any, *args: Any, **kwargs: Any) -> None:
        seen[0] += 1
        if seen[0] > after:
            os.kill(os.getpid(), signal.SIGKILL)
        index_append(self, *args, **kwargs)

    staging.Staging.stage = indexing  # type: ignore[method-assign]


def _install_txn_kill(point: str, after: int) -> None:
    """SIGKILL inside the ``after``-th transaction commit that touches two or more partitions,
    after its LMDB commit (the point of no return): before the relay appends anything, between
    the appends of two partitions, or after all appends but before the outbox entry is deleted."""
    from eventstore import log as log_module
    from eventstore import transactions
    from eventstore.catalog import env, keys

    relay, append_batch, delete = transactions.relay, log_module.Log.append_batch, env.Catalog.delete
    state = {"seen": 0, "armed": False, "appends": 0}

    def relaying(store: Any, entry: Any, **kwargs: Any) -> Any:
        if len(entry.outputs) >= 2 and not kwargs.get("check_existing"):
            state["seen"] += 1
            if state["seen"] > after:
                state["armed"] = True
                if point == "txn-before-relay":
                    os.kill(os.getpid(), signal.SIGKILL)
        return relay(store, entry, **kwargs)

    def appending(self: Any, *args: Any, **kwargs: Any) -> Any:
        if state["armed"] and point == "txn-mid-relay":
            state["appends"] += 1
            if state["appends"] == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return append_batch(self, *args, **kwargs)

    def deleting(self: Any, db: bytes, key: bytes) -> None:
        if state["armed"] and db == keys.DB_OUTBOX and point == "txn-before-outbox-delete":
            os.kill(os.getpid(), signal.SIGKILL)
        delete(self, db, key)

    transactions.relay = relaying
    log_module.Log.append_batch = appending  # type: ignore[method-assign]
    env.Catalog.delete = deleting  # type: ignore[method-assign]


def _pause(point: str) -> None:
    sys.stdout.write(f"PAUSED {point}\n")
    sys.stdout.flush()
    time.sleep(60)  # the parent kills us here
    os._exit(3)


def _install_pause(point: str, after: int = 0) -> None:
    """Stop at ``point`` of recovery (monkeypatching the engine in this child only).

    ``torn-write`` is not a pause: the process dies inside the write of its
    ``after``-th batch larger than 200 bytes, with only part of it written.
    """
    from eventstore.storage import disk, partition, segment

    if point == "scan":  # in the middle of the tail scan
        batches = segment.Segment.batches

        def scanning(self: Any, start: int, end: int) -> Any:
            for i, item in enumerate(batches(self, start, end)):
                if i == 50:
                    _pause(point)
                yield item

        segment.Segment.batches = scanning  # type: ignore[method-assign]
    elif point in ("before-truncate", "after-truncate"):  # the .broken copy is written by then
        truncate = segment.Segment.truncate

        def cutting(self: Any, position: int) -> None:
            if point == "before-truncate":
                _pause(point)
            truncate(self, position)
            _pause(point)

        segment.Segment.truncate = cutting  # type: ignore[method-assign]
    elif point == "after-checkpoint":  # recovery done and checkpointed, store not yet returned
        write_cp = partition.PartitionLog._write_checkpoint

        def checkpointing(self: Any, cp: Any) -> None:
            write_cp(self, cp)
            _pause(point)

        partition.PartitionLog._write_checkpoint = checkpointing  # type: ignore[method-assign]
    elif point == "torn-write":  # die inside a pwrite, with part of the batch written
        pwrite = disk.pwrite
        seen = [0]

        def tearing(fd: int, data: Any, position: int) -> int:
            view = memoryview(data)
            if len(view) > 200:
                if seen[0] == after:
                    pwrite(fd, view[: len(view) // 2 + 7], position)
                    os.kill(os.getpid(), signal.SIGKILL)
                seen[0] += 1
            return pwrite(fd, data, position)

        disk.pwrite = tearing
    elif point.startswith("txn-"):
        _install_txn_kill(point, after)
    elif point == "stream-before-index":
        _install_stream_kill(after)
    elif point != "none":
        raise SystemExit(f"unknown pause point {point!r}")


def _open(args: argparse.Namespace) -> None:
    import eventstore

    _install_pause(args.pause_at)
    sys.stdout.write("OPENING\n")
    sys.stdout.flush()
    store = eventstore.open(args.path, durability=args.durability)
    sys.stdout.write("OPENED\n")
    sys.stdout.flush()
    store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("path")
    w.add_argument("--durability", default="fsync")
    w.add_argument("--interval-ms", type=int, default=20)
    w.add_argument("--run", type=int, required=True, help="sequence numbers start at run * SEQ_PER_RUN")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--partitions", type=int, default=3)
    w.add_argument("--segment-bytes", type=int, default=32 * 1024)
    w.add_argument("--ops", type=int, default=10**9)
    w.add_argument("--crash-after", type=int, default=-1, help="SIGKILL itself before this op")
    w.add_argument("--max-seconds", type=float, default=30.0)
    w.add_argument("--pause-at", default="none", help="a recovery point or torn-write (see _install_pause)")
    w.add_argument("--tear-after", type=int, default=0, help="with --pause-at torn-write or txn-*")
    w.add_argument("--transactions", action="store_true", help="append through store.transaction()")
    w.add_argument("--streams", action="store_true", help="append_to_stream with expected versions")
    o = sub.add_parser("open")
    o.add_argument("path")
    o.add_argument("--durability", default="fsync")
    o.add_argument("--pause-at", default="none")
    args = parser.parse_args(argv)
    if args.command == "write":
        _install_pause(args.pause_at, args.tear_after)
        _write(args)
    else:
        _open(args)


if __name__ == "__main__":
    main()
