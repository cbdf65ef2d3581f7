"""The values of dynamic consistency boundaries (docs/format.md section 18): tagged events,
queries, append conditions, what a read returns, and the matching rule of the DCB
specification (an event matches an item if its type is among the item's types, or the item
has none, and it carries every tag of the item; it matches a query if it matches any item,
or the query has none)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from ..errors import ConditionFailedError, InvalidArgumentError

__all__ = [
    "DCB_STREAM","AppendCondition", "ConditionFailedError", "Query", "QueryItem", "SequencedEvent",
           "TaggedEvent", "TaggedRead", "check_name", "item_matches", "query_matches"]

#: the stream that holds the tagged events; only ``append_events`` writes it
DCB_STREAM = "$dcb"



def check_name(value: object, what: str) -> str:
    """A tag or a type: a non-empty str without NUL (NUL separates the tag index's keys)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidArgumentError(f"{what} must be a non-empty str without NUL, got {value!r}")
    return value


def _names(values: Iterable[str] | None, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, bytes)):
        raise InvalidArgumentError(f"{what} must be a sequence of str, not one {type(values).__name__}")
    return tuple(check_name(v, what) for v in values)


@dataclass(frozen=True, slots=True, init=False)
class TaggedEvent:
    """An event to append with ``append_events``: a type, bytes and its tags."""

    type: str
    data: bytes
    tags: tuple[str, ...]

    def __init__(self, type: str, data: bytes = b"", tags: Iterable[str] = ()) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"data must be bytes, got {type_name(data)}")
        object.__setattr__(self, "type", check_name(type, "an event type"))
        object.__setattr__(self, "data", bytes(data))
        object.__setattr__(self, "tags", _names(tags, "a tag"))


def type_name(value: object) -> str:
    return type(value).__name__


@dataclass(frozen=True, slots=True, init=False)
class QueryItem:
    """Events whose type is one of ``types`` (any if none) and that carry every one of ``tags``."""

    types: tuple[str, ...]
    tags: tuple[str, ...]

    def __init__(self, types: Iterable[str] | None = (), tags: Iterable[str] | None = ()) -> None:
        object.__setattr__(self, "types", _names(types, "a query item's type"))
        object.__setattr__(self, "tags", _names(tags, "a query item's tag"))


@dataclass(frozen=True, slots=True, init=False)
class Query:
    """Events matching any of ``items``; a query without items matches every DCB event."""

    items: tuple[QueryItem, ...]

    def __init__(self, items: Iterable[QueryItem] | None = ()) -> None:
        got = tuple(items or ())
        for item in got:  # bounded by the items
            if not isinstance(item, QueryItem):
                raise InvalidArgumentError(f"a query's items must be QueryItem, got {type_name(item)}")
        object.__setattr__(self, "items", got)


@dataclass(frozen=True, slots=True)
class AppendCondition:
    """Refuse the append if an event matching ``fail_if_events_match`` has a position above
    ``after`` (any position if None)."""

    fail_if_events_match: Query = field(default_factory=Query)
    after: int | None = None


class SequencedEvent(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """An event read back: its DCB position (global position + 1), type, data and tags.

    Stored in the tag index as this MessagePack array, so that a read decodes the
    values of a range in one call, straight into these.
    """

    position: int
    type: str
    data: bytes
    tags: tuple[str, ...]


class TaggedRead(msgspec.Struct, frozen=True, gc=False):
    """What ``read_events`` returns: the events, and ``head``: with no limit, the last DCB
    position of the store (None: none); with a limit, the last event's position (None: none
    returned), so that a reader resumes from it."""

    events: list[SequencedEvent]
    head: int | None


def item_matches(item: QueryItem, type_: str, tags: Sequence[str]) -> bool:
    if item.types and type_ not in item.types:
        return False
    return all(t in tags for t in item.tags)


def query_matches(query: Query, type_: str, tags: Sequence[str]) -> bool:
    return not query.items or any(item_matches(i, type_, tags) for i in query.items)


def check_query(query: object) -> Query:
    if query is None:
        return Query()
    if not isinstance(query, Query):
        raise InvalidArgumentError(f"query must be a Query, got {type_name(query)}")
    return query


def check_after(after: object) -> int:
    """``after`` as the first global position it admits (DCB position p = global p - 1, so
    'after p' is every global position from p on)."""
    if after is None:
        return 0
    if type(after) is not int or after < 0:
        raise InvalidArgumentError(f"after must be an int >= 0 or None, got {after!r}")
    return after


def check_condition(condition: object) -> AppendCondition | None:
    if condition is None:
        return None
    if not isinstance(condition, AppendCondition):
        raise InvalidArgumentError(f"condition must be an AppendCondition, got {type_name(condition)}")
    check_query(condition.fail_if_events_match)
    check_after(condition.after)
    return condition


def check_tagged(events: object) -> list[TaggedEvent]:
    if isinstance(events, TaggedEvent):
        return [events]
    if not isinstance(events, Sequence) or not events:
        raise InvalidArgumentError("events must be a non-empty sequence of TaggedEvent")
    for e in events:  # bounded by the events
        if not isinstance(e, TaggedEvent):
            raise InvalidArgumentError(f"events must be TaggedEvent, got {type_name(e)}")
    return list(events)
