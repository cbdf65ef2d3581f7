"""Idempotent producers' state of one partition (docs/format.md, section 19).

Kafka's idempotent producer numbers its batches per partition: a producer id, an
epoch and a base sequence travel in every batch it sends (positions 43..57 of a
RecordBatch v2). The partition keeps, per producer id, the epoch and the last
``RETAINED_BATCHES`` batches' sequence ranges with the offsets they were
written at. A retried batch (same id, epoch and sequence range as one of them)
is a duplicate, answered with the offset it was first written at; a batch that
does not follow the last sequence is out of order; an older epoch is fenced.

The state is derived from the log: each checkpoint holds a snapshot of it,
taken under the partition's write lock together with the checkpoint's
position, and open replays the headers of the Kafka batches after that
position. The rules are Kafka's (``ProducerStateManager``, Kafka 2.5 and
later): a producer id the partition does not know is taken at any sequence.

Entries expire as in Kafka (``producer.id.expiration.ms``, default one day): at
each checkpoint, and once the state is loaded at open, the entries whose last
batch's max timestamp is ``EXPIRATION_MS`` or more before now are dropped, so a
partition does not keep every producer id that ever wrote to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from ..errors import InvalidProducerEpochError, OutOfOrderSequenceError

__all__ = [
    "EXPIRATION_MS", "RETAINED_BATCHES", "ProducerEntry", "ProducerState", "SequenceRange", "next_sequence",
]

RETAINED_BATCHES = 5  # Kafka's NUM_BATCHES_TO_RETAIN: a producer has at most 5 batches in flight
#: Kafka's producer.id.expiration.ms default: an entry idle this long is dropped
EXPIRATION_MS = 24 * 60 * 60 * 1000
_SEQUENCE_LIMIT = 1 << 31  # sequences are int32 and wrap to 0 after 2**31 - 1


def next_sequence(sequence: int, count: int) -> int:
    """The sequence ``count`` after ``sequence``, wrapping as Kafka's int32 sequences do."""
    return (sequence + count) % _SEQUENCE_LIMIT


class SequenceRange(NamedTuple):
    """One retained batch: its sequences and where it was written."""

    first_sequence: int
    last_sequence: int
    base_offset: int
    record_count: int


class ProducerEntry:
    """What one partition keeps of one producer id."""

    __slots__ = ("batches", "epoch", "last_timestamp")

    def __init__(self, epoch: int, last_timestamp: int, batches: list[SequenceRange]) -> None:
        self.epoch = epoch
        self.last_timestamp = last_timestamp
        self.batches = batches

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else -1

    def duplicate_of(self, first: int, last: int) -> SequenceRange | None:
        for kept in self.batches:  # bounded: RETAINED_BATCHES
            if kept.first_sequence == first and kept.last_sequence == last:
                return kept
        return None


class ProducerState:
    """Producer id -> entry for one partition. Not thread-safe: the partition's write lock
    guards every call (appends) and ``snapshot`` (taken with a checkpoint)."""

    def __init__(self) -> None:
        self.entries: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def check(self, topic: str, partition: int, producer_id: int, epoch: int, first_sequence: int,
              record_count: int) -> SequenceRange | None:
        """Decide a produced batch before it is written: the retained batch it duplicates (write
        nothing, answer that one's offset), or None (write it); raises for a batch that must
        not be written (``InvalidProducerEpochError``, ``OutOfOrderSequenceError``)."""
        entry = self.entries.get(producer_id)
        if entry is None:
            return None  # unknown to this partition: any sequence starts it (Kafka 2.5+)
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(topic, partition, producer_id, epoch, entry.epoch)
        last = next_sequence(first_sequence, record_count - 1)
        if epoch == entry.epoch:
            duplicate = entry.duplicate_of(first_sequence, last)
            if duplicate is not None:
                return duplicate
            expected = next_sequence(entry.last_sequence, 1) if entry.batches else 0
            if first_sequence != expected:
                raise OutOfOrderSequenceError(topic, partition, producer_id, first_sequence, str(expected))
        elif first_sequence != 0:
            raise OutOfOrderSequenceError(topic, partition, producer_id, first_sequence,
                                          f"0 for its new epoch {epoch}")
        return None

    def update(self, producer_id: int, epoch: int, first_sequence: int, record_count: int,
               base_offset: int, max_timestamp: int) -> None:
        """Record a batch written at ``base_offset`` (after ``check``, or replayed at open)."""
        entry = self.entries.get(producer_id)
        kept = SequenceRange(first_sequence, next_sequence(first_sequence, record_count - 1),
                             base_offset, record_count)
        if entry is None or entry.epoch != epoch:
            self.entries[producer_id] = ProducerEntry(epoch, max_timestamp, [kept])
            return
        entry.batches.append(kept)
        if len(entry.batches) > RETAINED_BATCHES:
            del entry.batches[0]
        entry.last_timestamp = max_timestamp

    def expire(self, now_ms: int, expiration_ms: int = EXPIRATION_MS) -> int:
        """Drop the entries whose last batch's max timestamp is ``expiration_ms`` or more
        before ``now_ms`` (Kafka's rule, by the producer's timestamps); returns how many."""
        cutoff = now_ms - expiration_ms
        gone = [pid for pid, e in self.entries.items() if e.last_timestamp <= cutoff]
        for pid in gone:  # bounded by the entries
            del self.entries[pid]
        return len(gone)

    def snapshot(self) -> tuple[Any, ...]:
        """The state as MessagePack-able values, sorted by producer id (docs/format.md, 19):
        ``(producer_id, epoch, last_timestamp, ((first_seq, last_seq, base_offset, count), ...))``."""
        return tuple(
            (pid, e.epoch, e.last_timestamp, tuple(tuple(b) for b in e.batches))
            for pid, e in sorted(self.entries.items())
        )

    @classmethod
    def restore(cls, snapshot: Iterable[Any]) -> ProducerState:
        """The state a ``snapshot`` was taken of. Raises ``ValueError``/``TypeError`` for one that
        is not a snapshot (the caller then rebuilds from the log)."""
        state = cls()
        for pid, epoch, last_timestamp, batches in snapshot:
            kept = [SequenceRange(*(int(v) for v in b)) for b in batches][-RETAINED_BATCHES:]
            state.entries[int(pid)] = ProducerEntry(int(epoch), int(last_timestamp), kept)
        return state

    def describe(self) -> list[tuple[int, int, int, int]]:
        """``(producer_id, epoch, last_sequence, last_timestamp)`` of every producer, by id
        (what DescribeProducers answers)."""
        return [(pid, e.epoch, e.last_sequence, e.last_timestamp) for pid, e in sorted(self.entries.items())]
