"""File names of segments: one Format/Parse/Is triple per kind of name."""

from __future__ import annotations

import re

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
BROKEN_SUFFIX = ".broken"

_SEGMENT_RE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex)$")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def format_segment_name(base_offset: int, suffix: str) -> str:
    """``00000000000000001000.log`` for base offset 1000 and suffix ``.log``."""
    return f"{base_offset:020d}{suffix}"


def parse_segment_name(name: str) -> tuple[int, str]:
    """(base_offset, suffix) of a segment file name; ``ValueError`` if it is not one."""
    m = _SEGMENT_RE.match(name)
    if m is None:
        raise ValueError(f"not a segment file name: {name!r}")
    return int(m.group(1)), m.group(2)


def is_segment_name(name: str) -> bool:
    return _SEGMENT_RE.match(name) is not None


def format_broken_name(base_offset: int, position: int, copy: int = 0) -> str:
    """Name of the file keeping the bytes cut off a torn tail at ``position``
    (``copy`` numbers later tails cut at the same position)."""
    extra = f".{copy}" if copy else ""
    return f"{format_segment_name(base_offset, LOG_SUFFIX)}.{position}{extra}{BROKEN_SUFFIX}"


def is_valid_topic_name(name: object) -> bool:
    return isinstance(name, str) and name not in (".", "..") and _TOPIC_RE.match(name) is not None
