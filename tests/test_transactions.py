"""Transactions: atomic multi-partition appends, offsets committed with the appends,
fencing, and exactly-once output across SIGKILLs and across the commit/relay window."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from siblings import load

import eventstore
from eventstore import (
    CommitFailedError,
    IllegalStateError,
    InvalidArgumentError,
    Message,
    OffsetAndMetadata,
    PartitionNotFoundError,
    TopicNotFoundError,
    TopicPartition,
)
from eventstore.catalog import keys as ck
from eventstore.transactions import TXN_HEADER

TP = TopicPartition
WORKER = Path(__file__).with_name("txn_worker.py")


tw = load("txn_worker")


def read_all(store: eventstore.Store, topic: str) -> list[eventstore.Record]:
    out = []
    for p in range(store.topic(topic).partitions):
        offset, end = store.offsets(topic, p)
        while offset < end:
            recs = store.read(topic, p, offset, max_records=1000)
            out.extend(recs)
            offset = recs[-1].offset + 1
    return out


def outbox(store: eventstore.Store) -> list[tuple[bytes, bytes]]:
    return store.log.catalog.items(ck.DB_OUTBOX)


def txn_id(record: eventstore.Record) -> bytes:
    [value] = [v for k, v in record.headers if k == TXN_HEADER]
    return value


@pytest.fixture
def ab(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("a", 3)
    store.create_topic("b", 1)
    return store


# --- store.transaction() ------------------------------------------------------------------------


def test_appends_to_several_partitions_together(ab: eventstore.Store) -> None:
    store = ab
    with store.transaction() as tx:
        tx.append("a", b"a0", partition=0)
        tx.append("b", b"b0")
        tx.append("a", b"a2", partition=2, headers=[("h", b"1")], timestamp_ms=5)
        tx.append("a", b"keyed", key=b"k")
        tx.append("a", b"a0-again", partition=0)
    assert [store.offsets("a", p)[1] for p in range(3)] != [0, 0, 0]
    records = read_all(store, "a") + read_all(store, "b")
    assert sorted(r.value for r in records) == [b"a0", b"a0-again", b"a2", b"b0", b"keyed"]
    assert len({txn_id(r) for r in records}) == 1
    a2 = next(r for r in records if r.value == b"a2")
    assert (a2.partition, a2.timestamp_ms, a2.headers[0]) == (2, 5, ("h", b"1"))
    keyed = next(r for r in records if r.value == b"keyed")
    assert keyed.partition == eventstore.partition_for_key(b"k", 3)
    assert [r.offset for r in records if r.partition == 0 and r.topic == "a"][:2] == [0, 1]
    assert outbox(store) == []


def test_commit_returns_metadata_in_append_order(ab: eventstore.Store) -> None:
    tx = ab.transaction()
    tx.append("a", b"x", partition=1)
    tx.append("b", b"y")
    tx.append("a", b"z", partition=1)
    metas = tx.commit()
    assert [(m.topic, m.partition, m.offset) for m in metas] == [("a", 1, 0), ("b", 0, 0), ("a", 1, 1)]
    with pytest.raises(IllegalStateError):
        tx.append("a", b"late")
    with pytest.raises(IllegalStateError):
        tx.commit()
    second = ab.transaction()
    second.append("a", b"w", partition=1)
    [meta] = second.commit()
    assert meta.offset == 2
    assert txn_id(ab.read("a", 1, 2)[0]) != txn_id(ab.read("a", 1, 0)[0])


def test_exception_inside_with_writes_nothing(ab: eventstore.Store) -> None:
    store = ab
    with pytest.raises(ZeroDivisionError), store.transaction() as tx:
        tx.append("a", b"x", partition=0)
        tx.append("b", b"y")
        tx.commit_offsets("g", {TP("a", 0): 1})
        raise ZeroDivisionError
    assert [store.offsets("a", p)[1] for p in range(3)] == [0, 0, 0]
    assert store.offsets("b", 0)[1] == 0
    assert store.group_offsets("g") == {}
    assert outbox(store) == []
    with pytest.raises(IllegalStateError):
        tx.append("a", b"after abort")


def test_bad_append_raises_at_once(ab: eventstore.Store) -> None:
    with ab.transaction() as tx:
        tx.append("a", b"ok", partition=0)
        with pytest.raises(TopicNotFoundError):
            tx.append("nope", b"x")
        with pytest.raises(PartitionNotFoundError):
            tx.append("a", b"x", partition=3)
        with pytest.raises(InvalidArgumentError):
            tx.append("a", "text")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            tx.commit_offsets("g", {TP("a", 0): -1})
    assert [r.value for r in read_all(ab, "a")] == [b"ok"]


def test_explicit_abort_and_empty_transaction(ab: eventstore.Store) -> None:
    tx = ab.transaction()
    tx.append("a", b"x")
    tx.abort()
    with pytest.raises(IllegalStateError):
        tx.commit()
    assert read_all(ab, "a") == []
    assert ab.transaction().commit() == []
    with ab.transaction():
        pass
    assert outbox(ab) == []


def test_offsets_commit_with_appends(ab: eventstore.Store) -> None:
    store = ab
    with store.transaction() as tx:
        tx.append("b", b"out")
        tx.commit_offsets("g", {TP("a", 0): 3, TP("a", 1): OffsetAndMetadata(4, "meta")})
        with pytest.raises(InvalidArgumentError):
            tx.commit_offsets("other-group", {TP("a", 0): 1})
    assert store.group_offsets("g") == {TP("a", 0): 3, TP("a", 1): 4}
    with store.transaction() as tx:  # offsets only
        tx.commit_offsets("g", {TP("a", 0): 5})
    assert store.group_offsets("g")[TP("a", 0)] == 5


@pytest.mark.parametrize("offsets", [{TP("a", 0): 2.7}, {TP("a", 0): "3"}, {TP("a", 0): True},
                                     {("a", 0): 1}], ids=["float", "str", "bool", "tuple-key"])
def test_commit_offsets_validates_like_consumer_commit(ab: eventstore.Store, offsets: dict) -> None:
    tx = ab.transaction()
    with pytest.raises(InvalidArgumentError):
        tx.commit_offsets("g", offsets)


# --- consumer.transaction() ------------------------------------------------------------------------


@pytest.fixture
def pipeline(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("in", 2)
    store.create_topic("out", 3)
    store.append_batch("in", [Message(value=b"v%d" % i, key=b"k%d" % i, partition=i % 2) for i in range(20)])
    return store


def test_consumer_transaction_commits_positions_with_outputs(pipeline: eventstore.Store) -> None:
    store = pipeline
    c = tw.open_consumer(store)
    batch = c.poll(timeout_ms=0, max_records=5)
    assert sum(len(v) for v in batch.values()) == 5
    tw.transform(c, batch)
    assert store.group_offsets(tw.GROUP) == {tp: c.position(tp) for tp in batch}
    outs = read_all(store, "out")
    assert sorted(r.value for r in outs) == sorted(tw.derived(r.value) for rs in batch.values() for r in rs)
    # a transaction that fails commits neither outputs nor offsets
    before = store.group_offsets(tw.GROUP)
    batch = c.poll(timeout_ms=0, max_records=5)
    with pytest.raises(RuntimeError), c.transaction() as tx:
        tx.append("out", b"half")
        raise RuntimeError("handler failed")
    assert store.group_offsets(tw.GROUP) == before
    assert len(read_all(store, "out")) == 5
    c.close()
    with pytest.raises(IllegalStateError):
        store.consumer().transaction()


def _readme_rewind() -> str:
    """The README's lines that rewind a consumer after an aborted transaction."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    start = text.index("```python\nfor tp in consumer.assignment():  # after an aborted")
    return text[start + len("```python\n"):text.index("```", start + 3)]


@pytest.mark.parametrize("committed_first", [True, False])
def test_an_aborted_consumer_transaction_is_rewound_by_the_readme_lines(
        pipeline: eventstore.Store, committed_first: bool) -> None:
    store = pipeline
    c = tw.open_consumer(store)
    if committed_first:  # one transaction went through: its offsets are the ones to go back to
        tw.transform(c, c.poll(timeout_ms=0, max_records=5))
    expected = {tp: sorted(r.offset for r in rs) for tp, rs in c.poll(timeout_ms=0, max_records=7).items()}
    committed = {tp: c.committed(tp) for tp in c.assignment()}
    assert expected and all(expected[tp][0] == (committed[tp] or 0) for tp in expected)
    with pytest.raises(RuntimeError), c.transaction() as tx:
        tx.append("out", b"half")
        raise RuntimeError("handler failed")
    assert store.group_offsets(tw.GROUP) == {tp: o for tp, o in committed.items() if o is not None}
    exec(_readme_rewind(), {"consumer": c})
    for tp in c.assignment():
        assert c.position(tp) == (committed[tp] or store.offsets(tp.topic, tp.partition)[0])
    again: dict[TopicPartition, list[int]] = {}
    while batch := c.poll(timeout_ms=0):
        for tp, rs in batch.items():
            again.setdefault(tp, []).extend(r.offset for r in rs)
    for tp, offsets in expected.items():  # the records of the aborted transaction come again
        assert again[tp][:len(offsets)] == offsets
    c.close()


def test_consumer_transaction_is_fenced(pipeline: eventstore.Store) -> None:
    store = pipeline
    cfg: dict[str, Any] = {"group_id": "xform", "auto_offset_reset": "earliest", "enable_auto_commit": False,
                           "max_poll_interval_ms": 150, "session_timeout_ms": 150}
    zombie = store.consumer("in", **cfg)
    batch = zombie.poll(timeout_ms=0)
    assert batch and zombie.assignment() == {TP("in", 0), TP("in", 1)}
    fresh = store.consumer("in", **cfg)
    deadline = time.monotonic() + 5
    while len(fresh.assignment()) < 2:  # the zombie is expired after 150 ms without a poll
        fresh.poll(timeout_ms=20)
        assert time.monotonic() < deadline
    fresh.seek_to_beginning()  # what it polled while waiting is not processed
    with pytest.raises(CommitFailedError):
        tw.transform(zombie, batch)
    assert read_all(store, "out") == []
    assert store.group_offsets("xform") == {}
    assert outbox(store) == []
    # the new owner processes everything once
    while sum(fresh.position(tp) for tp in fresh.assignment()) < 20:
        b = fresh.poll(timeout_ms=0)
        if b:
            tw.transform(fresh, b)
    assert Counter(r.value for r in read_all(store, "out")) == Counter(
        tw.derived(b"v%d" % i) for i in range(20))
    fresh.close()
    zombie.close()


# --- crashes ------------------------------------------------------------------------------------------


def run_worker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True,
                          timeout=timeout)


def check_exactly_once(store: eventstore.Store) -> None:
    inputs = {(r.partition, r.offset): r for r in read_all(store, "in")}
    outs = read_all(store, "out")
    by_source = Counter(dict(r.headers)["src"] for r in outs)
    expected = {b"%d:%d" % key for key in inputs}
    missing = expected - set(by_source)
    assert not missing, f"{len(missing)} inputs have no output, e.g. {sorted(missing)[:5]}"
    dupes = {k: n for k, n in by_source.items() if n != 1}
    assert not dupes, f"{len(dupes)} inputs have duplicated outputs, e.g. {list(dupes.items())[:5]}"
    assert set(by_source) == expected
    for r in outs:
        p, o = map(int, dict(r.headers)["src"].split(b":"))
        assert r.value == tw.derived(inputs[(p, o)].value)
        assert r.key == inputs[(p, o)].key
    assert store.group_offsets(tw.GROUP) == {TP("in", p): store.offsets("in", p)[1] for p in range(2)}
    assert outbox(store) == []


@pytest.mark.slow
def test_exactly_once_across_sigkills(open_store, store_path: Path) -> None:
    store = open_store(durability="fsync")
    store.create_topic("in", 2)
    store.create_topic("out", 3)
    n = 6000
    store.append_batch("in", [Message(value=b"in-%d" % i, key=b"key-%d" % (i % 97)) for i in range(n)])
    store.close()
    rng = random.Random(20240611)
    kills = 0
    progress = []
    for attempt in range(14):
        proc = subprocess.Popen([sys.executable, str(WORKER), "consume", str(store_path), str(attempt)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY", proc.stderr.read() if proc.stderr else ""
            time.sleep(rng.uniform(0.0, 0.06))
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == -signal.SIGKILL and "DONE" not in out:
            kills += 1
        assert "Traceback" not in err, err
        progress.append(out.count("B "))
    assert kills >= 10, (kills, progress)
    done = run_worker("consume", str(store_path), "99")
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr
    store = open_store(store_path, durability="fsync")
    check_exactly_once(store)
    assert len(read_all(store, "out")) == n


@pytest.mark.parametrize("mode", ["raise", "exit", "partial"])
def test_crash_between_catalog_commit_and_relay(open_store, store_path: Path, mode: str) -> None:
    store = open_store(durability="fsync")
    store.create_topic("in", 2)
    store.create_topic("out", 3)
    store.append_batch("in", [Message(value=b"in-%d" % i, key=b"key-%d" % i, partition=i % 2)
                              for i in range(40)])
    store.close()
    crashed = run_worker("relay-crash", str(store_path), mode)
    assert crashed.returncode == 0, crashed.stderr
    assert ("RAISED" in crashed.stdout) == (mode == "raise")
    [line] = [ln for ln in crashed.stdout.splitlines() if ln.startswith("BATCH")]
    batch = {tuple(map(int, item.split(":"))) for item in line.split()[1:]}
    assert batch
    # inspect the store as the crash left it, before recovery
    import lmdb

    env = lmdb.open(str(store_path / "catalog"), max_dbs=16, readonly=True, lock=False)
    with env.begin() as txn:
        pending = list(txn.cursor(db=env.open_db(ck.DB_OUTBOX, txn=txn, create=False)))
    env.close()
    assert len(pending) == 1, "the committed transaction should still be in the outbox"
    # reopen: recovery relays the pending outputs exactly once
    store = open_store(store_path, durability="fsync")
    outs = read_all(store, "out")
    assert sorted(dict(r.headers)["src"] for r in outs) == sorted(b"%d:%d" % k for k in batch)
    assert len({txn_id(r) for r in outs}) == 1
    assert outbox(store) == []
    offsets = store.group_offsets(tw.GROUP)
    ends = {TP("in", p): max((o + 1 for q, o in batch if q == p), default=None) for p in range(2)}
    for tp, end in ends.items():
        if end is not None:
            assert offsets[tp] == end
    store.close()
    # reopening again does not relay twice; then the worker finishes the input
    store = open_store(store_path, durability="fsync")
    assert len(read_all(store, "out")) == len(batch)
    store.close()
    done = run_worker("consume", str(store_path), "7")
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr
    store = open_store(store_path, durability="fsync")
    check_exactly_once(store)
