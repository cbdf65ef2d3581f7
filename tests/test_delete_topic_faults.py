"""A topic deleted by a ``delete_topic`` that was cut short leaves no trace (issue 10, defect 4).

``delete_topic`` takes several steps (docs/format.md, section 1: rename to
``+deleting-…``, close, drop the stream index entries, fsync, remove the files,
drop checkpoints and group offsets, drop the catalog's cached configuration).
A kill between two of them used to leave the group's committed offsets behind:
after reopen ``group_offsets`` showed them, and once a topic of the same name
was made again its lag went negative and a consumer of the group started at
the old offset, silently skipping the new topic's first records.

For every step, a writer (``delete_topic_writer.py``) is SIGKILLed there by
``storage/faults.py`` (``EVENTSTORE_KILL_AT``); the reopened store must show
the old topic nowhere: not in ``topics``, ``group_offsets``, ``lag``, the
stream index (``read_stream``, ``list_streams``), nor in what a fresh consumer
of the group or a new stream of the same name gets; and ``check()`` is clean.
Every step is past the rename, the point of no return; a rename that fails
leaves the topic whole.

Cursors also carry the incarnation (``created_ms``) of the topic they were
committed on, and one of another incarnation is never applied: that check is
tested alone by keeping ``delete_topic`` from dropping them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import eventstore
from eventstore import (
    NewEvent,
    StorageError,
    StreamNotFoundError,
    StreamState,
    TopicNotFoundError,
    TopicPartition,
)
from eventstore.catalog import cursors
from eventstore.catalog import keys as ck
from eventstore.storage import faults

TP = TopicPartition
WRITER = Path(__file__).with_name("delete_topic_writer.py")
POINTS = faults.POINTS["delete-topic"]
CASES = [(kind, point) for kind in ("plain", "streams") for point in POINTS]


def kill_writer_at(path: Path, kind: str, point: str) -> None:
    env = {**os.environ, faults.KILL_AT_VARIABLE: f"{point}:1"}
    done = subprocess.run([sys.executable, str(WRITER), str(path), kind], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, (
        f"not killed at {point} (status {done.returncode})\n{done.stdout}\n{done.stderr[-2000:]}")
    assert done.stdout.split() == ["P"], done.stdout


def cursor_topics(store: eventstore.Store) -> set[str]:
    """Every topic named by a committed offset, as the catalog holds them (no filtering)."""
    return {ck.parse_cursor_key(k)[1] for k, _ in store.log.catalog.items(ck.DB_CURSORS)}


def checkpoint_topics(store: eventstore.Store) -> set[str]:
    return {ck.parse_partition_key(k)[0] for k, _ in store.log.catalog.items(ck.DB_CHECKPOINTS)}


def assert_no_trace_of_gone(store: eventstore.Store, kind: str) -> None:
    assert [c.name for c in store.topics()] == ["keep", "kept"]
    with pytest.raises(TopicNotFoundError):
        store.topic("gone")
    assert store.group_offsets("g") == {TP("kept", 0): 1}
    assert store.lag("g") == {TP("kept", 0): 0}
    assert cursor_topics(store) == {"kept"}
    assert "gone" not in checkpoint_topics(store)
    assert sorted(os.listdir(os.path.join(store.path, "topics"))) == ["keep", "kept"]
    if kind == "streams":
        for stream in ("gone-1", "gone-2"):
            with pytest.raises(StreamNotFoundError):
                store.read_stream(stream)
            assert store.stream_version(stream) is None
        assert store.list_streams("gone") == []
        assert store.list_streams() == ["keep-1"]
        assert [e.stream_id for e in store.read_all()] == ["keep-1"]
    assert [e.type for e in store.read_stream("keep-1")] == ["made"]
    report = store.check()
    assert report.ok, report.problems


def assert_a_new_gone_starts_from_nothing(store: eventstore.Store, kind: str) -> None:
    """A topic of the same name made again: the group starts at its beginning, lag is never < 0."""
    if kind == "streams":
        result = store.append_to_stream("gone-1", [NewEvent(type="new", data=b"0")],
                                        expected_version=StreamState.NO_STREAM)
        assert result.next_expected_version == 0
        assert [e.type for e in store.read_stream("gone-1")] == ["new"]
        assert store.list_streams("gone") == ["gone-1"]
        records = 1
    else:
        store.create_topic("gone", 2)
        store.append_batch("gone", [b"n0", b"n1"], partition=0)
        records = 2
    consumer = store.consumer("gone", group_id="g", auto_offset_reset="earliest")
    try:
        got: list[bytes | None] = []
        for _ in range(20):  # bounded: the records are there from the start
            for batch in consumer.poll(timeout_ms=200).values():
                got += [r.value for r in batch]
            if len(got) >= records:
                break
        assert len(got) == records, f"the group skipped records of the new topic: {got}"
        consumer.commit()
    finally:
        consumer.close()
    assert all(n >= 0 for n in store.lag("g").values()), store.lag("g")
    assert sum(n for tp, n in store.lag("g").items() if tp.topic == "gone") == 0


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "point"), CASES, ids=[f"{k}-{p}" for k, p in CASES])
def test_a_kill_inside_delete_topic_leaves_no_trace(tmp_path: Path, kind: str, point: str) -> None:
    path = tmp_path / "s"
    kill_writer_at(path, kind, point)
    with eventstore.open(path) as store:
        assert_no_trace_of_gone(store, kind)
        assert_a_new_gone_starts_from_nothing(store, kind)
    with eventstore.open(path) as store:
        assert {tp.topic for tp in store.group_offsets("g")} == {"kept", "gone"}
        assert all(n == 0 for n in store.lag("g").values())
        assert store.check().ok


def test_a_failed_rename_leaves_the_topic_whole(open_store: Callable[..., eventstore.Store]) -> None:
    store = open_store()
    store.create_topic("gone", 2)
    store.append_batch("gone", [b"a", b"b"], partition=1)
    store.reset_group_offsets("g", {TP("gone", 1): 1})
    with faults.FaultPlan([faults.Fault("rename", where=os.sep + "gone")]), pytest.raises(StorageError):
        store.delete_topic("gone")
    assert store.group_offsets("g") == {TP("gone", 1): 1}
    assert [r.value for r in store.read("gone", 1, 0)] == [b"a", b"b"]
    store.close()
    store = open_store()
    assert store.group_offsets("g") == {TP("gone", 1): 1}
    assert store.lag("g") == {TP("gone", 0): 0, TP("gone", 1): 1}


def test_offsets_of_another_incarnation_are_never_applied(
    open_store: Callable[..., eventstore.Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``delete_topic`` kept from dropping them, the old offsets stay in the catalog, yet
    neither the group, its lag nor a consumer sees them on the topic made again."""
    store = open_store()
    store.create_topic("t", 2)
    store.append_batch("t", [b"old"] * 5, partition=0)
    store.reset_group_offsets("g", {TP("t", 0): 4})
    old = store.topic("t").created_ms
    monkeypatch.setattr(cursors, "delete_topic", lambda catalog, topic: None)
    store.delete_topic("t")
    assert store.group_offsets("g") == {}
    store.create_topic("t", 2)
    if store.topic("t").created_ms == old:  # made within the same millisecond: not another one
        pytest.skip("the clock did not move between the two creations")
    store.append_batch("t", [b"new"] * 6, partition=0)
    assert cursor_topics(store) == {"t"}, "the old offsets are still in the catalog"
    assert store.group_offsets("g") == {}
    assert store.lag("g") == {}
    consumer = store.consumer(group_id="g", auto_offset_reset="earliest")
    try:
        consumer.assign([TP("t", 0)])
        assert consumer.position(TP("t", 0)) == 0
        assert consumer.committed(TP("t", 0)) is None
    finally:
        consumer.close()
    monkeypatch.undo()
    store.close()
    store = open_store()
    assert store.group_offsets("g") == {}


def test_open_drops_offsets_and_checkpoints_of_topics_that_are_gone(
    open_store: Callable[..., eventstore.Store]
) -> None:
    """As a store written before this sweep existed may hold them."""
    store = open_store()
    store.create_topic("kept")
    store.reset_group_offsets("g", {TP("kept", 0): 0})
    catalog = store.log.catalog
    store.groups.commit_offsets("g", None, -1, {TP("gone", 3): eventstore.OffsetAndMetadata(7)})
    catalog.put(ck.DB_CHECKPOINTS, ck.partition_key("gone", 0), b"\x90")
    store.close()
    store = open_store()
    assert cursor_topics(store) == {"kept"}
    assert checkpoint_topics(store) <= {"kept"}
    assert store.group_offsets("g") == {TP("kept", 0): 0}
