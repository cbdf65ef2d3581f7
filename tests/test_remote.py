"""The event-sourcing API through ``eventstore.connect``: the same tests as the embedded store,
run on an embedded store and on a remote one (a server on 127.0.0.1, port 0, over a store of
the test's own), plus what only the network adds (paging by bytes, the one clear error of a
server without the stream APIs, a server that stays up whatever one client sends)."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_api_suite_streams import (
    test_a_subscription_iterates,
    test_metadata_delete_and_truncate,
    test_stream_errors_are_the_same,
    test_subscriptions_catch_up_then_follow,
)

import eventstore
from eventstore import (
    Aggregate,
    Event,
    InvalidArgumentError,
    NewEvent,
    Repository,
    StoreClosedError,
    StreamNotFoundError,
    StreamState,
    WrongExpectedVersionError,
    event_type,
)
from eventstore.remote import StreamsNotServedError
from eventstore.wire import extensions as codec

__all__ = [  # the embedded suite's tests, collected here again over both stores
    "test_a_subscription_iterates",
    "test_metadata_delete_and_truncate",
    "test_stream_errors_are_the_same",
    "test_subscriptions_catch_up_then_follow",
]


class Served:
    """An embedded store served on 127.0.0.1 (port 0) and a remote store connected to it."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.embedded = eventstore.open(path, **kwargs)
        self.server = self.embedded.serve("127.0.0.1:0")
        self.port = self.server.address[1]
        self.remote = eventstore.connect(f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self.remote.close()
        self.server.close()
        report = self.embedded.check()
        assert report.ok, "\n".join(map(str, report.problems))
        self.embedded.close()


@pytest.fixture(params=["embedded", "remote"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A store of the API under test: ``eventstore.open`` or ``eventstore.connect``."""
    opened: list[Any] = []

    def _open(**kwargs: Any) -> Any:
        if request.param == "embedded":
            store = eventstore.open(tmp_path / "store", **kwargs)
            opened.append(store)
            return store
        served = Served(tmp_path / "store", **kwargs)
        opened.append(served)
        return served.remote

    yield _open
    for item in opened:
        if isinstance(item, Served):
            item.close()
        elif not item.closed:
            assert item.check().ok
            item.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "store")
    yield s
    s.close()


def _events(*types: str, size: int = 2) -> list[NewEvent]:
    return [NewEvent(type=t, data=b"x" * size) for t in types]


def test_append_read_and_versions(open_store: Callable[..., Any]) -> None:
    store = open_store(stream_partitions=2)
    r = store.append_to_stream("order-1", _events("Placed", "Paid"), StreamState.NO_STREAM)
    assert (r.stream_id, r.next_expected_version, r.position) == ("order-1", 1, 1)
    store.append_to_stream("order-2", _events("Placed"))
    store.append_to_stream("order-1", NewEvent(type="Shipped"), 1)
    assert [e.type for e in store.read_stream("order-1")] == ["Placed", "Paid", "Shipped"]
    assert [e.version for e in store.read_stream("order-1", 1, limit=1)] == [1]
    assert [e.version for e in store.read_stream("order-1", backwards=True)] == [2, 1, 0]
    assert [e.version for e in store.read_stream("order-1", 1, backwards=True)] == [1, 0]
    assert [(e.stream_id, e.position) for e in store.read_all()] == [
        ("order-1", 0), ("order-1", 1), ("order-2", 2), ("order-1", 3)]
    assert [e.position for e in store.read_all(from_position=2, limit=1)] == [2]
    assert store.stream_version("order-1") == 2 and store.stream_version("nope-1") is None
    assert store.list_streams("order") == ["order-1", "order-2"]
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append_to_stream("order-1", _events("Late"), 1)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("order-1", 1, 2)
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream("order-9", _events("X"), StreamState.STREAM_EXISTS)


def test_a_resent_append_writes_nothing(open_store: Callable[..., Any]) -> None:
    store = open_store()
    events = _events("A", "B")
    first = store.append_to_stream("cart-1", events, StreamState.NO_STREAM)
    assert store.append_to_stream("cart-1", events, StreamState.NO_STREAM) == first
    assert store.stream_version("cart-1") == 1


def test_a_deleted_stream_reads_as_deleted(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.append_to_stream("acct-1", _events("A"))
    store.delete_stream("acct-1")
    with pytest.raises(StreamNotFoundError) as info:
        store.read_stream("acct-1")
    assert info.value.deleted and info.value.stream_id == "acct-1"
    with pytest.raises(StreamNotFoundError):
        store.truncate_stream("none-1", 1)


def test_reads_page_past_max_bytes(served: Served) -> None:
    """10 KB events, 1,000 of them: reads span many responses and return exactly what the
    embedded store returns."""
    store = served.remote
    for _ in range(10):
        store.append_to_stream("big-1", _events(*["E"] * 100, size=10_000))
    store.streams.max_bytes = 64 * 1024  # about six events a response
    remote = store.read_stream("big-1")
    assert [e.version for e in remote] == list(range(1000))
    assert remote == served.embedded.read_stream("big-1")
    assert store.read_stream("big-1", 10, limit=25) == served.embedded.read_stream("big-1", 10, limit=25)
    assert store.read_stream("big-1", backwards=True, limit=30) == \
        served.embedded.read_stream("big-1", backwards=True, limit=30)
    assert store.read_all(5, limit=500) == served.embedded.read_all(5, limit=500)
    assert store.read_all(0, None) == served.embedded.read_all(0, None)


@event_type("RemoteTestDeposited")
class Deposited(Event):
    amount: int


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0

    def deposit(self, amount: int) -> None:
        self.trigger_event(Deposited, amount=amount)

    def apply_Deposited(self, event: Deposited) -> None:
        self.balance += event.amount


def test_repository_round_trip_with_snapshots(open_store: Callable[..., Any]) -> None:
    store = open_store()
    accounts = Repository(store, Account, snapshot_every=3)
    account = Account("account-1")
    for amount in (5, 10, 20, 40):
        account.deposit(amount)
    accounts.save(account)
    again = accounts.get("account-1")
    assert (again.balance, again.version) == (75, 3)
    assert accounts.snapshots.get("account-1") is not None  # taken at the save that crossed 3
    stale = accounts.get("account-1")
    again.deposit(1)
    accounts.save(again)
    stale.deposit(2)
    with pytest.raises(WrongExpectedVersionError):
        accounts.save(stale)
    assert accounts.get("account-1").balance == 76
    assert "account-1" in accounts and "account-2" not in accounts


def test_subscription_sees_appends_of_another_client(served: Served) -> None:
    """Live delivery crosses the network: an embedded append wakes a remote long poll."""
    with served.remote.subscribe_to_category("order", 0) as sub:
        assert sub.next_batch(10, 0) == []
        timer = threading.Timer(0.2, served.embedded.append_to_stream, ("order-7", _events("Placed")))
        timer.start()
        try:
            event = sub.next(5.0)
        finally:
            timer.join()
        assert event is not None and (event.stream_id, sub.checkpoint) == ("order-7", 0)
        assert sub.caught_up


def test_bad_frames_are_answered_and_the_server_stays_up(served: Served) -> None:
    """Garbage bodies, a wrong version and an unknown expected kind: each gets its error code
    back, nothing is written, and the next client is served."""
    def ask(frame: bytes) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(frame)
            size = struct.unpack(">i", _recv(sock, 4))[0]
            return codec.decode_response(20000, _recv(sock, size))[1]

    header = struct.pack(">hhih", 20000, 0, 1, -1) + b"\x00"
    garbage = header + b"\xff\xff\xff\xff\x0f"
    assert ask(struct.pack(">i", len(garbage)) + garbage)["error_code"] == 42
    bad_kind = codec.encode_request(20000, 2, {
        "stream_id": "x-1", "topic": None, "expected_kind": 9, "expected_version": 0,
        "events": [(bytes(16), "T", b"", b"")]})
    assert ask(bad_kind)["error_code"] == 42
    assert served.embedded.stream_version("x-1") is None
    assert served.remote.append_to_stream("x-1", _events("T")).next_expected_version == 0


def _recv(sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:  # bounded by the socket's timeout
        chunk = sock.recv(size - len(out))
        assert chunk, "the server closed the connection"
        out += chunk
    return out


def test_invalid_arguments_are_refused_before_the_network(served: Served) -> None:
    with pytest.raises(InvalidArgumentError):
        served.remote.append_to_stream("a-1", [])
    with pytest.raises(InvalidArgumentError):
        served.remote.read_stream("a-1", limit=-1)
    with pytest.raises(InvalidArgumentError):
        eventstore.connect("no-port")


def test_a_server_without_the_stream_apis_is_named(tmp_path: Path) -> None:
    """A Kafka server lists no key 20000: every stream call raises one error naming it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def answer_api_versions() -> None:
        conn, _ = listener.accept()
        with conn:
            size = struct.unpack(">i", _recv(conn, 4))[0]
            cid = struct.unpack(">i", _recv(conn, size)[4:8])[0]
            body = struct.pack(">ihi", cid, 0, 1) + struct.pack(">hhh", 0, 3, 11)
            conn.sendall(struct.pack(">i", len(body)) + body)
            conn.recv(1)  # until the client goes

    thread = threading.Thread(target=answer_api_versions, daemon=True)
    thread.start()
    store = eventstore.connect(f"127.0.0.1:{port}")
    try:
        with pytest.raises(StreamsNotServedError, match=f"127.0.0.1:{port} does not serve"):
            store.append_to_stream("a-1", _events("A"))
        with pytest.raises(StreamsNotServedError):
            store.read_all()
    finally:
        store.close()
        thread.join(10)
        listener.close()


def test_a_stopping_server_ends_a_long_poll(tmp_path: Path) -> None:
    """A subscription waiting in a long poll does not hold the server's stop: the poll is
    answered, and the waiting client sees the store gone (StoreClosedError, as embedded)."""
    embedded = eventstore.open(tmp_path / "store")
    server = embedded.serve("127.0.0.1:0")
    store = eventstore.connect(f"127.0.0.1:{server.address[1]}")
    outcome: list[object] = []
    subscription = store.subscribe_to_all(0)

    def wait() -> None:
        try:
            outcome.append(subscription.next_batch(10, 30.0))
        except StoreClosedError as e:
            outcome.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        time.sleep(0.3)  # the poll is waiting on the server
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 5.0
        waiter.join(10)
        assert not waiter.is_alive()
        assert outcome and (outcome[0] == [] or isinstance(outcome[0], StoreClosedError))
    finally:
        subscription.close()
        store.close()
        server.close()
        embedded.close()


def test_a_projection_runner_names_what_it_needs(served: Served) -> None:
    from eventstore import Projection, ProjectionRunner

    class Counter(Projection):
        def handle(self, event: Any, state: Any) -> None:
            pass

    with pytest.raises(eventstore.EventStoreError, match="ProjectionRunner needs an embedded store"):
        ProjectionRunner(served.remote, Counter(), name="counter")


def test_close_wakes_a_reader_waiting_in_a_long_poll(served: Served) -> None:
    served.remote.append_to_stream("a-1", _events("A"))
    subscription = served.remote.subscribe_to_all(0)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.extend(subscription))
    reader.start()
    time.sleep(0.3)  # delivered the event, now waiting on the server
    started = time.monotonic()
    subscription.close()
    reader.join(10)
    assert not reader.is_alive() and time.monotonic() - started < 5.0
    assert [e.type for e in got] == ["A"]
    assert subscription.next(0) is None and subscription.next_batch() == []
    subscription.close()  # idempotent


def test_threads_append_over_connections_of_their_own(served: Served) -> None:
    """16 threads append to one stream with expected versions: each append is one round trip
    on a connection no other thread waits for, and every conflict is a clean refusal."""
    store = served.remote
    written: list[int] = []
    conflicts: list[int] = []

    def writer() -> None:
        for _ in range(20):  # bounded
            version = store.stream_version("counter-1")
            try:
                r = store.append_to_stream("counter-1", _events("Inc"), -1 if version is None else version)
                written.append(r.next_expected_version)
            except WrongExpectedVersionError:
                conflicts.append(1)

    threads = [threading.Thread(target=writer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(written) == list(range(len(written)))  # every version once: no lost update
    assert len(written) + len(conflicts) == 16 * 20
    assert served.embedded.stream_version("counter-1") == len(written) - 1
    assert store.streams.connection.idle > 1


def test_a_restarted_server_is_reached_again(served: Served) -> None:
    """A kept connection the server closed is replaced once, transparently."""
    store = served.remote
    store.append_to_stream("a-1", _events("A"))
    served.server.close()
    served.server = served.embedded.serve(f"127.0.0.1:{served.port}")  # the same address again
    assert store.append_to_stream("a-1", _events("B")).next_expected_version == 1
    assert [e.type for e in store.read_stream("a-1")] == ["A", "B"]


def test_garbage_bodies_are_answered_and_nothing_is_written(served: Served) -> None:
    """300 random bodies under every extension key: each is answered with a readable response,
    nothing of them is written, and the server serves the next request."""
    rng = random.Random(7)
    errors = 0
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        for cid in range(300):  # bounded
            key = 20000 + cid % 12
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
            frame = struct.pack(">hhih", key, 0, cid, -1) + b"\x00" + body
            sock.sendall(struct.pack(">i", len(frame)) + frame)
            size = struct.unpack(">i", _recv(sock, 4))[0]
            got, response = codec.decode_response(key, _recv(sock, size))  # readable, whatever it says
            assert got == cid
            errors += response["error_code"] != 0
    assert errors > 250  # almost all of them are not requests at all
    assert served.embedded.list_streams() == [] and served.embedded.read_all() == []
    assert served.remote.append_to_stream("x-1", _events("T")).next_expected_version == 0


def test_a_plain_append_to_a_streams_topic_is_refused_the_same(open_store: Callable[..., Any]) -> None:
    store = open_store()
    store.append_to_stream("order-1", _events("Placed"))
    with pytest.raises(eventstore.StreamsTopicError):
        store.append("order", b"not an event")
    assert [e.type for e in store.read_stream("order-1")] == ["Placed"]
