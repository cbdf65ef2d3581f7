"""The store's exclusive directory lock (``<store>/LOCK``, flock(2))."""

from __future__ import annotations

import contextlib
import fcntl
import os

from ..errors import StorageError, StoreLockedError

LOCK_NAME = "LOCK"


class DirectoryLock:
    """Holds an exclusive, non-blocking flock on ``<directory>/LOCK``.

    flock locks belong to an open file description, so a second opener in the
    same process conflicts just like one in another process.
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(self.path, f"cannot open lock file: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StoreLockedError(os.path.dirname(self.path), pid) from None
        self._fd = fd
        mine = f"{os.getpid()}\n".encode()
        try:  # the pid only names the holder to others: a full disk must not stop an open
            os.pwrite(fd, mine, 0)
            os.ftruncate(fd, len(mine))
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no pid rather than an old one

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the description drops the lock
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
