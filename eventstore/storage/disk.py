"""The log engine's door to the disk: every write, sync, rename, truncation and unlink of
``storage/`` goes through this module's attributes.

They are the ``os`` functions themselves, looked up as ``disk.pwrite`` the way
``os.pwrite`` would be: production pays nothing for the indirection. Tests swap
them for ones that fail on purpose (``storage/faults.py``); code that keeps its
own reference to an ``os`` function would escape that, so none does.

Reads (``pread``, ``mmap``, ``stat``, ``listdir``) do not go through here: a
full or failing disk shows itself on writes and syncs.
"""

from __future__ import annotations

import os

pwrite = os.pwrite
write = os.write
fdatasync = os.fdatasync
fsync = os.fsync
ftruncate = os.ftruncate
truncate = os.truncate
replace = os.replace
rename = os.rename
unlink = os.unlink
mkdir = os.mkdir
open_file = os.open  # for writing: O_CREAT may need an inode and a directory block


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: fsync a directory, so that the names created, renamed or removed in it are durable
fsync_dir = _fsync_dir
