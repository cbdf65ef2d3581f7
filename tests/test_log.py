"""The Log seam: what a network handler or a replica calls (append_encoded, read_batches,
watch, barrier), the hooks the layers above register, and the Store's delegation to it."""

from __future__ import annotations

import inspect
import os
import threading
from pathlib import Path

import pytest

import eventstore
from eventstore.errors import (
    InvalidArgumentError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    RecordTooLargeError,
    StreamsTopicError,
    TopicNotFoundError,
)
from eventstore.log import Log
from eventstore.records import TopicConfig, TopicPartition
from eventstore.storage import format as fmt
from eventstore.store import _LOG_METHODS, Store

TP = TopicPartition


def _batch(base: int, values: list[bytes], ts: int = 1000) -> bytes:
    rows = [(base + i, ts + i, None, v, []) for i, v in enumerate(values)]
    return bytes(fmt.encode_batch(base, rows, ts, ts + len(values) - 1))


def _log_bytes(store: eventstore.Store, topic: str, partition: int = 0) -> bytes:
    segments = store.log.partition(topic, partition).segments()
    return b"".join(Path(seg.log_path).read_bytes() for seg in segments)


# --- the Store delegates -------------------------------------------------------------


def test_the_stores_log_methods_are_the_logs_bound_methods(store: eventstore.Store) -> None:
    for name in _LOG_METHODS:
        method = getattr(store, name)
        assert method.__self__ is store.log and method.__func__ is getattr(Log, name), name


def test_the_stores_log_methods_have_the_logs_signatures_and_docs() -> None:
    for name in _LOG_METHODS:
        ours, theirs = getattr(Store, name), getattr(Log, name)
        assert inspect.signature(ours) == inspect.signature(theirs), name
        assert ours.__doc__ and ours.__doc__ == theirs.__doc__, name


# --- append_encoded ------------------------------------------------------------------


def test_append_encoded_assigns_offsets_and_reads_back(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", b"first")
    assert store.log.append_encoded("t", 0, _batch(0, [b"a", b"b", b"c"])) == (1, 4)
    assert [(r.offset, r.value, r.timestamp_ms) for r in store.read("t", 0, 1)] == [
        (1, b"a", 1000), (2, b"b", 1001), (3, b"c", 1002)]


def test_a_batch_at_the_end_is_stored_byte_for_byte(store: eventstore.Store) -> None:
    store.create_topic("t")
    batch = _batch(0, [b"x", b"y"])
    assert store.log.append_encoded("t", 0, batch, replica=True) == (0, 2)
    assert _log_bytes(store, "t") == batch


def test_a_replica_batch_must_start_at_the_end(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", b"first")
    with pytest.raises(InvalidArgumentError, match="starts at offset 0, but the partition ends at 1"):
        store.log.append_encoded("t", 0, _batch(0, [b"x"]), replica=True)
    assert store.log.append_encoded("t", 0, _batch(1, [b"x"]), replica=True) == (1, 2)
    assert store.offsets("t", 0) == (0, 2)


def _garbled(batch: bytes, position: int) -> bytes:
    data = bytearray(batch)
    data[position] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("case", ["checksum", "truncated", "two batches", "kafka v2", "not bytes",
                                  "offsets", "timestamps", "empty"])
def test_append_encoded_refuses_bad_bytes_and_writes_nothing(store: eventstore.Store, case: str) -> None:
    store.create_topic("t")
    good = _batch(0, [b"a", b"b"])
    bad: object
    if case == "checksum":
        bad = _garbled(good, len(good) - 10)
    elif case == "truncated":
        bad = good[:-1]
    elif case == "two batches":
        bad = good + _batch(2, [b"c"])
    elif case == "kafka v2":
        data = bytearray(good)
        data[16] = 2
        bad = bytes(data)
    elif case == "not bytes":
        bad = "text"
    elif case == "offsets":  # a valid checksum over records whose offsets skip one
        rows = [(0, 1000, None, b"a", []), (2, 1000, None, b"b", [])]
        bad = bytes(fmt.encode_batch(0, rows, 1000, 1000))
    elif case == "timestamps":  # the header's max timestamp is not the records' max
        rows = [(0, 1000, None, b"a", []), (1, 5000, None, b"b", [])]
        bad = bytes(fmt.encode_batch(0, rows, 1000, 1000))
    else:
        bad = b""
    with pytest.raises(InvalidArgumentError):
        store.log.append_encoded("t", 0, bad)  # type: ignore[arg-type]
    assert store.offsets("t", 0) == (0, 0)
    assert _log_bytes(store, "t") == b""


def test_append_encoded_holds_to_the_topics_rules(store: eventstore.Store) -> None:
    store.create_topic("small", max_record_bytes=4)
    with pytest.raises(RecordTooLargeError):
        store.log.append_encoded("small", 0, _batch(0, [b"ok", b"too long"]))
    assert store.offsets("small", 0) == (0, 0)
    store.create_topic("order", streams=True)
    with pytest.raises(StreamsTopicError):
        store.log.append_encoded("order", 0, _batch(0, [b"not an envelope"]))
    with pytest.raises(PartitionNotFoundError):
        store.log.append_encoded("small", 1, _batch(0, [b"ok"]))


def test_append_encoded_survives_a_reopen(open_store: object, store_path: Path) -> None:
    with eventstore.open(store_path) as store:
        store.create_topic("t", segment_bytes=1024)
        for i in range(30):  # rolls: the encoded batches end up in several segments
            store.log.append_encoded("t", 0, _batch(0, [b"%03d" % i * 20]))
    with eventstore.open(store_path) as store:
        assert store.check().ok
        assert [r.offset for r in store.read("t", 0, 0, max_records=100)] == list(range(30))


# --- read_batches --------------------------------------------------------------------


def test_read_batches_returns_the_stored_bytes(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append_batch("t", [b"a", b"b"])
    store.append_batch("t", [b"c"])
    data, next_offset = store.log.read_batches("t", 0, 0, 1 << 20)
    assert data == _log_bytes(store, "t") and next_offset == 3
    assert store.log.read_batches("t", 0, 3, 1 << 20) == (b"", 3)


def test_read_batches_starts_at_the_batch_holding_the_offset(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append_batch("t", [b"a", b"b", b"c"])
    store.append("t", b"d")
    data, next_offset = store.log.read_batches("t", 0, 1, 1 << 20)
    assert data == _log_bytes(store, "t") and next_offset == 4  # the first batch holds 0..2


def test_read_batches_bounds_bytes_but_returns_the_first_batch_whole(store: eventstore.Store) -> None:
    store.create_topic("t")
    for i in range(5):
        store.append("t", b"%d" % i * 10)
    one = len(_log_bytes(store, "t")) // 5
    data, next_offset = store.log.read_batches("t", 0, 0, 1)
    assert len(data) == one and next_offset == 1
    data, next_offset = store.log.read_batches("t", 0, 1, 2 * one + 1)
    assert len(data) == 2 * one and next_offset == 3


def test_read_batches_crosses_segments_and_feeds_a_replica(store: eventstore.Store) -> None:
    store.create_topic("t", segment_bytes=1024)
    store.create_topic("copy", segment_bytes=1024)
    store.append_batch("t", [b"%04d" % i * 25 for i in range(100)])
    for i in range(40):
        store.append("t", b"%d" % i)
    assert len(store.log.partition("t", 0).segments()) > 2
    offset = 0
    while offset < store.offsets("t", 0)[1]:  # a replica fetcher's loop
        data, next_offset = store.log.read_batches("t", 0, offset, 3000)
        position = 0
        while position < len(data):  # one batch at a time, as a replica appends them
            size = fmt.read_prefix(data, position)[1]
            store.log.append_encoded("copy", 0, data[position:position + size], replica=True)
            position += size
        offset = next_offset
    assert _log_bytes(store, "copy") == _log_bytes(store, "t")
    assert [r.value for r in store.read("copy", 0, 0, max_records=1000)] == \
        [r.value for r in store.read("t", 0, 0, max_records=1000)]


def test_read_batches_checks_its_arguments(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", b"a")
    with pytest.raises(OffsetOutOfRangeError):
        store.log.read_batches("t", 0, 2, 100)
    with pytest.raises(InvalidArgumentError):
        store.log.read_batches("t", 0, 0, 0)
    with pytest.raises(TopicNotFoundError):
        store.log.read_batches("nope", 0, 0, 100)


# --- watch and barrier ---------------------------------------------------------------


def test_watch_calls_back_until_cancelled(store: eventstore.Store) -> None:
    store.create_topic("t", 2)
    calls: list[str] = []
    watch = store.log.watch([TP("t", 0)], lambda: calls.append("w"))
    store.append("t", b"a", partition=0)
    store.append("t", b"b", partition=1)  # not watched
    assert calls == ["w"]
    watch.cancel()
    watch.cancel()  # twice: nothing
    store.append("t", b"c", partition=0)
    assert calls == ["w"]
    assert store.log.partition("t", 0).listener_count() == 0


def test_two_watches_with_one_callback_are_two_registrations(store: eventstore.Store) -> None:
    store.create_topic("t")
    event = threading.Event()
    first = store.log.watch([TP("t", 0)], event.set)
    with store.log.watch([TP("t", 0)], event.set):
        pass  # cancelling this one leaves the first
    store.append("t", b"a")
    assert event.is_set()
    first.close()
    assert store.log.partition("t", 0).listener_count() == 0


def test_watch_of_a_missing_partition_raises_and_watches_nothing(store: eventstore.Store) -> None:
    store.create_topic("t")
    with pytest.raises(PartitionNotFoundError):
        store.log.watch([TP("t", 0), TP("t", 1)], lambda: None)
    assert store.log.partition("t", 0).listener_count() == 0
    with pytest.raises(TopicNotFoundError):
        store.log.watch([TP("nope", 0)], lambda: None)


def test_barrier_syncs_in_every_mode(open_store: object, store_path: Path) -> None:
    with eventstore.open(store_path, durability="none") as store:
        store.create_topic("t")
        meta = store.append("t", b"a")
        before = store.statistics().fsyncs
        store.log.barrier({TP("t", 0): meta.offset + 1})
        assert store.statistics().fsyncs == before + 1
        store.log.barrier({TP("t", 0): meta.offset + 1})  # already durable: no second fsync
        assert store.statistics().fsyncs == before + 1


# --- hooks ---------------------------------------------------------------------------


def test_delete_hooks_run_past_the_point_of_no_return(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", b"a")
    seen: list[tuple[str, bool, bool]] = []
    segment = store.log.partition("t", 0).segments()[-1]
    directory = store.log.partition_path("t", 0)
    store.log.add_delete_hook(lambda cfg: seen.append(
        (cfg.name, store.log.find_topic("t") is None, segment.fd is None)))
    store.delete_topic("t")
    assert seen == [("t", True, True)] and not os.path.exists(directory)


def test_a_failing_delete_hook_does_not_stop_the_deletion(store: eventstore.Store) -> None:
    store.create_topic("t")
    called: list[str] = []

    def refuse(cfg: TopicConfig) -> None:
        raise InvalidArgumentError("not now")

    store.log.add_delete_hook(refuse)
    store.log.add_delete_hook(lambda cfg: called.append(cfg.name))
    with pytest.raises(InvalidArgumentError):
        store.delete_topic("t")
    assert called == ["t"]  # the other hooks ran
    assert store.topics() == [] and not os.path.exists(store.log.partition_path("t", 0))


def test_close_hooks_run_before_the_partitions_close(store_path: Path) -> None:
    store = eventstore.open(store_path)
    store.create_topic("t")
    segment = store.log.partition("t", 0).segments()[-1]
    seen: list[bool] = []
    store.log.add_close_hook(lambda: seen.append(segment.fd is not None))
    store.close()
    assert seen == [True] and segment.fd is None
