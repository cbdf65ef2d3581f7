"""The store under injected disk faults, against an in-memory model (issue 10, the suite).

A Hypothesis state machine appends (single records and batches) to small
segments so that they roll, applies retention, creates and deletes topics,
flushes (checkpoints), closes and reopens, and kills the store (what SIGKILL
leaves), each operation possibly under a fault of ``storage/faults.py``: the
N-th write, fsync, directory fsync, rename, truncation, unlink or file creation
fails with ENOSPC or EIO (once, or from then on), or a write is cut short.

After every step the store must agree with the model:

* nothing acknowledged is lost or duplicated, and nothing is garbled: every
  partition reads back exactly the acknowledged records from its log start
  (retention only ever takes whole segments from the front);
* a failed operation is never half-visible: a failed append (a batch is one)
  appears whole at its offsets after a reopen, or not at all; a failed topic
  creation or deletion leaves the topic as it was or as it was asked to be;
* every failure is an ``EventStoreError`` (``StorageError`` here);
* once the fault is gone the store reopens, always.

``CAMPAIGN`` counts what the runs did (faults injected, acknowledged records,
failed operations); ``test_the_campaign_injected_faults`` checks and prints them
(``ES_FAULT_EXAMPLES=N`` runs a longer campaign).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from siblings import close_checked, crash

import eventstore
from eventstore import EventStoreError, StorageError
from eventstore.storage import faults
from eventstore.storage.faults import Fault, FaultPlan

NAMES = ("a", "b", "c")
SEGMENT_BYTES = 1024
CAMPAIGN: Counter[str] = Counter()


# Writes and syncs are what appends, rolls and checkpoints do most: they are drawn more often,
# and early calls more often than late ones (most operations make only a few calls of a kind).
_KINDS_WEIGHTED = sorted(faults.KINDS) + ["write"] * 3 + ["fsync"] * 2
_NTH_WEIGHTED = [1, 1, 1, 1, 2, 2, 3, 4, 6, 8]


@st.composite
def fault_strategy(draw: Any) -> Fault:
    kind = draw(st.sampled_from(_KINDS_WEIGHTED))
    return Fault(kind, nth=draw(st.sampled_from(_NTH_WEIGHTED)),
                 error=draw(st.sampled_from(["ENOSPC", "EIO"])),
                 short=kind == "write" and draw(st.booleans()), sticky=draw(st.booleans()))


maybe_fault = st.none() | fault_strategy()
values = st.binary(min_size=0, max_size=300)


@dataclass
class PartitionModel:
    records: list[bytes] = field(default_factory=list)  # acknowledged, by offset
    # failed appends since the last acknowledged one: each may sit whole after ``records``
    # (one of them at most: a failed write leaves nothing and its offsets are used again,
    # a failed sync fails the partition until it is reopened), or none
    maybe: list[list[bytes]] = field(default_factory=list)
    start: int = 0  # the log start offset last seen


@dataclass
class TopicModel:
    partitions: list[PartitionModel]
    retention: bool


class FaultMachine(RuleBasedStateMachine):
    """The store (durability fsync) beside its model; faults only inside the operation drawn."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="es-faults-"))
        self.path = self.dir / "s"
        self.store: eventstore.Store | None = None
        self.topics: dict[str, TopicModel] = {}
        self.unsure: dict[str, TopicModel | None] = {}  # topics a failed create/delete left unsure
        self.counter = 0
        self.failing = False  # an operation failed: a partition may refuse all until reopened
        CAMPAIGN["runs"] += 1

    @initialize(retention=st.booleans())
    def open_store(self, retention: bool) -> None:
        self.store = eventstore.open(self.path)
        self.s.create_topic("a", 2, segment_bytes=SEGMENT_BYTES,
                            retention_bytes=3 * SEGMENT_BYTES if retention else None)
        self.topics["a"] = TopicModel([PartitionModel(), PartitionModel()], retention)

    def teardown(self) -> None:
        close_checked(self.store, self.dir)

    # --- running one operation under a fault ---------------------------------------------------

    @contextlib.contextmanager
    def faulty(self, fault: Fault | None) -> Iterator[list[EventStoreError]]:
        """Run the block under ``fault``; an EventStoreError it raises is collected, not raised."""
        failed: list[EventStoreError] = []
        plan = FaultPlan([fault] if fault is not None else [])
        try:
            with plan:
                yield failed
        except EventStoreError as e:
            assert isinstance(e, StorageError), f"{type(e).__name__} under {fault}: {e}"
            failed.append(e)
            CAMPAIGN["failed operations"] += 1
        CAMPAIGN["faults injected"] += plan.injected
        if failed and not self.failing:
            assert plan.injected, f"an operation failed with no fault injected: {failed[0]}"
        self.failing = self.failing or bool(failed)

    def value(self, data: bytes) -> bytes:
        self.counter += 1
        return b"%06d:" % self.counter + data

    @property
    def s(self) -> eventstore.Store:
        assert self.store is not None
        return self.store

    # --- topics -------------------------------------------------------------------------------

    @precondition(lambda self: len(self.topics) < len(NAMES))
    @rule(name=st.sampled_from(NAMES), partitions=st.integers(1, 2), retention=st.booleans(),
          fault=maybe_fault)
    def create_topic(self, name: str, partitions: int, retention: bool, fault: Fault | None) -> None:
        if name in self.topics or name in self.unsure:
            return
        with self.faulty(fault) as failed:
            self.s.create_topic(name, partitions, segment_bytes=SEGMENT_BYTES,
                                retention_bytes=3 * SEGMENT_BYTES if retention else None)
        model = TopicModel([PartitionModel() for _ in range(partitions)], retention)
        if failed:
            assert name not in {c.name for c in self.s.topics()}, "a failed creation is visible"
            self.unsure[name] = model  # on disk after all (whole) or not: the next open tells
        else:
            self.topics[name] = model

    @precondition(lambda self: bool(self.topics))
    @rule(data=st.data(), fault=maybe_fault)
    def delete_topic(self, data: st.DataObject, fault: Fault | None) -> None:
        name = data.draw(st.sampled_from(sorted(self.topics)))
        with self.faulty(fault) as failed:
            self.s.delete_topic(name)
        model = self.topics.pop(name)
        if failed and name in {c.name for c in self.s.topics()}:
            self.topics[name] = model  # the rename failed: nothing was deleted
        elif failed:
            self.unsure[name] = None  # gone in this run; the next open must not bring it back

    # --- appends --------------------------------------------------------------------------------

    def pick(self, data: st.DataObject) -> tuple[str, int, PartitionModel]:
        name = data.draw(st.sampled_from(sorted(self.topics)))
        topic = self.topics[name]
        p = data.draw(st.integers(0, len(topic.partitions) - 1))
        return name, p, topic.partitions[p]

    @precondition(lambda self: bool(self.topics))
    @rule(data=st.data(), value=values, fault=maybe_fault)
    def append(self, data: st.DataObject, value: bytes, fault: Fault | None) -> None:
        self.append_values(data, [self.value(value)], fault)

    @precondition(lambda self: bool(self.topics))
    @rule(data=st.data(), batch=st.lists(values, min_size=1, max_size=8), fault=maybe_fault)
    def append_batch(self, data: st.DataObject, batch: list[bytes], fault: Fault | None) -> None:
        self.append_values(data, [self.value(v) for v in batch], fault)

    def append_values(self, data: st.DataObject, batch: list[bytes], fault: Fault | None) -> None:
        name, p, part = self.pick(data)
        base = -1
        with self.faulty(fault) as failed:
            if len(batch) == 1:
                base = self.s.append(name, batch[0], partition=p).offset
            else:
                base = self.s.append_batch(name, batch, partition=p)[0].offset
        if failed:
            part.maybe.append(batch)
            return
        if base > len(part.records):  # a failed append was written (and synced) after all
            between = [r.value for r in self.s.read(name, p, len(part.records),
                                                     max_records=base - len(part.records))]
            assert between in part.maybe, f"{name}/{p}: records nobody acknowledged before {base}"
            part.records += between
        assert base == len(part.records), \
            f"{name}/{p}: appended at {base}, the model expected {len(part.records)}"
        part.maybe = []
        part.records += batch
        CAMPAIGN["acknowledged records"] += len(batch)

    # --- maintenance ---------------------------------------------------------------------------

    @precondition(lambda self: bool(self.topics))
    @rule(fault=maybe_fault)
    def retention(self, fault: Fault | None) -> None:
        with self.faulty(fault):
            self.s.enforce_retention()

    @rule(fault=maybe_fault)
    def flush(self, fault: Fault | None) -> None:
        with self.faulty(fault):
            self.s.flush()

    @rule(fault=maybe_fault)
    def reopen(self, fault: Fault | None) -> None:
        """Close, then open under the fault; if that open fails, open again without it."""
        try:
            self.s.close()
        except EventStoreError:
            CAMPAIGN["failed closes"] += 1
            crash(self.s)
        self.store = None
        with self.faulty(fault):
            self.store = eventstore.open(self.path)
        if self.store is None:
            self.open_after_fault()
        self.settle()

    @rule()
    def kill(self) -> None:
        """What SIGKILL leaves: nothing synced or checkpointed beyond what was, then open."""
        crash(self.s)
        self.store = None
        self.open_after_fault()
        self.settle()

    def open_after_fault(self) -> None:
        try:
            self.store = eventstore.open(self.path)
        except EventStoreError:
            CAMPAIGN["failed reopens"] += 1
            raise

    def settle(self) -> None:
        """After an open: resolve what failed operations left unsure."""
        self.failing = False
        on_disk = {c.name: c for c in self.s.topics()}
        for name, model in self.unsure.items():
            if name in on_disk:
                assert model is not None, f"deleted topic {name!r} came back"
                assert on_disk[name].partitions == len(model.partitions)
                self.topics[name] = model
        self.unsure.clear()
        assert set(on_disk) == set(self.topics), f"topics {sorted(on_disk)}, model {sorted(self.topics)}"
        for name, topic in self.topics.items():
            for p, part in enumerate(topic.partitions):
                self.compare(name, p, part, reopened=True)

    # --- the model's checks ----------------------------------------------------------------------

    @invariant()
    def agrees(self) -> None:
        if self.store is None:
            return
        for name, topic in self.topics.items():
            for p, part in enumerate(topic.partitions):
                self.compare(name, p, part, reopened=False)

    def compare(self, name: str, p: int, part: PartitionModel, *, reopened: bool) -> None:
        start, end = self.s.offsets(name, p)
        got = [r.value for r in read_all(self.s, name, p, start, end)]
        topic = self.topics[name]
        if not topic.retention:
            assert start == 0, f"{name}/{p}: log start {start} without retention"
        certain = part.records[start:]
        assert got[: len(certain)] == certain, f"{name}/{p}: acknowledged records lost or garbled"
        extra = got[len(certain):]
        if extra:
            assert extra in part.maybe, f"{name}/{p}: records nobody acknowledged: {extra[:3]}"
            part.records += extra
            part.maybe = []
        elif reopened:
            part.maybe = []  # not there after an open: gone for good
        part.start = start


def read_all(store: eventstore.Store, topic: str, partition: int, start: int, end: int) -> list[Any]:
    out: list[Any] = []
    offset = start
    while offset < end:  # bounded: each read returns at least one record
        batch = store.read(topic, partition, offset, max_records=1000)
        assert batch, f"empty read at {offset} below {end}"
        out.extend(batch)
        offset = batch[-1].offset + 1
    return out


TestFaults = FaultMachine.TestCase
TestFaults.settings = settings(  # ES_FAULT_EXAMPLES=N runs a longer campaign
    max_examples=int(os.environ.get("ES_FAULT_EXAMPLES", settings.default.max_examples)),
    stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFaults = pytest.mark.slow(TestFaults)  # type: ignore[misc]


def test_the_campaign_injected_faults() -> None:
    """After TestFaults (pytest runs a file's tests in order): its runs injected faults and
    failed operations, and acknowledged records, so the machine tested something. A code path
    that stopped going through storage/disk.py would show here. Prints the figures (-s)."""
    if not CAMPAIGN["runs"]:
        pytest.skip("TestFaults did not run in this session")
    print("fault campaign:", dict(CAMPAIGN))
    assert CAMPAIGN["faults injected"] > CAMPAIGN["runs"] // 4, dict(CAMPAIGN)
    assert CAMPAIGN["failed operations"] > 0 and CAMPAIGN["acknowledged records"] > 0, dict(CAMPAIGN)
