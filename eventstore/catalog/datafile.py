"""LMDB's data file (``data.mdb``), checked with plain file I/O before LMDB maps it.

LMDB maps the whole file and follows page numbers into the mapping without
looking at the file's size: a page past the end of a truncated file is a SIGBUS
that kills the process, not an error. So before an environment is opened, its
two meta pages are read with ``pread`` and the file's size is checked against
them (docs/format.md, section 15). The fields relied upon, LMDB 0.9 (data format
version 1) on a 64-bit host, in the host's byte order:

==========  ====  ==============  ==============================================
position    size  field           check
==========  ====  ==============  ==============================================
0           8     ``mp_pgno``     0 for the first meta page, 1 for the second
10          2     ``mp_flags``    has ``P_META`` (0x08)
16          4     ``mm_magic``    ``0xBEEFC0DE``
20          4     ``mm_version``  1
40          4     ``mm_psize``    page size: a power of two, 512 .. 65536; the
                                  second meta page starts there
80          8     free-list root  ≤ ``mm_last_pg``, or ``P_INVALID`` (empty)
128         8     main root       ≤ ``mm_last_pg``, or ``P_INVALID`` (empty)
136         8     ``mm_last_pg``  last page in use: the file must hold
                                  ``(mm_last_pg + 1) * mm_psize`` bytes
144         8     ``mm_txnid``    the meta page with the larger one is current
==========  ====  ==============  ==============================================

(positions within each meta page; the meta body starts after the 16-byte page
header). A file that fails a check is *damaged*; an empty file is damaged too,
since LMDB would silently start it over as a new, empty environment.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

DATA_FILE = "data.mdb"
META_MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
P_META = 0x08
P_INVALID = 0xFFFFFFFFFFFFFFFF
PAGE_BYTES_MIN = 512
PAGE_BYTES_MAX = 65536
_HEADER = struct.Struct("=QHH")  # mp_pgno, mp_pad, mp_flags
_META = struct.Struct("=II")  # mm_magic, mm_version, at 16
_PSIZE = struct.Struct("=I")  # mm_psize (the free db's md_pad), at 40
_ROOT = struct.Struct("=Q")  # md_root: at 80 (free db), at 128 (main db)
_TAIL = struct.Struct("=QQ")  # mm_last_pg, mm_txnid, at 136
META_READ_BYTES = 152
assert _TAIL.size + 136 == META_READ_BYTES


@dataclass(frozen=True)
class Meta:
    """What one meta page says."""

    page_bytes: int
    last_page: int
    txnid: int


@dataclass(frozen=True)
class Damage:
    """Why a data file cannot be opened safely, and the byte position it concerns."""

    path: str
    position: int
    reason: str


def check(directory: str) -> Damage | None:
    """None if ``<directory>/data.mdb`` is absent (LMDB makes a new one) or sound."""
    path = os.path.join(directory, DATA_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return Damage(path, 0, "empty data file (LMDB would start it over, empty)")
        first = _read_meta(fd, path, 0, 0, None)
        if isinstance(first, Damage):
            return first
        second = _read_meta(fd, path, first.page_bytes, 1, first.page_bytes)
        if isinstance(second, Damage):
            return second
    finally:
        os.close(fd)
    current = first if first.txnid >= second.txnid else second
    needed = (current.last_page + 1) * current.page_bytes
    if size < needed:
        return Damage(path, size, f"truncated: {size} bytes, its meta page says {needed} "
                                  f"(pages 0..{current.last_page} of {current.page_bytes} bytes)")
    return None


def _read_meta(fd: int, path: str, position: int, pgno: int, page_bytes: int | None) -> Meta | Damage:
    raw = os.pread(fd, META_READ_BYTES, position)
    if len(raw) < META_READ_BYTES:
        return Damage(path, position, f"meta page {pgno} cut short ({len(raw)} bytes)")
    page, _pad, flags = _HEADER.unpack_from(raw, 0)
    magic, version = _META.unpack_from(raw, 16)
    (psize,) = _PSIZE.unpack_from(raw, 40)
    (free_root,) = _ROOT.unpack_from(raw, 80)
    (main_root,) = _ROOT.unpack_from(raw, 128)
    last_page, txnid = _TAIL.unpack_from(raw, 136)
    problem = None
    if page != pgno or not flags & P_META or magic != META_MAGIC:
        problem = "not an LMDB meta page"
    elif version != DATA_VERSION:
        problem = f"LMDB data version {version}, expected {DATA_VERSION}"
    elif psize & (psize - 1) or not PAGE_BYTES_MIN <= psize <= PAGE_BYTES_MAX:
        problem = f"page size {psize} impossible"
    elif page_bytes is not None and psize != page_bytes:
        problem = f"page size {psize}, the first meta page says {page_bytes}"
    elif last_page < 1 or any(r != P_INVALID and not 1 < r <= last_page for r in (free_root, main_root)):
        problem = f"page numbers out of range (last page {last_page}, roots {free_root}, {main_root})"
    if problem is not None:
        return Damage(path, position, f"meta page {pgno}: {problem}")
    return Meta(psize, last_page, txnid)
