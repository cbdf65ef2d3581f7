"""The async transaction: collect appends in memory, ``await commit()`` (or leave ``async with``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..records import OffsetAndMetadata, RecordMetadata, TopicPartition
from ..transactions import Transaction as BlockingTransaction
from .threads import complete_in_thread


class Transaction:
    """Appends (and offsets to commit) that all happen or none; see ``eventstore.Transaction``.

    ``async with store.transaction() as tx:`` commits when the block ends and
    aborts (writing nothing) when it raises.
    """

    def __init__(self, blocking: BlockingTransaction) -> None:
        self.blocking = blocking
        """The underlying ``eventstore.Transaction``."""

    def append(self, topic: str, value: bytes | None, *, key: bytes | None = None,
               headers: Any = None, partition: int | None = None,
               timestamp_ms: int | None = None) -> None:
        """Add a record; it is written only when the transaction commits."""
        self.blocking.append(topic, value, key=key, headers=headers, partition=partition,
                             timestamp_ms=timestamp_ms)

    def commit_offsets(self, group_id: str,
                       offsets: Mapping[TopicPartition, int | OffsetAndMetadata]) -> None:
        """Also commit these offsets for ``group_id`` when the transaction commits."""
        self.blocking.commit_offsets(group_id, offsets)

    async def commit(self) -> list[RecordMetadata]:
        """Commit atomically; returns the appended records' metadata in append order."""
        return await complete_in_thread(self.blocking.commit)

    def abort(self) -> None:
        """Drop everything collected; nothing was written."""
        self.blocking.abort()

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:  # commits unless already committed or aborted
            await complete_in_thread(self.blocking.__exit__, None, None, None)
        else:  # aborts: no I/O
            self.blocking.__exit__(exc_type, exc, tb)
