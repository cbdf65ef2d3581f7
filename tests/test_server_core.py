"""The server's core: listening, the connection loop's order and bounds, bad frames, stopping.

Hand-made frames only where no Kafka client sends them (bad sizes, bad headers,
versions out of range); the Kafka clients' conformance is in the other
``test_server_*`` files.
"""

from __future__ import annotations

import io
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import anyio
import entry_points
import pytest
from kio.serial import entity_writer
from serverkit import RawClient, es_serve, served

import eventstore
import eventstore.aio
from eventstore.errors import InvalidArgumentError, ServerError

API_VERSIONS = 18
UNSUPPORTED_VERSION = 35


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _correlation_and_error(response: bytes | None) -> tuple[int, int]:
    assert response is not None, "the server closed the connection"
    correlation_id, error_code = struct.unpack_from(">ih", response)
    return correlation_id, error_code


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    with served(tmp_path) as (_store, bootstrap), RawClient(bootstrap) as client:
        for cid in range(50):  # more than max_in_flight: the server must keep reading as it answers
            client.request(API_VERSIONS, cid % 3, 1000 + cid, b"")
        got = [_correlation_and_error(client.response()) for _ in range(50)]
    assert got == [(1000 + cid, 0) for cid in range(50)]


def test_api_versions_above_the_range_is_answered_in_v0_form(tmp_path: Path) -> None:
    with served(tmp_path) as (_store, bootstrap), RawClient(bootstrap) as client:
        client.request(API_VERSIONS, 9, 7, b"\x00", flexible=True)
        response = client.response()
        assert _correlation_and_error(response) == (7, UNSUPPORTED_VERSION)
        assert response is not None
        (count,) = struct.unpack_from(">i", response, 6)  # v0: int32 array length, then (key, min, max)
        entries = [struct.unpack_from(">hhh", response, 10 + 6 * i) for i in range(count)]
        assert (API_VERSIONS, 0, 4) in entries and (1, 4, 16) in entries
        client.request(API_VERSIONS, 3, 8, b"\x01\x01\x00", flexible=True)  # the connection goes on
        assert _correlation_and_error(client.response()) == (8, 0)


@pytest.mark.parametrize("data", [
    struct.pack(">i", 200 * 1024 * 1024),  # above max_frame_bytes
    struct.pack(">i", 0),  # empty frame
    struct.pack(">i", -5),
    struct.pack(">i", 6) + b"\x00\x12\x00\x00\x00\x01",  # a header cut short
    struct.pack(">i", 12) + b"\x00\x12\x00\x00\x00\x00\x00\x01\x7f\x00zz",  # client id longer than the frame
    struct.pack(">i", 10) + b"\x7f\x7f\x00\x00\x00\x00\x00\x01\xff\xff",  # an API that does not exist
], ids=["oversize", "zero", "negative", "short-header", "lying-client-id", "unknown-api"])
def test_a_bad_frame_closes_only_its_connection(tmp_path: Path, data: bytes) -> None:
    with served(tmp_path) as (_store, bootstrap), RawClient(bootstrap) as other:
        with RawClient(bootstrap) as bad:
            bad.send(data)
            assert bad.closed_by_server()
        other.request(API_VERSIONS, 0, 1, b"")
        assert _correlation_and_error(other.response()) == (1, 0)


def test_requests_before_a_bad_frame_are_answered(tmp_path: Path) -> None:
    with served(tmp_path) as (_store, bootstrap), RawClient(bootstrap) as client:
        client.request(API_VERSIONS, 0, 1, b"")
        client.send(struct.pack(">i", -1))
        assert _correlation_and_error(client.response()) == (1, 0)
        assert client.closed_by_server()


def test_port_in_use_is_one_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with eventstore.open(tmp_path / "s") as store, pytest.raises(ServerError, match="already in use"):
            store.serve(f"127.0.0.1:{port}")


def test_bad_options_fail_before_listening(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        with pytest.raises(InvalidArgumentError, match="unknown server option"):
            store.serve("127.0.0.1:0", max_inflight=3)
        with pytest.raises(InvalidArgumentError, match="HOST:PORT"):
            store.serve("127.0.0.1")


def test_store_close_stops_its_server(tmp_path: Path) -> None:
    store = eventstore.open(tmp_path / "s")
    handle = store.serve("127.0.0.1:0")
    port = handle.address[1]
    with RawClient(f"127.0.0.1:{port}") as client:
        client.request(API_VERSIONS, 0, 1, b"")
        assert _correlation_and_error(client.response()) == (1, 0)
        store.close()
        assert not handle.running
        assert client.closed_by_server()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_the_cluster_id_is_stable_per_store(tmp_path: Path) -> None:
    from eventstore.server.cluster import cluster_id

    first = cluster_id(str(tmp_path))
    assert len(first) == 22 and cluster_id(str(tmp_path)) == first
    other = tmp_path / "other"
    other.mkdir()
    assert cluster_id(str(other)) != first


@pytest.mark.anyio
async def test_async_serve_runs_on_the_callers_loop(tmp_path: Path) -> None:
    async with await eventstore.aio.open(tmp_path / "s") as store, await store.serve("127.0.0.1:0") as server:
        host, port = server.address
        stream = await anyio.connect_tcp(host, port)
        async with stream:
            await stream.send(struct.pack(">ihhih", 10, API_VERSIONS, 0, 42, 0))
            size = struct.unpack(">i", await stream.receive(4))[0]
            got = b""
            with anyio.fail_after(10):
                while len(got) < size:  # bounded by size and the timeout
                    got += await stream.receive(size - len(got))
        assert _correlation_and_error(got) == (42, 0)


def test_es_serve_stops_on_sigterm_with_status_0(tmp_path: Path) -> None:
    with es_serve(tmp_path / "s") as server:
        with RawClient(server.bootstrap) as client:
            client.request(API_VERSIONS, 0, 1, b"")
            assert _correlation_and_error(client.response()) == (1, 0)
        assert server.stop(signal.SIGTERM) == 0
    assert b"listening on 127.0.0.1:" in server.stderr and b"Traceback" not in server.stderr


def test_a_second_es_serve_on_the_same_store_names_the_holder(tmp_path: Path) -> None:
    data = tmp_path / "s"
    with es_serve(data) as server:
        second = subprocess.run([*entry_points.es_command(), "serve", "--data", str(data), "--listen",
                                 "127.0.0.1:0"], capture_output=True, timeout=30,
                                env=entry_points.environment(data), check=False)
        assert second.returncode == 1
        lines = second.stderr.decode().strip().splitlines()
        assert lines == [lines[0]] and f"process {server.proc.pid}" in lines[0], lines
        assert server.stop() == 0


def test_es_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*entry_points.es_command(), "serve", "--data", str(tmp_path / "s"),
                                 "--listen", f"127.0.0.1:{port}"], capture_output=True, timeout=30,
                                env=entry_points.environment(tmp_path / "s"), check=False)
    assert result.returncode == 1
    expected = f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    assert result.stderr.decode().strip().splitlines() == [
        f"{expected} (is another server running there?)"]


def test_max_connections_refuses_one_more_and_serves_the_others(tmp_path: Path) -> None:
    with served(tmp_path, max_connections=2) as (_store, bootstrap), \
            RawClient(bootstrap) as first, RawClient(bootstrap) as second:
        for client in (first, second):  # both accepted and served
            client.request(API_VERSIONS, 0, 1, b"")
            assert _correlation_and_error(client.response()) == (1, 0)
        with RawClient(bootstrap) as third:
            assert third.closed_by_server()
        first.request(API_VERSIONS, 0, 2, b"")
        assert _correlation_and_error(first.response()) == (2, 0)


def _long_poll(topic: str, correlation_id: int, wait_ms: int) -> bytes:
    """A Fetch v4 frame's body for partition 0 of ``topic`` at offset 0 that waits ``wait_ms``."""
    name = topic.encode()
    return (struct.pack(">iiiib", -1, wait_ms, 1, 1 << 20, 0) + struct.pack(">i", 1)
            + struct.pack(">h", len(name)) + name + struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, 1 << 20))


def test_in_flight_bound_holds_back_reading(tmp_path: Path) -> None:
    """With max_in_flight 2, a third long poll starts only once the first is answered: three
    polls of 400 ms take at least 800 ms, and come back in order."""
    with served(tmp_path, max_in_flight=2) as (store, bootstrap), RawClient(bootstrap) as client:
        store.create_topic("quiet")
        started = time.monotonic()
        for cid in (1, 2, 3):
            client.request(1, 4, cid, _long_poll("quiet", cid, 400))
        got = [_correlation_and_error(client.response())[0] for _ in range(3)]
        elapsed = time.monotonic() - started
    assert got == [1, 2, 3]
    assert elapsed >= 0.75, elapsed


def test_graceful_stop_answers_a_waiting_long_poll(tmp_path: Path) -> None:
    store = eventstore.open(tmp_path / "s")
    try:
        store.create_topic("quiet")
        handle = store.serve("127.0.0.1:0")
        with RawClient(f"127.0.0.1:{handle.address[1]}") as client:
            client.request(1, 4, 9, _long_poll("quiet", 9, 30_000))
            time.sleep(0.2)  # the poll is waiting
            started = time.monotonic()
            handle.close()
            assert time.monotonic() - started < 5
            assert _correlation_and_error(client.response())[0] == 9  # answered, not cut
            assert client.closed_by_server()
    finally:
        store.close()


def test_every_error_response_encodes() -> None:
    """The answers built when a handler fails or a version is not served, for every API
    version kio knows whose response has a top-level error code."""
    from eventstore.server.dispatch import error_response
    from eventstore.wire.apis import SERVED

    built = 0
    for key, (_low, high) in SERVED.items():
        for version in range(high + 3):
            response = error_response(key, version, UNSUPPORTED_VERSION)
            if response is None:
                continue
            assert int(response.error_code) == UNSUPPORTED_VERSION
            entity_writer(type(response))(io.BytesIO(), response)
            built += 1
    assert built >= 60


def test_es_serve_options(tmp_path: Path) -> None:
    from kio.index import load_request_schema

    from eventstore.server.entities import entity, item_class

    options = ("--advertised-listener", "kafka.example:19092", "--auto-create-topics", "--durability", "none")
    with es_serve(tmp_path / "s", *options) as server:
        with RawClient(server.bootstrap) as client:
            client.request(3, 1, 5, struct.pack(">i", -1))  # Metadata v1, all topics
            response = client.response()
            metadata = load_request_schema(3, 4)
            asked = (entity(item_class(metadata, "topics"), name="made-by-a-client"),)
            made = client.call(entity(metadata, topics=asked, allow_auto_topic_creation=True))
        assert response is not None and b"kafka.example" in response
        assert struct.unpack_from(">i", response, 4 + 4 + 4 + 2 + len(b"kafka.example"))[0] == 19092
        assert made.topics[0].error_code == 0 and len(made.topics[0].partitions) == 1
        assert server.stop(signal.SIGINT) == 0
    assert b"(advertised kafka.example:19092)" in server.stderr
    with eventstore.open(tmp_path / "s") as store:
        assert [t.name for t in store.topics()] == ["made-by-a-client"]


@pytest.mark.parametrize(("api_key", "version", "flexible", "answered"), [
    (3, 13, True, True),  # Metadata v13: kio knows it, its response has an error code: UNSUPPORTED_VERSION
    (1, 3, False, False),  # Fetch v3: its response has no error code to carry it: closed
    (2, 0, False, False),  # ListOffsets v0: kio has no classes for it: closed
    (60, 7, True, False),  # DescribeCluster v7: unknown to kio: closed
], ids=["metadata-v13", "fetch-v3", "list-offsets-v0", "describe-cluster-v7"])
def test_unsupported_versions(tmp_path: Path, api_key: int, version: int, flexible: bool,
                              answered: bool) -> None:
    with served(tmp_path) as (_store, bootstrap):
        with RawClient(bootstrap) as client:
            client.request(api_key, version, 31, b"\x00" * 8, flexible=flexible)
            if answered:
                response = client.response()
                assert response is not None and struct.unpack_from(">i", response)[0] == 31
                assert struct.pack(">h", UNSUPPORTED_VERSION) in response
                client.request(API_VERSIONS, 0, 32, b"")  # and the connection goes on
                assert _correlation_and_error(client.response()) == (32, 0)
            else:
                assert client.closed_by_server()
        with RawClient(bootstrap) as other:
            other.request(API_VERSIONS, 0, 1, b"")
            assert _correlation_and_error(other.response()) == (1, 0)
