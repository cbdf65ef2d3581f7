"""Integers out of the format's range (timestamps, offsets, positions, versions, intervals)
are refused with ``InvalidArgumentError`` before anything is written, never with an
``OverflowError`` or ``struct.error`` from the encoder."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import eventstore
import eventstore.aio
from eventstore import InvalidArgumentError, Message, NewEvent, StreamMetadata, TopicPartition

INT64_MAX = 2**63 - 1
TOO_BIG = [2**63, 2**64, 2**100]


@pytest.fixture
def filled(store: eventstore.Store) -> eventstore.Store:
    store.create_topic("t", partitions=2)
    store.append("t", b"x", partition=0)
    store.append_to_stream("order-1", NewEvent(type="Placed"))
    return store


def _ends(store: eventstore.Store) -> list[tuple[int, int]]:
    return [store.offsets(c.name, p) for c in store.topics() for p in range(c.partitions)]


def _txn_append(store: eventstore.Store, ts: int) -> None:
    with store.transaction() as txn:
        txn.append("t", b"x", timestamp_ms=ts)


def _txn_offsets(store: eventstore.Store, offset: int) -> None:
    with store.transaction() as txn:
        txn.commit_offsets("g", {TopicPartition("t", 0): offset})


def _producer_send(store: eventstore.Store, ts: int) -> None:
    with store.producer() as producer:
        producer.send("t", b"x", timestamp_ms=ts).get(timeout=5)


def _consumer_commit(store: eventstore.Store, offset: int) -> None:
    consumer = store.consumer(group_id="g", enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition("t", 0)])
        consumer.commit({TopicPartition("t", 0): offset})
    finally:
        consumer.close()


WRITES: dict[str, Callable[[eventstore.Store, int], Any]] = {
    "append timestamp": lambda s, v: s.append("t", b"x", timestamp_ms=v),
    "append_batch timestamp": lambda s, v: s.append_batch("t", [Message(value=b"x", timestamp_ms=v)]),
    "transaction timestamp": _txn_append,
    "transaction offsets": _txn_offsets,
    "producer timestamp": _producer_send,
    "consumer commit": _consumer_commit,
    "truncate_stream": lambda s, v: s.truncate_stream("order-1", v),
    "metadata max_age_ms": lambda s, v: s.set_stream_metadata("order-1", StreamMetadata(max_age_ms=v)),
    "metadata max_count": lambda s, v: s.set_stream_metadata("order-1", StreamMetadata(max_count=v)),
    "metadata truncate_before": lambda s, v: s.set_stream_metadata(
        "order-1", StreamMetadata(truncate_before=v)),
    "enforce_retention now_ms": lambda s, v: s.enforce_retention(v),
    "retention now_ms": lambda s, v: s.retention(now_ms=v),
}

READS: dict[str, Callable[[eventstore.Store, int], Any]] = {
    "read_all from_position": lambda s, v: s.read_all(v),
    "offset_for_time": lambda s, v: s.offset_for_time("t", 0, v),
    "subscribe_to_all": lambda s, v: s.subscribe_to_all(v),
    "subscribe_to_category": lambda s, v: s.subscribe_to_category("order", v),
    "subscribe_to_stream": lambda s, v: s.subscribe_to_stream("order-1", v),
}


@pytest.mark.parametrize("value", TOO_BIG, ids=["2**63", "2**64", "2**100"])
@pytest.mark.parametrize("call", sorted(WRITES))
def test_writes_refuse_integers_past_int64(filled: eventstore.Store, call: str, value: int) -> None:
    before = _ends(filled)
    with pytest.raises(InvalidArgumentError):
        WRITES[call](filled, value)
    assert _ends(filled) == before
    assert filled.group_offsets("g") == {}
    assert filled.get_stream_metadata("order-1") == StreamMetadata()


@pytest.mark.parametrize("value", TOO_BIG, ids=["2**63", "2**64", "2**100"])
@pytest.mark.parametrize("call", sorted(READS))
def test_reads_refuse_integers_past_int64(filled: eventstore.Store, call: str, value: int) -> None:
    with pytest.raises(InvalidArgumentError):
        READS[call](filled, value)


@pytest.mark.parametrize("call", ["metadata max_age_ms", "metadata max_count",
                                  "metadata truncate_before", "enforce_retention now_ms",
                                  "retention now_ms"])
def test_negative_values_are_refused(filled: eventstore.Store, call: str) -> None:
    with pytest.raises(InvalidArgumentError):
        WRITES[call](filled, -1)


def test_the_largest_timestamp_is_stored_and_read_back(filled: eventstore.Store) -> None:
    meta = filled.append("t", b"late", partition=1, timestamp_ms=INT64_MAX)
    assert filled.read("t", 1, meta.offset)[0].timestamp_ms == INT64_MAX
    assert filled.offset_for_time("t", 1, INT64_MAX) == meta.offset
    assert filled.check().ok


def test_read_all_limit_must_not_be_negative(filled: eventstore.Store) -> None:
    with pytest.raises(InvalidArgumentError):
        filled.read_all(0, -1)
    assert len(filled.read_all(0, 2**64)) == 1  # a large limit is only a bound


@pytest.mark.parametrize("timeout_s", [2**64, float("inf"), 1e300], ids=["2**64", "inf", "1e300"])
def test_wait_for_takes_any_timeout(filled: eventstore.Store, timeout_s: float) -> None:
    """A timeout past what the OS can wait for means no timeout (it used to overflow)."""
    later = threading.Timer(0.2, lambda: filled.append("t", b"y", partition=0))
    later.start()
    try:
        assert filled.wait_for("t", 0, 1, timeout_s) is True
    finally:
        later.join()


def test_wait_for_refuses_nan_and_negative_offsets(filled: eventstore.Store) -> None:
    with pytest.raises(InvalidArgumentError):
        filled.wait_for("t", 0, 5, float("nan"))
    with pytest.raises(InvalidArgumentError):
        filled.wait_for("t", 0, -1, 0)


@pytest.mark.parametrize("value", [0, 2**31, 2**64])
def test_fsync_interval_is_bounded(store_path: Path, value: int) -> None:
    with pytest.raises(InvalidArgumentError):
        eventstore.open(store_path, durability="interval", fsync_interval_ms=value)


def test_the_reader_checks_as_the_store_does(filled: eventstore.Store) -> None:
    with eventstore.open_reader(filled.path) as reader:
        for bad in (-1, 2**63, 2**64):
            with pytest.raises(InvalidArgumentError):
                reader.offset_for_time("t", 0, bad)
        with pytest.raises(InvalidArgumentError):
            reader.wait_for("t", 0, -1, 0)
        with pytest.raises(InvalidArgumentError):
            reader.wait_for("t", 0, 5, float("nan"))
        assert reader.wait_for("t", 0, 0, 2**64) is True


def test_async_wait_for_checks_as_the_blocking_one(filled: eventstore.Store) -> None:
    path = filled.path
    filled.close()

    async def main() -> None:
        async with await eventstore.aio.open(path) as store:
            with pytest.raises(InvalidArgumentError):
                await store.wait_for("t", 0, -1, 0)
            with pytest.raises(InvalidArgumentError):
                await store.wait_for("t", 0, 5, float("nan"))
            assert await store.wait_for("t", 0, 0, 2**64) is True
        async with await eventstore.aio.open_reader(path) as reader:
            with pytest.raises(InvalidArgumentError):
                await reader.wait_for("t", 0, -1, 0)
            assert await reader.wait_for("t", 0, 0, float("inf")) is True

    anyio.run(main)
