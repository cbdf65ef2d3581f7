"""Decoded chunks of streams, kept in memory for the next read of the same stream.

The stream index stores a stream's envelopes in chunks of ``CHUNK_EVENTS``
(docs/format.md, section 12.1). Reading a stream decodes them into
``RecordedEvent`` values, one msgspec call a chunk; what that costs is mostly
allocating the values (five objects an event), and for a 10,000-event stream
it is several megabytes of fresh memory each time, which the operating system
hands out page by page (a minor fault each) once the allocator has returned the
previous read's memory. A full chunk never changes until its topic is deleted,
and its events are frozen values, so a later read of the stream shares them
instead of decoding them again. The last, partial chunk of a stream is decoded
on every read.

Bounded by ``CHUNKS_CACHED_MAX`` chunks (the oldest put go first); a deleted
topic's chunks are dropped with its streams (``forget_topic``).
"""

from __future__ import annotations

import threading

from .events import RecordedEvent
from .index import CHUNK_EVENTS

CHUNKS_CACHED_MAX = 256  # 32,768 events: about 12 MB of 40-byte events

# (topic, partition, the chunk's events): the location guards against a stream id reused
# in another topic after a deletion.
_Entry = tuple[str, int, list[RecordedEvent]]


class ChunkCache:
    """Full chunks by (stream id, chunk number). Looks take no lock; puts and drops do."""

    def __init__(self, chunks_max: int = CHUNKS_CACHED_MAX) -> None:
        self._chunks: dict[tuple[str, int], _Entry] = {}
        self._lock = threading.Lock()
        self._max = chunks_max

    def run(self, stream_id: str, topic: str, partition: int, first_chunk: int,
            last_chunk: int) -> tuple[list[RecordedEvent], int]:
        """The events of the cached chunks from ``first_chunk`` on, up to the first one not
        cached (or ``last_chunk``); and the number of the first chunk not served."""
        chunks = self._chunks
        out: list[RecordedEvent] = []
        chunk = first_chunk
        while chunk <= last_chunk:  # bounded by the chunks asked for
            hit = chunks.get((stream_id, chunk))
            if hit is None or hit[0] != topic or hit[1] != partition:
                break
            out += hit[2]
            chunk += 1
        return out, chunk

    def put(self, stream_id: str, topic: str, partition: int, first_chunk: int,
            decoded: list[list[RecordedEvent]]) -> None:
        """Keep the full ones of ``decoded``, the events of chunks ``first_chunk`` on."""
        with self._lock:
            chunks = self._chunks
            for i, events in enumerate(decoded[:self._max]):  # bounded by the cache's size
                if len(events) == CHUNK_EVENTS:
                    chunks[(stream_id, first_chunk + i)] = (topic, partition, events)
            while len(chunks) > self._max:  # bounded: as many as were just put
                del chunks[next(iter(chunks))]

    def forget_topic(self, topic: str) -> None:
        with self._lock:
            self._chunks = {k: v for k, v in self._chunks.items() if v[0] != topic}
