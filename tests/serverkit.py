"""How tests start a server and talk to it: in-process (``served``), as an ``es serve``
process (``es_serve``), and raw frames for what no Kafka client sends (``RawClient``).

Every server is on 127.0.0.1 with a port the system picked (port 0), and every one is
stopped by the test that started it: the in-process one by its handle, the process by
its PID (SIGTERM, then SIGKILL after a timeout). Every wait is bounded.

    from serverkit import served

    def test_x(tmp_path):
        with served(tmp_path) as (store, bootstrap):   # bootstrap = "127.0.0.1:PORT"
            store.create_topic("t")
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            ...

or the fixture ``served_store`` (add ``from serverkit import served_store`` to the test
module): the same pair, for a test that needs one server with default options.
``RawClient(bootstrap).call(kio_request_entity)`` sends one request built with kio's
classes and returns kio's response entity: for exact checks of fields a client library
hides.
"""

from __future__ import annotations

import io
import os
import re
import select
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import entry_points
import pytest

import eventstore

TIMEOUT_S = 20.0
_LISTENING = re.compile(rb"listening on (\S+):(\d+)")


@contextmanager
def served(tmp_path: Path, *, open_options: dict[str, Any] | None = None,
           **serve_options: Any) -> Iterator[tuple[eventstore.Store, str]]:
    """A store in ``tmp_path / "store"`` served in-process on 127.0.0.1, a free port;
    yields ``(store, "127.0.0.1:PORT")``; stops the server, then closes the store."""
    store = eventstore.open(tmp_path / "store", **(open_options or {}))
    try:
        handle = store.serve("127.0.0.1:0", **serve_options)
        try:
            yield store, f"127.0.0.1:{handle.address[1]}"
        finally:
            handle.close()
    finally:
        store.close()


@pytest.fixture
def served_store(tmp_path: Path) -> Iterator[tuple[eventstore.Store, str]]:
    """``served(tmp_path)`` as a fixture."""
    with served(tmp_path) as pair:
        yield pair


class ServeProcess:
    """An ``es serve`` process: its ``Popen``, its bootstrap address, what it wrote to stderr."""

    def __init__(self, proc: subprocess.Popen[bytes], bootstrap: str, stderr: bytes) -> None:
        self.proc = proc
        self.bootstrap = bootstrap
        self.stderr = stderr

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = TIMEOUT_S) -> int:
        """Signal it by PID and wait for its exit status (SIGKILL if it outlives the timeout)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout_s)
            raise
        self.stderr += _drain(self.proc)
        return code


@contextmanager
def es_serve(data: Path, *args: str, timeout_s: float = TIMEOUT_S) -> Iterator[ServeProcess]:
    """``es serve --data DATA --listen 127.0.0.1:0 ARGS`` as a process, once it listens;
    stopped by PID (SIGTERM) on the way out if the test did not stop it."""
    command = [*entry_points.es_command(), "serve", "--data", str(data), "--listen", "127.0.0.1:0", *args]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=entry_points.environment(data))
    try:
        stderr = read_stderr_until(proc, _LISTENING, timeout_s)
        found = _LISTENING.search(stderr)
        if found is None:
            raise AssertionError(f"es serve did not start: {stderr.decode(errors='replace')}")
        server = ServeProcess(proc, f"{found.group(1).decode()}:{found.group(2).decode()}", stderr)
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout_s)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def read_stderr_until(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout_s: float,
                      got: bytes = b"") -> bytes:
    """stderr of ``proc`` (after ``got``, what was read of it before) until ``pattern`` is in
    it, the process exits, or the timeout."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + timeout_s
    while not pattern.search(got):  # bounded by the deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        got += chunk
    return got


def _drain(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stderr is not None
    return read_stderr_until(proc, re.compile(rb"(?!x)x"), 1.0)  # a pattern that never matches: read to EOF


# --- raw frames -------------------------------------------------------------------------------


class RawClient:
    """A socket to the server for hand-made frames (what no Kafka client sends)."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, api_key: int, api_version: int, correlation_id: int, body: bytes,
                client_id: bytes = b"raw", flexible: bool = False) -> None:
        """Send one request: header v1 (v2 when ``flexible``), then ``body`` as given."""
        header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
        if flexible:
            header += b"\x00"
        contents = header + body
        self.sock.sendall(struct.pack(">i", len(contents)) + contents)

    def response(self) -> bytes | None:
        """The next response frame's contents (header included), or None if the server closed."""
        size = self._exactly(4)
        if size is None:
            return None
        (n,) = struct.unpack(">i", size)
        return self._exactly(n)

    def closed_by_server(self) -> bool:
        """True when the server closed the connection without writing anything more."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def call(self, request: Any, correlation_id: int = 1) -> Any:
        """Send kio's request entity; return kio's response entity (of the same version)."""
        from kio.index import load_response_schema
        from kio.serial import entity_reader, entity_writer

        from eventstore.wire.apis import is_flexible, response_header_version

        api_key, version = int(request.__api_key__), int(request.__version__)
        out = io.BytesIO()
        entity_writer(type(request))(out, request)
        self.request(api_key, version, correlation_id, out.getvalue(), flexible=is_flexible(api_key, version))
        response = self.response()
        if response is None:
            raise ConnectionError("the server closed the connection")
        (got,) = struct.unpack_from(">i", response)
        assert got == correlation_id, (got, correlation_id)
        position = 5 if response_header_version(api_key, version) == 1 else 4
        value, _size = entity_reader(load_response_schema(api_key, version))(response, position)
        return value

    def _exactly(self, n: int) -> bytes | None:
        out = b""
        while len(out) < n:  # bounded by n and the socket's timeout
            try:
                chunk = self.sock.recv(n - len(out))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            out += chunk
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
