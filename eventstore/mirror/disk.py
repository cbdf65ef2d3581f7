"""A store on disk as the mirror's source (read beside its owner) or destination."""

from __future__ import annotations

import sys
import time

from .. import store as store_module
from ..errors import MirrorError, OffsetOutOfRangeError, TopicNotFoundError
from ..reader import open_reader
from ..records import Message, Record, TopicPartition
from .endpoints import name as end_name


class StoreSource:
    """Reads a store through ``open_reader``: no lock, nothing written, so the application or
    ``es serve`` that owns the store goes on beside it."""

    def __init__(self, path: str) -> None:
        self.name = end_name(("data", path))
        self.reader = open_reader(path)
        self.positions: dict[TopicPartition, int] = {}

    def topics(self) -> dict[str, int]:
        return {c.name: c.partitions for c in self.reader.topics()}

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        return self.reader.offsets(tp.topic, tp.partition)

    def assign(self, positions: dict[TopicPartition, int]) -> None:
        self.positions.update(positions)

    def position(self, tp: TopicPartition) -> int:
        return self.positions.get(tp, sys.maxsize)  # a deleted topic has nothing more to copy

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Records from the assigned partitions, each from its position, up to ``max_records``;
        waits ``timeout_s`` when there are none (another process's appends wake nothing here)."""
        out: list[Record] = []
        for tp in list(self.positions):
            if len(out) >= max_records:
                break
            out += self._read(tp, max_records - len(out))
        if not out and timeout_s > 0:
            time.sleep(min(timeout_s, self.reader.poll_interval_ms / 1000))
        return out

    def _read(self, tp: TopicPartition, count: int) -> list[Record]:
        position = self.positions[tp]
        try:
            records = self.reader.read(tp.topic, tp.partition, position, count)
        except TopicNotFoundError:  # deleted while mirroring: stop copying it
            del self.positions[tp]
            return []
        except OffsetOutOfRangeError as e:
            raise MirrorError(f"source {tp.topic}[{tp.partition}] starts at {e.log_start_offset}, past "
                              f"the mirror's offset {position}: retention deleted records not yet copied",
                              ) from None
        if records:
            self.positions[tp] = records[-1].offset + 1
        return records

    def close(self) -> None:
        self.reader.close()


class StoreDestination:
    """Appends into a store opened with its lock; an append returns once durable per the
    store's mode, and that return is the delivery."""

    def __init__(self, path: str) -> None:
        self.name = end_name(("data", path))
        self.store = store_module.open(path)
        self.done: dict[TopicPartition, tuple[int, int]] = {}

    def topics(self) -> dict[str, int]:
        return {c.name: c.partitions for c in self.store.topics()}

    def create(self, topic: str, partitions: int) -> None:
        self.store.create_topic(topic, partitions)

    def grow(self, topic: str, partitions: int) -> None:
        self.store.alter_topic(topic, partitions=partitions)

    def end(self, tp: TopicPartition) -> int:
        return self.store.offsets(tp.topic, tp.partition)[1]

    def send(self, records: list[Record]) -> None:
        """Append ``records`` (in source order) a partition's run at a time."""
        start = 0
        while start < len(records):  # bounded: each turn consumes one run
            first = records[start]
            stop = start + 1
            while stop < len(records) and (records[stop].topic, records[stop].partition) == \
                    (first.topic, first.partition):
                stop += 1
            run = records[start:stop]
            written = self.store.append_batch(first.topic, [_message(r) for r in run],
                                              partition=first.partition)
            self.done[TopicPartition(first.topic, first.partition)] = (run[-1].offset + 1,
                                                                        written[-1].offset + 1)
            start = stop

    def delivered(self) -> dict[TopicPartition, tuple[int, int]]:
        """(next source offset, destination end) of each partition appended to."""
        return self.done

    def poll(self) -> None:
        """Nothing to serve: an append is delivered when it returns."""

    def flush(self, timeout_s: float) -> None:
        self.store.flush()

    def close(self) -> None:
        self.store.close()


def _message(record: Record) -> Message:
    # a store's headers have no null value: a Kafka header's null arrives as empty bytes
    headers = [(k, b"" if v is None else v) for k, v in record.headers] if record.headers else None
    return Message(value=record.value, key=record.key, headers=headers, timestamp_ms=record.timestamp_ms)
