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
``meta``       ``b"format"``                              ``b"2"`` (not sealed)
=============  =========================================  ===========================================

Every value but ``meta/format`` is sealed (``catalog/sealed.py``: an xxh3-64
trailer over the value, seeded with its key's), here and only here: each
accessor below seals what it writes and checks what it reads. A value that
fails its checksum is damage (below): no read serves it. A chunk carries one
trailer for its up to 128 envelopes, so a stream read checks one checksum a
chunk, not one an event. An index written before values were sealed (no
``format``) is dropped and rebuilt at open, as after an operating-system crash.

Commits are not fsynced (the environment is opened with ``sync=False``): a
process crash loses nothing (LMDB's pages are in the page cache), and after an
operating-system crash — the boot id changed and the last close was not clean
— the whole index is dropped and rebuilt from the log. Otherwise open catches
up from ``covered`` per partition.

A damaged index (its data file fails ``catalog.datafile.check``, LMDB reports a
damaged page, or a value does not decode) is derived data: every LMDB or
decoding error of a read or write leaves as ``CorruptionError`` naming what was
read, the index marks itself for rebuilding (a ``damaged`` file beside
``data.mdb``), and the next open moves it aside (``index.broken``, as a torn
segment tail is kept) and rebuilds it from the log (docs/format.md, section 15,
case L1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterable
from itertools import repeat
from types import TracebackType
from typing import Any, TypeVar

import lmdb
import msgspec

from ..catalog import datafile, sealed
from ..catalog.env import DAMAGE_ERRORS, lmdb_error, write_growing
from ..errors import CorruptionError, EventStoreError, StorageError, StorageFullError

T = TypeVar("T")

CHUNK_EVENTS = 128
MAX_READERS = 4096  # LMDB binds a reader slot to each thread that reads
DB_HEADS = b"heads"
DB_CHUNKS = b"chunks"
DB_IDS = b"ids"
DB_ALL = b"all"
DB_COVERED = b"covered"
DB_SNAPSHOTS = b"snapshots"
DB_META = b"meta"
FORMAT = b"2"  # meta/format: every value sealed
_DBS = (DB_HEADS, DB_CHUNKS, DB_IDS, DB_ALL, DB_COVERED, DB_SNAPSHOTS, DB_META)
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_INITIAL_MAP_BYTES = 256 * 1024 * 1024
DAMAGED_MARK = "damaged"  # a file beside data.mdb: the index is rebuilt at the next open
BROKEN_SUFFIX = ".broken"
_BROKEN_COPIES_MAX = 1000
INDEX_REPAIR = "the stream index is derived from the log: it is moved aside and rebuilt at the next open"
class ChecksumMismatch(ValueError):
    """A value of the index fails its checksum (a cause of ``CorruptionError``)."""


_DECODE_ERRORS = (msgspec.MsgspecError, struct.error, UnicodeDecodeError, ChecksumMismatch)
_READ_ERRORS = (lmdb.Error, *_DECODE_ERRORS)


class Head(msgspec.Struct, array_like=True, gc=False):
    """What the index knows of one stream."""

    topic: str
    partition: int
    last_version: int  # -1: no events
    meta: bytes = b""  # the stream's current StreamMetadata as JSON (b"" = none)


_head_decoder = msgspec.msgpack.Decoder(Head)
_id_decoder = msgspec.msgpack.Decoder(tuple[str, int, int])  # stream id, version, position
_location_decoder = msgspec.msgpack.Decoder(tuple[str, int, int])  # topic, partition, offset
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


def abandon(directory: str) -> bool:
    """Close the index held open at ``directory``, if any: an open of the store failed after
    the index was opened but before anything took charge of it. Returns whether the index
    found itself damaged (the next open rebuilds it)."""
    with _held_lock:
        index = _held.get(os.path.abspath(directory))
    if index is not None:
        index.abandon()
    return os.path.exists(os.path.join(directory, DAMAGED_MARK))


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
        """Open; start over if the index is damaged (L1, kept aside) or the last run ended
        with an operating-system crash. True if the index starts over empty."""
        #: what was wrong with the index found at open (None: nothing), and where it was put
        self.damage: datafile.Damage | None = _damage_of(directory)
        self.broken: str | None = None
        boot = clean = None
        old_format = False
        if self.damage is None:
            try:
                self.env = self._env(directory)
                with self.env.begin() as txn:
                    old_format = txn.get(b"boot", db=self.dbs[DB_META]) is not None \
                        and txn.get(b"format", db=self.dbs[DB_META]) != FORMAT
                    if not old_format:  # an index of format 1 has no sealed marks
                        boot, clean = self._meta(txn, b"boot"), self._meta(txn, b"clean")
            except (CorruptionError, lmdb.Error) as e:
                if not isinstance(e, (CorruptionError, *DAMAGE_ERRORS)):
                    raise
                self.damage = datafile.Damage(os.path.join(directory, datafile.DATA_FILE), 0,
                                              f"LMDB found it damaged: {e}")
        dropped = old_format or (boot is not None and clean != b"1" and boot != boot_id())
        if self.damage is not None:
            self.abandon()
            self.broken = _move_aside(directory)
            self.env = self._env(directory)
        elif dropped:
            self.env.close()
            shutil.rmtree(directory, ignore_errors=True)
            self.env = self._env(directory)
        #: the index is not yet marked open (a full disk): the first write that gets through
        #: marks it, in the same transaction, so an OS crash can never find it unmarked
        self.unmarked = False
        try:
            self.write(self._mark_open)
        except StorageFullError:
            if dropped or self.damage is not None:
                raise
            self.unmarked = True  # nothing was written since the mark of the last close
        return dropped or self.damage is not None

    def _mark_open(self, txn: Any) -> None:
        txn.put(b"boot", sealed.seal(b"boot", boot_id()), db=self.dbs[DB_META])
        txn.put(b"clean", sealed.seal(b"clean", b"0"), db=self.dbs[DB_META])
        txn.put(b"format", FORMAT, db=self.dbs[DB_META])

    def _meta(self, txn: Any, key: bytes) -> bytes | None:
        """A mark of ``meta`` (``boot``, ``clean``); one that fails its checksum is damage."""
        raw = txn.get(key, db=self.dbs[DB_META])
        if raw is None:
            return None
        payload = sealed.opened(key, raw)
        if payload is None:
            raise CorruptionError(os.path.join(self.path, datafile.DATA_FILE), 0,
                                  f"the stream index's {key.decode()} mark fails its checksum")
        return bytes(payload)

    def clean_mark(self) -> bytes | None:
        """The ``clean`` mark: ``b"1"`` after a clean close, ``b"0"`` while open."""
        with self.read() as txn:
            return self._meta(txn, b"clean")

    def _env(self, directory: str) -> Any:
        env = None
        try:
            os.makedirs(directory, exist_ok=True)
            env = lmdb.open(directory, map_size=_INITIAL_MAP_BYTES, max_dbs=len(_DBS) + 6,
                            sync=False, metasync=False, readahead=False, max_readers=MAX_READERS)
            self.dbs = {name: env.open_db(name) for name in _DBS}
        except (lmdb.Error, OSError) as e:
            if env is not None:
                env.close()
            if isinstance(e, lmdb.Error):
                raise lmdb_error(e, directory, "cannot open stream index", INDEX_REPAIR) from e
            raise StorageError(directory, f"cannot open stream index: {e}") from e
        return env

    def write(self, fn: Any) -> Any:
        """Run ``fn(txn)`` in one write transaction, growing the map when it is full."""
        if self.unmarked:
            return self._write_marked(fn)
        try:
            return write_growing(self.env, self.path, "stream index", fn, INDEX_REPAIR)
        except CorruptionError as e:
            self.mark_damaged(e.reason)
            raise
        except _DECODE_ERRORS as e:  # a value read inside the transaction
            raise self.damaged("write", e) from e

    def _write_marked(self, fn: Any) -> Any:
        def marked(txn: Any) -> Any:
            self._mark_open(txn)
            return fn(txn)

        self.unmarked = False
        try:
            return self.write(marked)
        except BaseException:
            self.unmarked = True
            raise

    def read(self, buffers: bool = False) -> _Reading:
        """A read transaction for ``with``: an LMDB or decoding error inside the block leaves
        it as ``CorruptionError`` (damage) or ``StorageError``.

        ``buffers``: values are memoryviews of the map instead of copies, valid only
        inside the block (a stream's chunks are joined there, copied once).
        """
        try:
            return _Reading(self, self.env.begin(write=False, buffers=buffers))
        except lmdb.Error as e:
            raise self._failed(e, "stream index read failed") from e

    def damaged(self, what: str, cause: BaseException) -> CorruptionError:
        """The error for an index entry that cannot be read (``what`` names it); marks the
        index for rebuilding at the next open."""
        reason = f"stream index {what}: {type(cause).__name__}: {cause}; {INDEX_REPAIR}"
        self.mark_damaged(reason)
        return CorruptionError(os.path.join(self.path, datafile.DATA_FILE), 0, reason)

    def _failed(self, e: BaseException, doing: str) -> EventStoreError:
        if isinstance(e, (*DAMAGE_ERRORS, *_DECODE_ERRORS)):
            return self.damaged(doing, e)
        return lmdb_error(e, self.path, doing, INDEX_REPAIR) if isinstance(e, lmdb.Error) \
            else StorageError(self.path, f"{doing}: {e}")

    def marked_damaged(self) -> bool:
        """Whether a read or a check found the index damaged (the next open rebuilds it)."""
        return os.path.exists(os.path.join(self.path, DAMAGED_MARK))

    def mark_damaged(self, reason: str) -> None:
        """Have the next open move the index aside and rebuild it from the log (case L1)."""
        mark = os.path.join(self.path, DAMAGED_MARK)
        with contextlib.suppress(OSError), open(mark, "w", encoding="utf-8") as f:
            f.write(reason + "\n")  # best effort: the read that found it fails loudly anyway

    def decoded(self, decoder: msgspec.msgpack.Decoder[T], data: bytes, stream_id: str) -> T:
        """``decoder.decode(data)`` of a stream's envelopes read from the index; undecodable
        bytes are a ``CorruptionError`` naming the stream."""
        try:
            return decoder.decode(data)
        except msgspec.MsgspecError as e:
            raise self.damaged(f"events of stream {stream_id!r}", e) from e

    def close(self) -> None:
        try:
            with contextlib.suppress(StorageError):
                self.write(lambda txn: txn.put(b"clean", sealed.seal(b"clean", b"1"),
                                               db=self.dbs[DB_META]))
            self.env.sync(True)
        except lmdb.Error as e:
            raise lmdb_error(e, self.path, "stream index sync failed", INDEX_REPAIR) from e
        finally:
            self.abandon()

    # --- reads -------------------------------------------------------------------

    def head(self, txn: Any, stream_id: str) -> Head | None:
        key = stream_id.encode()
        try:
            raw = txn.get(key, db=self.dbs[DB_HEADS])
            return None if raw is None else _head_decoder.decode(_opened(key, raw))
        except _READ_ERRORS as e:
            raise self._failed(e, f"head of stream {stream_id!r}") from e

    def chunk_range(self, txn: Any, stream_id: str, first_chunk: int, last_chunk: int) -> list[bytes]:
        """The envelopes of the stream's chunks ``first_chunk .. last_chunk``, which its head
        says are there: one missing is damage (``CorruptionError``). In a ``buffers``
        transaction they are memoryviews of the map, valid only inside it."""
        found = self._chunks_at(txn, stream_id, first_chunk, last_chunk)
        if None in found:
            missing = first_chunk + found.index(None)
            raise self.damaged(f"events of stream {stream_id!r}",
                               LookupError(f"chunk {missing} is missing"))
        return found  # type: ignore[return-value]

    def chunk_map(self, txn: Any, stream_id: str, first_chunk: int, last_chunk: int) -> dict[int, bytes]:
        """The stream's chunks ``first_chunk .. last_chunk`` that the index holds, by number."""
        found = self._chunks_at(txn, stream_id, first_chunk, last_chunk)
        return {n: bytes(v) for n, v in enumerate(found, first_chunk) if v is not None}

    def _chunks_at(self, txn: Any, stream_id: str, first_chunk: int, last_chunk: int) -> list[bytes | None]:
        """Each chunk's envelopes, checked against its one checksum (None: no such chunk)."""
        prefix = stream_id.encode() + b"\x00"
        keys = [prefix + _U32.pack(n) for n in range(first_chunk, last_chunk + 1)]
        db = self.dbs[DB_CHUNKS]
        try:
            return [None if v is None else _opened(k, v) for k, v in ((k, txn.get(k, db=db)) for k in keys)]
        except _READ_ERRORS as e:
            raise self._failed(e, f"events of stream {stream_id!r}") from e

    def event_id(self, txn: Any, event_id: bytes) -> tuple[str, int, int] | None:
        try:
            raw = txn.get(event_id, db=self.dbs[DB_IDS])
            return None if raw is None else _id_decoder.decode(_opened(event_id, raw))
        except _READ_ERRORS as e:
            raise self._failed(e, f"event id {event_id.hex()}") from e

    def covered(self, txn: Any, topic: str, partition: int) -> int:
        key = partition_key(topic, partition)
        try:
            raw = txn.get(key, db=self.dbs[DB_COVERED])
            return 0 if raw is None else int(_U64.unpack(_opened(key, raw))[0])
        except _READ_ERRORS as e:
            raise self._failed(e, f"coverage of {topic}/{partition}") from e

    def last_position(self, txn: Any) -> int:
        try:
            cursor = txn.cursor(db=self.dbs[DB_ALL])
            if not cursor.last():
                return -1
            _opened(cursor.key(), cursor.value())  # a flipped key must not pass for the last
            return int(_U64.unpack(cursor.key())[0])
        except _READ_ERRORS as e:
            raise self._failed(e, "last position") from e

    def position(self, txn: Any, position: int) -> tuple[str, int, int] | None:
        """Where the event at ``position`` is: (topic, partition, offset), or None."""
        key = position_key(position)
        try:
            raw = txn.get(key, db=self.dbs[DB_ALL])
            return None if raw is None else _location_decoder.decode(_opened(key, raw))
        except _READ_ERRORS as e:
            raise self._failed(e, f"position {position}") from e

    def positions(self, txn: Any, start: int, end: int) -> list[tuple[int, str, int, int]]:
        """(position, topic, partition, offset) for positions in ``[start, end)``."""
        out: list[tuple[int, str, int, int]] = []
        pos = start
        last_position = self.last_position(txn)
        last = min(end, last_position + 1)
        try:  # exact look-ups, not a cursor walk: LMDB asserts (aborts) stepping onto a zeroed page
            found = txn.cursor(db=self.dbs[DB_ALL]).getmulti(list(map(_U64.pack, range(start, last))))
            if len(found) < last - start and txn.stat(self.dbs[DB_ALL])["entries"] == last_position + 1:
                raise ChecksumMismatch("a position below the last is missing, and no append ever failed")
            for key, value in found:  # bounded by end
                pos = _U64.unpack(key)[0]
                topic, partition, offset = _location_decoder.decode(_opened(key, value))
                out.append((pos, topic, partition, offset))
        except _READ_ERRORS as e:
            raise self._failed(e, f"position {pos}") from e
        return out

    def heads_with_prefix(self, txn: Any, prefix: str) -> list[tuple[str, Head]]:
        raw_prefix = prefix.encode()
        out: list[tuple[str, Head]] = []
        key = raw_prefix
        try:
            cursor = txn.cursor(db=self.dbs[DB_HEADS])
            if not cursor.set_range(raw_prefix):
                return out
            for key, value in cursor:  # bounded by the matching streams
                if not key.startswith(raw_prefix):
                    break
                out.append((bytes(key).decode(), _head_decoder.decode(_opened(key, value))))
        except _READ_ERRORS as e:
            raise self._failed(e, f"head of stream {bytes(key)!r}") from e
        return out

    def snapshot(self, txn: Any, stream_id: str) -> bytes | None:
        """The stream's snapshot as stored (a cache: one that fails its checksum reads as none,
        and the aggregate is loaded from its events)."""
        key = stream_id.encode()
        try:
            raw = txn.get(key, db=self.dbs[DB_SNAPSHOTS])
        except lmdb.Error as e:
            raise self._failed(e, f"snapshot of stream {stream_id!r}") from e
        payload = None if raw is None else sealed.opened(key, raw)
        return None if payload is None else bytes(payload)

    # --- writes (inside a write transaction) ----------------------------------------

    def put_head(self, txn: Any, stream_id: str, head: Head) -> None:
        key = stream_id.encode()
        txn.put(key, _seal(key, _encode(head)), db=self.dbs[DB_HEADS])

    def put_snapshot(self, txn: Any, stream_id: str, snapshot: bytes) -> None:
        key = stream_id.encode()
        txn.put(key, _seal(key, snapshot), db=self.dbs[DB_SNAPSHOTS])

    def delete_snapshot(self, txn: Any, stream_id: str) -> bool:
        return bool(txn.delete(stream_id.encode(), db=self.dbs[DB_SNAPSHOTS]))

    def append_envelopes(self, txn: Any, stream_id: str, first_version: int,
                         envelopes: Iterable[bytes]) -> None:
        """Add envelopes of consecutive versions to the stream's chunks.

        A chunk that starts with these versions holds nothing yet, so it is
        written without reading it first; one that holds some is checked, and
        sealed again whole.
        """
        db = self.dbs[DB_CHUNKS]
        envelopes = envelopes if isinstance(envelopes, list) else list(envelopes)
        version, i = first_version, 0
        while i < len(envelopes):  # bounded: one pass per chunk the envelopes reach
            take = CHUNK_EVENTS - version % CHUNK_EVENTS
            _extend(txn, db, chunk_key(stream_id, version), envelopes[i:i + take],
                    version % CHUNK_EVENTS == 0)
            version, i = version + take, i + take

    def put_event(self, txn: Any, event_id: bytes, stream_id: str, version: int, position: int,
                  topic: str, partition: int, offset: int) -> None:
        txn.put(event_id, _seal(event_id, _encode((stream_id, version, position))), db=self.dbs[DB_IDS])
        key = position_key(position)
        txn.put(key, _seal(key, _encode((topic, partition, offset))), db=self.dbs[DB_ALL])

    def put_events(self, txn: Any, event_ids: list[bytes], stream_id: str, first_version: int,
                   first_position: int, topic: str, partition: int, first_offset: int) -> None:
        """``put_event`` for the consecutive events of one append, with one call per database."""
        n = len(event_ids)
        positions = range(first_position, first_position + n)
        where = zip(repeat(stream_id, n), range(first_version, first_version + n), positions, strict=True)
        txn.cursor(db=self.dbs[DB_IDS]).putmulti(
            zip(event_ids, map(_seal, event_ids, map(_encode, where)), strict=True))
        places = zip(repeat(topic, n), repeat(partition, n), range(first_offset, first_offset + n),
                     strict=True)
        keys = list(map(_U64.pack, positions))
        txn.cursor(db=self.dbs[DB_ALL]).putmulti(
            zip(keys, map(_seal, keys, map(_encode, places)), strict=True))

    def put_covered(self, txn: Any, topic: str, partition: int, next_offset: int) -> None:
        key = partition_key(topic, partition)
        txn.put(key, _seal(key, _U64.pack(next_offset)), db=self.dbs[DB_COVERED])

    def drop_topic(self, topic: str) -> None:
        """Forget every stream of ``topic`` (when the topic is deleted)."""
        def drop(txn: Any) -> None:
            heads = [(k, _head_decoder.decode(_opened(k, v))) for k, v in txn.cursor(db=self.dbs[DB_HEADS])]
            gone = {bytes(k).decode() for k, head in heads if head.topic == topic}
            for key, value in list(txn.cursor(db=self.dbs[DB_ALL])):  # bounded by the index
                if msgspec.msgpack.decode(_opened(key, value))[0] == topic:
                    txn.delete(key, db=self.dbs[DB_ALL])
            for key, value in list(txn.cursor(db=self.dbs[DB_IDS])):  # bounded by the index
                if msgspec.msgpack.decode(_opened(key, value))[0] in gone:
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


_seal = sealed.seal


def _opened(key: bytes, value: Any) -> Any:
    """The payload of a sealed value of the index; ``ChecksumMismatch`` if it fails."""
    payload = sealed.opened(key, value)
    if payload is None:
        raise ChecksumMismatch(f"the value under key {bytes(key)!r} fails its checksum")
    return payload


def _extend(txn: Any, db: Any, key: bytes, envelopes: list[bytes], fresh: bool) -> None:
    if not envelopes:
        return
    old = None if fresh else txn.get(key, db=db)
    kept = b"" if old is None else bytes(_opened(key, old))
    txn.put(key, _seal(key, kept + b"".join(envelopes)), db=db)


class _Reading:
    """``StreamIndex.read()``: the transaction for ``with``, and error translation at its end."""

    __slots__ = ("_index", "_txn")

    def __init__(self, index: StreamIndex, txn: Any) -> None:
        self._index, self._txn = index, txn

    def __enter__(self) -> Any:
        return self._txn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._txn.abort()  # a read transaction has nothing to commit
        if exc is not None and isinstance(exc, _READ_ERRORS):
            raise self._index._failed(exc, "stream index read failed") from exc


def _damage_of(directory: str) -> datafile.Damage | None:
    """Why the index in ``directory`` must be rebuilt before use, if it must."""
    mark = os.path.join(directory, DAMAGED_MARK)
    try:
        with open(mark, encoding="utf-8") as f:
            return datafile.Damage(mark, 0, f"marked damaged: {f.read(4096).strip()}")
    except FileNotFoundError:
        return datafile.check(directory)
    except OSError as e:
        return datafile.Damage(mark, 0, f"marked damaged (unreadable mark: {e.strerror})")


def _move_aside(directory: str) -> str:
    """Rename a damaged index directory to ``<directory>.broken`` (``.<n>.broken`` when that is
    taken: a copy kept earlier is never overwritten) and make the rename durable."""
    for n in range(_BROKEN_COPIES_MAX):  # bounded by the copies kept
        target = f"{directory}{BROKEN_SUFFIX}" if n == 0 else f"{directory}.{n}{BROKEN_SUFFIX}"
        if not os.path.exists(target):
            break
    else:
        raise StorageError(directory, f"{_BROKEN_COPIES_MAX} damaged copies kept already; "
                                      "remove the old index.*.broken directories")
    try:
        os.rename(directory, target)
        fd = os.open(os.path.dirname(os.path.abspath(directory)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise StorageError(directory, f"moving the damaged stream index aside failed: {e.strerror}") from e
    return target
