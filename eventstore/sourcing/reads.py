"""Reading streams: one stream by version from the index's chunks of envelopes (no log read;
full chunks decoded once and shared, ``chunks.py``), and ``$all`` by position from the index's
position table (log reads, one per run of offsets).

Every read flushes the staged index updates first. A stream's events at or past its
partition's visible end are not yet durable and stay hidden; ``$all`` stops at the
positions' watermark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import InvalidArgumentError, StreamNotFoundError
from ..validation import check_int64
from .chunks import ChunkCache
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
        self._chunk_cache = ChunkCache()

    def forget_topic(self, topic: str) -> None:
        """Drop the cached chunks of a deleted topic's streams (the index dropped them)."""
        self._chunk_cache.forget_topic(topic)

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
        with index.read(buffers=True) as txn:
            head = index.head(txn, stream_id)
            if head is None or head.last_version < 0:
                raise StreamNotFoundError(stream_id)
            if is_deleted(head):
                raise StreamNotFoundError(stream_id, deleted=True)
            visible_end = self._log.offsets(head.topic, head.partition)[1]
            first, last = _version_range(head, from_version, limit, backwards)
            if first > last:
                return []
            events = self._between(txn, stream_id, head, first, last)
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

    def _between(self, txn: Any, stream_id: str, head: Head, first: int,
                 last: int) -> list[RecordedEvent]:
        """Versions ``first .. last`` of the stream: full chunks from the cache as far as it
        holds them, the others read in ``txn`` (a ``buffers`` one) and decoded a chunk per
        call (no buffer the size of the stream); the full ones are cached (``ChunkCache``)."""
        first_chunk, last_chunk = first // CHUNK_EVENTS, last // CHUNK_EVENTS
        full = (head.last_version + 1) // CHUNK_EVENTS  # chunks 0 .. full-1 are full
        events, chunk = self._chunk_cache.run(stream_id, head.topic, head.partition, first_chunk,
                                              min(last_chunk, full - 1))
        if chunk <= last_chunk:
            index = self._index
            raw = index.chunk_range(txn, stream_id, chunk, last_chunk)
            decoder = self._decoder(stream_id, head.topic, head.partition)
            full_header = array_header(CHUNK_EVENTS)
            decoded = [index.decoded(decoder, (full_header if n < full else array_header(
                head.last_version + 1 - n * CHUNK_EVENTS)) + data, stream_id)
                for n, data in enumerate(raw, chunk)]  # bounded by the chunks read
            self._chunk_cache.put(stream_id, head.topic, head.partition, chunk, decoded)
            for part in decoded:  # bounded by the chunks read
                events += part
        start = first - first_chunk * CHUNK_EVENTS
        if start == 0 and len(events) == last - first + 1:
            return events  # all of it: no copy of the list
        return events[start:start + last - first + 1]

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
