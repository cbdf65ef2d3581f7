"""Streams: expected versions, idempotency, the derived index, global order."""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import pytest

import eventstore
from eventstore import NewEvent, StreamState, WrongExpectedVersionError


def _events(n: int, kind: str = "Happened") -> list[NewEvent]:
    return [NewEvent(type=kind, data=b'{"n": %d}' % i) for i in range(n)]


def test_expected_version_rules(store: eventstore.Store) -> None:
    r = store.append_to_stream("order-1", _events(2), StreamState.NO_STREAM)
    assert (r.next_expected_version, r.position) == (1, 1)
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append_to_stream("order-1", _events(1), StreamState.NO_STREAM)
    assert (info.value.stream_id, info.value.actual) == ("order-1", 1)
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("order-2", _events(1), StreamState.STREAM_EXISTS)
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("order-1", _events(1), 0)
    assert store.append_to_stream("order-1", _events(1), 1).next_expected_version == 2
    assert store.append_to_stream("order-1", _events(1), StreamState.ANY).next_expected_version == 3
    assert [e.version for e in store.read_stream("order-1")] == [0, 1, 2, 3]
    assert store.read_stream("order-1")[0].topic == "order"


def test_a_refused_append_writes_nothing(store: eventstore.Store) -> None:
    store.append_to_stream("acct-1", _events(1))
    end = store.offsets("acct", store.read_stream("acct-1")[0].partition)
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("acct-1", _events(3), 5)
    assert store.offsets("acct", store.read_stream("acct-1")[0].partition) == end
    assert store.stream_version("acct-1") == 0


def test_64_threads_racing_on_one_expected_version(store: eventstore.Store) -> None:
    store.append_to_stream("race-1", _events(1))
    winners: list[int] = []
    barrier = threading.Barrier(64)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            store.append_to_stream("race-1", [NewEvent(type="Won", data=b"%d" % i)], 0)
            winners.append(i)
        except WrongExpectedVersionError:
            pass

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) == 1
    events = store.read_stream("race-1")
    assert [e.version for e in events] == [0, 1]
    assert events[1].data == b"%d" % winners[0]


def test_retry_with_the_same_ids_is_idempotent(store: eventstore.Store) -> None:
    batch = _events(3)
    first = store.append_to_stream("cart-9", batch, StreamState.NO_STREAM)
    again = store.append_to_stream("cart-9", batch, StreamState.NO_STREAM)
    assert again == first
    assert len(store.read_stream("cart-9")) == 3
    with pytest.raises(eventstore.InvalidArgumentError):
        store.append_to_stream("cart-9", [batch[0], NewEvent(type="New")], StreamState.ANY)


def test_read_backwards_and_limits(store: eventstore.Store) -> None:
    store.append_to_stream("log-1", _events(300))
    assert [e.version for e in store.read_stream("log-1", from_version=250, limit=3)] == [250, 251, 252]
    assert [e.version for e in store.read_stream("log-1", backwards=True, limit=3)] == [299, 298, 297]
    assert [e.version for e in store.read_stream("log-1", from_version=5, backwards=True)] == list(
        range(5, -1, -1))
    with pytest.raises(eventstore.StreamNotFoundError):
        store.read_stream("log-2")


def test_read_all_is_in_position_order_without_gaps(store: eventstore.Store) -> None:
    def writer(k: int) -> None:
        for i in range(40):
            store.append_to_stream(f"w{k % 3}-{k}x{i % 5}", _events(1 + i % 3))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    events = store.read_all(0, None)
    assert [e.position for e in events] == list(range(len(events)))
    per_stream: dict[str, list[int]] = {}
    for e in events:
        per_stream.setdefault(e.stream_id, []).append(e.version)
    assert all(v == list(range(len(v))) for v in per_stream.values())


def test_index_deleted_is_rebuilt_from_the_log(store_path: Path) -> None:
    with eventstore.open(store_path) as store:
        for i in range(20):
            store.append_to_stream(f"order-{i % 4}", _events(1 + i % 3))
        store.set_stream_metadata("order-3", eventstore.StreamMetadata(max_count=2))
        before = {s: store.read_stream(s) for s in store.list_streams()}
        everything = store.read_all(0, None)
    shutil.rmtree(store_path / "index")
    with eventstore.open(store_path) as store:
        assert {s: store.read_stream(s) for s in store.list_streams()} == before
        assert store.read_all(0, None) == everything
        assert store.get_stream_metadata("order-3").max_count == 2
        r = store.append_to_stream("order-0", _events(1), len(before["order-0"]) - 1)
        assert r.position == everything[-1].position + 1


def test_soft_delete_truncate_and_list(store: eventstore.Store) -> None:
    for sid in ("user-1", "user-2", "item-1"):
        store.append_to_stream(sid, _events(3))
    assert store.list_streams("user") == ["user-1", "user-2"]
    store.truncate_stream("user-1", 2)
    assert [e.version for e in store.read_stream("user-1")] == [2]
    store.delete_stream("user-2")
    assert store.list_streams("user") == ["user-1"]
    with pytest.raises(eventstore.StreamNotFoundError):
        store.read_stream("user-2")
    store.append_to_stream("user-2", _events(1), StreamState.NO_STREAM)  # revives it
    assert [e.version for e in store.read_stream("user-2")] == [3]


def test_bad_input_is_refused(store: eventstore.Store) -> None:
    for bad in ("", None, "a\x00b"):
        with pytest.raises(eventstore.InvalidArgumentError):
            store.append_to_stream(bad, _events(1))  # type: ignore[arg-type]
    with pytest.raises(eventstore.InvalidArgumentError):
        store.append_to_stream("x-1", [])
    with pytest.raises(eventstore.InvalidArgumentError):
        store.append_to_stream("x-1", [NewEvent(type="T", data="text")])  # type: ignore[arg-type]
    with pytest.raises(eventstore.InvalidArgumentError):
        store.append_to_stream("x-1", _events(1), -5)
    with pytest.raises(eventstore.InvalidArgumentError):
        store.append_to_stream("bad topic-1", _events(1))
    store.create_topic("plain")
    with pytest.raises(eventstore.InvalidArgumentError):
        store.append_to_stream("plain-1", _events(1))
    assert store.list_streams() == []
    assert isinstance(_events(1)[0].id, uuid.UUID)


def test_a_stream_append_that_makes_its_topic_races_a_create_topic_of_the_same_name(
    store: eventstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The append finds no topic, then another thread's create_topic (which does not take the
    streams' lock) makes it before the append does: the append uses that topic."""
    log = store.log
    real_find = log.find_topic
    raced: list[str] = []

    def find_topic(name: str) -> eventstore.TopicConfig | None:
        cfg = real_find(name)
        if cfg is None and name == "order":
            raced.append(name)
            if len(raced) == 2:  # the look-up under the streams' lock: the other thread wins now
                thread = threading.Thread(target=store.create_topic, args=("order", 2),
                                          kwargs={"streams": True})
                thread.start()
                thread.join(10)
        return cfg  # None: the append goes on to create the topic itself

    monkeypatch.setattr(log, "find_topic", find_topic)
    result = store.append_to_stream("order-1", _events(2), StreamState.NO_STREAM)
    assert raced == ["order", "order"]
    assert result.next_expected_version == 1
    assert store.topic("order").partitions == 2 and store.topic("order").streams
    assert [e.version for e in store.read_stream("order-1")] == [0, 1]
