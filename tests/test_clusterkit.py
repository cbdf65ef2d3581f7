"""The replication tests' own tools must catch what they are for: the proxy forwards,
holds and cuts; the history checker fails on each breach it names."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from clusterkit import History, Proxy


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(5)

    def run() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            while True:
                try:
                    data = conn.recv(1024)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv, t


def test_proxy_forwards_holds_and_cuts() -> None:
    srv, t = _echo_server()
    try:
        with Proxy(f"127.0.0.1:{srv.getsockname()[1]}") as proxy:
            host, port = proxy.address.split(":")
            c = socket.create_connection((host, int(port)), timeout=5)
            c.sendall(b"one")
            assert c.recv(16) == b"one"
            proxy.stall()
            c.sendall(b"two")
            c.settimeout(0.3)
            with pytest.raises(TimeoutError):
                c.recv(16)
            proxy.resume()
            c.settimeout(5)
            assert c.recv(16) == b"two"
            deadline = time.monotonic() + 5
            while proxy.connections != 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            proxy.cut()
            assert c.recv(16) == b""
            c.close()
    finally:
        srv.close()
        t.join(timeout=5)


def _replica(*rows: tuple[int, bytes]) -> dict[tuple[str, int], list[tuple[int, bytes]]]:
    return {("t", 0): list(rows)}


def test_history_accepts_a_good_run() -> None:
    h = History()
    h.ack("t", 0, 0, b"a")
    h.ack("t", 0, 1, b"b")
    h.saw("t", 0, 1, b"b")
    log = _replica((0, b"a"), (1, b"b"), (2, b"c"))
    h.check({"leader": log, "follower": dict(log)})


@pytest.mark.parametrize("replicas, message", [
    ({"l": _replica((0, b"a"))}, "is lost"),
    ({"l": _replica((0, b"a"), (1, b"x"))}, "was b'b'"),
    ({"l": _replica((0, b"a"), (1, b"b"), (2, b"a"))}, "twice"),
    ({"l": _replica((0, b"a"), (1, b"b")),
      "f": _replica((0, b"a"), (1, b"b"), (2, b"c"))}, "differs|records"),
])
def test_history_names_each_breach(replicas: dict, message: str) -> None:
    h = History()
    h.ack("t", 0, 0, b"a")
    h.ack("t", 0, 1, b"b")
    with pytest.raises(AssertionError, match=message):
        h.check(replicas)


def test_history_catches_a_read_of_a_truncated_record() -> None:
    h = History()
    h.saw("t", 0, 5, b"gone")
    with pytest.raises(AssertionError, match="later truncated"):
        h.check({"l": _replica((0, b"a"))})
