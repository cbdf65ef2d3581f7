"""Public value types. All are frozen msgspec Structs."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Literal

import msgspec

__all__ = [
    "Header",
    "Message",
    "OffsetAndMetadata",
    "PartitionStatistics",
    "Record",
    "RecordMetadata",
    "RecoveryEvent",
    "RetentionResult",
    "StoreStatistics",
    "TopicConfig",
    "TopicPartition",
]

Header = tuple[str, bytes]
#: A header as read back: a Kafka record batch (magic 2) may hold a header with a null value,
#: which reads as None (docs/format.md, 17.5); native batches never do.
RecordHeader = tuple[str, bytes | None]
DEFAULT_SEGMENT_BYTES = 128 * 1024 * 1024
DEFAULT_SEGMENT_MS = 7 * 24 * 3600 * 1000
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
#: The topic id of a configuration written before topics had ids (Kafka's zero UUID: "none").
NO_TOPIC_ID = uuid.UUID(int=0)
Durability = Literal["fsync", "interval", "none", "replicated"]


class Record(msgspec.Struct, array_like=True, frozen=True, kw_only=True, gc=False):
    """One record read from a partition.

    The field order is the on-disk order of a record (docs/format.md, 2.1); the
    trailing ``topic``, ``partition`` and ``timestamp_type`` are not stored per
    record but filled in by the decoder (the last from the batch's LogAppendTime
    mark, docs/format.md section 5). Construct it with keyword arguments. Records hold only
    immutable values, so they are not tracked by the cycle collector
    (``gc=False``): a scan of millions of records triggers no collections.
    """

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[RecordHeader, ...] = ()
    topic: str = ""
    partition: int = 0
    #: 0 (CreateTime: the timestamp its writer gave, or the append time when it gave none)
    #: or 1 (LogAppendTime: its batch was marked with the time it was appended), as
    #: Kafka's and kafka-python's ``timestamp_type``.
    timestamp_type: int = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return msgspec.structs.astuple(self) == msgspec.structs.astuple(other)

    def __hash__(self) -> int:
        return hash((self.topic, self.partition, self.offset))

    TIMESTAMP_CREATE_TIME: ClassVar[int] = 0
    """``timestamp_type`` of a timestamp set by the producer (or at append), as in Kafka."""
    TIMESTAMP_LOG_APPEND_TIME: ClassVar[int] = 1
    """``timestamp_type`` of a record of a batch marked LogAppendTime, as in Kafka."""

    @property
    def timestamp(self) -> int:
        """``timestamp_ms``, under kafka-python's ``ConsumerRecord`` name."""
        return self.timestamp_ms


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A record to append: what ``append_batch`` accepts besides bare values and pairs."""

    value: bytes | None
    key: bytes | None = None
    headers: list[Header] | None = None
    partition: int | None = None
    timestamp_ms: int | None = None


class RecordMetadata(msgspec.Struct, frozen=True):
    """Where an appended record landed."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class TopicPartition(msgspec.Struct, frozen=True, order=True):
    """A (topic, partition) pair, hashable and ordered like Kafka's."""

    topic: str
    partition: int


CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"
TIMESTAMP_TYPES = (CREATE_TIME, LOG_APPEND_TIME)


class TopicConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A topic's configuration, as stored in its ``topic.json``."""

    name: str
    partitions: int
    retention_ms: int | None = None
    retention_bytes: int | None = None
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    segment_ms: int = DEFAULT_SEGMENT_MS
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    created_ms: int = 0
    streams: bool = False  # holds event-sourcing streams (records are event envelopes)
    format: int = 1
    #: Random, made when the topic is made: a topic deleted and made again under the same
    #: name gets another (Kafka's topic id; Metadata and Fetch name topics by it).
    topic_id: uuid.UUID = NO_TOPIC_ID
    #: "CreateTime" (records keep their writers' timestamps) or "LogAppendTime" (every record
    #: gets the time it is appended; Kafka's message.timestamp.type; docs/format.md section 5).
    timestamp_type: str = CREATE_TIME


class PartitionStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one partition's state."""

    topic: str
    partition: int
    log_start_offset: int
    end_offset: int
    size_bytes: int
    segments: int
    max_timestamp_ms: int | None


class StoreStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the whole store, as ``store.statistics()`` returns it."""

    path: str
    durability: Durability
    topics: int
    partitions: int
    records: int
    size_bytes: int
    appended_batches: int
    appended_records: int
    fsyncs: int
    partition_stats: list[PartitionStatistics]


class RetentionResult(msgspec.Struct, frozen=True, kw_only=True):
    """What retention removed from one partition (or, in a dry run, would remove)."""

    topic: str
    partition: int
    segments: int
    records: int
    bytes: int
    log_start_offset: int  # the partition's start once those segments are gone


class RecoveryEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something recovery did on open (see docs/format.md, section 9)."""

    case: str
    path: str
    position: int
    detail: str
    extra: dict[str, Any] = {}


class OffsetAndMetadata(msgspec.Struct, frozen=True):
    """A committed offset (the next offset to read) and its free-form metadata."""

    offset: int
    metadata: str = ""
