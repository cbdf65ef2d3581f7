"""Atomic multi-partition appends, optionally together with consumer-group commits.

A transaction commits in one LMDB write transaction that records its output
records in the catalog's ``outbox`` database and its group offsets in
``cursors`` (the groups' fenced ``commit_offsets``): that commit is the point
of no return. The outputs are then relayed to their partitions (each record
carrying an ``es.txn`` header with the transaction id) and the outbox entry is
deleted. If the process dies between the two, ``open`` relays every pending
entry, first checking each target partition past the end it had at commit
time for records of that transaction, so an output is never written twice and
never lost.

So a consumer that appends its handler's output and commits its offsets in one
transaction neither loses nor duplicates output across a crash.

A relay that fails after the commit (a full disk) does not undo it: ``commit``
raises ``TransactionRelayPendingError`` and ``Transactions`` keeps the entry,
relaying it again (skipping partitions that already have its records) before
the next transaction's, at ``retry`` (the store's ``flush``), and about once a
second in the background, in transaction-id order, until it is done or the
store closes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from .catalog import outbox
from .catalog.outbox import Entry, Output
from .errors import (
    EventStoreError,
    IllegalStateError,
    InvalidArgumentError,
    StorageError,
    TransactionRelayPendingError,
)
from .groups import GroupCoordinator, Member
from .log import Log
from .partitioner import partition_for_key
from .records import Message, OffsetAndMetadata, RecordMetadata, RecoveryEvent, TopicPartition
from .validation import check_group_id, check_plain_topic, normalize_item, normalize_offsets

__all__ = ["RELAY_RETRY_S", "TXN_HEADER", "Transaction", "Transactions", "relay", "relayable"]

log = logging.getLogger("eventstore")

TXN_HEADER = "es.txn"
_SCAN_RECORDS = 1000
RELAY_RETRY_S = 1.0  # how often a failed relay is tried again in the background

Placed = dict[TopicPartition, list[RecordMetadata]]


class Transactions:
    """The transactions of one log: it begins them, relays the committed ones, and keeps those
    whose relay failed, relaying them again in id order. Made when the store opens: it relays
    what the last run left in the outbox (recovery)."""

    def __init__(self, log: Log, groups: GroupCoordinator) -> None:
        self.log = log
        self.groups = groups
        self._lock = threading.Lock()  # held while relaying what is pending
        self._pending: dict[int, Entry] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        log.add_close_hook(self.close)
        self._recover()

    def begin(self, *, group_id: str | None = None, member: Member | None = None) -> Transaction:
        """A new transaction; with ``member``, its offsets are committed as that member's."""
        self.log.check_open()
        return Transaction(self, group_id=group_id, member=member)

    def pending_ids(self) -> list[int]:
        """Ids of committed transactions whose records are not all in the log yet, in commit
        order: those being relayed, and those whose topic was deleted since."""
        self.log.check_open()
        return [entry.txn_id for entry in outbox.pending(self.log.catalog)]

    def relay(self, entry: Entry) -> Placed:
        """Relay a transaction just committed, after those still pending; if that fails, keep
        it and raise ``TransactionRelayPendingError``."""
        if not entry.outputs:
            return {}
        if not self._pending:
            try:
                return relay(self.log, entry)
            except EventStoreError as e:
                self.hold(entry, e)
                raise TransactionRelayPendingError(entry.txn_id, str(e)) from e
        with self._lock:
            self._pending[entry.txn_id] = entry
            placed, error = self._drain()
        if entry.txn_id not in placed:
            reason = str(error) if error is not None else "a topic it appends to was deleted"
            raise TransactionRelayPendingError(entry.txn_id, reason) from error
        return placed[entry.txn_id]

    def hold(self, entry: Entry, error: BaseException) -> None:
        """Keep a committed entry whose relay failed, and retry it in the background."""
        log.warning("transaction %d committed; its relay failed and stays pending: %s",
                    entry.txn_id, error)
        with self._lock:
            self._pending[entry.txn_id] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._retry_loop, daemon=True,
                                                name=f"eventstore-relay:{self.log.path}")
                self._thread.start()

    def retry(self) -> None:
        """Relay what is pending now; raise ``TransactionRelayPendingError`` if some still is."""
        if not self._pending:
            return
        with self._lock:
            _, error = self._drain()
            first = min(self._pending, default=None)
        if first is not None:
            raise TransactionRelayPendingError(first, str(error)) from error

    def retrying(self) -> bool:
        """Whether the background retry runs (something committed is still to be relayed)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def close(self) -> None:
        """Stop the background retry (a close hook of the log); what is pending stays in the
        outbox for the next open."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()

    def _retry_loop(self) -> None:
        while not self._stop.wait(RELAY_RETRY_S):  # ends at close or when all is relayed
            with self._lock:
                self._drain()
                if not self._pending:
                    self._thread = None
                    return

    def _drain(self) -> tuple[dict[int, Placed], BaseException | None]:
        """Relay the pending entries in id order, stopping at the first that fails (lock held).

        One that cannot be relayed (its topic was deleted since) leaves the queue
        and stays in the outbox, as after a crash.
        """
        placed = {}
        for txn_id in sorted(self._pending):  # bounded by the pending entries
            entry = self._pending[txn_id]
            if relayable(self.log, entry):
                try:
                    placed[txn_id] = relay(self.log, entry, check_existing=True)
                except EventStoreError as e:
                    return placed, e
            del self._pending[txn_id]
        return placed, None

    def _recover(self) -> None:
        """Relay every committed but unrelayed transaction (on open), in id order.

        An entry with outputs to a topic deleted since (or made again), or to a
        streams topic, stays pending. One whose relay fails on the disk (full)
        is kept, and every later one behind it: the store opens, reports each as
        case T1 and relays them once it can.
        """
        for entry in outbox.pending(self.log.catalog):  # in transaction-id order
            if not relayable(self.log, entry):
                continue
            try:
                if self._pending:
                    raise TransactionRelayPendingError(entry.txn_id, "an earlier one is pending")
                relay(self.log, entry, check_existing=True)
            except (StorageError, TransactionRelayPendingError) as e:
                self.hold(entry, e)
                self.log.report(RecoveryEvent(
                    case="T1", path=os.path.join(self.log.path, "catalog"), position=0,
                    detail=f"transaction {entry.txn_id} committed but not relayed ({e}); left "
                           "pending, relayed once it can be", extra={"txn_id": entry.txn_id}))


class Transaction:
    """Collects appends (and offsets to commit); ``commit`` makes them all happen or none."""

    def __init__(self, transactions: Transactions, *, group_id: str | None = None,
                 member: Member | None = None) -> None:
        self._transactions = transactions
        self._log = transactions.log
        self._group_id = group_id
        self._member = member
        self._outputs: dict[TopicPartition, list[tuple[int, bytes | None, bytes | None, Any]]] = {}
        self._order: list[tuple[TopicPartition, int]] = []
        self._offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self._done = False
        self._round_robin = 0

    def append(self, topic: str, value: bytes | None, *, key: bytes | None = None,
               headers: Any = None, partition: int | None = None,
               timestamp_ms: int | None = None) -> None:
        """Add a record; it is written only when the transaction commits."""
        self._check_active()
        cfg = self._log.topic(topic)
        check_plain_topic(cfg)
        message = Message(value=value, key=key, headers=headers, partition=partition,
                          timestamp_ms=timestamp_ms)
        key_b, value_b, hdrs, part, ts = normalize_item(cfg, message, len(self._order))
        if part is None:
            if key_b is not None:
                part = partition_for_key(key_b, cfg.partitions)
            else:
                part = self._round_robin % cfg.partitions
                self._round_robin += 1
        tp = TopicPartition(topic, part)
        rows = self._outputs.setdefault(tp, [])
        self._order.append((tp, len(rows)))
        rows.append((ts if ts is not None else _now_ms(), key_b, value_b, list(hdrs)))

    def commit_offsets(self, group_id: str,
                       offsets: Mapping[TopicPartition, int | OffsetAndMetadata]) -> None:
        """Also commit these offsets for ``group_id`` when the transaction commits."""
        self._check_active()
        if self._group_id is not None and group_id != self._group_id:
            raise InvalidArgumentError(
                f"this transaction commits for group {self._group_id!r}, not {group_id!r}"
            )
        check_group_id(group_id)
        normalized = normalize_offsets(offsets)
        self._group_id = group_id
        self._offsets.update(normalized)

    def commit(self) -> list[RecordMetadata]:
        """Commit atomically; returns the appended records' metadata in append order.

        If the records cannot all be appended after the commit (a full disk),
        ``TransactionRelayPendingError``: the commit stands, and the store
        appends them once it can.
        """
        self._check_active()
        self._done = True
        log = self._log
        outputs = [
            Output(tp.topic, tp.partition, log.offsets(tp.topic, tp.partition)[1], rows,
                   log.topic(tp.topic).created_ms)
            for tp, rows in self._outputs.items()
        ]
        entry = Entry(0, _now_ms(), outputs)
        self._write_commit(entry)  # the decision: from here on, the transaction stands
        placed = self._transactions.relay(entry)
        return [placed[tp][i] for tp, i in self._order]

    def _write_commit(self, entry: Entry) -> None:
        """The point of no return: the outbox entry and the offsets, in one catalog write
        (the group's fenced commit when there are offsets)."""
        catalog = self._log.catalog

        def write_outbox(txn: Any) -> None:
            entry.txn_id = outbox.next_id(txn, catalog)
            if entry.outputs:
                outbox.put(txn, catalog, entry)

        member = self._member
        if self._offsets and self._group_id is not None:
            member_id, generation = (None, -1) if member is None else (member.member_id, member.generation)
            self._transactions.groups.commit_offsets(self._group_id, member_id, generation,
                                                     self._offsets, txn=write_outbox)
        else:
            catalog.write(write_outbox)

    def abort(self) -> None:
        """Drop everything collected; nothing was written."""
        self._done = True
        self._outputs.clear()
        self._offsets.clear()

    def _check_active(self) -> None:
        if self._done:
            raise IllegalStateError("transaction already committed or aborted")

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def relay(log: Log, entry: Entry, *, check_existing: bool = False) -> Placed:
    """Append a committed transaction's outputs, then delete its outbox entry."""
    header = (TXN_HEADER, outbox.id_bytes(entry.txn_id))
    placed: Placed = {}
    for out in entry.outputs:
        tp = TopicPartition(out.topic, out.partition)
        if check_existing and _already_relayed(log, out, header[1]):
            continue
        messages = [
            Message(value=v, key=k, headers=[*h, header], partition=out.partition, timestamp_ms=ts)
            for ts, k, v, h in out.records
        ]
        placed[tp] = list(log.append_batch(out.topic, messages, partition=out.partition))
    # durable in every mode before the outbox forgets them
    log.barrier({tp: metas[-1].offset + 1 for tp, metas in placed.items() if metas})
    outbox.delete(log.catalog, entry.txn_id)
    return placed


def relayable(log: Log, entry: Entry) -> bool:
    """Whether every output's topic is there as it was at commit, and not a streams topic (which
    only the stream API writes)."""
    for o in entry.outputs:  # bounded by the entry's partitions
        cfg = log.find_topic(o.topic)
        if cfg is None or cfg.streams or o.incarnation not in (-1, cfg.created_ms):
            return False
    return True


def _already_relayed(log: Log, out: Output, txn_id: bytes) -> bool:
    start, end = log.offsets(out.topic, out.partition)
    offset = max(out.start_offset, start)
    while offset < end:  # bounded by what was appended since the commit
        records = log.read(out.topic, out.partition, offset, max_records=_SCAN_RECORDS)
        for record in records:  # recovery only: a bounded scan of the tail
            if (TXN_HEADER, txn_id) in record.headers:
                return True
        offset = records[-1].offset + 1
    return False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
