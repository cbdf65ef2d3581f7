"""Typed events are checked against their type before anything is written, and a stream
that holds an event that does not fit its type can still be read and repaired."""

from __future__ import annotations

from typing import Any

import pytest

import eventstore
from eventstore import Aggregate, Event, InvalidArgumentError, NewEvent, Repository, event_type
from eventstore.errors import EventDecodeError
from eventstore.sourcing.types import EventRegistry, encode_event


@event_type("ValidationTestItemAdded")
class ItemAdded(Event):
    sku: str
    quantity: int = 1


class Cart(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.skus: list[str] = []
        self.applied = 0

    def add(self, **fields: Any) -> None:
        self.trigger_event(ItemAdded, **fields)

    def apply_ItemAdded(self, event: ItemAdded) -> None:
        self.applied += 1
        self.skus.append(event.sku)


def _end(store: eventstore.Store) -> list[int]:
    return [store.offsets(t.name, p)[1] for t in store.topics() for p in range(t.partitions)]


def test_trigger_event_refuses_an_event_that_does_not_fit_its_type() -> None:
    cart = Cart("cart-1")
    with pytest.raises(InvalidArgumentError, match=r"ItemAdded.*Expected `str`, got `int`.*sku"):
        cart.add(sku=123)
    assert (cart.version, cart.applied, cart.pending_events) == (-1, 0, [])
    with pytest.raises(InvalidArgumentError):
        cart.record(ItemAdded(sku="a", quantity="2"))  # type: ignore[arg-type]
    cart.add(sku="a", quantity=2)
    assert (cart.version, cart.skus) == (0, ["a"])


def test_encode_event_refuses_what_could_not_be_read_back() -> None:
    with pytest.raises(InvalidArgumentError, match="ValidationTestItemAdded"):
        encode_event(ItemAdded(sku=123))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="cannot be encoded"):
        encode_event(ItemAdded(sku=object()))  # type: ignore[arg-type]
    assert encode_event(ItemAdded(sku="x")).data == b'{"sku":"x","quantity":1}'


def test_save_writes_nothing_if_one_pending_event_is_invalid(store: eventstore.Store) -> None:
    repo = Repository(store, Cart)
    cart = Cart("cart-2")
    cart.add(sku="a")
    changed = cart.trigger_event(ItemAdded, sku="b")
    changed.sku = 5  # type: ignore[assignment]  # events are values; this one was changed after
    cart.add(sku="c")
    before = _end(store)
    with pytest.raises(InvalidArgumentError, match="sku"):
        repo.save(cart)
    assert _end(store) == before
    assert store.stream_version("cart-2") is None
    assert len(cart.pending_events) == 3


def _bad_stream(store: eventstore.Store, stream_id: str) -> None:
    """A stream whose second event does not fit its type (as an older version let through)."""
    store.append_to_stream(stream_id, [
        encode_event(ItemAdded(sku="a")),
        NewEvent(type="ValidationTestItemAdded", data=b'{"sku":123,"quantity":1}'),
        encode_event(ItemAdded(sku="c")),
    ])


def test_a_stream_with_a_bad_event_reads_raw_and_names_stream_and_version(
        store: eventstore.Store) -> None:
    _bad_stream(store, "cart-3")
    raw = store.read_stream("cart-3")
    assert [e.version for e in raw] == [0, 1, 2]
    assert raw[1].data == b'{"sku":123,"quantity":1}'
    with pytest.raises(EventDecodeError) as info:
        Repository(store, Cart).get("cart-3")
    assert (info.value.stream_id, info.value.version) == ("cart-3", 1)
    assert info.value.event_type == "ValidationTestItemAdded"
    assert "cart-3" in str(info.value) and "version 1" in str(info.value)


def test_a_repair_function_makes_the_stream_load_again(store: eventstore.Store) -> None:
    registry = EventRegistry()
    repaired: list[dict[str, Any]] = []

    def repair(data: dict[str, Any]) -> dict[str, Any]:
        repaired.append(dict(data))
        return {**data, "sku": str(data["sku"])}

    registry.register(ItemAdded, "ValidationTestItemAdded", repair=repair)
    _bad_stream(store, "cart-4")
    cart = Repository(store, Cart, registry=registry).get("cart-4")
    assert (cart.version, cart.skus) == (2, ["a", "123", "c"])
    assert repaired == [{"sku": 123, "quantity": 1}]  # only the bad event goes through it
    assert registry.decode_all(store.read_stream("cart-4"))[1] == ItemAdded(sku="123")


def test_a_repair_that_fails_is_still_a_decode_error(store: eventstore.Store) -> None:
    registry = EventRegistry()
    registry.register(ItemAdded, "ValidationTestItemAdded", repair=lambda d: d)
    _bad_stream(store, "cart-5")
    with pytest.raises(EventDecodeError, match=r"cart-5.*version 1"):
        Repository(store, Cart, registry=registry).get("cart-5")


def test_repair_must_be_callable() -> None:
    with pytest.raises(InvalidArgumentError, match="repair"):
        EventRegistry().register(ItemAdded, "X", repair="nope")  # type: ignore[arg-type]


def test_truncating_before_a_bad_event_is_the_other_way_out(store: eventstore.Store) -> None:
    """When its data cannot be recovered: hide the events up to it and start again after it."""
    _bad_stream(store, "cart-6")
    store.truncate_stream("cart-6", 2)
    cart = Repository(store, Cart).get("cart-6")
    assert (cart.version, cart.skus) == (2, ["c"])
