"""Typed events: registration, the stored form, upcasting, unknown types, decode errors."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventstore
from eventstore.errors import InvalidArgumentError
from eventstore.sourcing.events import NewEvent, RecordedEvent
from eventstore.sourcing.types import (
    Event,
    EventDecodeError,
    EventRegistry,
    decode_event,
    decode_events,
    encode_event,
    event_type,
)


@event_type("TypesTestPlaced")
class Placed(Event):
    total: int
    currency: str = "EUR"
    lines: list[str] = []
    at: dt.datetime | None = None
    ref: uuid.UUID | None = None
    blob: bytes = b""


@event_type("TypesTestCancelled", version=3, upcast_from={
    1: lambda d: {**d, "reason": d.pop("why", "")},
    2: lambda d: {**d, "by": "unknown"},
})
class Cancelled(Event):
    reason: str
    by: str


def _read_one(store: eventstore.Store, stream_id: str) -> RecordedEvent:
    [recorded] = store.read_stream(stream_id)
    return recorded


# --- round trip and the stored form ---------------------------------------------------


def test_typed_round_trip(store: eventstore.Store) -> None:
    event = Placed(total=99, lines=["a", "b"], at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                   ref=uuid.UUID(int=7), blob=b"\x00\xff")
    store.append_to_stream("order-1", encode_event(event))
    recorded = _read_one(store, "order-1")
    assert decode_event(recorded) == event


def test_stored_form_is_name_json_data_and_schema_metadata(store: eventstore.Store) -> None:
    store.append_to_stream("order-1", [encode_event(Placed(total=5)),
                                       encode_event(Cancelled(reason="r", by="me"))])
    placed, cancelled = store.read_stream("order-1")
    assert placed.type == "TypesTestPlaced"
    assert json.loads(placed.data) == {"total": 5, "currency": "EUR", "lines": [], "at": None,
                                       "ref": None, "blob": ""}
    assert json.loads(placed.metadata) == {"schema": 1}
    assert cancelled.type == "TypesTestCancelled"  # the name does not carry the version
    assert json.loads(cancelled.metadata) == {"schema": 3}


def test_encode_keeps_a_given_event_id() -> None:
    event_id = uuid.uuid4()
    assert encode_event(Placed(total=1), event_id).id == event_id


@given(total=st.integers(-(2**63), 2**63 - 1), currency=st.text(max_size=20),
       lines=st.lists(st.text(max_size=8), max_size=5), blob=st.binary(max_size=32))
def test_round_trip_of_arbitrary_values(total: int, currency: str, lines: list[str], blob: bytes) -> None:
    event = Placed(total=total, currency=currency, lines=lines, blob=blob)
    new = encode_event(event)
    recorded = RecordedEvent(version=0, type=new.type, data=new.data, metadata=new.metadata,
                             id_bytes=new.id.bytes, position=0, timestamp_ms=0, offset=0)
    assert decode_event(recorded) == event


# --- upcasting --------------------------------------------------------------------------


def test_upcasting_v1_to_v2(store: eventstore.Store) -> None:
    """A v1 event written by an older program reads as the v2 class."""
    old, new = EventRegistry(), EventRegistry()

    @event_type("OrderPlaced", registry=old)
    class OrderPlacedV1(Event):
        amount: int

    def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
        return {"total": data["amount"] * 100}

    @event_type("OrderPlaced", version=2, upcast_from={1: upgrade_v1}, registry=new)
    class OrderPlaced(Event):
        total: int
        currency: str = "EUR"

    store.append_to_stream("order-7", old.encode(OrderPlacedV1(amount=3)))
    store.append_to_stream("order-7", new.encode(OrderPlaced(total=5, currency="USD")))
    assert new.decode_all(store.read_stream("order-7")) == [
        OrderPlaced(total=300), OrderPlaced(total=5, currency="USD")
    ]
    # the older program sees the newer version as a raw event, not an error
    v1, v2 = store.read_stream("order-7")
    assert old.decode(v1) == OrderPlacedV1(amount=3)
    assert old.decode(v2) == v2


def test_upcasters_chain_over_several_versions() -> None:
    cases = [(b"", {"why": "late"}), (b'{"schema":1}', {"why": "late"}),
             (b'{"schema":2}', {"reason": "late"}), (b'{"schema":3}', {"reason": "late", "by": "unknown"})]
    for metadata, data in cases:
        recorded = _recorded("TypesTestCancelled", json.dumps(data).encode(), metadata)
        assert decode_event(recorded) == Cancelled(reason="late", by="unknown"), metadata


def test_metadata_of_other_tools_means_version_1() -> None:
    registry = EventRegistry()

    @event_type("Pinged", version=2, upcast_from={1: lambda d: {"n": d["count"]}}, registry=registry)
    class Pinged(Event):
        n: int

    for metadata in (b"", b"not json", b"[1,2]", b'{"$correlationId":"x"}', b'{"schema":"two"}'):
        assert registry.decode(_recorded("Pinged", b'{"count":4}', metadata)) == Pinged(n=4), metadata
    assert registry.decode(_recorded("Pinged", b'{"n":4}', b'{"$causationId":"y","schema":2}')) == Pinged(n=4)


def test_a_version_without_upcaster_is_a_decode_error() -> None:
    registry = EventRegistry()

    @event_type("Renamed", version=3, upcast_from={2: lambda d: d}, registry=registry)
    class Renamed(Event):
        to: str

    with pytest.raises(EventDecodeError, match="no upcaster from version 1"):
        registry.decode(_recorded("Renamed", b'{"to":"x"}', b""))


def test_a_failing_upcaster_is_a_decode_error_naming_the_event() -> None:
    registry = EventRegistry()

    @event_type("Moved", version=2, upcast_from={1: lambda d: {"to": d["missing"]}}, registry=registry)
    class Moved(Event):
        to: str

    with pytest.raises(EventDecodeError) as info:
        registry.decode(_recorded("Moved", b'{"from":"x"}', b"", stream_id="move-1", version=4))
    assert (info.value.stream_id, info.value.version, info.value.event_type) == ("move-1", 4, "Moved")
    assert "KeyError" in info.value.reason


# --- unknown types and bad data ----------------------------------------------------------


def test_unknown_types_are_read_as_raw_events(store: eventstore.Store) -> None:
    store.append_to_stream("order-2", [NewEvent(type="SomethingElse", data=b"\x01\x02"),
                                       encode_event(Placed(total=1))])
    raw, typed = store.read_stream("order-2")
    assert decode_events([raw, typed]) == [raw, Placed(total=1)]
    assert isinstance(decode_event(raw), RecordedEvent)


def test_data_that_does_not_fit_its_type_is_a_decode_error(store: eventstore.Store) -> None:
    store.append_to_stream("order-3", NewEvent(type="TypesTestPlaced", data=b'{"total":"ten"}',
                                               metadata=b'{"schema":1}'))
    recorded = _read_one(store, "order-3")
    for decode in (decode_event, lambda r: decode_events([r])):
        with pytest.raises(EventDecodeError, match=r"order-3.*version 0.*TypesTestPlaced"):
            decode(recorded)
    assert isinstance(EventDecodeError("s", 0, "t", "r"), eventstore.EventStoreError)


# --- registration -------------------------------------------------------------------------


def test_registration_defaults_to_the_class_name() -> None:
    registry = EventRegistry()

    @event_type(registry=registry)
    class Shipped(Event):
        carrier: str

    new = registry.encode(Shipped(carrier="x"))
    assert (new.type, new.metadata) == ("Shipped", b'{"schema":1}')


@pytest.mark.parametrize(("name", "version", "upcast_from", "match"), [
    ("", 1, None, "non-empty str"),
    ("$system", 1, None, "not starting with"),
    ("Ok", 0, None, "version must be an int"),
    ("Ok", True, None, "version must be an int"),
    ("Ok", 2, {2: lambda d: d}, "older versions"),
    ("Ok", 2, {1: "not callable"}, "older versions"),
    ("Ok", 4, {1: lambda d: d, 3: lambda d: d}, "every version from 1 to 3"),
])
def test_bad_registrations_are_refused(name: str, version: int, upcast_from: Any, match: str) -> None:
    class Thing(Event):
        x: int

    with pytest.raises(InvalidArgumentError, match=match):
        EventRegistry().register(Thing, name, version, upcast_from)


def test_one_class_per_name() -> None:
    registry = EventRegistry()

    class A(Event):
        x: int

    class B(Event):
        x: int

    registry.register(A, "Same")
    with pytest.raises(InvalidArgumentError, match="already registered"):
        registry.register(B, "Same", version=2)
    with pytest.raises(InvalidArgumentError, match="needs a subclass of Event"):
        registry.register(dict, "Dict")  # type: ignore[arg-type]


def test_redefining_the_same_class_replaces_it() -> None:
    """As when a module is reloaded: same module and qualified name."""
    registry = EventRegistry()
    classes = [_define_reloadable() for _ in range(2)]
    for cls in classes:
        registry.register(cls, "Reloaded")
    assert registry.spec(classes[1]).cls is classes[1]
    with pytest.raises(InvalidArgumentError, match="not registered"):
        registry.spec(classes[0])


def test_unregistered_classes_cannot_be_encoded() -> None:
    class Loose(Event):
        x: int

    with pytest.raises(InvalidArgumentError, match="decorate it with @event_type"):
        encode_event(Loose(x=1))


# --- helpers --------------------------------------------------------------------------------


def _define_reloadable() -> type[Event]:
    class Reloadable(Event):
        x: int

    return Reloadable


def _recorded(type_: str, data: bytes, metadata: bytes, stream_id: str = "s-1",
              version: int = 0) -> RecordedEvent:
    return RecordedEvent(version=version, type=type_, data=data, metadata=metadata, id_bytes=bytes(16),
                         position=0, timestamp_ms=0, offset=0, stream_id=stream_id)

