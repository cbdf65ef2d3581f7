"""Key layouts of the catalog's databases (docs/format.md, section 6)."""

from __future__ import annotations

import struct

DB_META = b"meta"
DB_TOPICS = b"topics"
DB_CHECKPOINTS = b"checkpoints"
DB_CURSORS = b"cursors"
DB_STREAMS = b"streams"
ALL_DBS = (DB_META, DB_TOPICS, DB_CHECKPOINTS, DB_CURSORS, DB_STREAMS)

META_FORMAT = b"format"
FORMAT_VERSION = 1

_PARTITION = struct.Struct(">I")


def topic_key(topic: str) -> bytes:
    return topic.encode("utf-8")


def partition_key(topic: str, partition: int) -> bytes:
    """``<topic utf-8> 0x00 <partition uint32 big-endian>``: sorts by topic, then partition."""
    return topic.encode("utf-8") + b"\x00" + _PARTITION.pack(partition)


def parse_partition_key(key: bytes) -> tuple[str, int]:
    name, _, part = key.rpartition(b"\x00")
    return name.decode("utf-8"), _PARTITION.unpack(part)[0]


def topic_prefix(topic: str) -> bytes:
    return topic.encode("utf-8") + b"\x00"
