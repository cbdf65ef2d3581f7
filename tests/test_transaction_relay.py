"""A transaction whose relay to the log fails after it committed (issue 10, defect 3).

The catalog commit (outbox entry and group offsets) is the decision; relaying
the outputs to their partitions comes after it. When the relay fails (a full
disk), ``commit`` used to raise ``StorageFullError`` ("nothing was written"),
so a caller who retried had the outputs twice once the store relayed the
first entry at the next open; until then they were invisible, and the store
would not open while the disk stayed full. Now ``commit`` raises
``TransactionRelayPendingError`` (committed, relay pending), the store keeps
relaying in the process once space returns (the next commit, ``flush``, or a
retry in the background), in commit order and never twice, and it opens on a
full disk with the relay left pending.

The relay's writes are failed with ``storage/faults.py`` (ENOSPC on the
segment writes of the target topic); a real small tmpfs shows the same with
LMDB in the loop (skipped where mounting needs root we lack).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from siblings import load

import eventstore
from eventstore import (
    EventStoreError,
    NewEvent,
    StorageFullError,
    TopicPartition,
    TransactionRelayPendingError,
)
from eventstore.catalog import keys as ck
from eventstore.storage.faults import Fault, FaultPlan
from eventstore.transactions import TXN_HEADER

TP = TopicPartition
dfull = load("test_disk_full")
small_disk = dfull.small_disk  # the tmpfs fixture


def values(store: eventstore.Store, topic: str, partition: int = 0) -> list[bytes | None]:
    start, end = store.offsets(topic, partition)
    return [r.value for r in store.read(topic, partition, start, max_records=10_000)] if end > start else []


def outbox_ids(store: eventstore.Store) -> list[int]:
    return [int.from_bytes(k, "big") for k, _ in store.log.catalog.items(ck.DB_OUTBOX)]


def out_full(store: eventstore.Store, topic: str = "out") -> Fault:
    """Every segment write under ``topic``'s directory fails with ENOSPC until the plan is removed."""
    return Fault("write", where=os.path.join(store.path, "topics", topic) + os.sep, sticky=True)


def commit_one(store: eventstore.Store, value: bytes, offset: int | None = None,
               partitions: tuple[int, ...] = (0,)) -> list[eventstore.RecordMetadata]:
    tx = store.transaction()
    for p in partitions:
        tx.append("out", value, partition=p)
    if offset is not None:
        tx.commit_offsets("g", {TP("in", 0): offset})
    return tx.commit()


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # bounded by the timeout
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def io(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("in")
    store.create_topic("out", 2)
    store.append("in", b"x")
    return store


def test_a_relay_that_fails_after_the_commit_says_so(io: eventstore.Store) -> None:
    with FaultPlan([out_full(io)]) as plan:
        with pytest.raises(TransactionRelayPendingError) as caught:
            commit_one(io, b"v1", offset=1)
        assert plan.injected >= 1
        error = caught.value
        assert not isinstance(error, StorageFullError), "a retry on StorageFullError would duplicate"
        assert isinstance(error, EventStoreError)
        assert isinstance(error.__cause__, StorageFullError)
        assert error.txn_id == outbox_ids(io)[0]
        assert "committed" in str(error) and str(error.txn_id) in str(error)
        # the decision stands: the offsets are committed, the outputs are pending
        assert io.group_offsets("g") == {TP("in", 0): 1}
        assert values(io, "out") == []
        assert io.pending_transactions() == [error.txn_id]


def test_the_pending_relay_is_done_by_the_next_commit_in_commit_order(io: eventstore.Store) -> None:
    with FaultPlan([out_full(io)]):
        with pytest.raises(TransactionRelayPendingError):
            commit_one(io, b"first")
        with pytest.raises(TransactionRelayPendingError):
            commit_one(io, b"second")  # waits behind the first, also pending
    metas = commit_one(io, b"third")  # space came back
    assert values(io, "out") == [b"first", b"second", b"third"]
    assert [m.offset for m in metas] == [2]
    assert outbox_ids(io) == [] and io.pending_transactions() == []
    ids = [dict(r.headers)[TXN_HEADER] for r in io.read("out", 0, 0)]
    assert len(set(ids)) == 3


def test_flush_relays_what_is_pending(io: eventstore.Store) -> None:
    plan = FaultPlan([out_full(io)])
    with plan:
        with pytest.raises(TransactionRelayPendingError):
            commit_one(io, b"v")
        with pytest.raises(TransactionRelayPendingError):
            io.flush()  # still full: flush says the relay is still pending
    io.flush()
    assert values(io, "out") == [b"v"]
    assert io.pending_transactions() == []


def test_the_relay_is_retried_in_the_background_once_space_returns(io: eventstore.Store) -> None:
    with FaultPlan([out_full(io)]):
        with pytest.raises(TransactionRelayPendingError):
            commit_one(io, b"v", offset=1)
        time.sleep(1.5)  # retries in the meantime fail and change nothing
        assert values(io, "out") == []
    assert wait_until(lambda: values(io, "out") == [b"v"]), "the pending relay was never retried"
    assert wait_until(lambda: io.pending_transactions() == [] and outbox_ids(io) == [])
    time.sleep(1.5)
    assert values(io, "out") == [b"v"], "relayed twice"


def test_a_partly_relayed_transaction_is_not_duplicated_by_the_retry(io: eventstore.Store) -> None:
    """Partition 0 gets its records, partition 1's write fails: the retry appends only partition 1's."""
    where = os.path.join(io.path, "topics", "out", "1") + os.sep
    with FaultPlan([Fault("write", where=where, sticky=True)]):
        with pytest.raises(TransactionRelayPendingError):
            commit_one(io, b"both", partitions=(0, 1))
        assert values(io, "out", 0) == [b"both"]
        assert values(io, "out", 1) == []
    io.flush()
    assert values(io, "out", 0) == [b"both"] and values(io, "out", 1) == [b"both"]


def test_the_store_opens_with_the_relay_still_failing_and_relays_later(
    open_store: Callable[..., eventstore.Store], io: eventstore.Store
) -> None:
    with FaultPlan([out_full(io)]):
        with pytest.raises(TransactionRelayPendingError) as caught:
            commit_one(io, b"v", offset=1)
        io.close()
        store = open_store()  # the relay at open fails too: the store opens anyway
        assert [e.case for e in store.recovery_events] == ["T1"]
        assert str(caught.value.txn_id) in store.recovery_events[0].detail
        assert store.pending_transactions() == [caught.value.txn_id]
        assert values(store, "in") == [b"x"]  # read-only work goes on
        assert store.group_offsets("g") == {TP("in", 0): 1}
        assert store.check().ok
    store.flush()
    assert values(store, "out") == [b"v"]
    store.close()
    store = open_store()
    assert values(store, "out") == [b"v"] and outbox_ids(store) == []
    assert store.recovery_events == []


def test_a_pending_relay_to_a_topic_deleted_meanwhile_stays_in_the_outbox(io: eventstore.Store) -> None:
    with FaultPlan([out_full(io)]), pytest.raises(TransactionRelayPendingError) as caught:
        commit_one(io, b"v")
    io.delete_topic("out")
    io.flush()  # nothing to relay to: not an error, and nothing retried forever
    assert io.pending_transactions() == [caught.value.txn_id]  # as after a crash (section 13)
    io.create_topic("out", 2)  # the same name again: another topic
    io.flush()
    assert values(io, "out") == []
    assert wait_until(lambda: not io.transactions.retrying(), 5), "retried forever"


# --- a real full disk ------------------------------------------------------------------------


def test_a_full_tmpfs_under_a_relay(small_disk: Callable[[int], Path]) -> None:
    """LMDB reuses the pages it freed, so the catalog commit fits where the relay's 256 KiB do not."""
    disk = small_disk(8 * dfull.MiB)
    path = disk / "s"
    big = bytes(256 * 1024)
    store = eventstore.open(path)
    try:
        store.create_topic("in")
        store.create_topic("out")
        store.append("in", b"x")
        for _ in range(3):  # the catalog holds ~1 MiB in the outbox each time, freed by the relay
            tx = store.transaction()
            for _ in range(4):
                tx.append("out", b"w" * 256 * 1024)
            tx.commit()
        ballast = dfull.fill(disk)
        error: BaseException | None = None
        for n in range(20):  # bounded: the disk is full from the first
            tx = store.transaction()
            tx.append("out", big, key=b"%d" % n)
            tx.commit_offsets("g", {TP("in", 0): 1})
            try:
                tx.commit()
            except EventStoreError as e:
                error = e
                break
        assert isinstance(error, TransactionRelayPendingError), f"{type(error).__name__}: {error}"
        assert store.group_offsets("g") == {TP("in", 0): 1}
        assert len(values(store, "out")) == 12 + n
        ballast.unlink()
        assert wait_until(lambda: len(values(store, "out")) == 13 + n), "not relayed once space came back"
        assert store.pending_transactions() == []
    finally:
        store.close()
    with eventstore.open(path) as store:
        assert len(values(store, "out")) == 13 + n
        assert store.check().ok


def test_a_store_opens_on_a_full_tmpfs_with_a_relay_pending(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(8 * dfull.MiB)
    path = disk / "s"
    with eventstore.open(path) as store:
        store.create_topic("in")
        store.create_topic("out")
        store.append("in", b"x")
        store.reset_group_offsets("g", {TP("in", 0): 1})
        tx = store.transaction()
        for _ in range(4):
            tx.append("out", b"w" * 256 * 1024)
        tx.commit()
        with FaultPlan([out_full(store)]), pytest.raises(TransactionRelayPendingError):
            commit_one(store, bytes(256 * 1024))
        ballast = dfull.fill(disk)  # the store is closed with the disk full
    store = eventstore.open(path)  # on a disk that is still full
    try:
        assert [e.case for e in store.recovery_events] == ["T1"]
        assert len(values(store, "out")) == 4
        assert store.group_offsets("g") == {TP("in", 0): 1}
        assert store.check().ok
        ballast.unlink()
        store.flush()
        assert len(values(store, "out")) == 5
    finally:
        store.close()


def test_a_store_with_streams_opens_on_a_full_tmpfs(small_disk: Callable[[int], Path]) -> None:
    """Open writes only what it must: the lock file's pid and the stream index's open mark wait
    for space (the mark goes in with the first index write that gets through)."""
    disk = small_disk(8 * dfull.MiB)
    path = disk / "s"
    with eventstore.open(path) as store:
        store.create_topic("in")
        store.append("in", b"x")
        store.reset_group_offsets("g", {TP("in", 0): 1})
        for i in range(100):
            store.append_to_stream(f"acct-{i % 10}", [NewEvent(type="deposit", data=b"%d" % i)])
    ballast = dfull.fill(disk)
    for _ in range(2):  # a failed open would also leave the lock held
        with eventstore.open(path) as store:
            assert len(store.read_stream("acct-3")) == 10
            assert store.group_offsets("g") == {TP("in", 0): 1}
            assert store.check().ok
    ballast.unlink()
    with eventstore.open(path) as store:
        store.append_to_stream("acct-3", [NewEvent(type="deposit", data=b"new")])
        assert len(store.read_stream("acct-3")) == 11
        assert store.streams.index.clean_mark() == b"0", "written to, yet not marked open"
