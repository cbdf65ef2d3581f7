"""Aggregate snapshots, kept in the ``snapshots`` database of the stream index.

One snapshot per stream: key the stream id (UTF-8), value one MessagePack
array (docs/format.md, section 12.1)::

    [aggregate name, schema version, version, state]

``state`` is a MessagePack map of the aggregate's attributes. A snapshot is a
cache, never the source of truth: deleting one only makes the next load replay
more events. It lives in the derived index, so it goes when the index is
rebuilt. A snapshot is *usable* for a load only if all of these hold (else the
load replays the stream from its start):

====  ========================================================================
case  the snapshot is ignored when
====  ========================================================================
S1    its aggregate name differs from the aggregate class's ``aggregate_name``
S2    its schema version differs from the class's ``snapshot_version``
S3    its version is above the stream's last version (the stream was rebuilt
      shorter, or the snapshot outlived a deleted topic)
S4    the stream hides events (truncate-before, max count, max age, deleted):
      the snapshot may hold the effect of events a replay no longer sees
S5    its bytes or its state do not decode
S6    the stream's events after it do not start at its version + 1
====  ========================================================================

Writes keep the newest snapshot: a write is skipped when the stored one is at
a higher version that is still within the stream (S3 false).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lmdb
import msgspec

from ..errors import StorageError
from .events import StreamMetadata
from .index import Head, StreamIndex

if TYPE_CHECKING:
    from .streams import Streams

__all__ = ["Snapshot", "Snapshots"]


class Snapshot(msgspec.Struct, array_like=True, frozen=True):
    """One stored snapshot; ``state`` is left encoded until the aggregate class decodes it."""

    name: str
    schema: int
    version: int
    state: msgspec.Raw


_decoder = msgspec.msgpack.Decoder(Snapshot)
_encode = msgspec.msgpack.encode
_meta_decoder = msgspec.json.Decoder(StreamMetadata)


def hides_events(head: Head) -> bool:
    """Whether the stream's metadata keeps some of its events out of reads (case S4)."""
    if not head.meta:
        return False
    try:
        meta = _meta_decoder.decode(head.meta)
    except msgspec.MsgspecError:
        return True
    return bool(meta.truncate_before or meta.deleted or meta.max_count is not None
                or meta.max_age_ms is not None)


class Snapshots:
    """Read, write and delete the snapshots of a store's streams."""

    def __init__(self, streams: Streams) -> None:
        self._streams = streams

    def _index(self) -> StreamIndex:
        """The stream index, with every staged append written to it (so heads are current)."""
        streams = self._streams
        streams.check_open()
        streams.flush()
        return streams.index

    def load(self, stream_id: str) -> tuple[Head | None, Snapshot | None]:
        """The stream's head and its snapshot (undecodable: None, S5), read together."""
        index = self._index()
        try:
            with index.read() as txn:
                head = index.head(txn, stream_id)
                raw = index.snapshot(txn, stream_id)
        except lmdb.Error as e:
            raise StorageError(index.path, f"stream index read failed: {e}") from e
        return head, _decode(raw)

    def get(self, stream_id: str) -> Snapshot | None:
        return self.load(stream_id)[1]

    def put(self, stream_id: str, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless a newer, still valid one is there; True if written."""
        index = self._index()
        value = _encode(snapshot)

        def write(txn: Any) -> bool:
            old = _decode(index.snapshot(txn, stream_id))
            head = index.head(txn, stream_id)
            last = head.last_version if head is not None else -1
            if old is not None and snapshot.version < old.version <= last:
                return False
            index.put_snapshot(txn, stream_id, value)
            return True

        return bool(index.write(write))

    def delete(self, stream_id: str) -> bool:
        """Forget the stream's snapshot; True if there was one."""
        index = self._index()
        return bool(index.write(lambda txn: index.delete_snapshot(txn, stream_id)))


def _decode(raw: bytes | None) -> Snapshot | None:
    if raw is None:
        return None
    try:
        return _decoder.decode(raw)
    except msgspec.MsgspecError:
        return None
