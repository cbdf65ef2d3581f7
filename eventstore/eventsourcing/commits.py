"""Writes that touch several streams, or carry a tracking record: a commit event, then the appends.

eventstore appends to one stream atomically, not to several. So an
``insert_events`` of the library that records events of several originators,
or events together with the tracking record of the notification they were made
from (or a tracking record alone), is written in these steps
(docs/format.md, section 16.3):

1. Take the locks of every stream it touches (shared.py).
2. Check everything: each originator's versions follow its last one, the
   tracking record's notification id is above the last one of its
   application, every event fits its topic. A failed check raises; nothing
   has been written.
3. Append one event, the *commit*, to a commit stream: the tracking stream of
   the upstream application (``$tracking-<prefix>-<upstream>``) when there is a
   tracking record, else one of ``$commits-<prefix>-<k>``. It holds every
   event of the write with the event id chosen for it, and each stream's
   expected version. Once it is durable the write has happened.
4. Append each originator's events, with those ids, expecting those versions.
5. Let go of the locks.

Appending event ids that a stream already holds is a retry for eventstore: it
writes nothing and returns the first append's result. So a commit can be
applied again without harm, and that is the whole recovery: the first open of
a store in a process applies the last commit of every commit stream again,
before any recorder exists (``apply_last_commits``). Only the last commit of a
commit stream can be incomplete: the next one is written under the same lock
after the previous one's appends, and when an append of step 4 fails, the
commit stream is marked ``unapplied`` before the locks go, so the module
applies it again before it writes anything else.

A crash (or an error) before step 3 is durable leaves nothing; after it, the
events and the tracking record are all there after the next open. The
tracking record is never without its events, nor the events without it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from eventstore import (
    AppendResult,
    NewEvent,
    RecordedEvent,
    RecordTooLargeError,
    Store,
    StreamNotFoundError,
    TopicExistsError,
    TopicNotFoundError,
    WrongExpectedVersionError,
)

from .errors import RecordConflictError, UnsupportedVersionError
from .mapping import originator_version, version_metadata

if TYPE_CHECKING:
    from .shared import SharedStore

__all__ = [
    "COMMIT_TYPE",
    "Commit",
    "Head",
    "Write",
    "apply_commit",
    "apply_last_commits",
    "apply_unapplied",
    "ensure_topic",
    "last_commit",
    "plan_write",
    "stream_head",
]

log = logging.getLogger("eventstore")

COMMIT_TYPE = "$commit"
COMMIT_CATEGORIES = ("$tracking", "$commits")
COMMIT_RECORD_BYTES_MAX = 16 * 1024 * 1024  # the tracking topic's max_record_bytes
# What a stream event's record adds to its stream id, type, data and metadata, at most
# (docs/format.md, section 12): eventstore counts the same against max_record_bytes.
ENVELOPE_OVERHEAD_MAX = 70


class Write(msgspec.Struct, array_like=True, frozen=True):
    """The events of one stream in a commit, and the stream's last version before them."""

    stream_id: str
    topic: str
    expected: int  # -1: no stream yet
    ids: list[bytes]
    types: list[str]
    data: list[bytes]
    metadata: list[bytes]


class Commit(msgspec.Struct, array_like=True, frozen=True):
    """A commit event's data: the tracking record's notification id (if any) and the writes."""

    notification_id: int | None
    writes: list[Write]


_encode = msgspec.msgpack.encode
_decode_commit = msgspec.msgpack.Decoder(Commit).decode


class Head(msgspec.Struct, frozen=True):
    """A stream's last event as a write needs it: stream version, originator version, topic."""

    stream_version: int  # -1: no stream
    originator_version: int | None
    topic: str | None


NO_HEAD = Head(-1, None, None)


def last_event(store: Store, stream_id: str) -> RecordedEvent | None:
    try:
        events = store.read_stream(stream_id, -1, 1, backwards=True)
    except StreamNotFoundError:
        return None
    return events[0] if events else None


def stream_head(store: Store, stream_id: str) -> Head:
    last = last_event(store, stream_id)
    if last is None:
        return NO_HEAD
    return Head(last.version, originator_version(last), last.topic)


def last_commit(store: Store, stream_id: str) -> tuple[int, Commit | None]:
    """A commit stream's last version (-1: none) and its last commit."""
    last = last_event(store, stream_id)
    if last is None:
        return -1, None
    if last.type != COMMIT_TYPE:
        return last.version, None
    try:
        return last.version, _decode_commit(last.data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        log.warning("commit stream %r: its last event does not decode; not applied", stream_id)
        return last.version, None


def plan_write(head: Head, stream_id: str, versions: Sequence[int], strict: bool) -> list[bytes]:
    """Each new event's metadata, once the versions are checked against the stream's head.

    ``strict`` (an application's events): the n-th event of a stream may have at
    most version n, so that an append expecting stream version ``v - 2`` for an
    event of version ``v`` can never pass a stream that already holds ``v``
    (see ``_append_one`` in recorders.py).
    """
    last = head.originator_version
    if last is not None and versions[0] <= last:
        raise RecordConflictError(
            f"originator {stream_id!r} is at version {last}; cannot record version {versions[0]}"
        )
    metadata = []
    stream_version = head.stream_version
    for v in versions:  # bounded by the write
        stream_version += 1
        if strict and v > stream_version + 1:
            raise UnsupportedVersionError(
                f"originator {stream_id!r}: version {v} would be its event number {stream_version + 1}; "
                "an originator's versions start at 0 or 1 and go up by one"
            )
        metadata.append(version_metadata(v, stream_version))
    return metadata


def check_fits(store: Store, write: Write) -> None:
    """Refuse, before anything is written, an event its topic would refuse at step 4."""
    limit = store.topic(write.topic).max_record_bytes
    key = len(write.stream_id.encode())
    for i, (t, d, m) in enumerate(zip(write.types, write.data, write.metadata, strict=True)):
        size = key + len(t.encode()) + len(d) + len(m) + ENVELOPE_OVERHEAD_MAX
        if size > limit:
            raise RecordTooLargeError(write.topic, size, limit, i)


def ensure_topic(shared: SharedStore, name: str, max_record_bytes: int | None = None) -> None:
    """Make the streams topic ``name`` if it is missing (once per shared store)."""
    if name in shared.topics_made:
        return
    store = shared.store
    try:
        store.topic(name)
    except TopicNotFoundError:
        try:
            if max_record_bytes is None:
                store.create_topic(name, shared.settings.partitions, streams=True)
            else:
                store.create_topic(name, shared.settings.partitions, streams=True,
                                   max_record_bytes=max_record_bytes)
        except TopicExistsError:
            pass  # made by another thread meanwhile
    shared.topics_made.add(name)


def write_commit(store: Store, stream_id: str, topic: str, last_version: int, commit: Commit) -> None:
    """Step 3: the commit event, expecting the commit stream where the caller found it."""
    event = NewEvent(type=COMMIT_TYPE, data=_encode(commit))
    try:
        store.append_to_stream(stream_id, [event], last_version, topic=topic)
    except WrongExpectedVersionError as e:
        raise RecordConflictError(f"commit stream {stream_id!r} was written by another writer") from e


def apply_commit(store: Store, commit: Commit) -> list[AppendResult]:
    """Step 4 (and recovery): append each write; a write already there is returned as it was."""
    results = []
    for w in commit.writes:  # bounded by the commit
        events = [NewEvent(type=t, data=d, metadata=m, id=uuid.UUID(bytes=i))
                  for i, t, d, m in zip(w.ids, w.types, w.data, w.metadata, strict=True)]
        results.append(store.append_to_stream(w.stream_id, events, w.expected, topic=w.topic))
    return results


def apply_last_commits(shared: SharedStore) -> int:
    """Apply the last commit of every commit stream of the store again; returns how many had writes.

    A commit that can no longer be applied (its stream was written by other
    code after it) is logged and left; nothing else could make it whole.
    """
    store = shared.store
    applied = 0
    for category in COMMIT_CATEGORIES:
        for stream_id in store.list_streams(category):  # one per commit stream
            _, commit = last_commit(store, stream_id)
            if commit is None or not commit.writes:
                continue
            try:
                apply_commit(store, commit)
            except WrongExpectedVersionError as e:
                log.warning("commit stream %r: its last commit cannot be applied: %s", stream_id, e)
                continue
            applied += 1
    return applied


def apply_unapplied(shared: SharedStore) -> None:
    """Apply the commits whose appends failed, before the module writes anything else."""
    with shared.unapplied_lock:
        pending = sorted(shared.unapplied)
    for stream_id in pending:  # bounded by the commit streams marked
        _, commit = last_commit(shared.store, stream_id)
        writes = [] if commit is None else [w.stream_id for w in commit.writes]
        with shared.locks.holding([stream_id, *writes]):
            _, commit = last_commit(shared.store, stream_id)
            try:
                if commit is not None:
                    apply_commit(shared.store, commit)
            except WrongExpectedVersionError as e:  # other code wrote one of its streams meanwhile
                log.warning("commit stream %r: its last commit cannot be applied: %s", stream_id, e)
        with shared.unapplied_lock:
            shared.unapplied.discard(stream_id)
