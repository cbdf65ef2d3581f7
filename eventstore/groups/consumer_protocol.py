"""Kafka's consumer protocol bytes: what a ``consumer`` group's members put in JoinGroup and SyncGroup.

A Kafka group's coordinator treats member metadata and assignments as opaque
bytes; only the leader reads them. The store reads them anyway, for what it
shows of a group (``describe_group``, ``lag``, ``es groups``): the topics a
member subscribes to (``ConsumerProtocolSubscription``, versions 0-3) and the
partitions the leader gave it (``ConsumerProtocolAssignment``, versions 0-3).
Both start with the same fields at every version, and those are all that is
read here, so a newer version reads too. Bytes that are not of this shape
(another protocol type, a lying length) read as nothing: they are shown, never
trusted.

The same encodings describe an embedded group to a Kafka admin client
(``encode_subscription``, ``encode_assignment``), version 0.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterable

from ..records import TopicPartition

__all__ = ["decode_assignment", "decode_subscription", "encode_assignment", "encode_subscription"]

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class _Truncated(Exception):
    """The bytes end (or a length lies) before the field does."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Truncated
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def i16(self) -> int:
        value: int = _I16.unpack(self.take(2))[0]
        return value

    def i32(self) -> int:
        value: int = _I32.unpack(self.take(4))[0]
        return value

    def string(self) -> str:
        return self.take(self.i16()).decode("utf-8", "replace")

    def count(self, smallest_item: int) -> int:
        """An array's count, refused if its items cannot fit in the bytes left."""
        n = self.i32()
        if n < 0:
            return 0  # a null array
        if n * smallest_item > len(self.data) - self.pos:
            raise _Truncated
        return n


def decode_subscription(metadata: bytes) -> list[str]:
    """The topics of a ``ConsumerProtocolSubscription`` ([] if the bytes are not one)."""
    r = _Reader(metadata)
    try:
        r.i16()  # version: the topics come first at every version
        return sorted({r.string() for _ in range(r.count(2))})
    except (_Truncated, struct.error):
        return []


def decode_assignment(assignment: bytes) -> list[TopicPartition]:
    """The partitions of a ``ConsumerProtocolAssignment`` ([] if the bytes are not one)."""
    r = _Reader(assignment)
    out: set[TopicPartition] = set()
    try:
        r.i16()
        for _ in range(r.count(6)):  # bounded by the bytes
            topic = r.string()
            for _ in range(r.count(4)):
                out.add(TopicPartition(topic, r.i32()))
    except (_Truncated, struct.error):
        return []
    return sorted(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return _I16.pack(len(raw)) + raw


def encode_subscription(topics: Iterable[str]) -> bytes:
    """A version-0 ``ConsumerProtocolSubscription`` of ``topics``, no user data."""
    names = sorted(topics)
    return b"".join([_I16.pack(0), _I32.pack(len(names)), *map(_string, names), _I32.pack(-1)])


def encode_assignment(partitions: Iterable[TopicPartition]) -> bytes:
    """A version-0 ``ConsumerProtocolAssignment`` of ``partitions``, no user data."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for tp in sorted(partitions):
        by_topic[tp.topic].append(tp.partition)
    parts = [_I16.pack(0), _I32.pack(len(by_topic))]
    for topic, nums in by_topic.items():
        parts += [_string(topic), _I32.pack(len(nums)), *(_I32.pack(p) for p in nums)]
    parts.append(_I32.pack(-1))
    return b"".join(parts)
