"""What Fetch serves: the stored batches as Kafka v2 batches (docs/format.md, 17.6).

``read_batches`` gives a partition's stored bytes as they are on disk. A Kafka v2 batch
(magic 2, what Produce stored) goes to the client byte for byte. A native batch (magic
0x45, what embedded appends wrote) is converted once into an uncompressed v2 batch
with the same offsets, timestamps, keys, values and headers, and the result is kept
in :class:`ConvertedBatches`, bounded in bytes (least recently used out), keyed by
(topic id, partition, base offset): a topic deleted and made again has another id,
so an entry is never served for a batch it was not made from. Native batches never
change; entries of segments retention removed are simply never asked for again and
age out.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Final

from ..records import Record
from ..storage import format as fmt
from ..wire.batch import MAGIC, encode_batch, set_log_append_time

__all__ = ["ConvertedBatches", "NotConverted", "as_kafka_batches"]

LEADER_EPOCH: Final = 0


class NotConverted(Exception):
    """A native batch not in the cache, met by a read that must not convert (on the event loop)."""


class ConvertedBatches:
    """An LRU of native batches converted to v2 batches, bounded in bytes; thread-safe (Fetch
    converts in worker threads)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[uuid.UUID, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[uuid.UUID, int, int]) -> bytes | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: tuple[uuid.UUID, int, int], batch: bytes) -> None:
        if len(batch) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._entries[key] = batch
            self.bytes += len(batch)
            while self.bytes > self.max_bytes:  # bounded by the entries
                _key, evicted = self._entries.popitem(last=False)
                self.bytes -= len(evicted)

    def __len__(self) -> int:
        return len(self._entries)


def as_kafka_batches(stored: bytes, topic_id: uuid.UUID, partition: int, cache: ConvertedBatches,
                     convert: bool = True) -> bytes:
    """``stored`` (whole batches from ``read_batches``) with every native batch replaced by
    its v2 form; v2 batches untouched. Returns ``stored`` itself when it holds no native
    batch (no copy). With ``convert`` False, a native batch not already in the cache
    raises :class:`NotConverted` instead of being converted (a cost per record, kept
    off the event loop)."""
    view = memoryview(stored)
    parts: list[bytes | memoryview] = []
    position = 0
    converted = False
    end = len(stored)
    while position < end:  # each pass takes one whole batch
        base_offset, size, magic = fmt.read_prefix(stored, position)
        if magic == MAGIC:
            parts.append(view[position:position + size])
        else:
            key = (topic_id, partition, base_offset)
            parts.append(_converted(stored, position, size, key, cache, convert))
            converted = True
        position += size
    return b"".join(parts) if converted else stored


def _converted(stored: bytes, position: int, size: int, key: tuple[uuid.UUID, int, int],
               cache: ConvertedBatches, convert: bool) -> bytes:
    found = cache.get(key)
    if found is not None:
        return found
    if not convert:
        raise NotConverted
    records = fmt.decode_records(stored, position, size)
    batch = encode_batch(((r.offset, r.timestamp_ms, r.key, r.value, tuple(r.headers)) for r in records),
                         partition_leader_epoch=LEADER_EPOCH)
    if records[0].timestamp_type == Record.TIMESTAMP_LOG_APPEND_TIME:  # a native batch's mark
        marked = bytearray(batch)
        set_log_append_time(marked, fmt.batch_max_timestamp(stored, position))
        batch = bytes(marked)
    cache.put(key, batch)
    return batch
