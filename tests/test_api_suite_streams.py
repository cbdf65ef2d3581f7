"""The event-sourcing API of the store, written once and run through ``eventstore`` and through
``eventstore.aio`` on asyncio and on trio (the fixtures of ``test_api_suite``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from test_api_suite import api, open_store  # noqa: F401  (fixtures, run per API)

from eventstore import (
    InvalidArgumentError,
    NewEvent,
    StreamMetadata,
    StreamNotFoundError,
    StreamState,
    WrongExpectedVersionError,
)


def _events(*types: str) -> list[NewEvent]:
    return [NewEvent(type=t, data=b"{}") for t in types]


def test_append_and_read_streams(open_store: Callable[..., Any]) -> None:  # noqa: F811
    store = open_store(stream_partitions=2)
    r = store.append_to_stream("order-1", _events("Placed", "Paid"), StreamState.NO_STREAM)
    assert (r.stream_id, r.next_expected_version, r.position) == ("order-1", 1, 1)
    store.append_to_stream("order-2", _events("Placed"))
    store.append_to_stream("order-1", NewEvent(type="Shipped"), 1)
    assert [e.type for e in store.read_stream("order-1")] == ["Placed", "Paid", "Shipped"]
    assert [e.version for e in store.read_stream("order-1", 1, limit=1)] == [1]
    assert [e.version for e in store.read_stream("order-1", backwards=True)] == [2, 1, 0]
    assert [(e.stream_id, e.position) for e in store.read_all()] == [
        ("order-1", 0), ("order-1", 1), ("order-2", 2), ("order-1", 3)]
    assert [e.position for e in store.read_all(from_position=2, limit=1)] == [2]
    assert store.stream_version("order-1") == 2 and store.stream_version("nope-1") is None
    assert store.list_streams() == ["order-1", "order-2"]
    assert store.list_streams("order") == ["order-1", "order-2"]
    assert [(t.name, t.partitions, t.streams) for t in store.topics()] == [("order", 2, True)]
    assert store.topic("order").streams


def test_stream_errors_are_the_same(open_store: Callable[..., Any]) -> None:  # noqa: F811
    store = open_store()
    store.append_to_stream("order-1", _events("Placed"))
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append_to_stream("order-1", _events("Again"), StreamState.NO_STREAM)
    assert (info.value.stream_id, info.value.actual) == ("order-1", 0)
    with pytest.raises(StreamNotFoundError):
        store.read_stream("missing-1")
    with pytest.raises(InvalidArgumentError):
        store.append_to_stream("", _events("X"))
    with pytest.raises(InvalidArgumentError):
        store.read_all(from_position=2**64)


def test_metadata_delete_and_truncate(open_store: Callable[..., Any]) -> None:  # noqa: F811
    store = open_store()
    store.append_to_stream("acct-1", _events("A", "B", "C"))
    store.set_stream_metadata("acct-1", StreamMetadata(max_count=2, custom={"owner": "x"}))
    assert store.get_stream_metadata("acct-1").custom == {"owner": "x"}
    assert [e.type for e in store.read_stream("acct-1")] == ["B", "C"]
    store.truncate_stream("acct-1", 2)
    assert [e.type for e in store.read_stream("acct-1")] == ["C"]
    store.delete_stream("acct-1")
    assert store.list_streams() == []
    with pytest.raises(StreamNotFoundError):
        store.read_stream("acct-1")


def test_subscriptions_catch_up_then_follow(open_store: Callable[..., Any]) -> None:  # noqa: F811
    store = open_store()
    store.append_to_stream("order-1", _events("Placed"))
    store.append_to_stream("user-1", _events("Joined"))
    with store.subscribe_to_all(0) as everything, \
            store.subscribe_to_category("order", 0) as orders, \
            store.subscribe_to_stream("order-1", 0) as one:
        assert [e.type for e in everything.next_batch(10, 0)] == ["Placed", "Joined"]
        assert [e.type for e in orders.next_batch(10, 0)] == ["Placed"]
        assert one.next(0).type == "Placed"
        later = threading.Timer(0.1, store.append_to_stream, ("order-1", _events("Paid")))
        later.start()
        try:
            event = orders.next(5.0)  # woken by the append, not by a timeout
        finally:
            later.join()
        assert (event.type, event.position, orders.checkpoint) == ("Paid", 2, 2)
        assert one.next(5.0).version == 1
        assert [e.type for e in everything.next_batch(10, 5.0)] == ["Paid"]


def test_a_subscription_iterates(open_store: Callable[..., Any]) -> None:  # noqa: F811
    store = open_store()
    store.append_to_stream("order-1", _events("A", "B", "C"))
    subscription = store.subscribe_to_stream("order-1")
    seen = []
    for event in subscription:
        seen.append(event.type)
        if len(seen) == 3:
            break
    subscription.close()
    assert seen == ["A", "B", "C"]
    assert subscription.closed
