"""Bad input gets a clear ``EventStoreError`` subclass and writes nothing.

Every rejection is followed by a check that no offset moved and no file under
``topics/`` changed (names and sizes), so a partial write cannot hide.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import eventstore
from eventstore import (
    EventStoreError,
    InvalidArgumentError,
    InvalidTopicError,
    Message,
    PartitionNotFoundError,
    RecordTooLargeError,
    StorageError,
    StorageFullError,
    TopicExistsError,
    TopicNotFoundError,
    TopicPartition,
)
from eventstore.storage import disk

MAX = 1000  # max_record_bytes of the test topics


def _files(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _dirs, names in os.walk(root / "topics"):
        for name in names:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.path.getsize(path)
    return out


def _state(store: eventstore.Store) -> tuple[Any, ...]:
    offsets = {
        (cfg.name, p): store.offsets(cfg.name, p) for cfg in store.topics() for p in range(cfg.partitions)
    }
    stats = store.statistics()
    return offsets, stats.appended_batches, stats.appended_records, stats.records, _files(Path(store.path))


@pytest.fixture
def s(store: eventstore.Store) -> Iterator[eventstore.Store]:
    store.create_topic("orders", partitions=3, max_record_bytes=MAX)
    store.create_topic("single", partitions=1, max_record_bytes=MAX)
    for p in range(3):
        store.append("orders", b"seed", partition=p)
    store.append("single", b"seed")
    yield store


def rejects(store: eventstore.Store, exc: type[BaseException], fn: Callable[[], object]) -> BaseException:
    """``fn()`` raises ``exc`` (an EventStoreError) and the store is unchanged."""
    before = _state(store)
    with pytest.raises(exc) as info:
        fn()
    assert isinstance(info.value, EventStoreError)
    assert str(info.value)
    assert _state(store) == before
    return info.value


# --- values, keys, headers ---------------------------------------------------


@pytest.mark.parametrize("value", ["text", 5, 1.5, {"a": 1}, [b"x"], (b"x",), True, object()])
def test_append_rejects_non_bytes_values(s: eventstore.Store, value: object) -> None:
    e = rejects(s, InvalidArgumentError, lambda: s.append("orders", value))  # type: ignore[arg-type]
    assert "value" in str(e)


def test_str_value_error_suggests_encoding(s: eventstore.Store) -> None:
    e = rejects(s, InvalidArgumentError, lambda: s.append("orders", "text"))  # type: ignore[arg-type]
    assert "encode" in str(e) and "str" in str(e)


@pytest.mark.parametrize("key", ["k", 7, ["k"], 1.0])
def test_append_rejects_non_bytes_keys(s: eventstore.Store, key: object) -> None:
    e = rejects(s, InvalidArgumentError, lambda: s.append("orders", b"v", key=key))  # type: ignore[arg-type]
    assert "key" in str(e)


def test_bytes_like_values_and_keys_are_accepted(s: eventstore.Store) -> None:
    meta = s.append("single", bytearray(b"val"), key=memoryview(b"key"))  # type: ignore[arg-type]
    [r] = s.read("single", 0, meta.offset)
    assert (r.key, r.value) == (b"key", b"val")
    assert type(r.key) is bytes and type(r.value) is bytes


@pytest.mark.parametrize(
    "headers",
    [
        "h",
        b"h",
        5,
        [("a", "text")],
        [(1, b"x")],
        [("a",)],
        [("a", b"x", b"y")],
        ["ab"],
        [b"ab"],
        {"a": "text"},
        {1: b"x"},
        [("a", 5)],
    ],
)
def test_append_rejects_bad_headers(s: eventstore.Store, headers: object) -> None:
    e = rejects(s, InvalidArgumentError, lambda: s.append("orders", b"v", headers=headers))  # type: ignore[arg-type]
    assert "header" in str(e)


def test_headers_as_a_mapping_or_pairs_are_accepted(s: eventstore.Store) -> None:
    a = s.append("single", b"v", headers={"x": b"1", "y": b"2"})
    b = s.append("single", b"v", headers=[["x", b"1"], ("y", bytearray(b"2"))])  # type: ignore[list-item]
    for meta in (a, b):
        [r] = s.read("single", 0, meta.offset, max_records=1)
        assert [tuple(h) for h in r.headers] == [("x", b"1"), ("y", b"2")]


# --- topics ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "a" * 250, "a b", "caf\u00e9", "a\x00b", "x:y"])
def test_create_topic_rejects_invalid_names(s: eventstore.Store, name: str) -> None:
    rejects(s, InvalidTopicError, lambda: s.create_topic(name))
    assert [t.name for t in s.topics()] == ["orders", "single"]


@pytest.mark.parametrize("name", [None, 5, b"orders"])
def test_create_topic_rejects_non_str_names(s: eventstore.Store, name: object) -> None:
    rejects(s, InvalidTopicError, lambda: s.create_topic(name))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "0", "a" * 200, "..."])
def test_valid_topic_names(s: eventstore.Store, name: str) -> None:
    s.create_topic(name)
    assert s.append(name, b"v").offset == 0
    assert s.topic(name).name == name


def test_longest_valid_topic_name(s: eventstore.Store) -> None:
    """249 characters fit, also through the transient directories of create and delete."""
    name = "a" * 249
    s.create_topic(name)
    assert s.append(name, b"v").offset == 0
    s.delete_topic(name)


def test_unknown_topic_suggests_a_close_name(s: eventstore.Store) -> None:
    e = rejects(s, TopicNotFoundError, lambda: s.append("ordres", b"v"))
    assert isinstance(e, TopicNotFoundError)
    assert e.topic == "ordres" and e.suggestion == "orders"
    assert "did you mean 'orders'" in str(e)
    assert isinstance(e, KeyError)


def test_unknown_topic_without_a_close_name(s: eventstore.Store) -> None:
    e = rejects(s, TopicNotFoundError, lambda: s.append("zzzzzzzzzz", b"v"))
    assert isinstance(e, TopicNotFoundError) and e.suggestion is None
    assert "did you mean" not in str(e)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.append("ordrs", b"v"),
        lambda s: s.append_batch("ordrs", [b"v"]),
        lambda s: s.read("ordrs", 0, 0),
        lambda s: s.offsets("ordrs", 0),
        lambda s: s.offset_for_time("ordrs", 0, 0),
        lambda s: s.topic("ordrs"),
        lambda s: s.alter_topic("ordrs", retention_ms=5),
        lambda s: s.delete_topic("ordrs"),
    ],
)
def test_every_entry_point_reports_unknown_topics(s: eventstore.Store, call: Callable[[Any], object]) -> None:
    e = rejects(s, TopicNotFoundError, lambda: call(s))
    assert isinstance(e, TopicNotFoundError) and e.suggestion == "orders"


def test_unhashable_topic_name_is_a_clear_error(s: eventstore.Store) -> None:
    rejects(s, InvalidTopicError, lambda: s.append(["orders"], b"v"))  # type: ignore[arg-type]
    rejects(s, InvalidTopicError, lambda: s.append_batch({"orders"}, [b"v"]))  # type: ignore[arg-type]
    rejects(s, InvalidTopicError, lambda: s.read(["orders"], 0, 0))  # type: ignore[arg-type]
    rejects(s, InvalidTopicError, lambda: s.topic(["orders"]))  # type: ignore[arg-type]


def test_create_existing_topic(s: eventstore.Store) -> None:
    e = rejects(s, TopicExistsError, lambda: s.create_topic("orders", partitions=5))
    assert isinstance(e, TopicExistsError) and e.topic == "orders"
    assert s.topic("orders").partitions == 3


def test_create_existing_topic_with_exist_ok(s: eventstore.Store) -> None:
    existing = s.topic("orders")
    # what the call asks for matches: the topic is returned as it is
    assert s.create_topic("orders", exist_ok=True) == existing
    assert s.create_topic("orders", partitions=3, max_record_bytes=MAX, exist_ok=True) == existing
    # asked for otherwise: refused, naming each difference, and nothing changes
    e = rejects(s, TopicExistsError, lambda: s.create_topic("orders", partitions=5, exist_ok=True))
    assert isinstance(e, TopicExistsError) and e.differences == {"partitions": (3, 5)}
    assert "partitions is 3, not 5" in str(e), str(e)
    e = rejects(s, TopicExistsError, lambda: s.create_topic(
        "orders", partitions=3, retention_ms=60_000, streams=True, exist_ok=True))
    assert isinstance(e, TopicExistsError)
    assert e.differences == {"retention_ms": (None, 60_000), "streams": (False, True)}
    # a setting that is invalid is refused as such, existing topic or not
    rejects(s, InvalidArgumentError, lambda: s.create_topic("orders", partitions=0, exist_ok=True))
    assert s.topic("orders") == existing


@pytest.mark.parametrize(
    "kwargs",
    [
        {"partitions": 0},
        {"partitions": -1},
        {"partitions": "3"},
        {"partitions": 1.0},
        {"partitions": True},
        {"partitions": None},
        {"partitions": 100_001},
        {"retention_ms": 0},
        {"retention_ms": -1},
        {"retention_ms": "1d"},
        {"retention_ms": 1.5},
        {"retention_bytes": 0},
        {"retention_bytes": -10},
        {"segment_bytes": 1023},
        {"segment_bytes": 0},
        {"segment_bytes": 2**31},
        {"segment_bytes": "1M"},
        {"segment_ms": 0},
        {"segment_ms": -5},
        {"max_record_bytes": 0},
        {"max_record_bytes": -1},
        {"max_record_bytes": 2**31},
    ],
)
def test_create_topic_rejects_bad_settings(s: eventstore.Store, kwargs: dict[str, Any]) -> None:
    rejects(s, InvalidArgumentError, lambda: s.create_topic("new", **kwargs))
    with pytest.raises(TopicNotFoundError):
        s.topic("new")
    assert not (Path(s.path) / "topics" / "new").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"partitions": 2},
        {"partitions": 0},
        {"retention_ms": 0},
        {"retention_bytes": -1},
        {"segment_bytes": 10},
        {"max_record_bytes": 0},
    ],
)
def test_alter_topic_rejects_bad_settings(s: eventstore.Store, kwargs: dict[str, Any]) -> None:
    before = s.topic("orders")
    rejects(s, InvalidArgumentError, lambda: s.alter_topic("orders", **kwargs))
    assert s.topic("orders") == before


# --- partitions ------------------------------------------------------------------


@pytest.mark.parametrize("partition", [3, 4, -1, True, False, "0", 1.0, [0]])
def test_partition_out_of_range_or_wrong_type(s: eventstore.Store, partition: object) -> None:
    e = rejects(s, PartitionNotFoundError, lambda: s.append("orders", b"v", partition=partition))  # type: ignore[arg-type]
    assert isinstance(e, PartitionNotFoundError) and e.partitions == 3
    assert "0..2" in str(e)
    rejects(s, PartitionNotFoundError, lambda: s.append_batch("orders", [b"v"], partition=partition))  # type: ignore[arg-type]
    rejects(
        s, PartitionNotFoundError,
        lambda: s.append_batch("orders", [b"ok", Message(value=b"v", partition=partition)]),  # type: ignore[arg-type]
    )
    rejects(s, PartitionNotFoundError, lambda: s.read("orders", partition, 0))  # type: ignore[arg-type]
    rejects(s, PartitionNotFoundError, lambda: s.offsets("orders", partition))  # type: ignore[arg-type]
    rejects(s, PartitionNotFoundError, lambda: s.offset_for_time("orders", partition, 0))  # type: ignore[arg-type]
    assert isinstance(e, IndexError)


@pytest.mark.parametrize("partition", ["0", True, False, 1.0, [0]])
def test_a_partition_of_another_type_must_be_an_int_on_every_api(s: eventstore.Store,
                                                                   partition: Any) -> None:
    def says_int(fn: Callable[[], object]) -> None:
        e = rejects(s, PartitionNotFoundError, fn)
        assert "must be an int" in str(e) and "out of range" not in str(e), str(e)

    says_int(lambda: s.append("orders", b"v", partition=partition))
    says_int(lambda: s.append_batch("orders", [b"v"], partition=partition))
    says_int(lambda: s.append_batch("orders", [Message(value=b"v", partition=partition)]))
    says_int(lambda: s.read("orders", partition, 0))
    says_int(lambda: s.offsets("orders", partition))
    says_int(lambda: s.offset_for_time("orders", partition, 0))
    says_int(lambda: s.wait_for("orders", partition, 0, 0))
    producer = s.producer()
    says_int(lambda: producer.send("orders", b"v", partition=partition))
    producer.close()
    with s.transaction() as tx:
        says_int(lambda: tx.append("orders", b"v", partition=partition))
    consumer = s.consumer()
    says_int(lambda: consumer.assign([TopicPartition("orders", partition)]))
    consumer.close()
    if not isinstance(partition, list):  # a list cannot be part of a dict key
        says_int(lambda: s.reset_group_offsets("g", {("orders", partition): 0}))
    with eventstore.open_reader(s.path) as reader:
        says_int(lambda: reader.read("orders", partition, 0))
        says_int(lambda: reader.offsets("orders", partition))
    # offsets to commit are checked before the topic is looked at (a deleted one may still be committed)
    if not isinstance(partition, list):
        consumer = s.consumer(group_id="g")
        tp = TopicPartition("orders", partition)
        for commit in (lambda: consumer.commit({tp: 1}), lambda: consumer.committed(tp),
                       lambda: s.transaction().commit_offsets("g", {tp: 1})):
            e = rejects(s, InvalidArgumentError, commit)
            assert "must be an int" in str(e), str(e)
        consumer.close()
        assert s.group_offsets("g") == {}


def test_a_partition_number_outside_the_topic_is_out_of_range(s: eventstore.Store) -> None:
    for partition in (3, -1):
        e = rejects(s, PartitionNotFoundError, lambda: s.read("orders", partition, 0))  # noqa: B023
        assert f"partition {partition} out of range for topic 'orders'" in str(e)


# --- record size -------------------------------------------------------------------


def test_record_exactly_at_the_limit_is_accepted(s: eventstore.Store) -> None:
    s.append("single", bytes(MAX))
    s.append("single", bytes(MAX - 3), key=b"abc")
    s.append("single", bytes(MAX - 4), headers=[("ab", b"cd")])
    s.append_batch("single", [bytes(MAX), (b"k", bytes(MAX - 1))])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"value": bytes(MAX + 1)},
        {"value": bytes(MAX - 2), "key": b"abc"},
        {"value": bytes(MAX - 3), "headers": [("ab", b"cd")]},
        {"value": None, "key": bytes(MAX + 1)},
    ],
)
def test_append_rejects_records_above_the_limit(s: eventstore.Store, kwargs: dict[str, Any]) -> None:
    value = kwargs.pop("value")
    e = rejects(s, RecordTooLargeError, lambda: s.append("orders", value, **kwargs))
    assert isinstance(e, RecordTooLargeError)
    assert e.limit == MAX and e.size == MAX + 1 and e.topic == "orders"


@pytest.mark.parametrize("position", [0, 5, 9])
def test_too_large_item_in_a_batch_writes_nothing(s: eventstore.Store, position: int) -> None:
    bare = [b"x" * 10 for _ in range(10)]
    bare[position] = bytes(MAX + 1)
    e = rejects(s, RecordTooLargeError, lambda: s.append_batch("orders", bare))
    assert isinstance(e, RecordTooLargeError) and e.index == position
    assert f"item {position}" in str(e)
    mixed: list[object] = [(f"k{i}".encode(), b"v") if i % 2 else Message(value=b"m") for i in range(10)]
    mixed[position] = Message(value=bytes(MAX), key=b"k")
    e = rejects(s, RecordTooLargeError, lambda: s.append_batch("orders", mixed))
    assert isinstance(e, RecordTooLargeError) and e.index == position


def test_header_names_count_in_bytes(s: eventstore.Store) -> None:
    """max_record_bytes counts header names in UTF-8 bytes, not characters."""
    name = "\u00e9" * 400  # 800 bytes in UTF-8
    rejects(s, RecordTooLargeError, lambda: s.append("orders", bytes(300), headers=[(name, b"")]))


@pytest.mark.parametrize("via", ["append", "append_batch"])
def test_header_names_that_cannot_be_utf8(s: eventstore.Store, via: str) -> None:
    headers = [("bad\ud800", b"x")]
    if via == "append":
        e = rejects(s, InvalidArgumentError, lambda: s.append("orders", b"v", headers=headers))
    else:
        e = rejects(s, InvalidArgumentError,
                    lambda: s.append_batch("orders", [b"ok", Message(value=b"v", headers=headers)]))
    assert "header" in str(e)


def test_lowering_max_record_bytes_applies_at_once(s: eventstore.Store) -> None:
    s.alter_topic("single", max_record_bytes=10)
    rejects(s, RecordTooLargeError, lambda: s.append("single", bytes(11)))
    s.append("single", bytes(10))


# --- append_batch items ----------------------------------------------------------------


@pytest.mark.parametrize("items", [b"abc", "abc", Message(value=b"v"), 5, None, bytearray(b"ab")])
def test_append_batch_needs_a_list(s: eventstore.Store, items: object) -> None:
    rejects(s, InvalidArgumentError, lambda: s.append_batch("orders", items))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        "text",
        5,
        (b"k", b"v", b"x"),
        ("k", b"v"),
        (b"k", "v"),
        [b"k", b"v"],
        Message(value="text"),  # type: ignore[arg-type]
        Message(value=b"v", key="k"),  # type: ignore[arg-type]
        Message(value=b"v", headers=[("a", "b")]),  # type: ignore[list-item]
        Message(value=b"v", timestamp_ms=-1),
        Message(value=b"v", timestamp_ms=1.5),  # type: ignore[arg-type]
    ],
)
@pytest.mark.parametrize("position", [0, 4])
def test_bad_item_in_a_batch_writes_nothing(s: eventstore.Store, bad: object, position: int) -> None:
    items: list[object] = [b"a", (b"k1", b"b"), Message(value=b"c", key=b"k2"), None, b"e"]
    items[position] = bad
    e = rejects(s, InvalidArgumentError, lambda: s.append_batch("orders", items))
    assert f"item {position}" in str(e)


def test_bad_item_after_items_for_other_partitions_writes_nothing(s: eventstore.Store) -> None:
    items: list[object] = [Message(value=b"v", partition=p) for p in (0, 1, 2, 0, 1, 2)]
    items.append(Message(value=b"v", partition=3))
    rejects(s, PartitionNotFoundError, lambda: s.append_batch("orders", items))


def test_empty_batch_is_a_no_op(s: eventstore.Store) -> None:
    before = _state(s)
    assert list(s.append_batch("orders", [])) == []
    assert list(s.append_batch("orders", iter([]))) == []
    assert _state(s) == before


# --- timestamps and offsets ------------------------------------------------------------


@pytest.mark.parametrize("ts", [-1, -(2**40), 1.5, "0", True])
def test_bad_timestamps(s: eventstore.Store, ts: object) -> None:
    e = rejects(s, InvalidArgumentError, lambda: s.append("orders", b"v", timestamp_ms=ts))  # type: ignore[arg-type]
    assert "timestamp_ms" in str(e)
    rejects(s, InvalidArgumentError, lambda: s.offset_for_time("orders", 0, ts))  # type: ignore[arg-type]


def test_timestamp_zero_is_valid(s: eventstore.Store) -> None:
    meta = s.append("single", b"v", timestamp_ms=0)
    assert s.read("single", 0, meta.offset)[0].timestamp_ms == 0


@pytest.mark.parametrize("kwargs", [{"max_records": 0}, {"max_records": -1}, {"max_records": True},
                                    {"max_records": "5"}, {"max_records": 2.0}, {"max_bytes": 0},
                                    {"max_bytes": -1}, {"max_bytes": "1"}])
def test_read_rejects_bad_limits(s: eventstore.Store, kwargs: dict[str, Any]) -> None:
    rejects(s, InvalidArgumentError, lambda: s.read("orders", 0, 0, **kwargs))


@pytest.mark.parametrize("offset", ["0", 0.0, None, True, b"0"])
def test_read_rejects_non_int_offsets(s: eventstore.Store, offset: object) -> None:
    rejects(s, InvalidArgumentError, lambda: s.read("orders", 0, offset))  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["enforce_retention", "wait_for"])
def test_maintenance_and_waiting_arguments_are_checked(s: eventstore.Store, call: str) -> None:
    s.create_topic("old", segment_bytes=1024)
    for _ in range(6):
        s.append("old", bytes(300), timestamp_ms=5)
    s.alter_topic("old", retention_ms=1000)
    if call == "enforce_retention":
        rejects(s, InvalidArgumentError, lambda: s.enforce_retention("soon"))  # type: ignore[arg-type]
    else:
        rejects(s, InvalidArgumentError, lambda: s.wait_for("old", 0, "5", 0.01))  # type: ignore[arg-type]


# --- opening -------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["sometimes", "FSYNC", "", None, 1])
def test_open_rejects_bad_durability(tmp_path: Path, durability: object) -> None:
    path = tmp_path / "never"
    with pytest.raises(InvalidArgumentError, match="durability"):
        eventstore.open(path, durability=durability)  # type: ignore[arg-type]
    assert not path.exists()


def test_open_on_a_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    for path in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(StorageError) as info:
            eventstore.open(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("interval", [0, -1, "100", 1.5, None])
def test_open_rejects_bad_fsync_interval(tmp_path: Path, interval: object) -> None:
    with pytest.raises(InvalidArgumentError, match="fsync_interval_ms"):
        eventstore.open(tmp_path / "never", durability="interval", fsync_interval_ms=interval)  # type: ignore[arg-type]


# --- a full disk ----------------------------------------------------------------------------


def _log_sizes(store: eventstore.Store) -> dict[str, int]:
    return {k: v for k, v in _files(Path(store.path)).items() if k.endswith(".log")}


def _enospc(*_args: object) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_enospc() -> Callable[..., int]:
    """Writes half of a buffer (a short write), then fails the next call with ENOSPC."""
    state = {"half_done": False}

    def pwrite(fd: int, data: Any, position: int) -> int:
        if state["half_done"]:
            state["half_done"] = False
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        state["half_done"] = True
        view = memoryview(data)
        return os.pwrite(fd, view[: max(1, len(view) // 2)], position)

    return pwrite


@pytest.mark.parametrize("durability", ["fsync", "none"])
@pytest.mark.parametrize("fault", ["enospc", "half-then-enospc"])
def test_disk_full_writes_nothing_and_recovers(
    open_store: Callable[..., eventstore.Store], monkeypatch: pytest.MonkeyPatch, durability: str, fault: str
) -> None:
    store = open_store(durability=durability)
    store.create_topic("t", partitions=2, segment_bytes=4096)
    acked: dict[int, list[bytes]] = {0: [], 1: []}

    def append(value: bytes, p: int) -> None:
        meta = store.append("t", value, partition=p)
        assert meta.offset == len(acked[p])
        acked[p].append(value)

    for i in range(30):
        append(b"before-%d" % i + bytes(50), i % 2)
    sizes, offsets = _log_sizes(store), [store.offsets("t", p) for p in (0, 1)]

    monkeypatch.setattr(disk, "pwrite", _enospc if fault == "enospc" else _half_then_enospc())
    for attempt in range(3):
        with pytest.raises(StorageFullError) as info:
            store.append("t", b"lost-%d" % attempt, partition=0)
        assert info.value.path.endswith(".log")
        with pytest.raises(StorageFullError):
            store.append_batch("t", [b"lost-batch", b"lost-batch-2"], partition=1)
        with pytest.raises(StorageFullError):
            store.append_batch("t", [(b"k", b"lost"), Message(value=b"lost", partition=0)])
    assert _log_sizes(store) == sizes
    assert [store.offsets("t", p) for p in (0, 1)] == offsets
    monkeypatch.undo()

    for i in range(30):  # the next appends take the offsets the failures did not use
        append(b"after-%d" % i + bytes(50), i % 2)
    for p in (0, 1):
        assert [r.value for r in store.read("t", p, 0, max_records=1000)] == acked[p]
    store.close()
    store = open_store(durability=durability)
    for p in (0, 1):
        assert store.offsets("t", p) == (0, len(acked[p]))
        assert [r.value for r in store.read("t", p, 0, max_records=1000)] == acked[p]
    assert store.check().ok


def test_disk_full_right_after_a_roll(open_store: Callable[..., eventstore.Store],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    store.create_topic("t", segment_bytes=1024)
    acked = [store.append("t", bytes(400)).offset for _ in range(2)]
    monkeypatch.setattr(disk, "pwrite", _enospc)
    with pytest.raises(StorageFullError):
        store.append("t", bytes(400))  # would roll: the new segment stays empty
    monkeypatch.undo()
    acked.append(store.append("t", bytes(400)).offset)
    assert acked == [0, 1, 2]
    store.close()
    store = open_store()
    assert store.offsets("t", 0) == (0, 3)
    assert [r.offset for r in store.read("t", 0, 0)] == [0, 1, 2]


@pytest.mark.parametrize(("code", "full"), [(errno.EDQUOT, True), (errno.EFBIG, True), (errno.EIO, False)])
def test_write_errors_map_to_storage_errors(
    s: eventstore.Store, monkeypatch: pytest.MonkeyPatch, code: int, full: bool
) -> None:
    def fail(*_args: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(disk, "pwrite", fail)
    e = rejects(s, StorageError, lambda: s.append("single", b"v"))
    assert isinstance(e, StorageFullError) == full
    assert os.strerror(code) in str(e)


# --- a failing fsync ------------------------------------------------------------------------


def _eio(*_args: object) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def _wait_until_failed(store: eventstore.Store, topic: str) -> None:
    """Append batches until one reports the background sync's failure."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            store.append_batch(topic, [b"probe"])
        except StorageError:
            return
        time.sleep(0.02)
    raise AssertionError("the background fsync failure was never reported")


def test_after_a_failed_fsync_nothing_more_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = eventstore.open(tmp_path / "s", durability="fsync")
    try:
        store.create_topic("t")
        store.append("t", b"acknowledged")
        monkeypatch.setattr(disk, "fdatasync", _eio)
        with pytest.raises(StorageError):
            store.append("t", b"unsure")  # written, then its sync failed: may or may not survive
        sizes = _log_sizes(store)
        for _ in range(3):
            with pytest.raises(StorageError):
                store.append_batch("t", [b"refused"])
            with pytest.raises(StorageError):
                store.append("t", b"refused")
        assert _log_sizes(store) == sizes
    finally:
        monkeypatch.undo()
        with contextlib.suppress(StorageError):
            store.close()  # releases the lock whatever failed
    with eventstore.open(tmp_path / "s") as again:
        assert b"refused" not in {r.value for r in again.read("t", 0, 0)}


def test_a_failed_background_fsync_fails_every_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = eventstore.open(tmp_path / "s", durability="interval", fsync_interval_ms=10)
    try:
        store.create_topic("t")
        store.append("t", b"before")
        monkeypatch.setattr(disk, "fdatasync", _eio)
        _wait_until_failed(store, "t")
        with pytest.raises(StorageError):
            store.append("t", b"after")
    finally:
        monkeypatch.undo()
        with contextlib.suppress(StorageError):
            store.close()  # releases the lock whatever failed


def test_close_with_a_failed_partition_still_closes_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = eventstore.open(tmp_path / "s", durability="fsync")
    try:
        store.create_topic("a")
        store.create_topic("b")
        store.append("a", b"a0")
        store.append("b", b"b0")
        failing_fd = store.log.partition("a", 0).segments()[-1].fd
        real = disk.fdatasync

        def fail_a(fd: int) -> None:
            if fd == failing_fd:
                _eio()
            real(fd)

        monkeypatch.setattr(disk, "fdatasync", fail_a)
        with pytest.raises(StorageError):
            store.append("a", b"a1")
        store.append("b", b"b1")
        b_segments = store.log.partition("b", 0).segments()
        with contextlib.suppress(StorageError):  # reporting a's failure is fine
            store.close()
        assert all(seg.fd is None for seg in b_segments)
    finally:
        monkeypatch.undo()
    with eventstore.open(tmp_path / "s") as again:
        assert not [e for e in again.recovery_events if "/b/" in e.path]  # b was checkpointed
        assert [r.value for r in again.read("b", 0, 0)] == [b"b0", b"b1"]
