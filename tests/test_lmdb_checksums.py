"""Checksummed LMDB values (issue 10, defect 5; docs/format.md, section 6.1).

A flipped bit in an LMDB value used to be served: a stream index's copy of an
event came back from ``read_stream`` as the event's data, a committed offset
(300 -> 296) came back from ``group_offsets``. Every value of the catalog and
of the stream index now carries an xxh3-64 checksum, checked on read: derived
data is rebuilt, primary data is a ``CorruptionError`` naming the key. A
catalog of format 1 (no checksums) is converted at open.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import eventstore
from eventstore import CorruptionError, TopicPartition
from eventstore.catalog import keys
from eventstore.sourcing.events import NewEvent
from eventstore.sourcing.projections import Projection, ProjectionRunner

OLD_STORE = Path(__file__).parent / "data" / "catalog-v1" / "store"


class _Counter(Projection):
    def handle(self, event: Any, state: Any) -> None:
        state.add(b"events", 1)
        state.put(b"last", event.data)


def _flip_value(data_file: Path, key: bytes, value_prefix: bytes, at: int, bit: int) -> None:
    """Flip ``bit`` of the byte ``at`` past the start of the value stored under ``key`` (an LMDB
    leaf node holds the key, then the value); the value must start with ``value_prefix``.
    Every live and stale copy is flipped."""
    data = bytearray(data_file.read_bytes())
    flipped = 0
    start = data.find(key)
    while start >= 0:  # bounded by the file
        value = start + len(key)
        if data[value:value + len(value_prefix)] == value_prefix:
            data[value + at] ^= 1 << bit
            flipped += 1
        start = data.find(key, start + 1)
    assert flipped, f"{key!r} with a value starting {value_prefix!r} not found"
    data_file.write_bytes(bytes(data))


def test_a_flipped_committed_offset_is_a_corruption_error_naming_it(tmp_path: Path) -> None:
    """The issue's case: offset 300 of a group read back as 296."""
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        store.create_topic("t", 2)
        for i in range(300):
            store.append("t", b"%d" % i, partition=0)
        store.append("t", b"x" * 7, partition=1)
        store.reset_group_offsets("billing", {TopicPartition("t", 0): 300, TopicPartition("t", 1): 1})
    # [300, "", committed_ms, incarnation]: 0x94, then 300 as uint16 0xcd 0x01 0x2c
    _flip_value(path / "catalog" / "data.mdb", keys.cursor_key("billing", "t", 0), b"\x94\xcd\x01\x2c", 3, 2)
    with eventstore.open(path) as store:
        with pytest.raises(CorruptionError) as info:
            store.group_offsets("billing")
        assert "billing" in info.value.reason and "t/0" in info.value.reason
        assert info.value.path.endswith("data.mdb")


def test_a_flipped_projection_value_is_a_corruption_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        for i in range(5):
            store.append_to_stream("acct-1", [NewEvent(type="deposit", data=b"payload-%d" % i)])
        ProjectionRunner(store, _Counter(), name="counter").catch_up()
    key = b"proj\x00counter\x00slast"
    _flip_value(path / "catalog" / "data.mdb", key, b"payload-4", 2, 0)
    with eventstore.open(path) as store:
        runner = ProjectionRunner(store, _Counter(), name="counter")
        assert runner.counter(b"events") == 5
        with pytest.raises(CorruptionError) as info:
            runner.get(b"last")
        assert "counter" in info.value.reason and "last" in info.value.reason


def test_a_flipped_event_in_the_stream_index_is_refused_then_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        for i in range(10):
            store.append_to_stream("acct-1", [NewEvent(type="deposit", data=b"payload-%03d" % i)])
    data = bytearray((path / "index" / "data.mdb").read_bytes())
    at = data.find(b"payload-004")
    assert at > 0
    data[at + 8] ^= 0x01  # "004" -> "104"
    (path / "index" / "data.mdb").write_bytes(bytes(data))
    with eventstore.open(path) as store:
        with pytest.raises(CorruptionError) as info:
            store.read_stream("acct-1")
        assert "acct-1" in info.value.reason
        assert not store.check().ok
    with eventstore.open(path) as store:
        assert [e.data for e in store.read_stream("acct-1")] == [b"payload-%03d" % i for i in range(10)]
        assert [e.case for e in store.recovery_events] == ["L1"]
        assert store.check().ok


def test_a_catalog_of_format_1_is_converted_at_open(tmp_path: Path) -> None:
    """A golden store written before values were sealed: it opens, every value reads back, the
    catalog says format 2 afterwards, and a bit flipped in it from then on is caught."""
    path = tmp_path / "s"
    shutil.copytree(OLD_STORE, path)
    for _ in range(2):  # converted once; the second open finds format 2
        with eventstore.open(path) as store:
            assert store.group_offsets("billing") == {TopicPartition("orders", 0): 3,
                                                      TopicPartition("orders", 1): 5}
            assert [r.value for r in store.read("orders", 0, 0)] == [b"order-%d" % i for i in range(0, 10, 2)]
            assert [e.data for e in store.read_stream("acct-1")] == [b"1", b"4", b"7", b"10"]
            assert len(store.read_all(0, None)) == 12
            runner = ProjectionRunner(store, _Counter(), name="counter")
            assert runner.counter(b"events") == 12 and runner.get(b"last") == b"11"
            assert runner.catch_up() == 0
            assert store.log.catalog.get(keys.DB_META, keys.META_FORMAT) == b"2"
            assert store.check().ok
    _flip_value(path / "catalog" / "data.mdb", keys.cursor_key("billing", "orders", 1), b"\x94\x05", 1, 1)
    with eventstore.open(path) as store, pytest.raises(CorruptionError):
        store.group_offsets("billing")


def test_a_read_only_view_of_a_format_1_catalog_reads_it_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "s"
    shutil.copytree(OLD_STORE, path)
    reader = eventstore.open_reader(path)
    try:
        assert reader.group_offsets("billing") == {TopicPartition("orders", 0): 3,
                                                   TopicPartition("orders", 1): 5}
    finally:
        reader.close()
