"""Event-sourcing value types and the envelope a stream event has in the log.

A stream event is a log record whose key is the stream id and whose value is
the *envelope*, one MessagePack array (docs/format.md, section 12)::

    [version, type, data, metadata, id (16 bytes), position, timestamp_ms, offset]

The envelope repeats the record's offset and timestamp so that a run of
envelopes, joined under one array header, decodes with a single msgspec call
straight into ``RecordedEvent`` values (stream id, topic and partition are
filled in as field defaults, as for ``Record``).
"""

from __future__ import annotations

import enum
import uuid
from typing import Any

import msgspec

__all__ = [
    "AppendResult",
    "NewEvent",
    "RecordedEvent",
    "StreamMetadata",
    "StreamState",
]


class StreamState(enum.Enum):
    """Expected-version conditions that are not a specific version."""

    ANY = "any"  # no check
    NO_STREAM = "no_stream"  # the stream must not exist (or be deleted)
    STREAM_EXISTS = "stream_exists"  # the stream must have at least one event


def _new_id() -> uuid.UUID:
    return uuid.uuid4()


class NewEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An event to append. ``id`` defaults to a new UUID and makes retries idempotent.

    Not tracked by the garbage collector (``gc=False``, as ``RecordedEvent``): its
    fields hold no references back, and appends make one per event.
    """

    type: str
    data: bytes = b""
    metadata: bytes = b""
    id: uuid.UUID = msgspec.field(default_factory=_new_id)


class RecordedEvent(msgspec.Struct, array_like=True, frozen=True, kw_only=True, gc=False):
    """An event read from a stream (field order = the envelope's, then the filled-in fields).

    ``id`` is a property over the stored 16 bytes (``id_bytes``): building a
    ``uuid.UUID`` for every event read costs as much as decoding the rest of
    it, so it is built only when asked for.
    """

    version: int
    type: str
    data: bytes
    metadata: bytes
    id_bytes: bytes
    position: int
    timestamp_ms: int
    offset: int
    stream_id: str = ""
    topic: str = ""
    partition: int = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return msgspec.structs.astuple(self) == msgspec.structs.astuple(other)

    def __hash__(self) -> int:
        return hash((self.stream_id, self.version))

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.id_bytes)


class AppendResult(msgspec.Struct, frozen=True, gc=False):
    """What ``append_to_stream`` returns: the version to expect next, and the last position."""

    stream_id: str
    next_expected_version: int
    position: int


class StreamMetadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-stream settings, stored as events of the stream's ``$$<stream>`` metadata stream.

    ``max_age_ms`` and ``max_count`` hide older events from reads;
    ``truncate_before`` hides versions below it (KurrentDB's ``$tb``);
    ``deleted`` marks a soft-deleted stream (appending revives it).
    """

    max_age_ms: int | None = None
    max_count: int | None = None
    truncate_before: int | None = None
    deleted: bool = False
    custom: dict[str, Any] = {}


# The most bytes an envelope adds to its type, data and metadata: the array header (1),
# four ints of at most 9 bytes each (version, position, timestamp, offset), the str and
# bin headers of type, data and metadata (at most 5 each) and the 16-byte id with its
# header (2). A stream event's record counts its stream id (the key), type, data,
# metadata and this against the topic's ``max_record_bytes``.
ENVELOPE_OVERHEAD_MAX = 1 + 4 * 9 + 3 * 5 + 2 + 16

_envelope_encoder = msgspec.msgpack.Encoder()
encode_envelope = _envelope_encoder.encode


def decoder_for(stream_id: str, topic: str, partition: int) -> msgspec.msgpack.Decoder[list[RecordedEvent]]:
    cls = msgspec.defstruct(
        "RecordedEvent",
        [("stream_id", str, stream_id), ("topic", str, topic), ("partition", int, partition)],
        bases=(RecordedEvent,), array_like=True, frozen=True, kw_only=True, gc=False,
        module=RecordedEvent.__module__,
    )
    return msgspec.msgpack.Decoder(list[cls])  # type: ignore[valid-type]


def array_header(count: int) -> bytes:
    """The MessagePack header of an array of ``count`` elements."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


_envelopes = msgspec.msgpack.Decoder(list[RecordedEvent])


def events_from_records(records: list[Any]) -> list[RecordedEvent]:
    """The ``RecordedEvent`` values records of a streams topic carry.

    Their envelopes are decoded in one call (joined under one array header);
    only the stream id, topic and partition are then set per event. Raises
    ``EventDecodeError`` if a record is not a stream event envelope.
    """
    from ..errors import EventDecodeError

    try:
        events = _envelopes.decode(array_header(len(records))
                                   + b"".join(r.value or b"" for r in records))
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        first = records[0] if records else None
        where = (first.key or b"").decode("utf-8", "replace") if first is not None else "?"
        raise EventDecodeError(where, -1, "?", f"not an event envelope: {e}") from e
    replace = msgspec.structs.replace
    return [
        replace(ev, stream_id=(r.key or b"").decode("utf-8", "replace"), topic=r.topic,
                partition=r.partition)
        for ev, r in zip(events, records, strict=True)
    ]


def event_from_record(record: Any) -> RecordedEvent:
    """The ``RecordedEvent`` one record of a streams topic carries (for consumers of such topics)."""
    return events_from_records([record])[0]
