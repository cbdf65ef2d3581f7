"""Stream heads kept in memory: expected-version checks stay exact whatever memory holds."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

import eventstore
from eventstore import NewEvent, StreamState, WrongExpectedVersionError
from eventstore.sourcing.queue import AppendRequest
from eventstore.sourcing.streams import Streams
from eventstore.sourcing.versions import current_heads


def _events(n: int) -> list[NewEvent]:
    return [NewEvent(type="Happened", data=b"%d" % i) for i in range(n)]


def _streams(store: eventstore.Store) -> Streams:
    return store.streams


def test_a_refused_append_leaves_the_head_as_it_was(store: eventstore.Store) -> None:
    store.append_to_stream("acct-1", _events(2), StreamState.NO_STREAM)
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("acct-1", _events(1), 5)
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("acct-1", _events(1), StreamState.NO_STREAM)
    head = _streams(store).staging.head("acct-1")
    assert head is not None and head.last_version == 1
    assert store.append_to_stream("acct-1", _events(1), 1).next_expected_version == 2


def test_heads_follow_delete_and_truncate(store: eventstore.Store) -> None:
    store.append_to_stream("user-1", _events(3))
    store.delete_stream("user-1")
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("user-1", _events(1), StreamState.STREAM_EXISTS)
    revived = store.append_to_stream("user-1", _events(1), StreamState.NO_STREAM)
    assert revived.next_expected_version == 3
    store.truncate_stream("user-1", 3)
    assert store.append_to_stream("user-1", _events(1), 3).next_expected_version == 4
    assert [e.version for e in store.read_stream("user-1")] == [3, 4]


def test_heads_after_reopen(store_path: Path) -> None:
    with eventstore.open(store_path) as store:
        store.append_to_stream("order-1", _events(2), StreamState.NO_STREAM)
    with eventstore.open(store_path) as store:
        with pytest.raises(WrongExpectedVersionError):
            store.append_to_stream("order-1", _events(1), StreamState.NO_STREAM)
        assert store.append_to_stream("order-1", _events(1), 1).next_expected_version == 2


def test_heads_after_the_index_is_rebuilt(store_path: Path) -> None:
    with eventstore.open(store_path) as store:
        for i in range(10):
            store.append_to_stream(f"order-{i % 3}", _events(1))
    shutil.rmtree(store_path / "index")
    with eventstore.open(store_path) as store:
        with pytest.raises(WrongExpectedVersionError):
            store.append_to_stream("order-0", _events(1), StreamState.NO_STREAM)
        assert store.append_to_stream("order-0", _events(1), 3).next_expected_version == 4
        assert store.append_to_stream("order-9", _events(1), StreamState.NO_STREAM).next_expected_version == 0


def test_evicted_heads_are_read_back_from_the_index(store: eventstore.Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.streams.staging, "heads_max", 8)
    for i in range(40):
        store.append_to_stream(f"item-{i}", _events(1 + i % 2), StreamState.NO_STREAM)
    streams = _streams(store)
    streams.flush()
    assert streams.staging.held() <= 8 and streams.staging.evictions > 0
    for i in range(40):
        with pytest.raises(WrongExpectedVersionError):
            store.append_to_stream(f"item-{i}", _events(1), StreamState.NO_STREAM)
        result = store.append_to_stream(f"item-{i}", _events(1), i % 2)
        assert result.next_expected_version == 1 + i % 2


def test_a_look_up_older_than_an_eviction_is_not_trusted(store: eventstore.Store) -> None:
    store.append_to_stream("cart-1", _events(2), StreamState.NO_STREAM)
    streams = _streams(store)
    streams.flush()
    stale = streams.staging.evictions
    streams.staging.evict()
    assert streams.staging.head("cart-1") is None
    request = AppendRequest("cart-1", _events(1), StreamState.NO_STREAM, None, stale)
    head = current_heads(streams.staging, [request])["cart-1"]
    assert head is not None and head.last_version == 1
    current = AppendRequest("cart-2", _events(1), StreamState.NO_STREAM, None, streams.staging.evictions)
    assert current_heads(streams.staging, [current]) == {"cart-2": None}


def test_deleting_a_topic_forgets_its_heads(store: eventstore.Store) -> None:
    store.append_to_stream("gone-1", _events(3))
    store.delete_topic("gone")
    assert _streams(store).staging.head("gone-1") is None
    assert store.append_to_stream("gone-1", _events(1), StreamState.NO_STREAM).next_expected_version == 0


def test_retries_are_recognised_before_and_after_a_flush(store: eventstore.Store) -> None:
    batch = _events(2)
    first = store.append_to_stream("pay-1", batch, StreamState.NO_STREAM)
    assert store.append_to_stream("pay-1", batch, StreamState.NO_STREAM) == first
    _streams(store).flush()
    assert store.append_to_stream("pay-1", batch, StreamState.NO_STREAM) == first
    assert store.append_to_stream("pay-1", batch, StreamState.ANY) == first
    assert len(store.read_stream("pay-1")) == 2


def test_optimistic_writers_never_reuse_a_version(store: eventstore.Store,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.streams.staging, "heads_max", 4)
    monkeypatch.setattr(store.streams.staging, "staged_max", 16)
    won: list[int] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        for i in range(30):
            sid = f"hot-{i % 3}"
            version = store.stream_version(sid)
            try:
                store.append_to_stream(sid, _events(1), -1 if version is None else version)
            except WrongExpectedVersionError:
                continue
            with lock:
                won.append(i % 3)
            store.append_to_stream(f"cold-{k}-{i}", _events(1), StreamState.NO_STREAM)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for n in range(3):
        events = store.read_stream(f"hot-{n}")
        assert [e.version for e in events] == list(range(won.count(n)))


def test_a_lone_append_after_a_burst_does_not_wait_long(store: eventstore.Store) -> None:
    barrier = threading.Barrier(32)

    def burst(k: int) -> None:
        barrier.wait()
        store.append_to_stream(f"burst-{k}", _events(1), StreamState.NO_STREAM)

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i in range(20):
        store.append_to_stream("burst-0", _events(1), i)
    assert store.stream_version("burst-0") == 20
