"""What the replication tests share: a loopback TCP proxy that misbehaves on request, and
a history checker over acknowledged writes, reads, and every replica's final log.

``Proxy(upstream)`` listens on 127.0.0.1 (a port the system picks) and forwards every
connection to ``upstream``; the test makes it slow (``delay_s``), deaf (``stall``:
bytes are held, not forwarded, until it is resumed), cuts every open connection
(``cut``), or refuses new ones (``refuse``). Its threads are bounded by socket
timeouts, and ``close`` ends them all.

``History`` collects what the tests' clients were told: ``ack(topic, partition,
offset, value)`` for every acknowledged write, ``saw(topic, partition, offset,
value)`` for every record a reader got. ``History.check(replicas)`` takes each
replica's final log (``log_of(path)``: per partition, the list of ``(offset,
value)``) and raises ``AssertionError`` naming the first breach of:

* every acknowledged write is in every replica, once, at the offset it was acked at;
* every replica holds the same records at the same offsets, in the same order;
* no reader saw a record that is not in the final log at that offset (a read of a
  record that a truncation removed later);
* no value is in a partition twice (the tests write unique values: a duplicate is a
  retried write applied twice).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eventstore

__all__ = ["History", "Proxy", "ends", "log_files", "log_of", "until"]

Partition = tuple[str, int]
Log = Mapping[Partition, list[tuple[int, bytes]]]

TIMEOUT_S = 30.0
_CHUNK = 65536
_POLL_S = 0.05


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``upstream`` ("host:port") that a test can disturb."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.delay_s = 0.0
        self.refuse = False
        self._resumed = threading.Event()
        self._resumed.set()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_S)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, name="proxy-accept", daemon=True)]
        self._threads[0].start()

    def stall(self) -> None:
        """Hold every byte in both directions (connections stay open) until ``resume``."""
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    def cut(self) -> None:
        """Close every connection open now (new ones are still accepted)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._closed.set()
        self._resumed.set()
        self.cut()
        self._listener.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.settimeout(_POLL_S)
            with self._lock:
                self._pairs.append((client, server))
            for src, dst in ((client, server), (server, client)):
                t = threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                data = src.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            while not self._resumed.wait(_POLL_S):
                if self._closed.is_set():
                    return
            if self.delay_s:
                time.sleep(self.delay_s)
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def until(condition: Callable[[], Any], what: str = "", *, timeout_s: float = TIMEOUT_S,
          every_s: float = 0.02) -> Any:
    """Poll ``condition`` until it is truthy (returned) or ``timeout_s`` passes (AssertionError
    naming ``what``, or the condition)."""
    deadline = time.monotonic() + timeout_s
    while True:  # bounded by the deadline
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {what or condition}")
        time.sleep(every_s)


def ends(path: str | Path) -> dict[Partition, int]:
    """Every user partition's end offset (no ``__`` topics), read beside whichever process
    holds the store; empty if it has no topic directory yet."""
    if not (Path(path) / "topics").exists():
        return {}
    with eventstore.open_reader(str(path)) as reader:
        return {(cfg.name, p): reader.offsets(cfg.name, p)[1]
                for cfg in reader.topics() if not cfg.name.startswith("__") for p in range(cfg.partitions)}


def log_files(path: str | Path) -> dict[str, bytes]:
    """The segment files (``.log``) and epoch files of every partition, by relative path:
    what must be byte for byte the same on every replica."""
    root_dir = Path(path)
    out = {}
    for root, _dirs, files in os.walk(root_dir / "topics"):
        for name in files:
            if name.endswith(".log") or name == "leader-epoch":
                full = Path(root) / name
                out[str(full.relative_to(root_dir))] = full.read_bytes()
    return out


def log_of(path: str | Path, topics: Iterable[str] | None = None) -> dict[Partition, list[tuple[int, bytes]]]:
    """Every record (offset, value) of every partition of a store on disk, read without a lock
    (the store may be owned by a stopped or running server)."""
    out: dict[Partition, list[tuple[int, bytes]]] = {}
    with eventstore.open_reader(str(path)) as reader:
        names = list(topics) if topics is not None else [
            t.name for t in reader.topics() if not t.name.startswith("__")]
        for name in names:
            for p in range(reader.topic(name).partitions):
                start, end = reader.offsets(name, p)
                rows: list[tuple[int, bytes]] = []
                offset = start
                while offset < end:
                    batch = reader.read(name, p, offset, max_records=10_000)
                    if not batch:
                        break
                    rows.extend((r.offset, r.value or b"") for r in batch)
                    offset = batch[-1].offset + 1
                out[(name, p)] = rows
    return out


@dataclass
class History:
    """What clients were told and what readers saw, checked against every replica's final log."""

    acked: dict[Partition, dict[int, bytes]] = field(default_factory=dict)
    seen: dict[Partition, dict[int, bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        with self._lock:
            got = self.acked.setdefault((topic, partition), {})
            assert offset not in got or got[offset] == value, (
                f"{topic}/{partition}@{offset} acknowledged twice with different values")
            got[offset] = value

    def saw(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        with self._lock:
            got = self.seen.setdefault((topic, partition), {})
            assert offset not in got or got[offset] == value, (
                f"{topic}/{partition}@{offset} read as two different values")
            got[offset] = value

    @property
    def acked_count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def check(self, replicas: Mapping[str, Log]) -> None:
        """Raise AssertionError naming the first breach (see the module's docstring)."""
        assert replicas, "no replica to check"
        names = list(replicas)
        first = replicas[names[0]]
        for name in names:
            log = replicas[name]
            for tp, rows in log.items():
                offsets = [o for o, _ in rows]
                assert offsets == sorted(set(offsets)), f"{name}: {tp} offsets not strictly increasing"
                values = [v for _, v in rows]
                dup = _first_duplicate(values)
                assert dup is None, f"{name}: {tp} holds {dup!r} twice (a write applied twice)"
            for tp, acked in self.acked.items():
                have = dict(log.get(tp, []))
                for offset, value in sorted(acked.items()):
                    assert offset in have, f"{name}: acknowledged {tp}@{offset} ({value!r}) is lost"
                    assert have[offset] == value, (
                        f"{name}: acknowledged {tp}@{offset} was {value!r}, the log has {have[offset]!r}")
            if name != names[0]:
                assert set(log) == set(first), (
                    f"{name} has partitions {sorted(log)}, {names[0]} {sorted(first)}")
                for tp in first:
                    assert log[tp] == first[tp], _first_difference(names[0], first[tp], name, log[tp], tp)
        for tp, seen in self.seen.items():
            have = dict(first.get(tp, []))
            for offset, value in sorted(seen.items()):
                assert have.get(offset) == value, (
                    f"a reader saw {tp}@{offset} = {value!r}, which the final log does not hold there "
                    f"({have.get(offset)!r}): a read of a record later truncated")


def _first_duplicate(values: list[bytes]) -> bytes | None:
    seen: set[bytes] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


def _first_difference(a_name: str, a: list[tuple[int, bytes]], b_name: str, b: list[tuple[int, bytes]],
                      tp: Partition) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"{tp} differs at record {i}: {a_name} has {x!r}, {b_name} {y!r}"
    return f"{tp}: {a_name} has {len(a)} records, {b_name} {len(b)}"
