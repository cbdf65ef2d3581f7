"""Atomic multi-partition appends, optionally together with consumer-group commits.

A transaction commits in one LMDB write transaction that records its output
records in the catalog's ``outbox`` database and its group offsets in
``cursors``: that commit is the point of no return. The outputs are then
relayed to their partitions (each record carrying an ``es.txn`` header with
the transaction id) and the outbox entry is deleted. If the process dies
between the two, ``open`` relays every pending entry, first checking each
target partition past the end it had at commit time for records of that
transaction, so an output is never written twice and never lost.

So a consumer that appends its handler's output and commits its offsets in one
transaction neither loses nor duplicates output across a crash.

A relay that fails after the commit (a full disk) does not undo it: ``commit``
raises ``TransactionRelayPendingError`` and the store's ``Relays`` keeps the
entry, relaying it again (skipping partitions that already have its records)
before the next transaction's, at ``flush``, and about once a second in the
background, in transaction-id order, until it is done or the store closes.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .catalog import cursors
from .catalog import keys as ck
from .errors import (
    EventStoreError,
    IllegalStateError,
    InvalidArgumentError,
    StorageError,
    TransactionRelayPendingError,
)
from .partitioner import partition_for_key
from .records import Message, OffsetAndMetadata, RecordMetadata, RecoveryEvent, TopicPartition
from .validation import check_group_id, check_plain_topic, normalize_item, normalize_offsets

if TYPE_CHECKING:
    from .client.coordinator import Member
    from .store import Store

log = logging.getLogger("eventstore")

TXN_HEADER = "es.txn"
_ID = struct.Struct(">Q")
_SCAN_RECORDS = 1000
RELAY_RETRY_S = 1.0  # how often a failed relay is tried again in the background


class _Output(msgspec.Struct, array_like=True):
    topic: str
    partition: int
    start_offset: int  # the partition's end offset when the transaction committed
    records: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]]
    incarnation: int = -1  # the topic's created_ms; -1: written before it was recorded


class _Entry(msgspec.Struct, array_like=True):
    txn_id: int
    committed_ms: int
    outputs: list[_Output]


_decode_entry = msgspec.msgpack.Decoder(_Entry).decode


class Transaction:
    """Collects appends (and offsets to commit); ``commit`` makes them all happen or none."""

    def __init__(self, store: Store, *, group_id: str | None = None,
                 member: Member | None = None) -> None:
        self._store = store
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
        cfg = self._store.topic(topic)
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
        """Commit atomically; returns the appended records' metadata in append order."""
        self._check_active()
        self._done = True
        store = self._store
        outputs = [
            _Output(tp.topic, tp.partition, store.offsets(tp.topic, tp.partition)[1], rows,
                    store.topic(tp.topic).created_ms)
            for tp, rows in self._outputs.items()
        ]
        entry = _Entry(0, _now_ms(), outputs)
        self._write_commit(entry)  # the decision: from here on, the transaction stands
        placed = store._relays.relay(entry)
        return [placed[tp][i] for tp, i in self._order]

    def _write_commit(self, entry: _Entry) -> None:
        catalog = self._store._catalog

        def write(txn: Any) -> None:
            meta = catalog.dbs[ck.DB_META]
            raw = txn.get(ck.META_TXN_SEQ, db=meta)
            entry.txn_id = (_ID.unpack(raw)[0] if raw else 0) + 1
            txn.put(ck.META_TXN_SEQ, _ID.pack(entry.txn_id), db=meta)
            if entry.outputs:
                txn.put(_ID.pack(entry.txn_id), msgspec.msgpack.encode(entry),
                        db=catalog.dbs[ck.DB_OUTBOX])
            if self._offsets and self._group_id is not None:
                cursors.put_cursors(txn, catalog, self._group_id, self._offsets, entry.committed_ms,
                                    self._store._configs)

        member = self._member
        if member is not None and self._offsets:
            with member.group.lock:  # fencing and the write happen as one step
                member.group.check_commit(member, self._offsets)
                catalog.write(write)
        else:
            catalog.write(write)

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


def relay(
    store: Store, entry: _Entry, *, check_existing: bool = False
) -> dict[TopicPartition, list[RecordMetadata]]:
    """Append a committed transaction's outputs, then delete its outbox entry."""
    header = (TXN_HEADER, _ID.pack(entry.txn_id))
    placed: dict[TopicPartition, list[RecordMetadata]] = {}
    for out in entry.outputs:
        tp = TopicPartition(out.topic, out.partition)
        if check_existing and _already_relayed(store, out, header[1]):
            continue
        messages = [
            Message(value=v, key=k, headers=[*h, header], partition=out.partition, timestamp_ms=ts)
            for ts, k, v, h in out.records
        ]
        placed[tp] = list(store.append_batch(out.topic, messages, partition=out.partition))
    for tp, metas in placed.items():  # durable in every mode before the outbox forgets them
        if metas:
            store._partition_log(tp.topic, tp.partition).wait_durable(metas[-1].offset + 1)
    store._catalog.delete(ck.DB_OUTBOX, _ID.pack(entry.txn_id))
    return placed


def _already_relayed(store: Store, out: _Output, txn_id: bytes) -> bool:
    start, end = store.offsets(out.topic, out.partition)
    offset = max(out.start_offset, start)
    while offset < end:  # bounded by what was appended since the commit
        records = store.read(out.topic, out.partition, offset, max_records=_SCAN_RECORDS)
        for record in records:  # recovery only: a bounded scan of the tail
            if (TXN_HEADER, txn_id) in record.headers:
                return True
        offset = records[-1].offset + 1
    return False


class Relays:
    """The committed transactions of a store whose relay failed, relayed again in id order."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()  # held while relaying what is pending
        self._pending: dict[int, _Entry] = {}
        self._thread: threading.Thread | None = None

    def relay(self, entry: _Entry) -> dict[TopicPartition, list[RecordMetadata]]:
        """Relay a transaction just committed, after those still pending; if that fails, keep
        it and raise ``TransactionRelayPendingError``."""
        if not entry.outputs:
            return {}
        if not self._pending:
            try:
                return relay(self._store, entry)
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

    def hold(self, entry: _Entry, error: BaseException) -> None:
        """Keep a committed entry whose relay failed, and retry it in the background."""
        log.warning("transaction %d committed; its relay failed and stays pending: %s",
                    entry.txn_id, error)
        with self._lock:
            self._pending[entry.txn_id] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._retry_loop, daemon=True,
                                                name=f"eventstore-relay:{self._store.path}")
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

    def join(self) -> None:
        """Wait for the background retry to end (the store's stop event is set)."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def _retry_loop(self) -> None:
        while not self._store._stop.wait(RELAY_RETRY_S):  # ends at close or when all is relayed
            with self._lock:
                self._drain()
                if not self._pending:
                    self._thread = None
                    return

    def _drain(self) -> tuple[dict[int, dict[TopicPartition, list[RecordMetadata]]], BaseException | None]:
        """Relay the pending entries in id order, stopping at the first that fails (lock held).

        One that cannot be relayed (its topic was deleted since) leaves the queue
        and stays in the outbox, as after a crash.
        """
        placed = {}
        for txn_id in sorted(self._pending):  # bounded by the pending entries
            entry = self._pending[txn_id]
            if relayable(self._store, entry):
                try:
                    placed[txn_id] = relay(self._store, entry, check_existing=True)
                except EventStoreError as e:
                    return placed, e
            del self._pending[txn_id]
        return placed, None


def relayable(store: Store, entry: _Entry) -> bool:
    """Whether every output's topic is there as it was at commit, and not a streams topic (which
    only the stream API writes)."""
    configs = store._configs
    return all(
        o.topic in configs and not configs[o.topic].streams
        and o.incarnation in (-1, configs[o.topic].created_ms)
        for o in entry.outputs
    )


def recover(store: Store) -> Relays:
    """Relay every committed but unrelayed transaction (on open), in id order.

    An entry with outputs to a topic deleted since (or made again), or to a
    streams topic, stays pending. One whose relay fails on the disk (full)
    is kept, and every later one behind it: the store opens, reports each as
    case T1 and relays them once it can.
    """
    relays = Relays(store)
    for _, value in store._catalog.items(ck.DB_OUTBOX):  # in transaction-id order
        entry = _decode_entry(value)
        if not relayable(store, entry):
            continue
        try:
            if relays._pending:
                raise TransactionRelayPendingError(entry.txn_id, "an earlier one is pending")
            relay(store, entry, check_existing=True)
        except (StorageError, TransactionRelayPendingError) as e:
            relays.hold(entry, e)
            store._report(RecoveryEvent(
                case="T1", path=os.path.join(store.path, "catalog"), position=0,
                detail=f"transaction {entry.txn_id} committed but not relayed ({e}); left "
                       "pending, relayed once it can be", extra={"txn_id": entry.txn_id}))
    return relays


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
