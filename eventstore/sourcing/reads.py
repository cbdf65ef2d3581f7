"""Reading streams: one stream by version from the index's chunks of envelopes (no log read),
and ``$all`` by position from the index's position table (log reads, one per run of offsets).

Every read flushes the staged index updates first. A stream's events at or past its
partition's visible end are not yet durable and stay hidden; ``$all`` stops at the
positions' watermark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ..errors import InvalidArgumentError, StreamNotFoundError
from ..validation import check_int64
from .events import RecordedEvent, StreamMetadata, array_header, decoder_for, events_from_records
from .index import CHUNK_EVENTS, Head
from .positions import Positions
from .rules import META_PREFIX, apply_max_age, check_stream_id, floor_version, is_deleted
from .staging import Staging

if TYPE_CHECKING:
    from ..log import Log

__all__ = ["StreamReads"]

_DECODERS_MAX = 4096
_meta_decoder = msgspec.json.Decoder(StreamMetadata)


class StreamReads:
    """The reads of ``Streams``. Thread-safe."""

    def __init__(self, log: Log, staging: Staging, positions: Positions) -> None:
        self._log = log
        self._staging = staging
        self._index = staging.index
        self._positions = positions
        self._decoders: dict[tuple[str, str, int], msgspec.msgpack.Decoder[list[RecordedEvent]]] = {}

    def read(self, stream_id: str, from_version: int, limit: int | None,
             backwards: bool) -> list[RecordedEvent]:
        self._log.check_open()
        check_stream_id(stream_id)
        if type(from_version) is not int or from_version < -1:
            raise InvalidArgumentError(f"from_version must be an int ≥ 0, got {from_version!r}")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be an int ≥ 0 or None, got {limit!r}")
        self._staging.flush()
        index = self._index
        with index.read() as txn:
            head = index.head(txn, stream_id)
            if head is None or head.last_version < 0:
                raise StreamNotFoundError(stream_id)
            if is_deleted(head):
                raise StreamNotFoundError(stream_id, deleted=True)
            visible_end = self._log.offsets(head.topic, head.partition)[1]
            first, last = _version_range(head, from_version, limit, backwards)
            if first > last:
                return []
            chunks = index.chunk_range(txn, stream_id, first // CHUNK_EVENTS, last // CHUNK_EVENTS)
        events = self._decode(stream_id, head, chunks, first, last)
        while events and events[-1].offset >= visible_end:  # not yet durable: not yet visible
            events.pop()
        events = apply_max_age(head, events)
        if backwards:
            events.reverse()
        return events

    def visible(self, stream_id: str, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Those of ``events`` (read earlier from ``stream_id``) that its metadata still shows.

        A subscription delivers events it read ahead; a delete, truncation or
        max count set since must hide them as it hides them from ``read``.
        """
        self._log.check_open()
        head = self._staging.current_head(stream_id)  # the newest head: staged updates included
        if head is None or not head.meta or not events:
            return events
        if is_deleted(head):
            return []
        floor = floor_version(head)
        return apply_max_age(head, [e for e in events if e.version >= floor])

    def _decode(self, stream_id: str, head: Head, chunks: list[bytes], first: int,
                last: int) -> list[RecordedEvent]:
        chunk_first = (first // CHUNK_EVENTS) * CHUNK_EVENTS
        count = min(head.last_version, (last // CHUNK_EVENTS + 1) * CHUNK_EVENTS - 1) - chunk_first + 1
        decoder = self._decoder(stream_id, head.topic, head.partition)
        events = self._index.decoded(decoder, array_header(count) + b"".join(chunks), stream_id)
        return events[first - chunk_first : last - chunk_first + 1]

    def _decoder(self, stream_id: str, topic: str,
                 partition: int) -> msgspec.msgpack.Decoder[list[RecordedEvent]]:
        key = (stream_id, topic, partition)
        decoder = self._decoders.get(key)
        if decoder is None:
            if len(self._decoders) >= _DECODERS_MAX:
                self._decoders.clear()
            decoder = self._decoders[key] = decoder_for(stream_id, topic, partition)
        return decoder

    def read_all(self, from_position: int, limit: int | None) -> list[RecordedEvent]:
        self._log.check_open()
        check_int64(from_position, "from_position")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be an int ≥ 0 or None, got {limit!r}")
        end = self._positions.watermark  # read first: everything below it is staged by now
        self._staging.flush()
        if limit is not None:
            end = min(end, from_position + limit)
        with self._index.read() as txn:
            entries = self._index.positions(txn, from_position, end)
        return self._events_at(entries)

    def _events_at(self, entries: list[tuple[int, str, int, int]]) -> list[RecordedEvent]:
        """Fetch events by location, reading each partition's runs of offsets in one go."""
        out: list[RecordedEvent] = []
        i = 0
        log = self._log
        while i < len(entries):  # bounded: every pass consumes ≥ 1 entry
            _, topic, partition, offset = entries[i]
            j = i
            while j + 1 < len(entries) and entries[j + 1][1:3] == (topic, partition) \
                    and entries[j + 1][3] == entries[j][3] + 1:
                j += 1
            out.extend(events_from_records(log.read(topic, partition, offset, max_records=j - i + 1)))
            i = j + 1
        return out

    def head(self, stream_id: str) -> Head | None:
        """The stream's head in the index, once every staged update is there."""
        self._log.check_open()
        self._staging.flush()
        with self._index.read() as txn:
            return self._index.head(txn, stream_id)

    def metadata(self, stream_id: str) -> StreamMetadata:
        check_stream_id(stream_id)
        head = self.head(stream_id)
        if head is None or not head.meta:
            return StreamMetadata()
        return _meta_decoder.decode(head.meta)  # a fresh value: callers may change it

    def list_streams(self, category: str | None) -> list[str]:
        self._log.check_open()
        prefix = "" if category is None else category + "-"
        self._staging.flush()
        with self._index.read() as txn:
            heads = self._index.heads_with_prefix(txn, prefix)
        return [sid for sid, head in heads
                if not sid.startswith(META_PREFIX) and head.last_version >= 0 and not is_deleted(head)]

    def stream_version(self, stream_id: str) -> int | None:
        head = self.head(stream_id)
        return None if head is None or head.last_version < 0 else head.last_version


def _version_range(head: Head, from_version: int, limit: int | None, backwards: bool) -> tuple[int, int]:
    """The first and last version a read returns (first > last: none)."""
    floor = floor_version(head)
    if backwards:
        top = head.last_version if from_version < 0 else min(from_version, head.last_version)
        return (floor if limit is None else max(floor, top - limit + 1)), top
    first = max(from_version, floor)
    return first, head.last_version if limit is None else min(head.last_version, first + limit - 1)
