"""The read-only store of another process, for async code: ``await eventstore.aio.open_reader(path)``.

A facade over ``eventstore.StoreReader`` (docs/format.md, section 14): every
call that reads files runs in a worker thread; ``wait_for`` sleeps on the
event loop between looks, holding no thread.
"""

from __future__ import annotations

import functools
import os
from types import TracebackType

import anyio

from ..reader import DEFAULT_POLL_INTERVAL_MS
from ..reader import StoreReader as BlockingReader
from ..reader import open_reader as open_blocking
from ..records import PartitionStatistics, Record, TopicConfig, TopicPartition
from ..storage.view import SegmentExtent
from ..validation import check_wait
from .threads import complete_in_thread


async def open_reader(path: str | os.PathLike[str] = "./es-data", *,
                      poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS) -> StoreReader:
    """Open the store at ``path`` read-only, beside whichever process holds it."""
    opener = functools.partial(open_blocking, path, poll_interval_ms=poll_interval_ms)
    return StoreReader(await complete_in_thread(opener))


class StoreReader:
    """Read-only access to a store another process may be writing, for async code."""

    def __init__(self, blocking: BlockingReader) -> None:
        self.blocking = blocking
        """The underlying ``eventstore.StoreReader`` (its calls block)."""

    @property
    def path(self) -> str:
        return self.blocking.path

    @property
    def closed(self) -> bool:
        return self.blocking.closed

    async def close(self) -> None:
        """Release the mappings and the catalog. Idempotent; shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.blocking.close)

    async def __aenter__(self) -> StoreReader:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<eventstore.aio.StoreReader {self.path!r}{' (closed)' if self.closed else ''}>"

    async def topics(self) -> list[TopicConfig]:
        return await complete_in_thread(self.blocking.topics)

    async def topic(self, name: str) -> TopicConfig:
        return await complete_in_thread(self.blocking.topic, name)

    async def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        return await complete_in_thread(self.blocking.offsets, topic, partition)

    async def read(self, topic: str, partition: int, offset: int, max_records: int = 500,
                   max_bytes: int | None = None) -> list[Record]:
        return await complete_in_thread(self.blocking.read, topic, partition, offset, max_records,
                                        max_bytes)

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        return await complete_in_thread(self.blocking.offset_for_time, topic, partition, timestamp_ms)

    async def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        """Wait until a record at ``offset`` or later exists; False if ``timeout_s`` passes first.

        Looks every ``poll_interval_ms``, sleeping on the event loop in between.
        """
        timeout_s = check_wait(offset, timeout_s)
        interval = self.blocking.poll_interval_ms / 1000
        with anyio.move_on_after(float("inf") if timeout_s is None else timeout_s):
            while True:  # bounded by the timeout, or by the caller (timeout None)
                if (await self.offsets(topic, partition))[1] > offset:
                    return True
                await anyio.sleep(interval)
        return (await self.offsets(topic, partition))[1] > offset

    async def incarnation(self, topic: str, partition: int) -> object:
        """Which partition of that name the reader reads (see ``eventstore.StoreReader``)."""
        return await complete_in_thread(self.blocking.incarnation, topic, partition)

    async def read_batches(self, topic: str, partition: int, offset: int,
                           max_bytes: int) -> tuple[bytes, int]:
        """The stored batches from ``offset``, byte for byte (see ``eventstore.StoreReader``)."""
        return await complete_in_thread(self.blocking.read_batches, topic, partition, offset, max_bytes)

    async def max_timestamp(self, topic: str, partition: int) -> int:
        return await complete_in_thread(self.blocking.max_timestamp, topic, partition)

    async def epoch_entries(self, topic: str, partition: int) -> list[tuple[int, int]]:
        return await complete_in_thread(self.blocking.epoch_entries, topic, partition)

    async def partition_statistics(self, topic: str | None = None) -> list[PartitionStatistics]:
        return await complete_in_thread(self.blocking.partition_statistics, topic)

    async def segments(self, topic: str, partition: int) -> list[SegmentExtent]:
        """The partition's segment files and their whole, valid bytes (see ``eventstore.StoreReader``)."""
        return await complete_in_thread(self.blocking.segments, topic, partition)

    async def list_groups(self) -> list[str]:
        return await complete_in_thread(self.blocking.list_groups)

    async def group_offsets(self, group: str) -> dict[TopicPartition, int]:
        return await complete_in_thread(self.blocking.group_offsets, group)

    async def lag(self, group: str) -> dict[TopicPartition, int]:
        return await complete_in_thread(self.blocking.lag, group)
