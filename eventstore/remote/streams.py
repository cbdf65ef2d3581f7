"""The event-sourcing half of a remote store: ``Streams``' calls over the extension APIs.

:class:`RemoteStreams` has the methods of ``eventstore.sourcing.streams.Streams``
that the store, ``Repository`` and subscriptions call (``append``, ``read``,
``read_all``, ``metadata``, ``stream_version``, ...), each one request (or a few:
reads page by ``max_bytes`` and ask again from ``next_*`` until they hold what the
embedded call returns). Errors come back as the embedded store's exceptions.
Snapshots (:class:`RemoteSnapshots`) and subscriptions (:class:`RemoteSubscription`,
a client-side cursor over PollSubscription long polls) are here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ..errors import EventStoreError, InvalidArgumentError, StoreClosedError
from ..sourcing.events import AppendResult, NewEvent, RecordedEvent, StreamMetadata, StreamState
from ..sourcing.index import Head
from ..sourcing.rules import check_events, check_expected, check_stream_id
from ..sourcing.snapshots import Snapshot
from ..sourcing.subscriptions import ALL, CATEGORY_PREFIX
from ..validation import check_int64
from .connection import Connection, ConnectionPool, raise_for
from .polling import POLL_WAIT_S, PolledSubscription

__all__ = ["MAX_BYTES", "POLL_WAIT_S", "RemoteSnapshots", "RemoteStreams", "RemoteSubscription"]

MAX_BYTES = 4 * 1024 * 1024  # a read's page: about this many bytes per response
_KINDS = {StreamState.ANY: 1, StreamState.NO_STREAM: 2, StreamState.STREAM_EXISTS: 3}
_meta_json = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(StreamMetadata)


def _event(t: tuple[Any, ...]) -> RecordedEvent:
    sid, version, etype, data, meta, eid, position, ts, topic, partition, offset = t
    return RecordedEvent(version=version, type=etype, data=data, metadata=meta, id_bytes=eid,
                         position=position, timestamp_ms=ts, offset=offset, stream_id=sid,
                         topic=topic, partition=partition)


def _result(r: dict[str, Any]) -> AppendResult:
    return AppendResult(r["stream_id"], r["next_expected_version"], r["position"])


def _check_limit(limit: object) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidArgumentError(f"limit must be an int ≥ 0 or None, got {limit!r}")


class RemoteStreams:
    """The stream calls of a store served at ``connection``'s address."""

    def __init__(self, connection: ConnectionPool, max_bytes: int = MAX_BYTES) -> None:
        self.connection = connection
        self.max_bytes = max_bytes
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise StoreClosedError(self.connection.address)

    def _call(self, api_key: int, fields: dict[str, Any], stream_id: str | None = None,
              expected: object = None) -> dict[str, Any]:
        self.check_open()
        response = self.connection.call(api_key, fields)
        raise_for(response, stream_id, expected)
        return response

    # --- appending ----------------------------------------------------------------

    def append(self, stream_id: str, events: Sequence[NewEvent], expected: int | StreamState,
               topic: str | None) -> AppendResult:
        check_stream_id(stream_id)
        batch = check_events(events)
        check_expected(expected)
        if topic is not None and not isinstance(topic, str):
            raise InvalidArgumentError(f"topic must be a str or None, got {topic!r}")
        kind, version = (0, expected) if isinstance(expected, int) else (_KINDS[expected], -1)
        wire_events = [(e.id.bytes, e.type, e.data, e.metadata) for e in batch]
        return _result(self._call(20000, {
            "stream_id": stream_id, "topic": topic, "expected_kind": kind,
            "expected_version": version, "events": wire_events}, stream_id, expected))

    # --- reading ------------------------------------------------------------------

    def read(self, stream_id: str, from_version: int, limit: int | None,
             backwards: bool) -> list[RecordedEvent]:
        check_stream_id(stream_id)
        if type(from_version) is not int or from_version < -1:
            raise InvalidArgumentError(f"from_version must be an int ≥ 0, got {from_version!r}")
        _check_limit(limit)
        out: list[RecordedEvent] = []
        cursor = from_version
        while limit is None or len(out) < limit:  # bounded: each page moves the cursor or ends
            want = -1 if limit is None else limit - len(out)
            r = self._call(20001, {"stream_id": stream_id, "from_version": cursor, "limit": want,
                                   "backwards": bool(backwards), "max_bytes": self.max_bytes}, stream_id)
            out.extend(_event(t) for t in r["events"])
            nxt = r["next_version"]
            if nxt < 0 or not r["events"]:
                break
            cursor = nxt
        return out

    def read_all(self, from_position: int, limit: int | None) -> list[RecordedEvent]:
        check_int64(from_position, "from_position")
        _check_limit(limit)
        out: list[RecordedEvent] = []
        cursor = from_position
        target: int | None = None
        while True:  # bounded: each page moves the cursor towards the target
            want = -1 if limit is None else from_position + limit - cursor
            r = self._call(20002, {"from_position": cursor, "limit": want, "max_bytes": self.max_bytes})
            out.extend(_event(t) for t in r["events"])
            if target is None:  # what the embedded call covers: up to its watermark at the start
                end = r["watermark"]
                target = end if limit is None else min(end, from_position + limit)
            nxt = r["next_position"]
            if nxt <= cursor or nxt >= target:
                return out
            cursor = nxt

    def visible(self, stream_id: str, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Events read earlier are shown as read: the server filters hidden ones at each read."""
        return events

    def stream_version(self, stream_id: str) -> int | None:
        check_stream_id(stream_id)
        version = self.stream_versions([stream_id])[0]
        return None if version < 0 else version

    def stream_versions(self, stream_ids: Sequence[str]) -> list[int]:
        """The last version of each stream (-1: no events), in one request."""
        for s in stream_ids:
            check_stream_id(s)
        return list(self._call(20008, {"stream_ids": list(stream_ids)})["versions"])

    def list_streams(self, category: str | None) -> list[str]:
        if category is not None and not isinstance(category, str):
            raise InvalidArgumentError(f"category must be a str or None, got {category!r}")
        return list(self._call(20009, {"category": category})["stream_ids"])

    # --- metadata, delete, truncate -----------------------------------------------------

    def metadata(self, stream_id: str) -> StreamMetadata:
        check_stream_id(stream_id)
        r = self._call(20003, {"stream_id": stream_id}, stream_id)
        return _meta_decoder.decode(r["metadata"])

    def set_metadata(self, stream_id: str, metadata: StreamMetadata) -> AppendResult:
        check_stream_id(stream_id)
        if not isinstance(metadata, StreamMetadata):
            raise InvalidArgumentError("metadata must be a StreamMetadata")
        try:
            data = _meta_json.encode(metadata)
        except (TypeError, OverflowError) as e:
            raise InvalidArgumentError(f"stream metadata cannot be stored as JSON: {e}") from None
        return _result(self._call(20004, {"stream_id": stream_id, "metadata": data}, stream_id))

    def delete(self, stream_id: str) -> AppendResult:
        check_stream_id(stream_id)
        return _result(self._call(20005, {"stream_id": stream_id}, stream_id))

    def truncate_before(self, stream_id: str, version: int) -> AppendResult:
        check_stream_id(stream_id)
        check_int64(version, "before_version")
        return _result(self._call(20006, {"stream_id": stream_id, "before_version": version}, stream_id))

    # --- what Repository takes from a store's streams -------------------------------------

    @property
    def log(self) -> Any:
        """A remote store has no log of its own here: ``ProjectionRunner`` (whose checkpoints live
        in the catalog beside the events) runs where the store is; a subscription with its
        checkpoint kept by the application does the same job over the network."""
        raise EventStoreError(
            "ProjectionRunner needs an embedded store (its checkpoints live in the store's catalog, "
            "written in the same transaction as its state): run it where the store is, or follow "
            "store.subscribe_to_category(...) and keep the checkpoint yourself")

    @property
    def snapshots(self) -> RemoteSnapshots:
        return RemoteSnapshots(self)

    def flush(self) -> None:
        """Nothing to flush on this side: the server's reads see every append."""

    def watermark(self) -> int:
        """The first global position not yet durable on the server."""
        return int(self._call(20002, {"from_position": 0, "limit": 0, "max_bytes": 1})["watermark"])


class RemoteSnapshots:
    """``Snapshots``' ``load``/``get``/``put`` over LoadSnapshot and SaveSnapshot."""

    def __init__(self, streams: RemoteStreams) -> None:
        self._streams = streams

    def load(self, stream_id: str) -> tuple[Head | None, Snapshot | None]:
        """The stream's head (its last version; the server has already left out a snapshot
        its stream's metadata makes unusable, case S4) and its snapshot."""
        check_stream_id(stream_id)
        r = self._streams._call(20010, {"stream_id": stream_id}, stream_id)
        head = None if r["head_version"] < 0 else Head("", 0, r["head_version"])
        if not r["found"]:
            return head, None
        return head, Snapshot(r["aggregate"], r["schema_version"], r["version"], msgspec.Raw(r["state"]))

    def get(self, stream_id: str) -> Snapshot | None:
        return self.load(stream_id)[1]

    def put(self, stream_id: str, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless a newer, still valid one is there; True if written."""
        check_stream_id(stream_id)
        if type(snapshot.version) is not int or snapshot.version < 0:
            raise InvalidArgumentError(f"a snapshot's version is an int ≥ 0, got {snapshot.version!r}")
        return bool(self._streams._call(20011, {
            "stream_id": stream_id, "aggregate": snapshot.name, "schema_version": snapshot.schema,
            "version": snapshot.version, "state": bytes(snapshot.state)}, stream_id)["written"])

    def delete(self, stream_id: str) -> bool:
        """Forget the stream's snapshot; True if there was one."""
        check_stream_id(stream_id)
        return bool(self._streams._call(20011, {
            "stream_id": stream_id, "aggregate": "", "schema_version": 0, "version": -1,
            "state": b""}, stream_id)["written"])


class RemoteSubscription(PolledSubscription[RecordedEvent]):
    """A subscription of a remote store: the API of ``eventstore.Subscription``, its cursor kept
    here and advanced by PollSubscription long polls on a connection of its own."""

    POLL_API = 20007

    def __init__(self, connection: Connection, kind: int, target: str | None, cursor: int,
                 page_events: int, max_bytes: int = MAX_BYTES) -> None:
        super().__init__(connection, cursor, page_events, max_bytes)
        self._kind = kind
        self._target = target

    @property
    def source(self) -> str:
        if self._kind == 0:
            return ALL
        return CATEGORY_PREFIX + str(self._target) if self._kind == 1 else str(self._target)

    def checkpoint_of(self, event: RecordedEvent) -> int:
        """A stream subscription's checkpoint is the event's version, the others' its position."""
        return event.version if self._kind == 2 else event.position

    def _poll_fields(self) -> dict[str, Any]:
        return {"kind": self._kind, "target": self._target, "from": self._cursor}

    def _taken(self, response: dict[str, Any]) -> tuple[list[RecordedEvent], int]:
        raise_for(response, self._target)
        return [_event(t) for t in response["events"]], response["next_from"]

    def watch(self, callback: Callable[[], object]) -> Any:
        """Not offered: the embedded watch is called by the appending thread of this process;
        a remote subscription learns of new events only by its long polls (``next``)."""
        raise EventStoreError("a remote subscription has no watch(): new events arrive through "
                              "its long polls; call next() (or await it with eventstore.aio.connect)")

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("live" if self.caught_up else "catching up")
        return f"<Subscription {self.source!r} ({state}) checkpoint={self.checkpoint}>"
