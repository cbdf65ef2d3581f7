"""A projection's counters read back as ints, through the state and through the runner."""

from __future__ import annotations

import pytest

import eventstore
from eventstore import InvalidArgumentError, NewEvent, Projection, ProjectionRunner, ProjectionState
from eventstore.sourcing.events import RecordedEvent


class Counts(Projection):
    def __init__(self) -> None:
        self.seen_inside: list[int] = []

    def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
        state.add(b"n:" + event.type.encode())
        state.add(b"total", 10)
        self.seen_inside.append(state.counter(b"total"))
        state.put(b"last", event.type.encode())


def test_counters_read_back_as_ints(store: eventstore.Store) -> None:
    store.append_to_stream("a-1", [NewEvent(type="x"), NewEvent(type="y"), NewEvent(type="x")])
    projection = Counts()
    runner = ProjectionRunner(store, projection, name="counts")
    runner.catch_up()
    assert projection.seen_inside == [10, 20, 30]
    assert runner.counter(b"total") == 30
    assert runner.counter(b"n:x") == 2
    assert runner.counter(b"missing") == 0
    assert runner.counters(b"n:") == {b"n:x": 2, b"n:y": 1}
    assert runner.get(b"last") == b"x"  # values put as bytes stay bytes
    with pytest.raises(InvalidArgumentError, match="not a counter"):
        runner.counter(b"last")


def test_a_negative_counter(store: eventstore.Store) -> None:
    class Down(Projection):
        def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
            state.add(b"d", -3)

    store.append_to_stream("a-1", NewEvent(type="x"))
    runner = ProjectionRunner(store, Down(), name="down")
    runner.catch_up()
    assert runner.counter(b"d") == -3
