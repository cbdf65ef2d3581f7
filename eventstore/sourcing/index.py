"""The stream index: a second LMDB environment, derived entirely from the log.

Databases and key layouts (docs/format.md, section 12):

=============  =========================================  ===========================================
database       key                                        value (MessagePack unless said)
=============  =========================================  ===========================================
``heads``      stream id (UTF-8)                          ``[topic, partition, last_version, meta]``
``chunks``     stream id, 0x00, chunk number uint32 BE    envelopes of versions ``n*128 .. n*128+127``,
                                                          concatenated (raw bytes)
``ids``        event id (16 bytes)                        ``[stream id, version, position]``
``all``        position uint64 BE                         ``[topic, partition, offset]``
``covered``    topic, 0x00, partition uint32 BE           next offset not yet indexed (uint64 BE)
``snapshots``  stream id (UTF-8)                          ``[name, schema, version, state]``
``meta``       ``b"boot"``, ``b"clean"``                  boot id of the last open; 1 if closed cleanly
=============  =========================================  ===========================================

Commits are not fsynced (the environment is opened with ``sync=False``): a
process crash loses nothing (LMDB's pages are in the page cache), and after an
operating-system crash — the boot id changed and the last close was not clean
— the whole index is dropped and rebuilt from the log. Otherwise open catches
up from ``covered`` per partition.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

import lmdb
import msgspec

from ..catalog.env import write_growing
from ..errors import StorageError

CHUNK_EVENTS = 128
MAX_READERS = 4096  # LMDB binds a reader slot to each thread that reads
DB_HEADS = b"heads"
DB_CHUNKS = b"chunks"
DB_IDS = b"ids"
DB_ALL = b"all"
DB_COVERED = b"covered"
DB_SNAPSHOTS = b"snapshots"
DB_META = b"meta"
_DBS = (DB_HEADS, DB_CHUNKS, DB_IDS, DB_ALL, DB_COVERED, DB_SNAPSHOTS, DB_META)
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_INITIAL_MAP_BYTES = 256 * 1024 * 1024


class Head(msgspec.Struct, array_like=True):
    """What the index knows of one stream."""

    topic: str
    partition: int
    last_version: int  # -1: no events
    meta: bytes = b""  # the stream's current StreamMetadata as JSON (b"" = none)


_head_decoder = msgspec.msgpack.Decoder(Head)
_encode = msgspec.msgpack.encode


def chunk_key(stream_id: str, version: int) -> bytes:
    return stream_id.encode() + b"\x00" + _U32.pack(version // CHUNK_EVENTS)


def partition_key(topic: str, partition: int) -> bytes:
    return topic.encode() + b"\x00" + _U32.pack(partition)


def position_key(position: int) -> bytes:
    return _U64.pack(position)


def boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip()
    except OSError:
        return b"unknown"


_held: dict[str, StreamIndex] = {}  # the indexes this process holds open, by directory
_held_lock = threading.Lock()


def abandon(directory: str) -> None:
    """Close the index held open at ``directory``, if any: an open of the store failed after
    the index was opened but before anything took charge of it."""
    with _held_lock:
        index = _held.get(os.path.abspath(directory))
    if index is not None:
        index.abandon()


class StreamIndex:
    """The LMDB environment of the stream index, with map growth and error translation."""

    def __init__(self, directory: str) -> None:
        self.path = directory
        self.env: Any = None
        #: called with a topic's name once ``drop_topic`` has dropped its streams
        self.drop_listeners: list[Callable[[str], object]] = []
        try:
            self.rebuilt = self._open(directory)
        except BaseException:
            self.abandon()
            raise
        with _held_lock:
            _held[os.path.abspath(directory)] = self

    def abandon(self) -> None:
        """Close the environment without marking the index clean (a failed open)."""
        with _held_lock:
            if _held.get(os.path.abspath(self.path)) is self:
                del _held[os.path.abspath(self.path)]
        env, self.env = self.env, None
        if env is not None:
            env.close()

    def _open(self, directory: str) -> bool:
        """Open; drop everything if the last run ended with an operating-system crash."""
        self.env = self._env(directory)
        with self.env.begin() as txn:
            boot = txn.get(b"boot", db=self.dbs[DB_META])
            clean = txn.get(b"clean", db=self.dbs[DB_META])
        dropped = boot is not None and clean != b"1" and boot != boot_id()
        if dropped:
            self.env.close()
            shutil.rmtree(directory, ignore_errors=True)
            self.env = self._env(directory)
        self.write(lambda txn: (txn.put(b"boot", boot_id(), db=self.dbs[DB_META]),
                                txn.put(b"clean", b"0", db=self.dbs[DB_META])))
        return dropped

    def _env(self, directory: str) -> Any:
        env = None
        try:
            os.makedirs(directory, exist_ok=True)
            env = lmdb.open(directory, map_size=_INITIAL_MAP_BYTES, max_dbs=len(_DBS) + 2,
                            sync=False, metasync=False, readahead=False, max_readers=MAX_READERS)
            self.dbs = {name: env.open_db(name) for name in _DBS}
        except (lmdb.Error, OSError) as e:
            if env is not None:
                env.close()
            raise StorageError(directory, f"cannot open stream index: {e}") from e
        return env

    def write(self, fn: Any) -> Any:
        """Run ``fn(txn)`` in one write transaction, growing the map when it is full."""
        return write_growing(self.env, self.path, "stream index", fn)

    def read(self) -> Any:
        return self.env.begin(write=False)

    def close(self) -> None:
        try:
            with contextlib.suppress(StorageError):
                self.write(lambda txn: txn.put(b"clean", b"1", db=self.dbs[DB_META]))
            self.env.sync(True)
        finally:
            self.abandon()

    # --- reads -------------------------------------------------------------------

    def head(self, txn: Any, stream_id: str) -> Head | None:
        raw = txn.get(stream_id.encode(), db=self.dbs[DB_HEADS])
        return None if raw is None else _head_decoder.decode(raw)

    def chunks(self, txn: Any, stream_id: str, from_version: int) -> list[bytes]:
        """The raw chunks holding versions ≥ ``from_version`` (the first may start earlier)."""
        start = chunk_key(stream_id, from_version)
        prefix = stream_id.encode() + b"\x00"
        cursor = txn.cursor(db=self.dbs[DB_CHUNKS])
        out: list[bytes] = []
        if not cursor.set_range(start):
            return out
        for key, value in cursor:  # bounded by the stream's chunks
            if not key.startswith(prefix):
                break
            out.append(value)
        return out

    def chunk_range(self, txn: Any, stream_id: str, first_chunk: int, last_chunk: int) -> list[bytes]:
        keys = [stream_id.encode() + b"\x00" + _U32.pack(n) for n in range(first_chunk, last_chunk + 1)]
        db = self.dbs[DB_CHUNKS]
        return [v for v in (txn.get(k, db=db) for k in keys) if v is not None]

    def event_id(self, txn: Any, event_id: bytes) -> tuple[str, int, int] | None:
        raw = txn.get(event_id, db=self.dbs[DB_IDS])
        if raw is None:
            return None
        stream_id, version, position = msgspec.msgpack.decode(raw)
        return stream_id, version, position

    def covered(self, txn: Any, topic: str, partition: int) -> int:
        raw = txn.get(partition_key(topic, partition), db=self.dbs[DB_COVERED])
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def last_position(self, txn: Any) -> int:
        cursor = txn.cursor(db=self.dbs[DB_ALL])
        return int(_U64.unpack(cursor.key())[0]) if cursor.last() else -1

    def positions(self, txn: Any, start: int, end: int) -> list[tuple[int, str, int, int]]:
        """(position, topic, partition, offset) for positions in ``[start, end)``."""
        cursor = txn.cursor(db=self.dbs[DB_ALL])
        out: list[tuple[int, str, int, int]] = []
        if not cursor.set_range(position_key(start)):
            return out
        for key, value in cursor:  # bounded by end
            pos = _U64.unpack(key)[0]
            if pos >= end:
                break
            topic, partition, offset = msgspec.msgpack.decode(value)
            out.append((pos, topic, partition, offset))
        return out

    def heads_with_prefix(self, txn: Any, prefix: str) -> list[tuple[str, Head]]:
        cursor = txn.cursor(db=self.dbs[DB_HEADS])
        raw_prefix = prefix.encode()
        out: list[tuple[str, Head]] = []
        if not cursor.set_range(raw_prefix):
            return out
        for key, value in cursor:  # bounded by the matching streams
            if not key.startswith(raw_prefix):
                break
            out.append((bytes(key).decode(), _head_decoder.decode(value)))
        return out

    # --- writes (inside a write transaction) ----------------------------------------

    def put_head(self, txn: Any, stream_id: str, head: Head) -> None:
        txn.put(stream_id.encode(), _encode(head), db=self.dbs[DB_HEADS])

    def append_envelopes(self, txn: Any, stream_id: str, first_version: int,
                         envelopes: Iterable[bytes]) -> None:
        """Add envelopes of consecutive versions to the stream's chunks.

        A chunk that starts with these versions holds nothing yet, so it is
        written without reading it first.
        """
        db = self.dbs[DB_CHUNKS]
        version = first_version
        pending: list[bytes] = []
        key = chunk_key(stream_id, version)
        fresh = version % CHUNK_EVENTS == 0
        for env in envelopes:  # bounded by the events of one append
            k = chunk_key(stream_id, version)
            if k != key:
                _extend(txn, db, key, pending, fresh)
                key, pending, fresh = k, [], True
            pending.append(env)
            version += 1
        _extend(txn, db, key, pending, fresh)

    def put_event(self, txn: Any, event_id: bytes, stream_id: str, version: int, position: int,
                  topic: str, partition: int, offset: int) -> None:
        txn.put(event_id, _encode((stream_id, version, position)), db=self.dbs[DB_IDS])
        txn.put(position_key(position), _encode((topic, partition, offset)), db=self.dbs[DB_ALL])

    def put_covered(self, txn: Any, topic: str, partition: int, next_offset: int) -> None:
        txn.put(partition_key(topic, partition), _U64.pack(next_offset), db=self.dbs[DB_COVERED])

    def drop_topic(self, topic: str) -> None:
        """Forget every stream of ``topic`` (when the topic is deleted)."""
        def drop(txn: Any) -> None:
            heads = [(k, _head_decoder.decode(v)) for k, v in txn.cursor(db=self.dbs[DB_HEADS])]
            gone = {bytes(k).decode() for k, head in heads if head.topic == topic}
            for key, value in list(txn.cursor(db=self.dbs[DB_ALL])):  # bounded by the index
                if msgspec.msgpack.decode(value)[0] == topic:
                    txn.delete(key, db=self.dbs[DB_ALL])
            for key, value in list(txn.cursor(db=self.dbs[DB_IDS])):  # bounded by the index
                if msgspec.msgpack.decode(value)[0] in gone:
                    txn.delete(key, db=self.dbs[DB_IDS])
            covered = txn.cursor(db=self.dbs[DB_COVERED])
            prefix = topic.encode() + b"\x00"
            if covered.set_range(prefix):
                while covered.key().startswith(prefix) and covered.delete():
                    pass
            for key, head in heads:  # bounded by the stream count
                if head.topic == topic:
                    txn.delete(key, db=self.dbs[DB_HEADS])
                    txn.delete(key, db=self.dbs[DB_SNAPSHOTS])
                    prefix = bytes(key) + b"\x00"
                    chunks = txn.cursor(db=self.dbs[DB_CHUNKS])
                    if chunks.set_range(prefix):
                        while chunks.key().startswith(prefix) and chunks.delete():
                            pass
        self.write(drop)
        for listener in self.drop_listeners:  # bounded by the listeners
            listener(topic)


def _extend(txn: Any, db: Any, key: bytes, envelopes: list[bytes], fresh: bool) -> None:
    if not envelopes:
        return
    old = None if fresh else txn.get(key, db=db)
    txn.put(key, (bytes(old) if old is not None else b"") + b"".join(envelopes), db=db)
