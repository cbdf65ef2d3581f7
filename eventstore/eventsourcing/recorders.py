"""The library's recorders on eventstore streams (the mapping is mapping.py; several-stream
writes and tracking records are commits.py).

An insert of one originator's events without a tracking record, which is what
``Application.save`` of one aggregate does, is one ``append_to_stream``: for
an aggregate's events (versions from 1, one by one) it expects the stream at
version ``v - 2`` for a first event of version ``v`` and reads nothing first;
only when that append is refused does it read the stream's last event, to tell
a conflict from a stream whose versions start at 0.
"""

from __future__ import annotations

import threading
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from eventstore import (
    EventStoreError,
    IllegalStateError,
    NewEvent,
    RecordedEvent,
    Store,
    StreamNotFoundError,
    TopicNotFoundError,
    WrongExpectedVersionError,
    event_from_record,
)

from .commits import (
    COMMIT_RECORD_BYTES_MAX,
    Commit,
    Write,
    apply_commit,
    apply_unapplied,
    check_fits,
    ensure_topic,
    last_commit,
    plan_write,
    stream_head,
    write_commit,
)
from .errors import RecordConflictError, UnsupportedVersionError
from .mapping import EVENTS, OriginatorIds, notifications, originator_version, stored_events, stream_id_of
from .shared import SharedStore

__all__ = [
    "EventStoreAggregateRecorder",
    "EventStoreApplicationRecorder",
    "EventStoreProcessRecorder",
    "EventStoreTrackingRecorder",
]

_COMMIT_STREAMS = 8  # $commits-<prefix>-<k> streams of an application: writes in parallel
_LOCK_ATTEMPTS_MAX = 8
_PAGE_EVENTS = 1000
_INT64_MAX = 2**63 - 1

Grouped = dict[str, list[tuple[int, StoredEvent]]]  # stream id -> (input index, event), by version


class _StoreRecorder:
    """What every recorder of the module has: the shared store, its topics and stream ids."""

    def __init__(self, shared: SharedStore, prefix: str, purpose: str = EVENTS) -> None:
        self.shared = shared
        self.store: Store = shared.store
        self.prefix = prefix
        self.purpose = purpose
        self.topic = f"{prefix}_{purpose}"
        self.tracking_topic = f"{prefix}_tracking"
        self.strict = purpose == EVENTS
        self.originator_ids = OriginatorIds(shared.settings.originator_id_type)
        # made here, not by the first append: append_to_stream's own making of a missing topic
        # can race with a create_topic of another thread (TopicExistsError)
        ensure_topic(shared, self.topic)
        ensure_topic(shared, self.tracking_topic, COMMIT_RECORD_BYTES_MAX)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.topic!r} of {self.store.path!r}>"

    @contextmanager
    def _locked(self, stream_ids: list[str]) -> Iterator[None]:
        """Hold the streams' locks, once no commit of the module waits to be applied again."""
        shared = self.shared
        for _ in range(_LOCK_ATTEMPTS_MAX):  # bounded: a commit that cannot be applied raises
            if shared.unapplied:
                apply_unapplied(shared)
            ids = shared.locks.acquire(stream_ids)
            if not shared.unapplied:
                break
            shared.locks.release(ids)
        else:
            raise IllegalStateError("commits of other threads keep failing to be applied; see the log")
        try:
            yield
        finally:
            shared.locks.release(ids)

    # --- writing ----------------------------------------------------------------------

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        """Record the events (and the tracking record); their notification ids, in input order."""
        if tracking is None and len(stored_events) == 1:  # Application.save of one new event
            stored = stored_events[0]
            _check_stored(stored, 0)
            stream_id = stream_id_of(stored.originator_id, self.purpose)
            return [self._append_one(stream_id, [(0, stored)]) + 1]
        groups = _group(stored_events, self.purpose)
        if tracking is None and not groups:
            return []
        if tracking is None and len(groups) == 1:
            [(stream_id, items)] = groups.items()
            results = [self._append_one(stream_id, items)]
        else:
            results = self._commit(groups, tracking)
        ids = [0] * len(stored_events)
        for items, last_position in zip(groups.values(), results, strict=True):
            first = last_position - len(items) + 2  # notification id = position + 1
            for k, (i, _) in enumerate(items):  # bounded by the insert
                ids[i] = first + k
        return ids

    def _append_one(self, stream_id: str, items: list[tuple[int, StoredEvent]]) -> int:
        """One originator's events in one append; the last position."""
        versions = [s.originator_version for _, s in items]
        store = self.store
        with self._locked([stream_id]):
            if self.strict and versions[0] >= 1 and versions[-1] - versions[0] == len(items) - 1:
                events = [NewEvent(type=s.topic, data=s.state) for _, s in items]
                try:
                    result = store.append_to_stream(stream_id, events, versions[0] - 2, topic=self.topic)
                    return result.position
                except WrongExpectedVersionError:
                    pass  # a conflict, or a stream whose versions started at 0: look
            head = stream_head(store, stream_id)
            metadata = plan_write(head, stream_id, versions, self.strict)
            events = [NewEvent(type=s.topic, data=s.state, metadata=m)
                      for (_, s), m in zip(items, metadata, strict=True)]
            try:
                result = store.append_to_stream(stream_id, events, head.stream_version,
                                                topic=head.topic or self.topic)
            except WrongExpectedVersionError as e:  # other code appended meanwhile
                raise RecordConflictError(f"originator {stream_id!r} was written meanwhile: {e}") from e
            return result.position

    def _commit(self, groups: Grouped, tracking: Tracking | None) -> list[int]:
        """Several streams, or a tracking record: a commit, then its appends (commits.py)."""
        shared, store = self.shared, self.store
        if tracking is not None:
            _check_tracking(tracking)
            commit_stream = f"$tracking-{self.prefix}-{tracking.application_name}"
        else:
            first = next(iter(groups))
            commit_stream = f"$commits-{self.prefix}-{zlib.crc32(first.encode()) % _COMMIT_STREAMS}"
        with self._locked([*groups, commit_stream]):
            last_version, last = last_commit(store, commit_stream)
            if tracking is not None:
                _check_after(tracking, last)
            writes = [self._plan(stream_id, items) for stream_id, items in groups.items()]
            commit = Commit(None if tracking is None else tracking.notification_id, writes)
            write_commit(store, commit_stream, self.tracking_topic, last_version, commit)
            try:
                results = apply_commit(store, commit)
            except BaseException:
                with shared.unapplied_lock:
                    shared.unapplied.add(commit_stream)
                raise
        return [r.position for r in results]

    def _plan(self, stream_id: str, items: list[tuple[int, StoredEvent]]) -> Write:
        head = stream_head(self.store, stream_id)
        versions = [s.originator_version for _, s in items]
        metadata = plan_write(head, stream_id, versions, self.strict)
        write = Write(stream_id, head.topic or self.topic, head.stream_version,
                      [uuid.uuid4().bytes for _ in items], [s.topic for _, s in items],
                      [s.state for _, s in items], metadata)
        check_fits(self.store, write)
        return write

    # --- tracking -----------------------------------------------------------------------

    def _max_tracking_id(self, application_name: str) -> int | None:
        if not isinstance(application_name, str):
            raise UnsupportedVersionError(f"application_name must be a str, got {application_name!r}")
        _, commit = last_commit(self.store, f"$tracking-{self.prefix}-{application_name}")
        return None if commit is None else commit.notification_id


def _group(stored_events: Sequence[StoredEvent], purpose: str) -> Grouped:
    """The events by stream, each stream's in version order; nothing written if one is bad."""
    groups: Grouped = {}
    for i, s in enumerate(stored_events):  # bounded by the insert
        _check_stored(s, i)
        groups.setdefault(stream_id_of(s.originator_id, purpose), []).append((i, s))
    for stream_id, items in groups.items():  # bounded by the insert
        if len(items) > 1:
            items.sort(key=lambda item: item[1].originator_version)
            versions = [s.originator_version for _, s in items]
            if len(set(versions)) < len(versions):
                raise RecordConflictError(f"originator {stream_id!r}: a version is given twice: {versions}")
    return groups


def _check_stored(s: object, index: int) -> None:
    if not isinstance(s, StoredEvent):
        raise UnsupportedVersionError(f"event {index} must be a StoredEvent, got {type(s).__name__}")
    if not isinstance(s.originator_id, (uuid.UUID, str)) or s.originator_id == "":
        raise UnsupportedVersionError(f"event {index}: originator_id must be a UUID or a non-empty str, "
                                      f"got {s.originator_id!r}")
    v = s.originator_version
    if type(v) is not int or not 0 <= v <= _INT64_MAX:
        raise UnsupportedVersionError(f"event {index}: originator_version must be an int ≥ 0, got {v!r}")
    if not isinstance(s.topic, str) or not isinstance(s.state, bytes):
        raise UnsupportedVersionError(f"event {index}: topic must be a str and state bytes, got "
                                      f"{type(s.topic).__name__} and {type(s.state).__name__}")


def _check_tracking(tracking: object) -> None:
    if not isinstance(tracking, Tracking):
        raise UnsupportedVersionError(f"tracking must be a Tracking, got {type(tracking).__name__}")
    n = tracking.notification_id
    if not isinstance(tracking.application_name, str) or type(n) is not int or not 0 <= n <= _INT64_MAX:
        raise UnsupportedVersionError(f"tracking needs a str application_name and an int notification_id "
                                      f"≥ 0, got {tracking!r}")


def _check_after(tracking: Tracking, last: Commit | None) -> None:
    last_id = None if last is None else last.notification_id
    if last_id is not None and tracking.notification_id <= last_id:
        raise RecordConflictError(
            f"tracking: notification {tracking.notification_id} of {tracking.application_name!r} is not "
            f"after the last one recorded, {last_id}"
        )


class EventStoreAggregateRecorder(_StoreRecorder, AggregateRecorder):
    """An originator's events (or snapshots, ``purpose``) as an eventstore stream."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        self._insert(stored_events, None)
        return None

    def select_events(self, originator_id: uuid.UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        if not isinstance(originator_id, (uuid.UUID, str)):
            raise UnsupportedVersionError(f"originator_id must be a UUID or a str, got {originator_id!r}")
        if limit is not None and limit <= 0:
            return []
        stream_id = stream_id_of(originator_id, self.purpose)
        try:
            if gt is None and lte is None:
                events = self.store.read_stream(stream_id, -1 if desc else 0, limit, backwards=desc)
            else:
                events = self._select_range(stream_id, gt, lte, desc, limit)
        except StreamNotFoundError:
            return []
        return stored_events(originator_id, events)

    def _select_range(self, stream_id: str, gt: int | None, lte: int | None, desc: bool,
                      limit: int | None) -> list[RecordedEvent]:
        """The events with ``gt < version <= lte``, found by their stream versions."""
        last = self.store.stream_version(stream_id)
        if last is None:
            return []
        count = last + 1
        low = 0 if gt is None else self._count_up_to(stream_id, gt, count)
        high = count if lte is None else self._count_up_to(stream_id, lte, count)
        if high <= low:
            return []
        n = high - low if limit is None else min(high - low, limit)
        if desc:  # the last n, read forwards (a backwards read from version 0 means from the end)
            events = self.store.read_stream(stream_id, high - n, n)
            events.reverse()
            return events
        return self.store.read_stream(stream_id, low, n)

    def _count_up_to(self, stream_id: str, version: int, count: int) -> int:
        """How many of the stream's first ``count`` events have an originator version ≤ ``version``.

        Originator versions increase with stream versions, so this is the first
        stream version above ``version``. For an aggregate's events (version =
        stream version + 1) it is ``version`` itself: one read checks that;
        otherwise a binary search reads one event per step.
        """
        guess = min(max(version, 0), count)
        low, high = 0, count  # the answer is in [low, high]
        first = max(guess - 1, 0)
        window = self.store.read_stream(stream_id, first, min(guess + 1, count) - first)
        for e in window:  # at most two events: guess - 1 and guess
            if originator_version(e) <= version:
                low = max(low, e.version + 1)
            else:
                high = min(high, e.version)
        while low < high:  # bounded: halves the range each step
            middle = (low + high) // 2
            [e] = self.store.read_stream(stream_id, middle, 1)
            if originator_version(e) <= version:
                low = middle + 1
            else:
                high = middle
        return low


class EventStoreApplicationRecorder(EventStoreAggregateRecorder, ApplicationRecorder):
    """An application's events as streams of its ``<name>_events`` topic; notifications in
    the store's global order (id = position + 1)."""

    def __init__(self, shared: SharedStore, prefix: str, purpose: str = EVENTS) -> None:
        super().__init__(shared, prefix, purpose)
        self._tail_lock = threading.Lock()
        self._tail: Any = None  # a subscription to $all that max_notification_id drains
        self._tail_from = 0
        self._max_id: int | None = None

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        return self._insert(stored_events, None)

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *,
                             inclusive_of_start: bool = True) -> Sequence[Notification]:
        if type(limit) is not int or limit <= 0:
            return []
        first = 0 if start is None else max(start - 1 if inclusive_of_start else start, 0)
        last = None if stop is None else stop - 1
        if last is not None and last < first:
            return []
        out: list[Notification] = []
        page = min(max(limit, 100), 10 * _PAGE_EVENTS)
        with self.store.subscribe_to_all(from_position=first, page_events=page) as events:
            while True:  # bounded: each page moves on, up to the end of what is durable
                batch = events.next_batch(page, timeout_s=0)
                if not batch:
                    break
                found, done = notifications(batch, self.topic, topics, self.originator_ids, last,
                                            limit - len(out))
                out.extend(found)
                if done:
                    break
        return out

    def max_notification_id(self) -> int | None:
        """The id of the last notification readers can see (it never goes back)."""
        with self._tail_lock:
            for _ in range(2):  # bounded: the second pass reads from the start
                if self._tail is None:
                    self._tail_from = self._tail_hint()
                    self._tail = self.store.subscribe_to_all(from_position=self._tail_from,
                                                             page_events=_PAGE_EVENTS)
                self._drain_tail()
                if self._max_id is not None or self._tail_from == 0:
                    break
                self._tail.close()  # the hinted event is not readable yet: read from the start
                self._tail, self._tail_from = self.store.subscribe_to_all(0, page_events=_PAGE_EVENTS), 0
            return self._max_id

    def _drain_tail(self) -> None:
        while True:  # bounded: up to the end of what is durable
            batch = self._tail.next_batch(_PAGE_EVENTS, timeout_s=0)
            if not batch:
                return
            for e in reversed(batch):  # the last notification of the page
                if e.topic == self.topic:
                    self._max_id = e.position + 1
                    break

    def _tail_hint(self) -> int:
        """The largest position among the last events of the topic's partitions (0 if none)."""
        store = self.store
        try:
            partitions = store.topic(self.topic).partitions
        except TopicNotFoundError:
            return 0
        best = 0
        for p in range(partitions):  # bounded by the topic's partitions
            start, end = store.offsets(self.topic, p)
            try:
                records = store.read(self.topic, p, end - 1, max_records=1) if end > start else []
                if records:
                    best = max(best, event_from_record(records[0]).position)
            except EventStoreError:
                continue  # not a stream event, or not readable yet: the scan finds it
        return best

    def subscribe(self, gt: int | None = None,
                  topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        from .subscription import EventStoreSubscription

        return EventStoreSubscription(self, gt=gt, topics=topics)


class EventStoreTrackingRecorder(_StoreRecorder, TrackingRecorder):
    """Tracking records as events of ``$tracking-<name>-<upstream application>`` streams."""

    def insert_tracking(self, tracking: Tracking) -> None:
        self._insert([], tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        return self._max_tracking_id(application_name)


class EventStoreProcessRecorder(EventStoreTrackingRecorder, EventStoreApplicationRecorder, ProcessRecorder):
    """An application recorder whose inserts may carry a tracking record, written with the
    events as one commit (commits.py): exactly-once processing of notifications."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        tracking = kwargs.get("tracking")
        return self._insert(stored_events, tracking)
