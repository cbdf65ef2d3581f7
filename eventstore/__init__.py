"""eventstore: an embedded event store — a partitioned append-only log on
memory-mapped segment files, with an LMDB catalog, in your process."""

from . import aio as aio  # the async API: a subpackage, so not in __all__
from .backups import backup, restore
from .client.consumer import Consumer, ConsumerRebalanceListener, OffsetAndTimestamp
from .client.deadletter import DeadLetterProcessor, ProcessingStats, replay_dead_letters
from .client.producer import FutureRecordMetadata, Producer
from .errors import (
    BackupCorruptionError,
    BackupError,
    CommitFailedError,
    CorruptionError,
    EventDecodeError,
    EventStoreError,
    GroupNotEmptyError,
    IllegalStateError,
    InvalidArgumentError,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTopicError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    PartitionNotFoundError,
    RecordDeserializationError,
    RecordTooLargeError,
    ServerError,
    StorageError,
    StorageFullError,
    StoreClosedError,
    StoreLockedError,
    StoreNotFoundError,
    StreamNotFoundError,
    StreamsTopicError,
    TopicExistsError,
    TopicNotFoundError,
    TransactionalIdError,
    TransactionRelayPendingError,
    UnsupportedRecordVersionError,
    WrongExpectedVersionError,
)
from .groups import GroupDescription, MemberDescription
from .partitioner import murmur2, partition_for_key
from .reader import StoreReader, open_reader
from .records import (
    Message,
    OffsetAndMetadata,
    PartitionStatistics,
    Record,
    RecordMetadata,
    RecoveryEvent,
    RetentionResult,
    StoreStatistics,
    TopicConfig,
    TopicPartition,
)
from .remote import RemoteStore, connect
from .sourcing.aggregate import Aggregate
from .sourcing.dcb import TaggedSubscription
from .sourcing.dcbtypes import (
    AppendCondition,
    ConditionFailedError,
    Query,
    QueryItem,
    SequencedEvent,
    TaggedEvent,
    TaggedRead,
)
from .sourcing.events import (
    AppendResult,
    NewEvent,
    RecordedEvent,
    StreamMetadata,
    StreamState,
    event_from_record,
)
from .sourcing.projections import Projection, ProjectionRunner, ProjectionState
from .sourcing.repository import Repository
from .sourcing.snapshots import Snapshot
from .sourcing.subscriptions import Subscription
from .sourcing.types import (
    Event,
    EventRegistry,
    decode_event,
    decode_events,
    encode_event,
    event_type,
)
from .storage.check import CheckProblem, CheckReport
from .store import BatchMetadata, Store, open
from .transactions import Transaction

__version__ = "0.1.0"

__all__ = [
    # opening
    "RemoteStore",
    "Store",
    "connect",
    "StoreReader",
    "open",
    "open_reader",
    "Transaction",
    # backups (docs/format.md, section 20)
    "backup",
    "restore",
    # values
    "BatchMetadata",
    "CheckProblem",
    "CheckReport",
    "Message",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "PartitionStatistics",
    "Record",
    "RecordMetadata",
    "RecoveryEvent",
    "RetentionResult",
    "StoreStatistics",
    "TopicConfig",
    "TopicPartition",
    # partitioning
    "murmur2",
    "partition_for_key",
    # clients and groups
    "Consumer",
    "ConsumerRebalanceListener",
    "DeadLetterProcessor",
    "FutureRecordMetadata",
    "GroupDescription",
    "MemberDescription",
    "ProcessingStats",
    "Producer",
    "replay_dead_letters",
    # event streams
    "AppendResult",
    "NewEvent",
    "RecordedEvent",
    "StreamMetadata",
    "StreamState",
    "event_from_record",
    # event sourcing
    "Aggregate",
    "Event",
    "EventRegistry",
    "Projection",
    "ProjectionRunner",
    "ProjectionState",
    "Repository",
    "Snapshot",
    "Subscription",
    "decode_event",
    "decode_events",
    "encode_event",
    "event_type",
    # dynamic consistency boundaries
    "AppendCondition",
    "ConditionFailedError",
    "Query",
    "QueryItem",
    "SequencedEvent",
    "TaggedEvent",
    "TaggedRead",
    "TaggedSubscription",
    # errors
    "BackupCorruptionError",
    "BackupError",
    "CommitFailedError",
    "CorruptionError",
    "EventDecodeError",
    "EventStoreError",
    "GroupNotEmptyError",
    "IllegalStateError",
    "InvalidArgumentError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "OutOfOrderSequenceError",
    "TransactionalIdError",
    "UnsupportedRecordVersionError",
    "InvalidTopicError",
    "NoOffsetForPartitionError",
    "OffsetOutOfRangeError",
    "PartitionNotFoundError",
    "RecordDeserializationError",
    "RecordTooLargeError",
    "ServerError",
    "StorageError",
    "StorageFullError",
    "StoreClosedError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StreamNotFoundError",
    "StreamsTopicError",
    "TopicExistsError",
    "TopicNotFoundError",
    "TransactionRelayPendingError",
    "WrongExpectedVersionError",
]
