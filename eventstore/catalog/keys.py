"""Key layouts of the catalog's databases (docs/format.md, section 6)."""

from __future__ import annotations

import struct

DB_META = b"meta"
DB_TOPICS = b"topics"
DB_CHECKPOINTS = b"checkpoints"
DB_CURSORS = b"cursors"
DB_STREAMS = b"streams"
DB_OUTBOX = b"outbox"
ALL_DBS = (DB_META, DB_TOPICS, DB_CHECKPOINTS, DB_CURSORS, DB_STREAMS, DB_OUTBOX)

META_FORMAT = b"format"
META_TXN_SEQ = b"txn_seq"  # last transaction id, uint64 big-endian
META_PRODUCER_ID_SEQ = b"producer_id_seq"  # last Kafka producer id handed out, uint64 big-endian
FORMAT_VERSION = 2  # 2: every value sealed (sealed.py); 1: none, converted at open
LEGACY_FORMAT_VERSION = 1

_PARTITION = struct.Struct(">I")


def topic_key(topic: str) -> bytes:
    return topic.encode("utf-8")


def partition_key(topic: str, partition: int) -> bytes:
    """``<topic utf-8> 0x00 <partition uint32 big-endian>``: sorts by topic, then partition."""
    return topic.encode("utf-8") + b"\x00" + _PARTITION.pack(partition)


def parse_partition_key(key: bytes) -> tuple[str, int]:
    # the partition is the last 4 bytes (they may contain 0x00 themselves)
    return key[:-5].decode("utf-8"), _PARTITION.unpack(key[-4:])[0]


def topic_prefix(topic: str) -> bytes:
    return topic.encode("utf-8") + b"\x00"


def cursor_key(group: str, topic: str, partition: int) -> bytes:
    """``<group> 0x00 <topic> 0x00 <partition uint32 BE>``: a group's cursors sort together."""
    return group.encode("utf-8") + b"\x00" + partition_key(topic, partition)


def parse_cursor_key(key: bytes) -> tuple[str, str, int]:
    group, _, rest = key.partition(b"\x00")
    topic, partition = parse_partition_key(rest)
    return group.decode("utf-8"), topic, partition


def group_prefix(group: str) -> bytes:
    return group.encode("utf-8") + b"\x00"
