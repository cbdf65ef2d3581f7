"""The server under many connections and misbehaving clients keeps serving the others.

One server process (so that its memory is its own to measure) holds 1,000 idle
connections, a client that sends requests and never reads the answers, and a client
that sends half a frame and stalls, while a confluent-kafka producer and a kafka-python
group consumer move records through it. Every acknowledged record must be consumed, the
idle connections must still be answered, the RSS must stay bounded, and the server must
stop cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from clusterkit import until
from interopkit import TIMEOUT_S, client, unique

IDLE = 1_000
RECORDS = 5_000  # per producer
PRODUCERS = 3
RSS_BOUND_MB = 250
LISTENING = re.compile(rb"listening on (\S+):(\d+)")

#: A server like ``es serve``, with room for the idle connections plus the active clients.
SERVER = """
import signal, sys, threading, eventstore
store = eventstore.open(sys.argv[1], durability="fsync")
handle = store.serve("127.0.0.1:0", max_connections=int(sys.argv[2]))
print(f"listening on 127.0.0.1:{handle.address[1]}", file=sys.stderr, flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
handle.close()
store.close()
"""


@contextmanager
def server_process(data: Path, max_connections: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(data), str(max_connections)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first line: the server prints it once listening
        found = LISTENING.search(line)
        assert found, f"the server did not start: {line!r}"
        yield proc, f"127.0.0.1:{int(found.group(2))}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(TIMEOUT_S)
        if proc.stderr is not None:
            proc.stderr.close()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def api_versions(correlation_id: int, client_id: bytes = b"load") -> bytes:
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def answer(sock: socket.socket) -> int:
    """Read one response frame; its correlation id."""
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:  # bounded by n and the socket timeout
            chunk = sock.recv(n - len(out))
            assert chunk, "the server closed the connection"
            out += chunk
        return out

    (size,) = struct.unpack(">i", exactly(4))
    (correlation_id,) = struct.unpack(">i", exactly(size)[:4])
    return int(correlation_id)


def connect(bootstrap: str) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=TIMEOUT_S)


#: Requests of 10 kB the deaf client sends from its first byte: 400 MB, far more than the
#: socket buffers hold, and 40,000 answers, more than they hold of those (an ApiVersions
#: answer is ~300 bytes: the kernel takes some 15,000 before the server must stop).
FLOOD = 40_000


def flood_without_reading(sock: socket.socket, stop: threading.Event, sent: list[int]) -> None:
    """Send ApiVersions requests and never read: the server must stop reading this socket,
    so that sending blocks once the socket buffers are full (``sent`` stays below FLOOD)."""
    frame = api_versions(7, b"x" * 10_000)
    sock.settimeout(2.0)
    for i in range(FLOOD):  # bounded; ends far sooner once both socket buffers are full
        sent[0] = i
        if stop.is_set():
            return
        try:
            sock.sendall(frame)
        except (TimeoutError, OSError):
            return
    sent[0] = FLOOD


def enough_descriptors(needed: int) -> None:
    """Raise this process's soft limit on open files (the server inherits it), or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"{needed} open files are needed; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.mark.slow
def test_idle_connections_and_bad_clients_do_not_stop_the_others(tmp_path: Path) -> None:
    from confluent_kafka import Producer

    enough_descriptors(3 * IDLE)
    with server_process(tmp_path / "store", IDLE + 50) as (proc, bootstrap):
        idle_rss = rss_mb(proc.pid)
        idle: list[socket.socket] = []
        stop = threading.Event()
        try:
            for i in range(IDLE):
                sock = connect(bootstrap)
                idle.append(sock)
                sock.sendall(api_versions(i))
                assert answer(sock) == i

            half = connect(bootstrap)
            idle.append(half)
            half.sendall(struct.pack(">i", 1_000) + b"\x00\x12\x00\x00")  # 8 of 1,004 bytes
            deaf = connect(bootstrap)
            idle.append(deaf)
            sent = [0]
            flooder = threading.Thread(target=flood_without_reading, args=(deaf, stop, sent), daemon=True)
            flooder.start()

            topic = unique("load")
            kafka = client("kafka-python", bootstrap, "short")
            kafka.create_topic(topic, 3)
            producers = [produce_in_background(Producer, bootstrap, topic) for _ in range(PRODUCERS)]
            consumed = kafka.consume(topic, PRODUCERS * RECORDS, group=unique("load"))
            delivered = [acked() for acked in producers]
            assert all(len(each) == RECORDS for each in delivered)
            assert {(g.partition, g.offset) for g in consumed} == set().union(*delivered)
            assert len(consumed) == PRODUCERS * RECORDS

            for i in range(0, IDLE, 20):  # the idle connections are still answered
                idle[i].sendall(api_versions(10_000 + i))
                assert answer(idle[i]) == 10_000 + i
            flooder.join(TIMEOUT_S)
            assert sent[0] < FLOOD, "the server read every request of a client that reads no answer"
            loaded_rss = rss_mb(proc.pid)
            assert loaded_rss < RSS_BOUND_MB, f"RSS {loaded_rss:.0f} MB (idle: {idle_rss:.0f} MB)"
        finally:
            stop.set()
            for sock in idle:
                with suppress(OSError):
                    sock.close()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(TIMEOUT_S) == 0


def produce_in_background(producer_class: Any, bootstrap: str, topic: str) -> Any:
    """Start producing :data:`RECORDS` keyed records on a thread; returns a function that
    waits for the thread and gives the acknowledged (partition, offset) pairs."""
    delivered: set[tuple[int, int]] = set()
    failed: list[str] = []

    def report(error: Any, message: Any) -> None:
        if error is None:
            delivered.add((message.partition(), message.offset()))
        else:
            failed.append(str(error))

    def run() -> None:
        producer = producer_class({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                                   "enable.idempotence": True})
        for i in range(RECORDS):
            producer.produce(topic, b"x" * 100, str(i % 17).encode(), on_delivery=report)
            if i % 100 == 0:
                producer.poll(0.005)
        producer.flush(TIMEOUT_S)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait() -> set[tuple[int, int]]:
        thread.join(TIMEOUT_S * 2)
        assert not thread.is_alive() and not failed, failed[:3]
        until(lambda: len(delivered) == RECORDS, timeout_s=5.0)
        return delivered

    return wait
