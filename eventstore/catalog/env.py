"""The LMDB environment, with error translation and automatic map growth.

Every LMDB error of the catalog and of the stream index is translated here
(``lmdb_error``): damaged pages become ``CorruptionError``, a full disk
``StorageFullError``, the rest ``StorageError``. LMDB reports a write cut short
by a full disk as EIO ("Input/output error"), so any other LMDB error is a
full disk when the file system has (almost) no room left right after it.
Before an environment is opened its data file is checked (``datafile.check``),
since LMDB would fault on a truncated one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import lmdb

from ..errors import CorruptionError, EventStoreError, IllegalStateError, StorageError, StorageFullError
from . import datafile, keys, sealed

T = TypeVar("T")
INITIAL_MAP_BYTES = 64 * 1024 * 1024
_GROWTHS_MAX = 24  # 64 MiB doubled 24 times is far beyond any disk
#: What to do about a damaged catalog (docs/format.md, section 15).
CATALOG_REPAIR = ("run 'es verify --repair': it keeps the damaged catalog aside and makes a new one "
                  "from the log and each topic.json (committed group offsets, transactions not yet "
                  "relayed and projection checkpoints cannot be rebuilt)")
#: Free bytes below which an LMDB error is put down to a full disk (see ``disk_full``).
FULL_FREE_BYTES = 1024 * 1024
#: LMDB's errors for pages that are not what they should be.
DAMAGE_ERRORS: tuple[type[Exception], ...] = (
    lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.VersionMismatchError,
    lmdb.PanicError, lmdb.IncompatibleError, lmdb.BadTxnError,
)


class Catalog:
    """One LMDB environment in ``<store>/catalog`` with the databases of ``keys.ALL_DBS``."""

    def __init__(self, directory: str, *, readonly: bool = False) -> None:
        """``readonly``: open beside a writer in another process (docs/format.md, section 14)."""
        self.path = directory
        self._writer = threading.local()  # ``active`` while this thread runs a write
        self._write_hooks: list[Callable[[], object]] = []
        self.env: Any = None
        try:
            self._open(directory, readonly)
        except BaseException:
            self.close()  # a failed open leaves nothing open
            raise

    def _open(self, directory: str, readonly: bool) -> None:
        damage = datafile.check(directory)
        if damage is not None:
            raise CorruptionError(damage.path, damage.position,
                                  f"damaged catalog: {damage.reason}; {CATALOG_REPAIR}")
        try:
            if not readonly:
                os.makedirs(directory, exist_ok=True)
            self.env = lmdb.open(
                directory, map_size=INITIAL_MAP_BYTES, max_dbs=len(keys.ALL_DBS) + 4,
                subdir=True, sync=True, metasync=True, readahead=False, lock=True,
                max_readers=4096,  # LMDB binds a reader slot to each thread that reads
                readonly=readonly, create=not readonly,
            )
            self.dbs = {name: self.env.open_db(name, create=not readonly) for name in keys.ALL_DBS}
        except lmdb.Error as e:
            raise lmdb_error(e, directory, "cannot open catalog", CATALOG_REPAIR) from e
        except OSError as e:
            raise StorageError(directory, f"cannot open catalog: {e.strerror}") from e
        #: the catalog's values carry no checksum (format 1; only a read-only view sees one)
        self.legacy = False
        if readonly:
            found = self.read(lambda txn: txn.get(keys.META_FORMAT, db=self.dbs[keys.DB_META]))
            self.legacy = found == str(keys.LEGACY_FORMAT_VERSION).encode()
        else:
            self.write(lambda txn: self._init_meta(txn))

    def _init_meta(self, txn: Any) -> None:
        """Mark a new catalog with the format; convert a format 1 one (seal every value)."""
        db = self.dbs[keys.DB_META]
        found = txn.get(keys.META_FORMAT, db=db)
        current = str(keys.FORMAT_VERSION).encode()
        if found == str(keys.LEGACY_FORMAT_VERSION).encode():
            for name in keys.ALL_DBS:  # bounded: six databases
                entries = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=self.dbs[name])
                           if (name, bytes(k)) != (keys.DB_META, keys.META_FORMAT)]
                for k, v in entries:  # bounded by the catalog's entries
                    txn.put(k, sealed.seal(k, v), db=self.dbs[name])
        elif found not in (None, current):
            raise CorruptionError(os.path.join(self.path, datafile.DATA_FILE), 0,
                                  f"unknown catalog format {bytes(found)!r} (this version reads 1 and 2)")
        if found != current:
            txn.put(keys.META_FORMAT, current, db=db)

    def write(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(txn)`` in one write transaction, growing the map when it is full.

        LMDB allows one write transaction at a time: a write that ``fn`` starts
        on the same thread (a store write from ``Projection.handle``) is refused.
        """
        writer = self._writer
        if getattr(writer, "active", False):
            raise IllegalStateError(
                "a store write inside a catalog write transaction on the same thread "
                "(e.g. from Projection.handle) is not possible: LMDB allows one at a time"
            )
        writer.active = True
        try:
            result = write_growing(self.env, self.path, "catalog", fn)
        finally:
            writer.active = False
        for hook in self._write_hooks:  # bounded: one per watcher (a server's replication leader)
            hook()
        return result

    def add_write_hook(self, hook: Callable[[], object]) -> Callable[[], None]:
        """Call ``hook()`` after every committed write transaction, in the writing thread
        (a replication leader wakes its followers' catalog polls with it: docs/replication.md,
        section 5). It must not block or write. Returns the function that removes it."""
        self._write_hooks = [*self._write_hooks, hook]

        def remove() -> None:
            self._write_hooks = [h for h in self._write_hooks if h is not hook]

        return remove

    @property
    def writing(self) -> bool:
        """Whether this thread is inside one of this catalog's write transactions."""
        return bool(getattr(self._writer, "active", False))

    def read(self, fn: Callable[[Any], T]) -> T:
        try:
            try:
                with self.env.begin(write=False) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:  # another process grew the map: adopt its size
                self.env.set_mapsize(0)
                with self.env.begin(write=False) as txn:
                    return fn(txn)
        except lmdb.Error as e:
            raise lmdb_error(e, self.path, "catalog read failed", CATALOG_REPAIR) from e

    def get(self, db: bytes, key: bytes) -> bytes | None:
        value: bytes | None = self.read(lambda txn: txn.get(key, db=self.dbs[db]))
        return value

    def put(self, db: bytes, key: bytes, value: bytes) -> None:
        self.write(lambda txn: txn.put(key, value, db=self.dbs[db]))

    def delete(self, db: bytes, key: bytes) -> None:
        self.write(lambda txn: txn.delete(key, db=self.dbs[db]))

    def items(self, db: bytes, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        def scan(txn: Any) -> list[tuple[bytes, bytes]]:
            return list(_prefix_items(txn.cursor(db=self.dbs[db]), prefix))

        return self.read(scan)

    def delete_prefix(self, db: bytes, prefix: bytes) -> int:
        def drop(txn: Any) -> int:
            found = [k for k, _ in _prefix_items(txn.cursor(db=self.dbs[db]), prefix)]
            for k in found:
                txn.delete(k, db=self.dbs[db])
            return len(found)

        return self.write(drop)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


def write_growing(env: Any, path: str, what: str, fn: Callable[[Any], T],
                  repair: str = CATALOG_REPAIR) -> T:
    """Run ``fn(txn)`` in one write transaction of ``env``, doubling the map when it is full.

    LMDB errors are translated by ``lmdb_error``; ``repair`` says what to do
    about damage.
    """
    for _ in range(_GROWTHS_MAX):
        try:
            with env.begin(write=True) as txn:
                return fn(txn)
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)
        except lmdb.Error as e:
            raise lmdb_error(e, path, f"{what} write failed", repair) from e
    raise StorageFullError(path, f"{what} map cannot grow any further")


def lmdb_error(e: Exception, path: str, doing: str, repair: str) -> EventStoreError:
    """The ``EventStoreError`` for LMDB error ``e`` of the environment in directory ``path``.

    Damaged pages (``DAMAGE_ERRORS``) are a ``CorruptionError`` of its data file
    that says what to do (``repair``); a full disk is a ``StorageFullError``.
    """
    if isinstance(e, DAMAGE_ERRORS):
        return CorruptionError(os.path.join(path, datafile.DATA_FILE), 0, f"{doing}: {e}; {repair}")
    if isinstance(e, lmdb.DiskError) or disk_full(path):
        return StorageFullError(path, f"{doing}: {e}; the disk is full")
    return StorageError(path, f"{doing}: {e}")


def disk_full(path: str) -> bool:
    """Whether the file system holding ``path`` has less than ``FULL_FREE_BYTES`` left, or
    no inode. A short write (which LMDB reports as EIO) means the disk filled up as it wrote:
    what is free just after is less than the pages it could not write."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_FREE_BYTES or (st.f_files > 0 and st.f_favail == 0)


def _prefix_items(cursor: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    if not cursor.set_range(prefix):
        return
    for k, v in cursor:  # bounded by the database size
        if not bytes(k).startswith(prefix):
            return
        yield bytes(k), bytes(v)
