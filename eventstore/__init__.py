"""eventstore: an embedded event store — a partitioned append-only log on
memory-mapped segment files, with an LMDB catalog, in your process."""

from .errors import (
    CorruptionError,
    EventStoreError,
    InvalidArgumentError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    RecordTooLargeError,
    StorageError,
    StorageFullError,
    StoreClosedError,
    StoreLockedError,
    TopicExistsError,
    TopicNotFoundError,
)
from .partitioner import murmur2, partition_for_key
from .records import (
    Message,
    PartitionStatistics,
    Record,
    RecordMetadata,
    RecoveryEvent,
    StoreStatistics,
    TopicConfig,
    TopicPartition,
)
from .storage.check import CheckReport
from .store import Store, open

__version__ = "0.1.0"

__all__ = [
    # opening
    "Store",
    "open",
    # values
    "CheckReport",
    "Message",
    "PartitionStatistics",
    "Record",
    "RecordMetadata",
    "RecoveryEvent",
    "StoreStatistics",
    "TopicConfig",
    "TopicPartition",
    # partitioning
    "murmur2",
    "partition_for_key",
    # errors
    "CorruptionError",
    "EventStoreError",
    "InvalidArgumentError",
    "InvalidTopicError",
    "OffsetOutOfRangeError",
    "PartitionNotFoundError",
    "RecordTooLargeError",
    "StorageError",
    "StorageFullError",
    "StoreClosedError",
    "StoreLockedError",
    "TopicExistsError",
    "TopicNotFoundError",
]
