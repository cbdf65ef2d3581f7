"""The wire codec's errors, and the one table from eventstore's errors to Kafka error codes.

Decoding bytes from the network raises :class:`ProtocolError` (a frame, header or
body that cannot be read) or :class:`CorruptRecordError` (a record batch that fails
its checks), and nothing else: the codec catches whatever its libraries raise on bad
bytes at the one call that reaches them.

``KAFKA_ERRORS`` maps every :class:`~eventstore.errors.EventStoreError` subclass to
the Kafka error a client sees (docs/protocol.md, section 5); a subclass that is not
listed takes the entry of its nearest listed base class (:func:`kafka_error_for`).
Each :class:`KafkaError` carries ``retriable`` exactly as Kafka defines it for that
code, as aiokafka's error classes carry ``errno`` and ``retriable``. This module
imports nothing outside the standard library and :mod:`eventstore.errors`, so the
table is usable without the ``server`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .. import errors as es

__all__ = [
    "CLIENT_SIDE_ERRORS",
    "CorruptRecordError",
    "CONDITION_FAILED",
    "EXTENSION_ERRORS",
    "FrameTooLargeError",
    "KAFKA_ERRORS",
    "KafkaError",
    "ProtocolError",
    "SERVER_EXTRA",
    "UnsupportedVersionError",
    "kafka_error_for",
]


SERVER_EXTRA: Final = "the codec needs the 'server' extra: pip install 'embedded-eventstore[server]'"


class ProtocolError(es.EventStoreError):
    """Bytes from the network that are not a readable Kafka frame, header or body."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        self.reason = reason
        self.position = position
        where = f" at byte {position}" if position is not None else ""
        super().__init__(f"protocol error{where}: {reason}")


class FrameTooLargeError(ProtocolError):
    """A frame's size prefix is above the connection's limit (or not positive)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"frame of {size} bytes is outside 1..{limit} (max_frame_bytes)", 0)


class UnsupportedVersionError(ProtocolError):
    """A request for an API key or version the server does not serve."""

    def __init__(self, api_key: int, api_version: int) -> None:
        self.api_key = api_key
        self.api_version = api_version
        super().__init__(f"API key {api_key} version {api_version} is not served")


class CorruptRecordError(es.EventStoreError):
    """A Kafka record batch that fails its checks (CRC-32C, fields, records, compression)."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        self.reason = reason
        self.position = position
        where = f" at byte {position}" if position is not None else ""
        super().__init__(f"corrupt record batch{where}: {reason}")


@dataclass(frozen=True, slots=True)
class KafkaError:
    """A Kafka error code as a client sees it: its number, Kafka's name, whether to retry."""

    code: int
    name: str
    retriable: bool


UNKNOWN_SERVER_ERROR: Final = KafkaError(-1, "UNKNOWN_SERVER_ERROR", False)
OFFSET_OUT_OF_RANGE: Final = KafkaError(1, "OFFSET_OUT_OF_RANGE", False)
CORRUPT_MESSAGE: Final = KafkaError(2, "CORRUPT_MESSAGE", True)
UNKNOWN_TOPIC_OR_PARTITION: Final = KafkaError(3, "UNKNOWN_TOPIC_OR_PARTITION", True)
NOT_LEADER_OR_FOLLOWER: Final = KafkaError(6, "NOT_LEADER_OR_FOLLOWER", True)
MESSAGE_TOO_LARGE: Final = KafkaError(10, "MESSAGE_TOO_LARGE", False)
NOT_ENOUGH_REPLICAS: Final = KafkaError(19, "NOT_ENOUGH_REPLICAS", True)
INVALID_TOPIC_EXCEPTION: Final = KafkaError(17, "INVALID_TOPIC_EXCEPTION", False)
ILLEGAL_GENERATION: Final = KafkaError(22, "ILLEGAL_GENERATION", False)
UNSUPPORTED_VERSION: Final = KafkaError(35, "UNSUPPORTED_VERSION", False)
TOPIC_ALREADY_EXISTS: Final = KafkaError(36, "TOPIC_ALREADY_EXISTS", False)
INVALID_REQUEST: Final = KafkaError(42, "INVALID_REQUEST", False)
KAFKA_STORAGE_ERROR: Final = KafkaError(56, "KAFKA_STORAGE_ERROR", True)
NON_EMPTY_GROUP: Final = KafkaError(68, "NON_EMPTY_GROUP", False)
INVALID_RECORD: Final = KafkaError(87, "INVALID_RECORD", False)
OUT_OF_ORDER_SEQUENCE_NUMBER: Final = KafkaError(45, "OUT_OF_ORDER_SEQUENCE_NUMBER", False)
INVALID_PRODUCER_EPOCH: Final = KafkaError(47, "INVALID_PRODUCER_EPOCH", False)
TRANSACTIONAL_ID_AUTHORIZATION_FAILED: Final = KafkaError(53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", False)

# Extension codes: answered only to the extension APIs (docs/protocol.md, section 7),
# in a range no Kafka version uses. None of them is retriable.
WRONG_EXPECTED_VERSION: Final = KafkaError(20001, "WRONG_EXPECTED_VERSION", False)
STREAM_NOT_FOUND: Final = KafkaError(20002, "STREAM_NOT_FOUND", False)
STREAM_DELETED: Final = KafkaError(20003, "STREAM_DELETED", False)
STREAMS_TOPIC: Final = KafkaError(20004, "STREAMS_TOPIC", False)
CONDITION_FAILED: Final = KafkaError(20005, "CONDITION_FAILED", False)

EXTENSION_ERRORS: Final = (WRONG_EXPECTED_VERSION, STREAM_NOT_FOUND, STREAM_DELETED, STREAMS_TOPIC,
                           CONDITION_FAILED)

KAFKA_ERRORS: Final[dict[type[es.EventStoreError], KafkaError]] = {
    es.EventStoreError: UNKNOWN_SERVER_ERROR,
    # when opening a store: a running server has its store; listed for completeness
    es.StoreLockedError: KAFKA_STORAGE_ERROR,
    es.StoreNotFoundError: KAFKA_STORAGE_ERROR,
    # a server shutting down: clients refresh their metadata and retry
    es.StoreClosedError: NOT_LEADER_OR_FOLLOWER,
    # a write on a follower or a fenced leader: clients find the leader (docs/replication.md, 4.5)
    es.NotLeaderError: NOT_LEADER_OR_FOLLOWER,
    # acks=all or "replicated" with too few in-sync replicas (docs/replication.md, 3)
    es.NotEnoughReplicasError: NOT_ENOUGH_REPLICAS,
    # input refused before anything is written
    es.InvalidArgumentError: INVALID_REQUEST,
    es.InvalidTopicError: INVALID_TOPIC_EXCEPTION,
    es.RecordTooLargeError: MESSAGE_TOO_LARGE,
    es.StreamsTopicError: INVALID_RECORD,
    es.InvalidRecordError: INVALID_RECORD,
    es.UnsupportedRecordVersionError: UNSUPPORTED_VERSION,
    # idempotent producers (docs/format.md, section 19)
    es.OutOfOrderSequenceError: OUT_OF_ORDER_SEQUENCE_NUMBER,
    es.InvalidProducerEpochError: INVALID_PRODUCER_EPOCH,
    es.TransactionalIdError: TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    es.TopicNotFoundError: UNKNOWN_TOPIC_OR_PARTITION,
    es.TopicExistsError: TOPIC_ALREADY_EXISTS,
    es.PartitionNotFoundError: UNKNOWN_TOPIC_OR_PARTITION,
    # groups
    es.CommitFailedError: ILLEGAL_GENERATION,
    es.GroupNotEmptyError: NON_EMPTY_GROUP,
    # streams (extension APIs only)
    es.WrongExpectedVersionError: WRONG_EXPECTED_VERSION,
    es.StreamNotFoundError: STREAM_NOT_FOUND,
    es.ConditionFailedError: CONDITION_FAILED,
    # reads
    es.OffsetOutOfRangeError: OFFSET_OUT_OF_RANGE,
    # the disk
    es.StorageError: KAFKA_STORAGE_ERROR,
    es.StorageFullError: KAFKA_STORAGE_ERROR,
    es.CorruptionError: KAFKA_STORAGE_ERROR,
    # committed but not yet in the log: a retry would append the records twice
    es.TransactionRelayPendingError: UNKNOWN_SERVER_ERROR,
    # a server that cannot listen never answers; listed for completeness
    es.ServerError: UNKNOWN_SERVER_ERROR,
    # the wire itself
    ProtocolError: INVALID_REQUEST,
    FrameTooLargeError: INVALID_REQUEST,
    UnsupportedVersionError: UNSUPPORTED_VERSION,
    CorruptRecordError: CORRUPT_MESSAGE,
}

# Raised only inside a client (a consumer's deserializer, its state, a typed event's
# decoding) or a command (a backup, a mirror, a coordinator that cannot reach etcd at a
# server's start): the server never answers a request with them, so they have no code.
CLIENT_SIDE_ERRORS: Final[frozenset[type[es.EventStoreError]]] = frozenset({
    es.NoOffsetForPartitionError,
    es.IllegalStateError,
    es.RecordDeserializationError,
    es.EventDecodeError,
    es.BackupError,
    es.BackupCorruptionError,
    es.MirrorError,
    es.CoordinatorError,
    es.AuthenticationFailedError,
})


def kafka_error_for(error: es.EventStoreError | type[es.EventStoreError]) -> KafkaError:
    """The Kafka error a client sees for ``error`` (an exception or its class).

    A deleted stream answers STREAM_DELETED; otherwise the nearest class in
    ``error``'s method resolution order that ``KAFKA_ERRORS`` lists decides.
    """
    if isinstance(error, es.StreamNotFoundError) and error.deleted:
        return STREAM_DELETED
    cls = error if isinstance(error, type) else type(error)
    for base in cls.__mro__:
        found = KAFKA_ERRORS.get(base)
        if found is not None:
            return found
    return UNKNOWN_SERVER_ERROR
