"""How the ``eventsourcing`` library's records map onto eventstore's streams.

The rules are docs/format.md, section 16. In short:

=====================  ====================================================================
eventsourcing          eventstore
=====================  ====================================================================
originator id          stream id: ``str(originator_id)`` (``$<purpose>-<id>`` for snapshots)
originator version v   stream version ``v - 1`` when the event's metadata is empty; otherwise
                       the metadata, ``{"originator_version": v}``, says it
topic                  event type
state                  event data (bytes as the library's mapper made them)
notification id        global position + 1
=====================  ====================================================================

An aggregate's versions start at 1 and go up by one, so its events carry no
metadata and eventstore's own ``Repository`` reads them at versions one below.
Streams whose versions start at 0, or skip (snapshots), write the version into
each event whose stream version it does not follow from. Within a stream the
originator versions always increase with the stream versions.

Everything here is pure: no store, no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from eventsourcing.persistence import Notification, StoredEvent

from eventstore import RecordedEvent

__all__ = [
    "EVENTS",
    "OriginatorIds",
    "notifications",
    "originator_version",
    "stored_events",
    "stream_id_of",
    "version_metadata",
]

EVENTS = "events"  # the purpose of an application's own events


class _VersionMetadata(msgspec.Struct):
    originator_version: int | None = None


_version_decoder = msgspec.json.Decoder(_VersionMetadata)
_new = object.__new__
_set = object.__setattr__


def stream_id_of(originator_id: uuid.UUID | str, purpose: str) -> str:
    """The stream of an originator's records of ``purpose`` (``events``: the id itself)."""
    if purpose == EVENTS:
        return str(originator_id)
    return f"${purpose}-{originator_id}"


def version_metadata(originator_version: int, stream_version: int) -> bytes:
    """The metadata of an event at ``stream_version``: empty when it implies the version."""
    if originator_version == stream_version + 1:
        return b""
    return b'{"originator_version":%d}' % originator_version


def originator_version(event: RecordedEvent) -> int:
    """The originator version of a stream event (stream version + 1 unless its metadata says)."""
    metadata = event.metadata
    if not metadata:
        return event.version + 1
    return _from_metadata(metadata, event.version)


def _from_metadata(metadata: bytes, stream_version: int) -> int:
    try:
        value = _version_decoder.decode(metadata).originator_version
    except (msgspec.DecodeError, msgspec.ValidationError):
        value = None  # written by other code: eventstore's typed events keep {"schema": n} here
    return stream_version + 1 if value is None else value


def stored_events(originator_id: uuid.UUID | str, events: Sequence[RecordedEvent]) -> list[StoredEvent]:
    """``StoredEvent`` values for one originator's stream events.

    Built without the dataclass's ``__init__`` (which sets each field through
    ``object.__setattr__``): rebuilding a 10,000-event aggregate makes 10,000
    of them, and this way costs a third less.
    """
    out: list[StoredEvent] = []
    append = out.append
    for e in events:  # one object per event: the library's API is a list of them
        metadata = e.metadata
        version = e.version + 1 if not metadata else _from_metadata(metadata, e.version)
        stored = _new(StoredEvent)
        _set(stored, "__dict__", {"originator_id": originator_id, "originator_version": version,
                                  "topic": e.type, "state": e.data})
        append(stored)
    return out


def notifications(events: Iterable[RecordedEvent], topic: str, types: Sequence[str],
                  originator_id: Callable[[str], uuid.UUID | str],
                  last_position: int | None, limit: int) -> tuple[list[Notification], bool]:
    """The notifications among ``events`` (those of ``topic``, of ``types`` if any given).

    Stops after ``limit`` of them or past ``last_position``; the flag says whether it stopped.
    """
    out: list[Notification] = []
    wanted = frozenset(types)
    for e in events:  # bounded by the page of events given
        if last_position is not None and e.position > last_position:
            return out, True
        if e.topic != topic or (wanted and e.type not in wanted):
            continue
        out.append(notification(e, originator_id(e.stream_id)))
        if len(out) >= limit:
            return out, True
    return out, False


def notification(e: RecordedEvent, originator_id: uuid.UUID | str) -> Notification:
    """The ``Notification`` of one stream event of an application's events topic."""
    metadata = e.metadata
    version = e.version + 1 if not metadata else _from_metadata(metadata, e.version)
    n = _new(Notification)
    _set(n, "__dict__", {"originator_id": originator_id, "originator_version": version,
                         "topic": e.type, "state": e.data, "id": e.position + 1})
    return n


class OriginatorIds:
    """Stream ids back to originator ids: ``UUID`` for a canonical UUID text (``kind`` "uuid"),
    else the text; the last few conversions are kept, as notifications repeat streams."""

    _KEPT_MAX = 4096

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._kept: dict[str, Any] = {}

    def __call__(self, stream_id: str) -> uuid.UUID | str:
        kept = self._kept.get(stream_id)
        if kept is not None:
            return kept  # type: ignore[no-any-return]
        value: uuid.UUID | str = stream_id
        if self.kind == "uuid" and len(stream_id) == 36:
            try:
                parsed = uuid.UUID(stream_id)
            except ValueError:
                pass
            else:
                if str(parsed) == stream_id:
                    value = parsed
        if len(self._kept) >= self._KEPT_MAX:
            self._kept.clear()
        self._kept[stream_id] = value
        return value
