"""A real etcd for tests, and a loopback TCP proxy that can cut a node off from it.

``etcd_server`` starts Debian's ``etcd`` on 127.0.0.1 with ports the OS chose and a
data directory of the test's, and stops it by its PID. Without the binary a test is
skipped, except in CI (``CI=true``), where a missing etcd is a failure: .ci/run
installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

START_TIMEOUT = 15.0


def require_etcd() -> str:
    """The etcd binary's path; skip (locally) or fail (in CI) without it."""
    path = shutil.which("etcd")
    if path is None:
        reason = "etcd is not installed (Debian's etcd-server package; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A loopback port the OS just handed out (closed again, for a child process to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def etcd_server(data_dir: Path) -> Iterator[str]:
    """A single-member etcd; yields its ``etcd://127.0.0.1:PORT``."""
    binary = require_etcd()
    client_url = f"http://127.0.0.1:{free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    log_path = data_dir.parent / f"{data_dir.name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "--name", "test", "--data-dir", str(data_dir),
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"test={peer_url}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(client_url, process, log_path)
        yield "etcd://" + client_url.removeprefix("http://")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_healthy(client_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import requests  # the cluster extra's dependency, as the coordinator uses it

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"etcd exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{client_url}/health", timeout=1).json().get("health") == "true":
                return
        time.sleep(0.1)
    pytest.fail(f"etcd did not become healthy in {START_TIMEOUT} s:\n{log_path.read_text()[-2000:]}")


class CuttableProxy:
    """Forwards loopback TCP connections to a port until ``cut``; from then on it drops
    every byte both ways and keeps the connections open, as a network partition does
    (requests hang until their timeouts instead of failing at once)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut = False
        self.port = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        async with listener:
            task_status.started(self.port)
            await listener.serve(self._forward)

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            async with (
                client,
                await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream,
                anyio.create_task_group() as pumps,
            ):
                pumps.start_soon(self._pump, client, upstream, pumps.cancel_scope)
                pumps.start_soon(self._pump, upstream, client, pumps.cancel_scope)

    async def _pump(self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream,
                    both: anyio.CancelScope) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async for chunk in source:  # ends at the peer's EOF
                if not self.cut:
                    await sink.send(chunk)
        both.cancel()
