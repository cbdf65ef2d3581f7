"""A Kafka-style consumer over an embedded store, with kafka-python's names and semantics.

A consumer either subscribes to topics as a member of a consumer group (the
in-process coordinator assigns it partitions and rebalances on joins, leaves
and timeouts) or is assigned partitions by hand with ``assign``. Like a Kafka
consumer it is meant for one thread at a time; run one consumer per thread or
task.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import msgspec

from ..errors import (
    CommitFailedError,
    IllegalStateError,
    InvalidArgumentError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    RecordDeserializationError,
    StoreClosedError,
    TopicNotFoundError,
)
from ..groups import EmbeddedMember, Group, GroupCoordinator
from ..log import Log, Watch
from ..records import OffsetAndMetadata, Record, TopicPartition
from ..transactions import Transaction, Transactions
from ..validation import check_group_id, check_topic_partition, normalize_offsets

_HEARTBEAT_SLICE_S = 0.5
_FETCH_RECORDS_MIN = 2000
_EXPIRY_CHECK_S = 0.05
RESET_POLICIES = ("earliest", "latest", "none")


class OffsetAndTimestamp(msgspec.Struct, frozen=True):
    offset: int
    timestamp: int


def _compile_pattern(pattern: object) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise InvalidArgumentError(f"pattern must be a str, got {type(pattern).__name__}")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise InvalidArgumentError(f"pattern {pattern!r} is not a regular expression: {e}") from e


class ConsumerRebalanceListener(Protocol):
    """Called from ``poll`` around rebalances, as in kafka-python."""

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None: ...

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None: ...


class Consumer:
    """Create with ``store.consumer(*topics, group_id=..., ...)``."""

    def __init__(
        self,
        log: Log,
        groups: GroupCoordinator,
        transactions: Transactions,
        *topics: str,
        group_id: str | None = None,
        client_id: str = "eventstore-consumer",
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        max_poll_records: int = 500,
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 10_000,
        partition_assignment_strategy: str = "range",
        consumer_timeout_ms: float = float("inf"),
        key_deserializer: Callable[[bytes], Any] | None = None,
        value_deserializer: Callable[[bytes], Any] | None = None,
    ) -> None:
        if auto_offset_reset not in RESET_POLICIES:
            raise InvalidArgumentError(
                f"auto_offset_reset must be one of {RESET_POLICIES}, got {auto_offset_reset!r}"
            )
        if partition_assignment_strategy not in ("range", "roundrobin", "cooperative-sticky"):
            raise InvalidArgumentError(
                "partition_assignment_strategy must be 'range', 'roundrobin' or "
                f"'cooperative-sticky', got {partition_assignment_strategy!r}"
            )
        for name, value in (("max_poll_records", max_poll_records),
                            ("max_poll_interval_ms", max_poll_interval_ms),
                            ("session_timeout_ms", session_timeout_ms),
                            ("auto_commit_interval_ms", auto_commit_interval_ms)):
            if type(value) is not int or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        for name, fn in (("key_deserializer", key_deserializer),
                         ("value_deserializer", value_deserializer)):
            if fn is not None and not callable(fn):
                raise InvalidArgumentError(f"{name} must be callable or None, got {fn!r}")
        if group_id is not None:
            check_group_id(group_id)
        if enable_auto_commit and group_id is None:
            enable_auto_commit = False  # nothing to commit to, as in kafka-python
        self._log = log
        self._groups = groups
        self._transactions = transactions
        self._watches: dict[TopicPartition, Watch] = {}
        self.group_id = group_id
        self.client_id = client_id
        self._reset = auto_offset_reset
        self._auto_commit = enable_auto_commit
        self._auto_commit_s = auto_commit_interval_ms / 1000
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        self._max_poll_records = max_poll_records
        self._max_poll_interval_ms = max_poll_interval_ms
        self._session_timeout_ms = session_timeout_ms
        self._strategy = partition_assignment_strategy
        self._consumer_timeout_s = consumer_timeout_ms / 1000
        # a thread waiting in poll heartbeats this often: well inside both timeouts
        self.heartbeat_slice_s = min(_HEARTBEAT_SLICE_S, session_timeout_ms / 3000,
                                     max_poll_interval_ms / 3000)
        self._member: EmbeddedMember | None = None
        self._born: dict[str, int | None] = {}  # topic -> the creation time of the one read
        self._subscription: frozenset[str] | None = None
        self._named: frozenset[str] = frozenset()  # topics subscribed by name
        self._pattern: re.Pattern[str] | None = None  # and by pattern
        self._listener: ConsumerRebalanceListener | None = None
        self._manual: set[TopicPartition] | None = None
        self._owned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._buffers: dict[TopicPartition, list[Record]] = {}
        self._paused: set[TopicPartition] = set()
        self._rotation = 0
        self._next_expiry_check = 0.0
        self._iteration = IterationBuffer(self)
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._deserializing = key_deserializer is not None or value_deserializer is not None
        self._failed: RecordDeserializationError | None = None  # raised by the next poll
        self._counts = _Counts()
        self._closed = False
        self._wake = _Wake()
        if topics:
            self.subscribe(topics)

    # --- subscription and assignment -------------------------------------------

    def subscribe(self, topics: Iterable[str] = (), listener: ConsumerRebalanceListener | None = None,
                  *, pattern: str | None = None) -> None:
        """Join the group for ``topics`` (or every topic matching ``pattern``)."""
        self._check_open()
        if self.group_id is None:
            raise IllegalStateError("subscribe needs a group_id; use assign() without one")
        if isinstance(topics, str):
            topics = [topics]
        names = set(topics)
        if pattern is None and not names:
            raise InvalidArgumentError("subscribe needs at least one topic or a pattern")
        for name in names:
            self._log.topic(name)
        rx = _compile_pattern(pattern) if pattern is not None else None
        if self._manual is not None:
            raise IllegalStateError("subscribe() and assign() cannot be mixed; unsubscribe first")
        self._leave()
        self._named = frozenset(names)
        self._pattern = rx
        if rx is not None:
            names |= self._matching(rx)
        self._subscription = frozenset(names)
        self._listener = listener
        self._join(self._groups.group(self.group_id))

    def _join(self, group: Group) -> None:
        assert self._subscription is not None
        self._member = EmbeddedMember(group, self.client_id, self._subscription, self._strategy,
                                      self._max_poll_interval_ms, self._session_timeout_ms)
        self._member.wake = self._wake
        self._member.alive = self._alive
        group.join(self._member)

    @property
    def _alive(self) -> Callable[[], bool]:
        """For the coordinator: whether this consumer still exists and is open.

        A weak reference, so that a consumer dropped without ``close()`` is
        collected and then loses its session (its partitions move).
        """
        ref = weakref.ref(self)

        def alive() -> bool:
            consumer = ref()
            return consumer is not None and not consumer._closed

        return alive

    def _matching(self, rx: re.Pattern[str]) -> set[str]:
        return {t.name for t in self._log.topics() if rx.fullmatch(t.name)}

    def _follow_pattern(self, member: EmbeddedMember) -> None:
        """Topics created or deleted since: a pattern subscription follows them (Kafka does)."""
        if self._pattern is None:
            return
        names = frozenset(self._named | self._matching(self._pattern))
        if names != self._subscription:
            self._subscription = names
            member.group.resubscribe(member, names)

    def subscription(self) -> set[str] | None:
        return set(self._subscription) if self._subscription is not None else None

    def unsubscribe(self) -> None:
        """Leave the group (or drop the manual assignment)."""
        self._leave()
        self._release(set(self._owned))
        self._subscription = None
        self._pattern = None
        self._manual = None

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Take ``partitions`` by hand: no group membership, no rebalancing."""
        self._check_open()
        if self._subscription is not None:
            raise IllegalStateError("assign() and subscribe() cannot be mixed; unsubscribe first")
        given = list(partitions)
        for tp in given:  # checked before hashing: a partition of any type says what is wrong
            if not isinstance(tp, TopicPartition):
                raise InvalidArgumentError(f"assign() takes TopicPartition objects, got {tp!r}")
            self._log.partition(tp.topic, tp.partition)
        tps = set(given)
        self._release(self._owned - tps)
        self._manual = tps
        self._take(tps - self._owned)

    def assignment(self) -> set[TopicPartition]:
        return set(self._owned)

    def _leave(self) -> None:
        member, self._member = self._member, None
        if member is None:
            return
        if self._owned:
            self._commit_positions_quietly(member)
            if self._listener is not None:
                self._listener.on_partitions_revoked(set(self._owned))
        self._release(set(self._owned))
        member.group.leave(member)

    def _take(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._owned.add(tp)
            self._born.setdefault(tp.topic, self._incarnation(tp.topic))
            self._watch(tp)

    def _incarnation(self, topic: str) -> int | None:
        """Which topic of that name this is (its creation time); None if there is none now."""
        cfg = self._log.find_topic(topic)
        return None if cfg is None else cfg.created_ms

    def _is_current(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` still exists as the partition this consumer's position belongs to.

        A topic deleted (and perhaps made again) under its owner loses its group
        offsets; committing the old position would bring them back.
        """
        cfg = self._log.find_topic(tp.topic)
        return cfg is not None and tp.partition < cfg.partitions \
            and self._born.get(tp.topic) == cfg.created_ms

    def _start_over(self, topic: str) -> None:
        """The topic was deleted and made again: forget positions in the old one, follow the new."""
        self._born[topic] = self._incarnation(topic)
        for tp in [tp for tp in self._owned if tp.topic == topic]:
            self._positions.pop(tp, None)
            self._buffers.pop(tp, None)
            self._watch(tp)

    def _release(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._owned.discard(tp)
            self._positions.pop(tp, None)
            self._buffers.pop(tp, None)
            self._paused.discard(tp)
            watch = self._watches.pop(tp, None)
            if watch is not None:
                watch.cancel()

    def _watch(self, tp: TopicPartition) -> None:
        """Wake ``poll`` when records become visible in ``tp`` (of the topic there is now)."""
        old = self._watches.pop(tp, None)
        if old is not None:
            old.cancel()
        with contextlib.suppress(TopicNotFoundError, PartitionNotFoundError):  # deleted meanwhile
            self._watches[tp] = self._log.watch([tp], self._wake.set)

    # --- rebalancing ------------------------------------------------------------

    def _coordinate(self, now: float) -> None:
        member = self._member
        if member is None:
            return
        group = member.group
        member.last_poll = member.last_heartbeat = now
        if now >= self._next_expiry_check:
            self._next_expiry_check = now + _EXPIRY_CHECK_S
            self._follow_pattern(member)
            group.expire(now)
        if not member.active:
            self._rejoin(member)
            return
        if member.generation == group.generation and member.owned == member.target:
            return
        revoke = group.to_revoke(member)
        if revoke:
            self._commit_positions_quietly(member, revoke)
            if self._listener is not None:
                self._listener.on_partitions_revoked(set(revoke))
            self._release(revoke)
            group.release(member, revoke)
        taken = group.acquire(member)
        if taken or revoke:
            self._counts.rebalances += 1
        if taken:
            self._take(taken)
            if self._listener is not None:
                self._listener.on_partitions_assigned(set(taken))

    def _rejoin(self, member: EmbeddedMember) -> None:
        """This member was removed (timeout): give up everything and join again."""
        lost = set(self._owned)
        self._release(lost)
        if lost and self._listener is not None:
            self._listener.on_partitions_revoked(lost)
        self._join(member.group)

    # --- positions ----------------------------------------------------------------

    def _position(self, tp: TopicPartition) -> int:
        pos = self._positions.get(tp)
        if pos is None:
            pos = self._initial_position(tp)
            self._positions[tp] = pos
        return pos

    def _initial_position(self, tp: TopicPartition) -> int:
        start, end = self._log.offsets(tp.topic, tp.partition)
        if self.group_id is not None:
            committed = self._groups.committed(self.group_id, tp)
            if committed is not None and start <= committed.offset <= end:
                return committed.offset
        return self._reset_position(tp, start, end)

    def _reset_position(self, tp: TopicPartition, start: int, end: int) -> int:
        if self._reset == "earliest":
            return start
        if self._reset == "latest":
            return end
        raise NoOffsetForPartitionError(tp.topic, tp.partition, self.group_id)

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` will return for ``tp``."""
        self._check_assigned(tp)
        return self._position(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_assigned(tp)
        if type(offset) is not int or offset < 0:
            raise InvalidArgumentError(f"offset must be a non-negative int, got {offset!r}")
        self._positions[tp] = offset

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._owned):
            self._check_assigned(tp)
            self._positions[tp] = self._log.offsets(tp.topic, tp.partition)[0]

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._owned):
            self._check_assigned(tp)
            self._positions[tp] = self._log.offsets(tp.topic, tp.partition)[1]

    def _check_assigned(self, tp: TopicPartition) -> None:
        if tp not in self._owned:
            raise IllegalStateError(f"partition {tp.topic}/{tp.partition} is not assigned to this consumer")

    def add_wake_callback(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` (from any thread, without blocking it) whenever ``poll`` would wake:
        a record appended to an assigned partition, or a rebalance of the group."""
        self._wake.callbacks.add(fn)

    def remove_wake_callback(self, fn: Callable[[], object]) -> None:
        self._wake.callbacks.discard(fn)

    def pause(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._check_assigned(tp)
            self._paused.add(tp)

    def resume(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._paused.discard(tp)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    # --- fetching -------------------------------------------------------------------

    def poll(self, timeout_ms: float = 0, max_records: int | None = None,
             update_offsets: bool = True) -> dict[TopicPartition, list[Record]]:
        """Records from the assigned partitions, waiting up to ``timeout_ms`` for some.

        Returns at most ``max_records`` (default ``max_poll_records``) records,
        grouped by partition, taking partitions in turn so none starves. A
        waiting poll wakes as soon as a record is appended to an assigned
        partition. ``update_offsets=False`` leaves the positions where they were.

        With a ``key_deserializer``/``value_deserializer``, records carry what
        they return (None is passed through). One that fails raises
        ``RecordDeserializationError``: the records before it are returned first
        and the next poll raises, until the application seeks past the record.
        """
        self._check_open()
        if self._member is None and self._manual is None:
            raise IllegalStateError("poll() needs subscribe() or assign() first")
        limit = self._max_poll_records if max_records is None else max_records
        if type(limit) is not int or limit < 1:
            raise InvalidArgumentError(f"max_records must be a positive int, got {limit!r}")
        now = time.monotonic()
        deadline = now + max(0.0, timeout_ms) / 1000
        self._counts.polls += 1
        self._counts.last_poll_ms = _now_ms()
        while True:  # bounded by the deadline
            self._wake.clear()
            self._coordinate(now)
            if self._auto_commit and now >= self._next_auto_commit:
                # before fetching: only records returned by earlier polls are committed
                self._next_auto_commit = now + self._auto_commit_s
                if self._member is not None:
                    self._commit_positions_quietly(self._member)
            out = self._fetch(limit, update_offsets)
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            self._wake.wait(min(remaining, self.heartbeat_slice_s))
            now = time.monotonic()
            if self._member is not None:
                self._member.last_heartbeat = now

    def _fetch(self, limit: int, update: bool) -> dict[TopicPartition, list[Record]]:
        self._raise_failed()
        parts = [tp for tp in sorted(self._owned) if tp not in self._paused]
        if not parts:
            return {}
        self._rotation = (self._rotation + 1) % len(parts)
        parts = parts[self._rotation:] + parts[: self._rotation]
        out: dict[TopicPartition, list[Record]] = {}
        count = 0
        for tp in parts:  # bounded by the assigned partitions
            records = self._take_records(tp, limit - count)
            failed = None
            if records and self._deserializing:
                records, failed = self._deserialize(tp, records)
            if records:
                self._counts.records += len(records)
                out[tp] = records
                if update:
                    self._positions[tp] = records[-1].offset + 1
                count += len(records)
            if failed is not None:
                if not out:
                    raise failed
                self._failed = failed  # the records before it first, as Kafka does
                break
            if count >= limit:
                break
        return out

    def _raise_failed(self) -> None:
        """Raise the deserialization failure a poll left, if the position is still at its record."""
        failed, self._failed = self._failed, None
        if failed is None:
            return
        tp = TopicPartition(failed.topic, failed.partition)
        if self._positions.get(tp) == failed.offset and tp in self._owned and tp not in self._paused:
            raise failed

    def _deserialize(self, tp: TopicPartition,
                     records: list[Record]) -> tuple[list[Record], RecordDeserializationError | None]:
        """``records`` with their keys and values deserialized, up to the first that fails."""
        key_of, value_of = self._key_deserializer, self._value_deserializer
        out: list[Record] = []
        for r in records:  # the deserializers run per record by nature
            part = "key"
            try:
                key = r.key if key_of is None or r.key is None else key_of(r.key)
                part = "value"
                value = r.value if value_of is None or r.value is None else value_of(r.value)
            except Exception as e:  # the application's deserializer: report it with the record
                failed = RecordDeserializationError(tp.topic, tp.partition, r.offset, part,
                                                    f"{type(e).__name__}: {e}")
                failed.__cause__ = e
                return out, failed
            out.append(msgspec.structs.replace(r, key=key, value=value))
        return out, None

    def _take_records(self, tp: TopicPartition, wanted: int) -> list[Record]:
        """Up to ``wanted`` records at ``tp``'s position, from the fetch buffer or the log.

        Like a Kafka consumer's fetch buffer: the log is read in whole batches
        and what ``poll`` does not return yet waits here, so a batch is decoded
        once however small ``max_poll_records`` is.
        """
        if not self._is_current(tp):
            cfg = self._log.find_topic(tp.topic)
            if cfg is None or tp.partition >= cfg.partitions:
                return []  # deleted, or made again smaller: the next rebalance takes it away
            self._start_over(tp.topic)
        try:
            pos = self._position(tp)
            buffered = self._buffers.get(tp)
            if buffered is None or not buffered or buffered[0].offset != pos:
                buffered, size = self._log.fetch(tp.topic, tp.partition, pos,
                                                 max(wanted, _FETCH_RECORDS_MIN))
                self._counts.fetched(size)
        except OffsetOutOfRangeError as e:
            self._buffers.pop(tp, None)
            self._positions[tp] = self._reset_position(tp, e.log_start_offset, e.end_offset)
            return []
        except (TopicNotFoundError, PartitionNotFoundError):
            return []  # deleted meanwhile
        if len(buffered) > wanted:
            self._buffers[tp] = buffered[wanted:]
            return buffered[:wanted]
        self._buffers.pop(tp, None)
        return buffered

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        """The next record, blocking; StopIteration after ``consumer_timeout_ms`` idle.

        Only the records handed out move the positions (see ``IterationBuffer``).
        """
        record = self._iteration.next()
        if record is not None:
            return record
        deadline = time.monotonic() + self._consumer_timeout_s
        while True:  # bounded by consumer_timeout_ms
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StopIteration
            batch = self.poll(timeout_ms=min(remaining, 3600.0) * 1000, update_offsets=False)
            self._iteration.fill(batch)
            record = self._iteration.next()
            if record is not None:
                return record

    # --- offsets and metadata ---------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None) -> None:
        """Commit ``offsets`` (next offsets to read), or the positions of all records returned.

        Fenced: a consumer removed from its group, or committing a partition it
        no longer owns, gets ``CommitFailedError`` and writes nothing.
        """
        self._check_open()
        if self.group_id is None:
            raise IllegalStateError("commit needs a group_id")
        if offsets is None:
            offsets = self._owned_positions()
        normalized = normalize_offsets(offsets)
        if not normalized:
            return
        self._commit(self.group_id, self._member, normalized)

    def _commit(self, group_id: str, member: EmbeddedMember | None,
                offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """The group's fenced commit, as this consumer's member (none: a manual assignment)."""
        if member is None:
            member_id, generation = None, -1
        else:
            member_id, generation = member.member_id, member.generation
        try:
            self._groups.commit_offsets(group_id, member_id, generation, offsets)
        except CommitFailedError:
            self._counts.commit_failures += 1
            raise
        self._counts.commits += 1

    def transaction(self) -> Transaction:
        """A transaction that also commits this consumer's positions, atomically with its appends.

        Use it to make a handler's output and the offsets of the records it
        processed one atomic step: after a crash the output is there exactly once
        and consumption resumes right after the records that produced it.
        """
        self._check_open()
        if self.group_id is None:
            raise IllegalStateError("a consumer transaction needs a group_id")
        tx = self._transactions.begin(group_id=self.group_id, member=self._member)
        tx.commit_offsets(self.group_id, self._owned_positions())
        return tx

    def _owned_positions(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Positions of the partitions owned (of ``only``), but of topics deleted under them."""
        return {tp: pos for tp, pos in self._positions.items()
                if tp in self._owned and (only is None or tp in only) and self._is_current(tp)}

    def commit_async(self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None,
                     callback: Any = None) -> None:
        """``commit`` (it is fast and local), then ``callback(offsets, exception_or_None)``."""
        error: Exception | None = None
        try:
            self.commit(offsets)
        except CommitFailedError as e:
            error = e
        if callback is not None:
            callback(offsets, error)
        elif error is not None:
            raise error

    def _commit_positions_quietly(self, member: EmbeddedMember,
                                  only: set[TopicPartition] | None = None) -> None:
        if not self._auto_commit or self.group_id is None:
            return
        offsets = {tp: OffsetAndMetadata(pos) for tp, pos in self._owned_positions(only).items()}
        if offsets:
            with contextlib.suppress(CommitFailedError):  # counted as a failure
                self._commit(self.group_id, member, offsets)

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp`` (None if it has none)."""
        if self.group_id is None:
            raise IllegalStateError("committed needs a group_id")
        check_topic_partition(tp, "committed() takes a TopicPartition: tp")
        om = self._groups.committed(self.group_id, tp)
        return None if om is None else om.offset

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._log.offsets(tp.topic, tp.partition)[0] for tp in partitions}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._log.offsets(tp.topic, tp.partition)[1] for tp in partitions}

    def highwater(self, tp: TopicPartition) -> int:
        return self._log.offsets(tp.topic, tp.partition)[1]

    def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, ts in timestamps.items():
            off = self._log.offset_for_time(tp.topic, tp.partition, ts)
            if off is None:
                out[tp] = None
            else:
                rec = self._log.read(tp.topic, tp.partition, off, max_records=1)[0]
                out[tp] = OffsetAndTimestamp(off, rec.timestamp_ms)
        return out

    def topics(self) -> set[str]:
        return {t.name for t in self._log.topics()}

    def metrics(self) -> dict[str, Any]:
        """What this consumer did since it was made, as kafka-python's ``metrics()`` (flat).

        ``polls``; ``records_consumed`` (records polls returned, iterators'
        polls included); ``log_reads`` and ``bytes_fetched`` (reads from the log,
        each of whole batches, most ahead of what polls return: a Kafka fetch;
        the bytes are the batches' bytes on disk); ``commits`` and ``commit_failures``
        (``commit``, ``commit_async``, auto-commit, close; not the offsets a
        ``transaction()`` commits); ``rebalances`` (assignment changes
        from the group); ``assigned_partitions``; ``last_poll_ms`` (wall clock)
        and ``last_poll_seconds_ago`` (None before the first poll);
        ``records_lag`` per assigned partition (end offset - position; None
        until the position is known) and ``records_lag_max``.
        """
        c = self._counts
        lag: dict[TopicPartition, int | None] = {}
        positions = dict(self._positions)
        for tp in sorted(set(self._owned)):  # bounded by the assignment
            pos = positions.get(tp)
            try:
                end = self._log.offsets(tp.topic, tp.partition)[1]
                lag[tp] = None if pos is None else max(0, end - pos)
            except (TopicNotFoundError, PartitionNotFoundError):
                lag[tp] = None  # deleted meanwhile: the next rebalance takes it away
        known = [n for n in lag.values() if n is not None]
        last = c.last_poll_ms
        return {
            "polls": c.polls, "records_consumed": c.records, "bytes_fetched": c.bytes,
            "log_reads": c.log_reads, "commits": c.commits, "commit_failures": c.commit_failures,
            "rebalances": c.rebalances, "assigned_partitions": len(lag),
            "last_poll_ms": last,
            "last_poll_seconds_ago": None if last is None else max(0.0, (_now_ms() - last) / 1000),
            "records_lag": lag, "records_lag_max": max(known) if known else None,
        }

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._log.topic(topic).partitions))

    # --- lifecycle ---------------------------------------------------------------------

    def close(self, autocommit: bool = True) -> None:
        """Commit (if auto-commit is on), leave the group and stop. Idempotent."""
        if self._closed:
            return
        if not autocommit:
            self._auto_commit = False
        if not self._log.closed:
            self._leave()
            self._release(set(self._owned))
        self._closed = True

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise IllegalStateError("consumer is closed")
        if self._log.closed:
            raise StoreClosedError(self._log.path)


class IterationBuffer:
    """The records a poll returned to an iterator, handed out one at a time.

    The iterator polls with ``update_offsets=False``; handing a record out moves
    its partition's position just past it. So positions, and the offsets that
    auto-commit and ``close`` commit, cover only the records the application was
    given, as in kafka-python: leaving a loop early leaves the rest to be
    delivered again. Records of a partition that was sought, paused or revoked
    since the poll are dropped (its position says where to read next).
    """

    def __init__(self, consumer: Consumer) -> None:
        # weak: the consumer holds its buffer, and a cycle would keep a consumer dropped
        # without close() alive (and its partitions held) until the cyclic collector runs
        self._owner = weakref.ref(consumer)
        # (partition, records, its position at the poll), the next chunk last
        self._chunks: list[tuple[TopicPartition, list[Record], int]] = []
        self._next = 0  # index of the next record in the last chunk
        self._expected = 0  # the last chunk's partition's position if nobody moved it

    def _consumer(self) -> Consumer:
        consumer = self._owner()
        assert consumer is not None, "an iteration buffer is used only through its consumer"
        return consumer

    def fill(self, batch: Mapping[TopicPartition, list[Record]]) -> None:
        """Replace the buffer with what ``poll(update_offsets=False)`` returned."""
        positions = self._consumer()._positions
        self._chunks = [(tp, records, positions.get(tp, records[0].offset))
                        for tp, records in reversed(list(batch.items())) if records]
        self._next = 0
        if self._chunks:
            self._expected = self._chunks[-1][2]

    def next(self) -> Record | None:
        """The next record still valid to hand out (its position moves past it), or None."""
        consumer = self._consumer()
        while self._chunks:  # bounded by the records buffered
            tp, records, _ = self._chunks[-1]
            if (self._next < len(records) and consumer._positions.get(tp) == self._expected
                    and tp in consumer._owned and tp not in consumer._paused):
                record = records[self._next]
                self._next += 1
                self._expected = consumer._positions[tp] = record.offset + 1
                return record
            self._chunks.pop()
            self._next = 0
            if self._chunks:
                self._expected = self._chunks[-1][2]
        return None


def log_of(consumer: Consumer) -> Log:
    """The log a consumer reads (for the client layer's own helpers, such as dead letters)."""
    return consumer._log


class _Counts:
    """The counters ``Consumer.metrics`` reports (one consumer is used by one thread at a time)."""

    def __init__(self) -> None:
        self.polls = 0
        self.records = 0
        self.bytes = 0
        self.log_reads = 0
        self.commits = 0
        self.commit_failures = 0
        self.rebalances = 0
        self.last_poll_ms: int | None = None

    def fetched(self, size: int) -> None:
        self.log_reads += 1
        self.bytes += size


class _Wake(threading.Event):
    """The consumer's wake-up: set by appends to its partitions and by rebalances.

    Extra callbacks (``Consumer.add_wake_callback``) let an event loop learn of
    a wake-up without a thread waiting on the event.
    """

    def __init__(self) -> None:
        super().__init__()
        self.callbacks: set[Callable[[], object]] = set()

    def set(self) -> None:
        super().set()
        for fn in list(self.callbacks):  # bounded by the registered callbacks
            fn()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
