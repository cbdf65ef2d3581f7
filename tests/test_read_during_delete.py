"""A read whose topic is deleted under it raises ``TopicNotFoundError``, nothing else.

Deleting a topic closes its segments' mappings; a read that had already taken one
used to fail with ``ValueError: mmap closed or invalid`` (a consumer following a
pattern of topics met it in its poll loop). The test makes the race certain: the
deletion runs between the read taking its mapping and using it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import eventstore
from eventstore import TopicNotFoundError
from eventstore.storage.segment import Segment


@pytest.mark.parametrize("read", [
    lambda store: store.read("t", 0, 0, max_records=100),
    lambda store: store.log.read_batches("t", 0, 0, 1 << 20),
], ids=["read", "read_batches"])
def test_a_topic_deleted_under_a_read_is_topic_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: Callable[[eventstore.Store], Any],
) -> None:
    with eventstore.open(tmp_path / "s", durability="none") as store:
        store.create_topic("t", partitions=1)
        store.append_batch("t", [(None, b"x" * 200)] * 100, partition=0)
        original = Segment.view
        deleted: list[bool] = []

        def view_then_delete(self: Segment, end: int) -> Any:
            mm = original(self, end)
            if not deleted:  # once: the read holds the mapping the deletion closes
                deleted.append(True)
                store.delete_topic("t")
            return mm

        monkeypatch.setattr(Segment, "view", view_then_delete)
        with pytest.raises(TopicNotFoundError):
            read(store)
        assert deleted
