"""The rules of streams: what a stream id, an event and an expected version may be, whether
an append meets its expected version, and which events a stream's metadata hides."""

from __future__ import annotations

import functools
import time
import uuid

import msgspec

from ..errors import InvalidArgumentError, RecordTooLargeError, WrongExpectedVersionError
from .events import ENVELOPE_OVERHEAD_MAX, NewEvent, RecordedEvent, StreamMetadata, StreamState
from .index import Head

__all__ = [
    "META_EVENT_TYPE", "META_PREFIX", "Expected", "apply_max_age", "category_of", "check_events",
    "check_expected", "check_sizes", "check_stream_id", "check_version", "decode_meta",
    "floor_version", "is_deleted", "metadata_target",
]

#: A stream's metadata lives in the stream ``$$<stream id>``, as events of this type.
META_PREFIX = "$$"
META_EVENT_TYPE = "$metadata"
Expected = int | StreamState
_meta_decoder = msgspec.json.Decoder(StreamMetadata)


def category_of(stream_id: str) -> str:
    """The text before the first ``-`` (the whole id if there is none)."""
    return metadata_target(stream_id).split("-", 1)[0]


def metadata_target(stream_id: str) -> str:
    """The stream whose metadata ``stream_id`` holds (``$$s`` -> ``s``), or ``stream_id``."""
    return stream_id[len(META_PREFIX):] if stream_id.startswith(META_PREFIX) else stream_id


def check_stream_id(stream_id: object) -> None:
    if not isinstance(stream_id, str) or not stream_id or len(stream_id.encode()) > 1024:
        raise InvalidArgumentError(f"stream_id must be a non-empty str of at most 1024 bytes, "
                                   f"got {stream_id!r}")
    if "\x00" in stream_id:
        raise InvalidArgumentError("stream_id must not contain NUL characters")


def check_events(events: object) -> list[NewEvent]:
    if isinstance(events, NewEvent):
        events = [events]
    if not isinstance(events, (list, tuple)) or not events:
        raise InvalidArgumentError("events must be a non-empty list of NewEvent")
    for i, e in enumerate(events):
        if not isinstance(e, NewEvent):
            raise InvalidArgumentError(f"event {i} must be a NewEvent, got {type(e).__name__}")
        if not isinstance(e.type, str) or not e.type:
            raise InvalidArgumentError(f"event {i} needs a non-empty str type")
        if not isinstance(e.data, bytes) or not isinstance(e.metadata, bytes):
            raise InvalidArgumentError(f"event {i}: data and metadata must be bytes")
        if not isinstance(e.id, uuid.UUID):
            raise InvalidArgumentError(f"event {i}: id must be a uuid.UUID")
    return list(events)


def check_sizes(stream_id: str, events: list[NewEvent], topic: str, limit: int) -> None:
    """Each event's record (stream id + envelope) within the topic's ``max_record_bytes``."""
    fixed = len(stream_id.encode()) + ENVELOPE_OVERHEAD_MAX
    for i, e in enumerate(events):  # bounded by the caller's events
        size = fixed + len(e.data) + len(e.metadata) + len(e.type.encode())
        if size > limit:
            raise RecordTooLargeError(topic, size, limit, i)


def check_expected(expected: object) -> None:
    if isinstance(expected, StreamState):
        return
    if type(expected) is not int or expected < -1:
        raise InvalidArgumentError(
            f"expected_version must be a StreamState or an int ≥ -1, got {expected!r}"
        )


def check_version(stream_id: str, expected: Expected, current: int, deleted: bool) -> None:
    """Raise ``WrongExpectedVersionError`` unless a stream at ``current`` meets ``expected``."""
    if expected is StreamState.ANY:
        return
    if expected is StreamState.NO_STREAM:
        ok = current < 0 or deleted
    elif expected is StreamState.STREAM_EXISTS:
        ok = current >= 0 and not deleted
    else:
        ok = expected == current
    if not ok:
        raise WrongExpectedVersionError(stream_id, expected, current)


@functools.lru_cache(maxsize=1024)
def decode_meta(raw: bytes) -> StreamMetadata:
    """A stream's metadata JSON, decoded once however many checks and reads consult it
    (shared: callers must not change it)."""
    return _meta_decoder.decode(raw)


def is_deleted(head: Head) -> bool:
    if not head.meta:
        return False
    meta = decode_meta(head.meta)
    return meta.deleted and (meta.truncate_before or 0) > head.last_version


def floor_version(head: Head) -> int:
    """The first version reads show (truncate-before and max count)."""
    if not head.meta:
        return 0
    meta = decode_meta(head.meta)
    floor = meta.truncate_before or 0
    if meta.max_count is not None:
        floor = max(floor, head.last_version - meta.max_count + 1)
    return max(0, floor)


def apply_max_age(head: Head, events: list[RecordedEvent]) -> list[RecordedEvent]:
    """``events`` without those older than the stream's max age."""
    if not head.meta or not events:
        return events
    meta = decode_meta(head.meta)
    if meta.max_age_ms is None:
        return events
    oldest = time.time_ns() // 1_000_000 - meta.max_age_ms
    return [e for e in events if e.timestamp_ms >= oldest]
