"""The repository: load aggregates from their streams, save their new events.

``get(id)`` takes the stream's snapshot if it is usable (snapshots.py, cases
S1 to S6), replays the events after it and returns the aggregate at the stream's
last version. ``save(aggregate)`` appends the pending events in one append
with ``expected_version`` = the version the aggregate was loaded at: if
another writer got there first the append raises ``WrongExpectedVersionError``
and writes nothing; the pending events stay, and the caller reloads and
retries the command.

With ``snapshot_every=N`` a snapshot is written when a save crosses a
multiple of N events, and when a load had to replay N events or more (so a
deleted or ignored snapshot comes back on the next load) — never of an
aggregate built while its stream hid some of its first events (truncated,
aged out), whose state would be wrong once they show again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from ..errors import InvalidArgumentError, StreamNotFoundError
from .aggregate import Aggregate, is_partial, mark_partial, pending_of, replay
from .events import AppendResult, RecordedEvent
from .snapshots import Snapshot, Snapshots, hides_events
from .types import EventRegistry, default_registry

if TYPE_CHECKING:
    from .streams import StreamsOwner

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)

log = logging.getLogger("eventstore")
_state_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class Repository(Generic[A]):
    """Aggregates of one class, stored as streams of ``store``.

    ``topic``: where new streams go (default: the stream id's category).
    ``registry``: the event types (default: those registered with ``@event_type``).
    """

    def __init__(self, store: StreamsOwner, aggregate_class: type[A], *, snapshot_every: int | None = None,
                 topic: str | None = None, registry: EventRegistry | None = None) -> None:
        if not (isinstance(aggregate_class, type) and issubclass(aggregate_class, Aggregate)):
            raise InvalidArgumentError(f"aggregate_class must be an Aggregate subclass, "
                                       f"got {aggregate_class!r}")
        if snapshot_every is not None and (type(snapshot_every) is not int or snapshot_every < 1):
            raise InvalidArgumentError(f"snapshot_every must be an int ≥ 1 or None, got {snapshot_every!r}")
        self.store = store
        self.aggregate_class = aggregate_class
        self.snapshot_every = snapshot_every
        self.topic = topic
        self.registry = registry or default_registry
        self._streams = store.streams
        # a remote store's streams bring their own snapshots (they live on the server)
        self.snapshots = getattr(self._streams, "snapshots", None) or Snapshots(self._streams)

    def __repr__(self) -> str:
        return f"<Repository of {self.aggregate_class.__qualname__}>"

    def __contains__(self, aggregate_id: object) -> bool:
        return isinstance(aggregate_id, str) and self._streams.stream_version(aggregate_id) is not None

    # --- loading --------------------------------------------------------------------

    def get(self, aggregate_id: str, *, version: int | None = None) -> A:
        """The aggregate at its stream's last version (or at ``version``, if given).

        Raises ``StreamNotFoundError`` if the stream has no events or was deleted.
        """
        if version is not None and (type(version) is not int or version < 0):
            raise InvalidArgumentError(f"version must be an int ≥ 0 or None, got {version!r}")
        aggregate, events = self._load(aggregate_id, version)
        if aggregate.version < 0 and events and events[0].version > 0:
            mark_partial(aggregate)  # its first events are hidden: a snapshot would be wrong later
        replayed = replay(aggregate, events, self.registry)
        if aggregate.version < 0:
            raise StreamNotFoundError(aggregate_id)
        every = self.snapshot_every
        if every is not None and version is None and replayed >= every and not is_partial(aggregate):
            self._put_snapshot(aggregate, self._snapshot_of(aggregate))
        return aggregate

    def _load(self, aggregate_id: str, version: int | None) -> tuple[A, list[RecordedEvent]]:
        """The aggregate from its snapshot (or new) and the events still to replay."""
        aggregate = self._from_snapshot(aggregate_id, version)
        if aggregate is not None:
            events = self._read(aggregate_id, aggregate.version + 1, version)
            if not events or events[0].version == aggregate.version + 1:
                return aggregate, events
            # S6: the events after the snapshot are hidden; replay what is visible
        return self.aggregate_class(aggregate_id), self._read(aggregate_id, 0, version)

    def _read(self, aggregate_id: str, first: int, last: int | None) -> list[RecordedEvent]:
        if last is None:
            return self._streams.read(aggregate_id, first, None, False)
        # read_stream counts its limit from the first visible version, which a truncation
        # may have raised above ``first``: read enough, then drop what is past ``last``
        events = self._streams.read(aggregate_id, first, max(0, last - first + 1), False)
        while events and events[-1].version > last:
            events.pop()
        return events

    def _from_snapshot(self, aggregate_id: str, version: int | None) -> A | None:
        if self.snapshot_every is None:
            return None
        head, snapshot = self.snapshots.load(aggregate_id)
        cls = self.aggregate_class
        if (snapshot is None or head is None
                or snapshot.name != cls.aggregate_name               # S1
                or snapshot.schema != cls.snapshot_version           # S2
                or snapshot.version > head.last_version              # S3
                or (version is not None and snapshot.version > version)
                or hides_events(head)):                              # S4
            return None
        aggregate = cls(aggregate_id)
        try:
            aggregate.restore_state(_state_decoder.decode(snapshot.state))
        except (msgspec.MsgspecError, TypeError, ValueError) as e:  # S5
            log.warning("snapshot of %r ignored: %s", aggregate_id, e)
            return None
        aggregate.version = snapshot.version
        return aggregate

    # --- saving ---------------------------------------------------------------------

    def save(self, aggregate: A) -> AppendResult | None:
        """Append the pending events, expecting the stream at the version they follow.

        Returns the append's result (None if nothing was pending). On
        ``WrongExpectedVersionError`` nothing is written and the events stay pending.
        """
        if not isinstance(aggregate, self.aggregate_class):
            raise InvalidArgumentError(f"this repository saves {self.aggregate_class.__qualname__}, "
                                       f"not {type(aggregate).__qualname__}")
        pending = pending_of(aggregate)
        if not pending:
            return None
        count = len(pending)
        expected = aggregate.version - count
        encode = self.registry.encode
        events = [encode(e) for e in pending]
        due = self._snapshot_due(expected, aggregate.version) and not is_partial(aggregate)
        snapshot = self._snapshot_of(aggregate) if due else None
        result = self._streams.append(aggregate.id, events, expected, self.topic)
        del pending[:count]
        if snapshot is not None:
            self._put_snapshot(aggregate, snapshot)
        return result

    def _snapshot_due(self, before: int, after: int) -> bool:
        """Whether the event count went past a multiple of ``snapshot_every``."""
        every = self.snapshot_every
        return every is not None and (after + 1) // every > (before + 1) // every

    # --- snapshots ----------------------------------------------------------------

    def take_snapshot(self, aggregate: A) -> None:
        """Store a snapshot of a saved aggregate now (whatever ``snapshot_every`` says)."""
        if pending_of(aggregate):
            raise InvalidArgumentError("save the aggregate before taking a snapshot of it")
        if is_partial(aggregate):
            raise InvalidArgumentError(
                f"{aggregate.id!r} was loaded while its stream hid some of its events: a snapshot "
                "of it would be wrong once they show again")
        self._put_snapshot(aggregate, self._snapshot_of(aggregate))

    def _snapshot_of(self, aggregate: A) -> Snapshot:
        """Encode the state first, so that an unencodable state fails before anything is written."""
        try:
            state = msgspec.msgpack.encode(aggregate.snapshot_state())
        except (TypeError, ValueError, OverflowError) as e:
            raise InvalidArgumentError(
                f"cannot snapshot {type(aggregate).__qualname__} {aggregate.id!r}: {e} "
                "(override snapshot_state/restore_state, or keep msgpack-encodable attributes)"
            ) from e
        cls = type(aggregate)
        return Snapshot(cls.aggregate_name, cls.snapshot_version, aggregate.version, msgspec.Raw(state))

    def _put_snapshot(self, aggregate: A, snapshot: Snapshot) -> None:
        self.snapshots.put(aggregate.id, snapshot)
