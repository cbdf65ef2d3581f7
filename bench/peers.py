"""The systems eventstore is compared with: the physical limit, SQLite, LMDB and eventsourcing.

Each peer is set up the way an application would reasonably use it for an append-only event
log, and given its best batching API where the workload allows batching.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import struct
import threading
import time
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.base import (
    FRAMING_SIZE,
    LOAD_BATCH,
    SCAN_CHUNK,
    VALUE_SIZE,
    Measured,
    Skipped,
    System,
    Timer,
    batches_of,
    check_count,
    run_in_threads,
)

if TYPE_CHECKING:
    import lmdb

TOPIC = "bench"
_KEY = struct.Struct(">Q")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- physical limit


class Physical(System):
    """Raw ``os.write`` of the bytes a log would write, plus ``os.fdatasync`` where durable.

    Each record counts as its value plus :data:`FRAMING_SIZE` bytes of framing.
    """

    name = "physical"
    record_size = VALUE_SIZE + FRAMING_SIZE

    def _open(self, root: Path) -> int:
        return os.open(root / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @staticmethod
    def _write_all(fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def append_batches(self, root: Path, values: list[bytes], records: int, batch: int) -> Measured:
        chunk = memoryview(os.urandom(batch * self.record_size))
        fd = self._open(root)
        try:
            with Timer() as timer:
                for part in batches_of(values, records, batch):
                    self._write_all(fd, chunk[: len(part) * self.record_size])
                    os.fdatasync(fd)
        finally:
            os.close(fd)
        return Measured(timer.seconds, f"write {batch * self.record_size:,} B + fdatasync")

    def append_singles(self, root: Path, values: list[bytes], records: int) -> Measured:
        raise Skipped("nothing to bound without a durability barrier")

    def append_threads(
        self, root: Path, values: list[bytes], threads: int, per_thread: int
    ) -> Measured:
        if threads != 1:
            raise Skipped("serial reference, measured with 1 thread")
        record = os.urandom(self.record_size)
        fd = self._open(root)
        try:
            with Timer() as timer:
                for _ in range(per_thread):
                    self._write_all(fd, record)
                    os.fdatasync(fd)
        finally:
            os.close(fd)
        return Measured(timer.seconds, f"write {self.record_size} B + fdatasync per append")

    def load(self, root: Path, values: list[bytes], records: int) -> None:
        fd = self._open(root)
        try:
            chunk = memoryview(os.urandom(LOAD_BATCH * self.record_size))
            for part in batches_of(values, records, LOAD_BATCH):
                self._write_all(fd, chunk[: len(part) * self.record_size])
        finally:
            os.close(fd)

    def scan(self, root: Path, records: int) -> Measured:
        size = 0
        fd = os.open(root / "log", os.O_RDONLY)
        try:
            with Timer() as timer:
                while block := os.read(fd, 1 << 20):
                    size += len(block)
        finally:
            os.close(fd)
        check_count(self.name, records, size // self.record_size)
        return Measured(timer.seconds, "os.read of 1 MiB blocks")


# --------------------------------------------------------------------------------- SQLite

_SQLITE_SCHEMA = (
    "CREATE TABLE events(id INTEGER PRIMARY KEY, topic TEXT, key BLOB, value BLOB, ts INTEGER)"
)
_SQLITE_INSERT = "INSERT INTO events(topic, key, value, ts) VALUES (?, ?, ?, ?)"


class SQLite(System):
    """Standard-library ``sqlite3``: one ``events`` table in WAL mode."""

    name = "sqlite"

    @staticmethod
    def _connect(root: Path, *, durable: bool) -> sqlite3.Connection:
        # isolation_level=None: autocommit, transactions only where we open them.
        conn = sqlite3.connect(root / "events.db", isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        return conn

    def _create(self, root: Path, *, durable: bool) -> sqlite3.Connection:
        conn = self._connect(root, durable=durable)
        conn.execute(_SQLITE_SCHEMA)
        return conn

    @staticmethod
    def _insert_batches(conn: sqlite3.Connection, parts: Any) -> None:
        for part in parts:
            ts = _now_ms()
            conn.execute("BEGIN")
            conn.executemany(_SQLITE_INSERT, [(TOPIC, None, value, ts) for value in part])
            conn.execute("COMMIT")

    def append_batches(self, root: Path, values: list[bytes], records: int, batch: int) -> Measured:
        conn = self._create(root, durable=True)
        try:
            with Timer() as timer:
                self._insert_batches(conn, batches_of(values, records, batch))
        finally:
            conn.close()
        return Measured(timer.seconds, "WAL, synchronous=FULL, executemany, 1 txn per batch")

    def append_singles(self, root: Path, values: list[bytes], records: int) -> Measured:
        conn = self._create(root, durable=False)
        pool = len(values)
        try:
            with Timer() as timer:
                for i in range(records):
                    conn.execute(_SQLITE_INSERT, (TOPIC, None, values[i % pool], _now_ms()))
        finally:
            with Timer() as closing:
                conn.close()
        return Measured(
            timer.seconds,
            "WAL, synchronous=OFF, autocommit insert per record",
            {"close_seconds": closing.seconds},
        )

    def append_threads(
        self, root: Path, values: list[bytes], threads: int, per_thread: int
    ) -> Measured:
        self._create(root, durable=True).close()
        lock = threading.Lock()
        conns = [self._connect(root, durable=True) for _ in range(threads)]
        pool = len(values)

        def worker(conn: sqlite3.Connection, first: int) -> None:
            for i in range(first, first + per_thread):
                with lock:
                    conn.execute(_SQLITE_INSERT, (TOPIC, None, values[i % pool], _now_ms()))

        try:
            seconds = run_in_threads(
                [partial(worker, conn, n * per_thread) for n, conn in enumerate(conns)]
            )
        finally:
            for conn in conns:
                conn.close()
        return Measured(
            seconds, "WAL, synchronous=FULL, connection per thread, autocommit under a lock"
        )

    def load(self, root: Path, values: list[bytes], records: int) -> None:
        conn = self._create(root, durable=False)
        try:
            self._insert_batches(conn, batches_of(values, records, LOAD_BATCH))
        finally:
            conn.close()

    def scan(self, root: Path, records: int) -> Measured:
        conn = self._connect(root, durable=False)
        count = nbytes = 0
        try:
            with Timer() as timer:
                cursor = conn.execute("SELECT value FROM events ORDER BY id")
                while rows := cursor.fetchmany(SCAN_CHUNK):
                    for (value,) in rows:
                        nbytes += len(value)
                    count += len(rows)
        finally:
            conn.close()
        check_count(self.name, records, count)
        return Measured(timer.seconds, f"SELECT value ORDER BY id, fetchmany({SCAN_CHUNK:,})")


# ----------------------------------------------------------------------------------- LMDB


class LMDB(System):
    """Raw ``lmdb``: big-endian 8-byte sequence numbers as keys, values as they are."""

    name = "lmdb"

    @staticmethod
    def _open(root: Path, records: int, *, durable: bool) -> lmdb.Environment:
        import lmdb

        # The map is a sparse reservation; leave plenty of room for copy-on-write pages.
        map_size = max(256 << 20, records * 1024)
        return lmdb.open(
            str(root / "lmdb"), map_size=map_size, sync=durable, metasync=durable, max_dbs=0
        )

    def append_batches(self, root: Path, values: list[bytes], records: int, batch: int) -> Measured:
        env = self._open(root, records, durable=True)
        try:
            with Timer() as timer:
                self._put_batches(env, batches_of(values, records, batch))
        finally:
            env.close()
        return Measured(timer.seconds, "sync=True, putmulti(append=True), 1 txn per batch")

    @staticmethod
    def _put_batches(env: lmdb.Environment, parts: Any) -> None:
        seq = 0
        pack = _KEY.pack
        for part in parts:
            with env.begin(write=True) as txn:
                items = [(pack(seq + i), value) for i, value in enumerate(part)]
                txn.cursor().putmulti(items, append=True)
            seq += len(part)

    def append_singles(self, root: Path, values: list[bytes], records: int) -> Measured:
        env = self._open(root, records, durable=False)
        pool = len(values)
        pack = _KEY.pack
        try:
            with Timer() as timer:
                for i in range(records):
                    with env.begin(write=True) as txn:
                        txn.put(pack(i), values[i % pool], append=True)
        finally:
            with Timer() as closing:
                env.close()
        return Measured(
            timer.seconds,
            "sync=False, metasync=False, 1 txn per record",
            {"close_seconds": closing.seconds},
        )

    def append_threads(
        self, root: Path, values: list[bytes], threads: int, per_thread: int
    ) -> Measured:
        env = self._open(root, threads * per_thread, durable=True)
        pool = len(values)
        pack = _KEY.pack
        # Write transactions are serialised by LMDB, so the next key is taken inside one.
        next_seq = [0]

        def worker(first: int) -> None:
            for i in range(first, first + per_thread):
                with env.begin(write=True) as txn:
                    seq = next_seq[0]
                    txn.put(pack(seq), values[i % pool], append=True)
                    next_seq[0] = seq + 1

        try:
            seconds = run_in_threads([partial(worker, n * per_thread) for n in range(threads)])
        finally:
            env.close()
        return Measured(seconds, "sync=True, 1 txn per append (write txns serialise)")

    def load(self, root: Path, values: list[bytes], records: int) -> None:
        env = self._open(root, records, durable=False)
        try:
            self._put_batches(env, batches_of(values, records, LOAD_BATCH))
        finally:
            env.close()

    def scan(self, root: Path, records: int) -> Measured:
        import lmdb

        env = lmdb.open(str(root / "lmdb"), readonly=True, lock=False, max_dbs=0)
        count = nbytes = 0
        try:
            with Timer() as timer, env.begin(buffers=False) as txn:
                for _key, value in txn.cursor():
                    nbytes += len(value)
                    count += 1
        finally:
            env.close()
        check_count(self.name, records, count)
        return Measured(timer.seconds, "read txn, cursor iteration over key/value pairs")


# -------------------------------------------------------------------------- eventsourcing


@cache
def _eventsourcing_types() -> tuple[type[Any], type[Any]]:
    """Build the application and aggregate classes on first use (the import is optional)."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate
    from eventsourcing.persistence import JSONTranscoder, Transcoding

    class BytesAsBase64(Transcoding):
        type = bytes
        name = "bytes_b64"

        def encode(self, obj: bytes) -> str:
            return base64.b64encode(obj).decode("ascii")

        def decode(self, data: str) -> bytes:
            return base64.b64decode(data)

    class Stream(Aggregate):
        """An append-only stream of opaque values."""

        class Appended(Aggregate.Event):
            value: bytes

        def append(self, value: bytes) -> None:
            self.trigger_event(self.Appended, value=value)

    class BenchApp(Application[Any]):
        def register_transcodings(self, transcoder: JSONTranscoder) -> None:
            super().register_transcodings(transcoder)
            transcoder.register(BytesAsBase64())

    return BenchApp, Stream


class EventSourcing(System):
    """The ``eventsourcing`` library on SQLite: an aggregate per stream, events saved by
    ``Application.save``. Its SQLite module uses WAL and leaves synchronous at FULL, with no
    setting to relax it, so it is only compared where the workload is durable.
    """

    name = "eventsourcing"

    @staticmethod
    def _app(root: Path) -> Any:
        try:
            app_class, _ = _eventsourcing_types()
        except ImportError as exc:
            raise Skipped("eventsourcing is not installed") from exc
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(root / "eventsourcing.db"),
        }
        return app_class(env=env)

    @staticmethod
    def _new_stream(app: Any) -> Any:
        _, stream_class = _eventsourcing_types()
        stream = stream_class()
        app.save(stream)
        return stream

    @staticmethod
    def _save_batches(app: Any, stream: Any, parts: Any) -> None:
        for part in parts:
            for value in part:
                stream.append(value)
            app.save(stream)

    def append_batches(self, root: Path, values: list[bytes], records: int, batch: int) -> Measured:
        app = self._app(root)
        try:
            stream = self._new_stream(app)
            with Timer() as timer:
                self._save_batches(app, stream, batches_of(values, records, batch))
        finally:
            app.close()
        return Measured(timer.seconds, "SQLite WAL, synchronous=FULL, 1 save per batch")

    def append_singles(self, root: Path, values: list[bytes], records: int) -> Measured:
        raise Skipped("no non-durable mode (its SQLite runs synchronous=FULL)")

    def append_threads(
        self, root: Path, values: list[bytes], threads: int, per_thread: int
    ) -> Measured:
        app = self._app(root)
        pool = len(values)

        def worker(stream: Any, first: int) -> None:
            for i in range(first, first + per_thread):
                stream.append(values[i % pool])
                app.save(stream)

        try:
            streams = [self._new_stream(app) for _ in range(threads)]
            seconds = run_in_threads(
                [partial(worker, stream, n * per_thread) for n, stream in enumerate(streams)]
            )
        finally:
            app.close()
        return Measured(seconds, "SQLite WAL, synchronous=FULL, aggregate per thread, 1 save each")

    def load(self, root: Path, values: list[bytes], records: int) -> None:
        app = self._app(root)
        try:
            parts = batches_of(values, records, LOAD_BATCH)
            self._save_batches(app, self._new_stream(app), parts)
        finally:
            app.close()

    def scan(self, root: Path, records: int) -> Measured:
        app = self._app(root)
        count = nbytes = 0
        try:
            with Timer() as timer:
                start = 1
                while notifications := app.recorder.select_notifications(start, SCAN_CHUNK):
                    for notification in notifications:
                        nbytes += len(notification.state)
                    count += len(notifications)
                    start = notifications[-1].id + 1
        finally:
            app.close()
        # The stream's creation event is stored in the log too.
        check_count(self.name, records + 1, count)
        return Measured(timer.seconds, f"recorder.select_notifications, {SCAN_CHUNK:,} per call")


PEERS: tuple[System, ...] = (Physical(), LMDB(), SQLite(), EventSourcing())
