"""Dynamic consistency boundaries over the wire (AppendEvents, ReadEvents, PollEvents,
docs/protocol.md section 7.1): a remote store answers as the embedded one, the library's
DCB read/append case runs on it, embedded and remote appends are checked against each
other, reads page, a subscription long-polls, bad requests are answered and the server
stays up."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.dcb.tests import DCBRecorderTestCase
from serverkit import RawClient, served

import eventstore
from eventstore import (
    AppendCondition,
    ConditionFailedError,
    InvalidArgumentError,
    Query,
    QueryItem,
    TaggedEvent,
)
from eventstore.eventsourcing.dcb import EventStoreDCBRecorder
from eventstore.wire import extensions as codec
from eventstore.wire.errors import CONDITION_FAILED, INVALID_REQUEST


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[eventstore.Store, Any]]:
    with served(tmp_path) as (store, address):
        remote = eventstore.connect(address)
        try:
            yield store, remote
        finally:
            remote.close()


def _q(*tags: str, types: tuple[str, ...] = ()) -> Query:
    return Query([QueryItem(types, [t]) for t in tags] or [QueryItem(types)])


def test_remote_answers_as_embedded(pair: tuple[eventstore.Store, Any]) -> None:
    store, remote = pair
    assert remote.append_events([TaggedEvent("A", b"1", ["x"]), TaggedEvent("B", b"2", ["x", "y"])]) == 2
    store.append_to_stream("order-1", [eventstore.NewEvent(type="Placed")])
    assert store.append_events(TaggedEvent("C", b"3", ["y"])) == 4
    for query, after, limit in [(None, None, None), (_q("x"), None, None), (_q("y"), 2, None),
                                (_q("x", "y"), None, 2), (_q(types=("B", "C")), 1, None),
                                (_q("nothing"), None, None), (None, None, 0)]:
        assert remote.read_events(query, after=after, limit=limit) == \
            store.read_events(query, after=after, limit=limit)
    with pytest.raises(ConditionFailedError):
        remote.append_events(TaggedEvent("D"), AppendCondition(_q("y"), after=2))
    assert remote.append_events(TaggedEvent("D", b"", ["y"]), AppendCondition(_q("y"), after=4)) == 5
    with pytest.raises(InvalidArgumentError):
        remote.append_events([])
    assert [e.type for e in store.read_all(0, None)] == ["A", "B", "Placed", "C", "D"]


def test_embedded_and_remote_appends_conflict_with_each_other(pair: tuple[eventstore.Store, Any]) -> None:
    """One DCB layer per store: the server's appends and the embedded ones are checked
    against the same pending appends and index."""
    store, remote = pair
    head = remote.read_events(_q("k")).head
    store.append_events(TaggedEvent("E", b"", ["k"]))
    with pytest.raises(ConditionFailedError):
        remote.append_events(TaggedEvent("E", b"", ["k"]), AppendCondition(_q("k"), head))
    head = store.read_events(_q("k")).head
    remote.append_events(TaggedEvent("E", b"", ["k"]), AppendCondition(_q("k"), head))
    with pytest.raises(ConditionFailedError):
        store.append_events(TaggedEvent("E", b"", ["k"]), AppendCondition(_q("k"), head))


def test_reads_page_by_max_bytes(tmp_path: Path) -> None:
    with served(tmp_path) as (store, address):
        for start in range(0, 300, 100):  # bounded
            store.append_events([TaggedEvent("E", bytes(200), ["t", f"n{i}"])
                                 for i in range(start, start + 100)])
        with eventstore.connect(address, max_bytes=2_000) as remote:
            assert remote.read_events(_q("t")) == store.read_events(_q("t"))
            for after, limit in [(5, 150), (None, 299), (290, None)]:
                assert remote.read_events(_q("t"), after=after, limit=limit) == \
                    store.read_events(_q("t"), after=after, limit=limit)
            assert len(remote.read_events().events) == 300


def test_subscription_history_then_live(pair: tuple[eventstore.Store, Any]) -> None:
    store, remote = pair
    store.append_events([TaggedEvent("A", b"1", ["x"]), TaggedEvent("B", b"2", ["y"])])
    with remote.subscribe_events(_q("x"), after=0) as sub:
        first = sub.next(timeout_s=5)
        assert first is not None and first.data == b"1"
        assert sub.next(timeout_s=0.2) is None
        threading.Timer(0.1, store.append_events, args=([TaggedEvent("C", b"3", ["x"])],)).start()
        live = sub.next(timeout_s=5)
        assert live is not None and live.data == b"3" and sub.checkpoint == live.position


def _answer(client: RawClient, frame: bytes, api_key: int) -> dict[str, Any]:
    client.send(frame)
    got = client.response()
    assert got is not None
    return codec.decode_response(api_key, got)[1]


def test_bad_requests_are_answered_and_the_server_stays_up(pair: tuple[eventstore.Store, Any]) -> None:
    store, remote = pair
    client = RawClient(remote.address)
    try:
        empty_type = codec.encode_request(20012, 7, {"events": [("", b"", [])], "conditional": False,
                                                     "fail_if_events_match": [], "after": -1})
        assert _answer(client, empty_type, 20012)["error_code"] == INVALID_REQUEST.code
        whole = codec.encode_request(20013, 8, {"query": [([], ["x"])], "after": 0, "limit": -1,
                                                "max_bytes": 1000})
        cut = whole[4:-3]  # a body that ends inside its fields
        answer = _answer(client, struct.pack(">i", len(cut)) + cut, 20013)
        assert answer["error_code"] == INVALID_REQUEST.code
        store.append_events(TaggedEvent("A", b"", ["x"]))
        conflicting = codec.encode_request(20012, 9, {"events": [("B", b"", ["x"])], "conditional": True,
                                                      "fail_if_events_match": [([], ["x"])], "after": 0})
        assert _answer(client, conflicting, 20012)["error_code"] == CONDITION_FAILED.code
    finally:
        client.sock.close()
    assert remote.read_events().head == 1


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_async_remote_store(tmp_path: Path) -> None:
    with served(tmp_path) as (store, address):
        remote = await eventstore.aio.connect(address)
        try:
            assert await remote.append_events(TaggedEvent("A", b"1", ["x"])) == 1
            with pytest.raises(ConditionFailedError):
                await remote.append_events(TaggedEvent("B"), AppendCondition(_q("x"), after=0))
            got = await remote.read_events(_q("x"))
            assert got == store.read_events(_q("x")) and got.head == 1
            sub = remote.subscribe_events(_q("x"), after=0)
            try:
                first = await sub.next(timeout_s=5)
                assert first is not None and first.data == b"1"
                store.append_events(TaggedEvent("C", b"2", ["x"]))
                live = await sub.next(timeout_s=5)
                assert live is not None and live.data == b"2"
            finally:
                await sub.close()
        finally:
            await remote.close()


class _Shared:
    def __init__(self, store: Any) -> None:
        self.store = store


class TestLibraryCaseOverTheWire(DCBRecorderTestCase):
    """The library's DCB read/append case, its recorder talking to a served store."""

    def test_append_read(self) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp, served(Path(tmp)) as (_store, address):
            remote = eventstore.connect(address)
            try:
                self._test_append_read(EventStoreDCBRecorder(_Shared(remote)))  # type: ignore[arg-type]
            finally:
                remote.close()
