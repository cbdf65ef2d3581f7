"""Stream appends keep the topic's limits, and refuse where they cannot be made safely."""

from __future__ import annotations

from pathlib import Path

import pytest

import eventstore
from eventstore import IllegalStateError, NewEvent, RecordTooLargeError
from eventstore.records import DEFAULT_MAX_RECORD_BYTES
from eventstore.sourcing.events import ENVELOPE_OVERHEAD_MAX, RecordedEvent
from eventstore.sourcing.projections import Projection, ProjectionRunner, ProjectionState


def _ends(store: eventstore.Store, topic: str) -> list[int]:
    return [store.offsets(topic, p)[1] for p in range(store.topic(topic).partitions)]


def test_append_to_stream_honours_max_record_bytes(store: eventstore.Store) -> None:
    store.create_topic("small", partitions=2, streams=True, max_record_bytes=1024)
    store.append_to_stream("small-1", NewEvent(type="T", data=b"x"))
    before = _ends(store, "small")
    with pytest.raises(RecordTooLargeError) as info:
        store.append_to_stream("small-1", [NewEvent(type="T", data=b"ok"),
                                           NewEvent(type="T", data=b"x" * 2000)])
    assert (info.value.topic, info.value.limit, info.value.index) == ("small", 1024, 1)
    with pytest.raises(RecordTooLargeError):
        store.append_to_stream("small-2", NewEvent(type="T", metadata=b"m" * 1100))
    with pytest.raises(RecordTooLargeError):  # a stream's first append
        store.append_to_stream("small-3", NewEvent(type="T" * 1100))
    assert _ends(store, "small") == before
    assert store.stream_version("small-1") == 0
    assert store.stream_version("small-2") is None


def test_the_largest_accepted_event_fits_the_limit(store: eventstore.Store) -> None:
    """The check counts the whole record (stream id key + envelope): what it accepts is stored
    within the limit, and one byte more is refused."""
    limit = 4096
    store.create_topic("fit", streams=True, max_record_bytes=limit)
    sid = "fit-1"
    room = limit - len(sid) - ENVELOPE_OVERHEAD_MAX - len("T")
    store.append_to_stream(sid, NewEvent(type="T", data=b"d" * room))
    record = store.read("fit", 0, 0)[0]
    assert len(record.key or b"") + len(record.value or b"") <= limit
    with pytest.raises(RecordTooLargeError):
        store.append_to_stream(sid, NewEvent(type="T", data=b"d" * (room + 1)))


def test_a_stream_topic_made_on_first_use_has_the_default_limit(store: eventstore.Store) -> None:
    with pytest.raises(RecordTooLargeError) as info:
        store.append_to_stream("huge-1", NewEvent(type="T", data=b"x" * (2 << 20)))
    assert info.value.limit == DEFAULT_MAX_RECORD_BYTES
    assert store.stream_version("huge-1") is None


def test_metadata_events_are_held_to_the_limit(store: eventstore.Store) -> None:
    store.create_topic("meta", streams=True, max_record_bytes=1024)
    store.append_to_stream("meta-1", NewEvent(type="T"))
    with pytest.raises(RecordTooLargeError):
        store.set_stream_metadata("meta-1", eventstore.StreamMetadata(custom={"x": "y" * 2000}))
    assert store.get_stream_metadata("meta-1") == eventstore.StreamMetadata()


class _Appends(Projection):
    """A projection that (wrongly) appends to a stream from ``handle``."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id

    def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
        if event.stream_id.startswith("src-"):
            state.add(b"seen")
            self.store.append_to_stream(self.stream_id, NewEvent(type="Derived"))

    store: eventstore.Store


@pytest.mark.parametrize("stream_id", ["derived-1", "src-9"], ids=["new-topic", "existing-topic"])
def test_append_to_stream_inside_projection_handle_is_refused_clearly(
        store: eventstore.Store, stream_id: str) -> None:
    store.append_to_stream("src-1", NewEvent(type="Happened"))
    projection = _Appends(stream_id)
    projection.store = store
    runner = ProjectionRunner(store, projection, name="p")
    with pytest.raises(IllegalStateError, match=r"Projection\.handle") as info:
        runner.catch_up()
    assert "write transaction is active" not in str(info.value)
    assert [t.name for t in store.topics()] == ["src"]  # no empty topic left behind
    assert runner.checkpoint is None and runner.get(b"seen") is None
    assert store.stream_version(stream_id) is None
    store.append_to_stream(stream_id, NewEvent(type="Derived"))  # outside handle: fine


def test_store_reopens_after_a_refused_handle(store_path: Path) -> None:
    with eventstore.open(store_path) as store:
        store.append_to_stream("src-1", NewEvent(type="Happened"))
        projection = _Appends("derived-1")
        projection.store = store
        with pytest.raises(IllegalStateError):
            ProjectionRunner(store, projection, name="p").catch_up()
    with eventstore.open(store_path) as store:
        assert store.check().ok
        assert [t.name for t in store.topics()] == ["src"]
