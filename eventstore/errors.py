"""Every exception eventstore raises, grouped by when it happens.

All of them derive from :class:`EventStoreError`. Expected failures (bad input,
a full disk, corrupt bytes, a store held by someone else) raise one of these;
``assert`` is kept for broken internal invariants only.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailedError",
    "BackupCorruptionError",
    "BackupError",
    "CommitFailedError",
    "ConditionFailedError",
    "CoordinatorError",
    "CorruptionError",
    "EventDecodeError",
    "EventStoreError",
    "GroupNotEmptyError",
    "IllegalStateError",
    "InvalidArgumentError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "InvalidTopicError",
    "MirrorError",
    "NoOffsetForPartitionError",
    "NotEnoughReplicasError",
    "NotLeaderError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
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
    "TransactionalIdError",
    "UnsupportedRecordVersionError",
    "WrongExpectedVersionError",
]


class EventStoreError(Exception):
    """Base class of every error eventstore raises on purpose."""

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take structured arguments; rebuild from the state, not from args.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[EventStoreError], args: tuple[object, ...],
             state: dict[str, object]) -> EventStoreError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


# --- when opening a store -------------------------------------------------


class StoreLockedError(EventStoreError):
    """Another owner (this process or another) holds the store's directory lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"store {path!r} is locked by {holder}; close it there first")


class StoreNotFoundError(EventStoreError):
    """No store at the path, where none may be made (``open_reader``, ``open(create=False)``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"no store at {path!r}")


class StoreClosedError(EventStoreError):
    """The store was used after ``close()``."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"store {path!r} is closed")


# --- when validating input (nothing has been written) ---------------------


class InvalidArgumentError(EventStoreError, ValueError):
    """An argument has the wrong type or value."""


class InvalidTopicError(InvalidArgumentError):
    """A topic name breaks the naming rule ``[A-Za-z0-9._-]{1,249}``."""


class RecordTooLargeError(InvalidArgumentError):
    """A record is larger than the topic's ``max_record_bytes``."""

    def __init__(self, topic: str, size: int, limit: int, index: int | None = None) -> None:
        self.topic = topic
        self.size = size
        self.limit = limit
        self.index = index
        where = f" (item {index})" if index is not None else ""
        super().__init__(
            f"record of {size} bytes{where} exceeds max_record_bytes={limit} of topic {topic!r}"
        )


class StreamsTopicError(InvalidArgumentError):
    """A plain append (not through the stream API) to a topic that holds event streams."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(
            f"topic {topic!r} holds event streams: only append_to_stream writes to it "
            "(a plain record would belong to no stream)"
        )


class InvalidRecordError(InvalidArgumentError):
    """A Kafka record batch refused for what it is rather than for damage: a transactional
    or control batch (the store does not take part in Kafka transactions), or producer
    fields that do not go together (docs/format.md, 17.2)."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"record batch refused by topic {topic!r}: {reason}")


class UnsupportedRecordVersionError(InvalidArgumentError):
    """A produced batch of a message format the store does not write (magic 0 or 1: Kafka's
    message sets before RecordBatch v2), as Kafka 4 refuses them."""

    def __init__(self, topic: str, magic: int) -> None:
        self.topic = topic
        self.magic = magic
        super().__init__(f"record batch of magic {magic} refused by topic {topic!r}: only "
                         "RecordBatch v2 (magic 2) is stored")


class OutOfOrderSequenceError(EventStoreError):
    """An idempotent producer's batch whose sequence does not follow the last one stored for
    it in that partition (docs/format.md, section 19): a batch in between was lost."""

    def __init__(self, topic: str, partition: int, producer_id: int, sequence: int,
                 expected: str) -> None:
        self.topic = topic
        self.partition = partition
        self.producer_id = producer_id
        self.sequence = sequence
        super().__init__(f"producer {producer_id} sent sequence {sequence} to {topic}/{partition}; "
                         f"expected {expected}")


class InvalidProducerEpochError(EventStoreError):
    """An idempotent producer's batch with an epoch older than one already stored for that
    producer in that partition: a newer instance of it has taken over."""

    def __init__(self, topic: str, partition: int, producer_id: int, epoch: int, current: int) -> None:
        self.topic = topic
        self.partition = partition
        self.producer_id = producer_id
        self.epoch = epoch
        self.current = current
        super().__init__(f"producer {producer_id} epoch {epoch} is older than epoch {current} "
                         f"stored in {topic}/{partition}")


class TransactionalIdError(EventStoreError):
    """A Kafka request that names a transactional id: the store serves idempotent producers
    but takes no part in Kafka transactions (its own are ``store.transaction()``)."""

    def __init__(self, transactional_id: str) -> None:
        self.transactional_id = transactional_id
        super().__init__(f"transactional id {transactional_id!r} refused: Kafka transactions are "
                         "not supported (use an idempotent producer without a transactional id)")


class TopicNotFoundError(EventStoreError, KeyError):
    """The named topic does not exist."""

    def __init__(self, topic: str, suggestion: str | None = None) -> None:
        self.topic = topic
        self.suggestion = suggestion
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        super().__init__(f"topic {topic!r} does not exist{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class TopicExistsError(EventStoreError):
    """``create_topic`` was called for a name that already exists.

    With ``exist_ok=True`` only when the existing topic differs from what the
    call asked for: ``differences`` maps each setting to (existing, asked).
    """

    def __init__(self, topic: str, differences: dict[str, tuple[object, object]] | None = None) -> None:
        self.topic = topic
        self.differences = differences or {}
        if not self.differences:
            super().__init__(f"topic {topic!r} already exists")
            return
        shown = "; ".join(f"{name} is {old!r}, not {new!r}" for name, (old, new) in self.differences.items())
        super().__init__(f"topic {topic!r} already exists with another configuration: {shown}")


class PartitionNotFoundError(EventStoreError, IndexError):
    """A partition is not an int in ``0 .. partitions-1`` of its topic."""

    def __init__(self, topic: str, partition: object, partitions: int) -> None:
        self.topic = topic
        self.partition = partition
        self.partitions = partitions
        if type(partition) is int:
            problem = f"partition {partition} out of range for topic {topic!r}"
        else:  # "0", True, 1.0: say what is wrong, not that the number is
            problem = (f"partition must be an int, got {partition!r} ({type(partition).__name__}) "
                       f"for topic {topic!r}")
        super().__init__(f"{problem} (it has partitions 0..{partitions - 1})")


# --- consumer groups ----------------------------------------------------------


class CommitFailedError(EventStoreError):
    """A commit was fenced: the consumer no longer owns the partitions it commits."""

    def __init__(self, group: str, reason: str) -> None:
        self.group = group
        self.reason = reason
        super().__init__(f"commit for group {group!r} failed: {reason}")


class GroupNotEmptyError(EventStoreError):
    """An operation that needs an inactive group (reset, delete) found active members."""

    def __init__(self, group: str, members: int) -> None:
        self.group = group
        self.members = members
        super().__init__(
            f"group {group!r} has {members} active member(s); close its consumers first"
        )


class NoOffsetForPartitionError(EventStoreError):
    """No committed offset and ``auto_offset_reset="none"``."""

    def __init__(self, topic: str, partition: int, group: str | None) -> None:
        self.topic = topic
        self.partition = partition
        super().__init__(
            f"no committed offset for {topic}/{partition} in group {group!r} and "
            f"auto_offset_reset='none'"
        )


class IllegalStateError(EventStoreError):
    """A consumer was used in a way its state does not allow (e.g. poll with no assignment)."""


# --- streams (event sourcing) -------------------------------------------------


class WrongExpectedVersionError(EventStoreError):
    """``append_to_stream`` found the stream at another version than expected; nothing written."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        shown = getattr(expected, "name", expected)
        now = "does not exist" if actual < 0 else f"is at version {actual}"
        super().__init__(
            f"stream {stream_id!r}: expected version {shown}, but the stream {now}"
        )


class StreamNotFoundError(EventStoreError, KeyError):
    """The stream has no events (or was deleted)."""

    def __init__(self, stream_id: str, deleted: bool = False) -> None:
        self.stream_id = stream_id
        self.deleted = deleted
        why = "was deleted" if deleted else "does not exist"
        super().__init__(f"stream {stream_id!r} {why}")

    def __str__(self) -> str:
        return str(self.args[0])


class ConditionFailedError(EventStoreError):
    """An append condition failed: an event matching its query exists after its position
    (dynamic consistency boundaries, ``append_events``). Nothing was written."""


class EventDecodeError(EventStoreError):
    """A stored event's data does not fit its registered type and schema version."""

    def __init__(self, stream_id: str, version: int, event_type: str, reason: str) -> None:
        self.stream_id = stream_id
        self.version = version
        self.event_type = event_type
        self.reason = reason
        super().__init__(
            f"stream {stream_id!r}, version {version}: cannot decode {event_type!r}: {reason}"
        )



# --- when reading ----------------------------------------------------------


class OffsetOutOfRangeError(EventStoreError):
    """A read asked for an offset below the log start or above the end."""

    def __init__(self, topic: str, partition: int, offset: int, start: int, end: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.log_start_offset = start
        self.end_offset = end
        super().__init__(
            f"offset {offset} out of range for {topic}/{partition}: "
            f"valid offsets are {start}..{end} (end is the next offset to be written)"
        )


class RecordDeserializationError(EventStoreError):
    """A consumer's ``key_deserializer`` or ``value_deserializer`` failed on a record.

    The deserializer's exception is the ``__cause__``. The consumer's position
    stays at the record: polls raise this again until the application seeks past
    it (``consumer.seek(tp, error.offset + 1)``), as Kafka's consumers do.
    """

    def __init__(self, topic: str, partition: int, offset: int, part: str, reason: str) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.part = part
        self.reason = reason
        super().__init__(
            f"cannot deserialize the {part} of the record at {topic}/{partition} offset {offset}: "
            f"{reason}; skip it with consumer.seek(TopicPartition({topic!r}, {partition}), {offset + 1})"
        )


# --- when the disk misbehaves ------------------------------------------------


class StorageError(EventStoreError):
    """An operating-system error on the store's files."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class StorageFullError(StorageError):
    """The disk (or quota, or file-size limit) is full; nothing was written."""


class TransactionRelayPendingError(EventStoreError):
    """A transaction committed, but its records are not all in the log yet (e.g. a full disk).

    The commit stands: its group offsets are committed, and the store appends
    its records exactly once, in commit order, when it can (at the next
    transaction's commit, ``flush``, a retry in the background about once a
    second, or the next open). Do not run the transaction again: its records
    would be there twice. ``Store.pending_transactions()`` lists the ids still
    waiting. Not a ``StorageFullError``: that one means nothing was written.
    """

    def __init__(self, txn_id: int, reason: str) -> None:
        self.txn_id = txn_id
        self.reason = reason
        super().__init__(
            f"transaction {txn_id} committed, but its records are not all in the log yet "
            f"({reason}); the store appends them once it can: do not run it again"
        )


class CorruptionError(EventStoreError):
    """Bytes on disk fail validation (checksum, framing, offsets)."""

    def __init__(self, path: str, position: int, reason: str) -> None:
        self.path = path
        self.position = position
        self.reason = reason
        super().__init__(f"corrupt data in {path} at position {position}: {reason}")


# --- when backing up and restoring (docs/format.md, section 20) -------------------------------


class BackupError(EventStoreError):
    """A backup or restore cannot go on: DEST is not a backup, the target is not empty, the
    source changed under the backup in a way it cannot follow. Nothing was published."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class BackupCorruptionError(BackupError):
    """Bytes in a backup fail their checksum or batch validation: it is damaged there."""

    def __init__(self, path: str, position: int, reason: str) -> None:
        self.position = position
        super().__init__(path, f"damaged backup at position {position}: {reason}")


# --- when the store is replicated (docs/replication.md) ---------------------------------


class NotEnoughReplicasError(EventStoreError):
    """An append in ``"replicated"`` durability (or a Produce with acks=all) could not be
    acknowledged by enough in-sync replicas. Raised before writing when too few replicas
    are in sync (nothing was written), or after writing when they did not confirm in
    time (the records are written but not known replicated; the message says which)."""


class NotLeaderError(EventStoreError):
    """A write reached a node that is not the leader (a follower, or a fenced leader):
    write to the leader instead (docs/replication.md, section 4)."""


# --- when serving the Kafka protocol -------------------------------------------


class ServerError(EventStoreError):
    """The server cannot start or run: its address is in use, cannot be resolved or bound."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"cannot listen on {address}: {reason}")


class CoordinatorError(EventStoreError):
    """The failover coordinator cannot work with its etcd: out of reach at start, or its
    cluster's keys hold what it did not write (docs/replication.md, section 7)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"coordinator {endpoint}: {reason}")


class AuthenticationFailedError(EventStoreError):
    """A client could not authenticate to a server: the server refused its SASL credentials
    (or the mechanism), or the server's TLS certificate is not one the client trusts.
    Nothing was sent but the authentication; the message never holds a password."""

    def __init__(self, address: str, mechanism: str, reason: str) -> None:
        self.address = address
        self.mechanism = mechanism
        self.reason = reason
        super().__init__(f"authentication to {address} with {mechanism} failed: {reason}")


# --- when mirroring to or from a Kafka-protocol cluster ----------------------------------


class MirrorError(EventStoreError):
    """``es mirror`` cannot go on: a broker out of reach, a destination that does not match
    the source or the checkpoint (docs/mirror.md)."""
