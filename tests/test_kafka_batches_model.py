"""A model test: native appends and Kafka batches (every codec, headers with null values, null
keys and values) mixed at random in small segments, read back from every offset, across
reopens, through the owner and a read-only view, against a list per partition."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from siblings import load

import eventstore
from eventstore import Message

kit = load("test_kafka_batches")

TS = 1_700_000_000_000
PARTITIONS = 2
header_values = st.one_of(st.none(), st.binary(max_size=8))
headers = st.lists(st.tuples(st.sampled_from(["a", "b", "\u00e9"]), header_values), max_size=3)
native_headers = st.lists(st.tuples(st.sampled_from(["a", "b", "\u00e9"]), st.binary(max_size=8)), max_size=3)
keys = st.one_of(st.none(), st.binary(max_size=12))
values = st.one_of(st.none(), st.binary(max_size=300))


class MixedBatches(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="es-kafka-model-")
        self.store = eventstore.open(self.directory, durability="none")
        self.store.create_topic("t", PARTITIONS, segment_bytes=2048)
        self.model: dict[int, list[tuple[Any, ...]]] = {p: [] for p in range(PARTITIONS)}
        self.clock = TS

    @rule(partition=st.integers(0, PARTITIONS - 1),
          rows=st.lists(st.tuples(keys, values, headers), min_size=1, max_size=6),
          codec=st.integers(0, 4))
    def append_kafka(self, partition: int, rows: list[Any], codec: int) -> None:
        self.clock += 7
        batch = kit.kafka_batch(rows, codec, ts=self.clock)
        result = self.store.log.append_kafka("t", partition, batch)
        assert result.base_offset == len(self.model[partition])
        self.model[partition] += kit.expected(rows, result.base_offset, self.clock)

    @rule(partition=st.integers(0, PARTITIONS - 1),
          rows=st.lists(st.tuples(keys, values, native_headers), min_size=1, max_size=6))
    def append_native(self, partition: int, rows: list[Any]) -> None:
        self.clock += 7
        messages = [Message(key=k, value=v, headers=list(h), timestamp_ms=self.clock + i)
                    for i, (k, v, h) in enumerate(rows)]
        metas = self.store.append_batch("t", messages, partition=partition)
        assert metas[0].offset == len(self.model[partition])
        self.model[partition] += kit.expected(rows, metas[0].offset, self.clock)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def read_from_anywhere(self, data: st.DataObject) -> None:
        partition = data.draw(st.sampled_from([p for p, rows in self.model.items() if rows]))
        rows = self.model[partition]
        offset = data.draw(st.integers(0, len(rows) - 1))
        limit = data.draw(st.integers(1, 10))
        got = self.store.read("t", partition, offset, max_records=limit)
        assert kit.rows_of(got) == rows[offset:offset + limit]
        assert self.store.offset_for_time("t", partition, rows[offset][1]) == next(
            r[0] for r in rows if r[1] >= rows[offset][1])

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = eventstore.open(self.directory, durability="none")

    @invariant()
    def everything_reads_back(self) -> None:
        for p, rows in self.model.items():
            assert self.store.offsets("t", p) == (0, len(rows))
            assert kit.rows_of(self.store.read("t", p, 0, max_records=10_000)) == rows

    def teardown(self) -> None:
        try:
            report = self.store.check()
            assert report.ok, report.problems
            self.store.flush()
            with eventstore.open_reader(self.directory) as reader:
                for p, rows in self.model.items():
                    assert kit.rows_of(reader.read("t", p, 0, max_records=10_000)) == rows
            self.store.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


TestMixedBatches = MixedBatches.TestCase
