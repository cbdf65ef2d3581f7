"""A walk over a message body that checks every length and count before kio reads it.

kio's native reader reserves room for an array's items from the count on the wire
before it reads them (``count x 8`` bytes): a count of 2³²-1 makes a reservation
that fails, and a failed allocation aborts the process — no exception to catch. It
also refuses tagged fields its schema does not know, which the protocol says a
reader skips. This module is the one place both are handled (docs/protocol.md,
section 1): :func:`check_body` walks a body by the same kio classes kio will read
it with, and

* refuses a string, bytes or array whose length or count cannot fit in the bytes
  left (an array of n items needs at least n x the smallest encoding of one item),
  a tagged field whose contents do not fill its declared size, and anything cut
  short, with :class:`ProtocolError`;
* returns the body without the tagged fields the schema does not know, so that kio
  reads what it knows (the same bytes, no copy, when there are none).

The walk builds no values: it costs a few function calls per field, against kio's
read of the same body.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from types import NoneType, UnionType
from typing import Any, Final, get_args, get_origin

from .errors import ProtocolError
from .primitives import Malformed, read_uvarint, write_uvarint

__all__ = ["check_body", "min_bytes"]

Buffer = bytes | bytearray | memoryview
# (start, end, replacement): bytes[start:end] of the body are replaced in the output
Edit = tuple[int, int, bytes]
# walks one value at ``position`` (before ``end``), returns the position after it
Walk = Callable[[Buffer, int, int, list[Edit]], int]

_FIXED: Final[dict[str, int]] = {
    "int8": 1, "uint8": 1, "bool": 1,
    "int16": 2, "uint16": 2, "error_code": 2,
    "int32": 4, "uint32": 4, "timedelta_i32": 4,
    "int64": 8, "uint64": 8, "float64": 8, "timedelta_i64": 8, "datetime_i64": 8,
    "uuid": 16,
}
_int16 = struct.Struct(">h")
_int32 = struct.Struct(">i")


def check_body(entity_type: type[Any], body: Buffer, position: int = 0) -> Buffer:
    """Check the message of ``entity_type`` in ``body[position:]``; return what kio may read.

    The message must end exactly at the end of ``body``. Returns ``body`` itself
    when it holds no unknown tagged fields, else a copy without them.
    """
    edits: list[Edit] = []
    end = len(body)
    try:
        stop = _walker(entity_type, False)(body, position, end, edits)
    except Malformed as e:
        raise ProtocolError(f"{entity_type.__name__}: {e.reason}", e.position) from None
    if stop != end:
        raise ProtocolError(f"{entity_type.__name__}: {end - stop} bytes after the message", stop)
    if not edits:
        return body
    return _apply(body, edits)


def min_bytes(entity_type: Any) -> int:
    """The fewest bytes one ``entity_type`` (not null) takes on the wire."""
    return _entity(entity_type, False).least


def _apply(body: Buffer, edits: list[Edit]) -> bytes:
    out = bytearray()
    last = 0
    for start, end, replacement in sorted(edits):
        out += body[last:start]
        out += replacement
        last = end
    out += body[last:]
    return bytes(out)


# --- walkers, compiled once per kio class -------------------------------------


def _walker(entity_type: Any, nullable: bool) -> Walk:
    return _entity(entity_type, nullable).walk


@dataclass(frozen=True, slots=True)
class _Shape:
    """How to walk one value: the walk, its fewest bytes, its size if always the same."""

    walk: Walk
    least: int
    fixed: int | None = None


@cache
def _entity(entity_type: Any, nullable: bool) -> _Shape:  # a kio class
    flexible = bool(entity_type.__flexible__)
    header = entity_type.__name__ == "RequestHeader"
    shapes: list[_Shape] = []
    tagged: dict[int, Walk] = {}
    for field in fields(entity_type):
        tag = field.metadata.get("tag")
        shape = _field(field, flexible, header)
        if tag is not None:
            tagged[int(tag)] = shape.walk
        else:
            shapes.append(shape)
    least = sum(shape.least for shape in shapes) + (1 if flexible else 0)
    walks = _merge_fixed(shapes)
    name = entity_type.__name__
    if not nullable and not flexible and all(shape.fixed is not None for shape in shapes):
        return _Shape(_skip(least), least, least)

    def walk_entity(buf: Buffer, position: int, end: int, edits: list[Edit]) -> int:
        if nullable:
            if position >= end:
                raise Malformed(f"{name}: truncated", position)
            if buf[position] == 0xFF:  # int8 -1: null
                return position + 1
            position += 1
        for step in walks:
            position = step(buf, position, end, edits)
        if flexible:
            if position < end and buf[position] == 0:  # no tagged fields, the common case
                return position + 1
            position = _tagged_fields(buf, position, end, edits, tagged, name)
        return position

    return _Shape(walk_entity, 1 if nullable else least)


def _merge_fixed(shapes: list[_Shape]) -> tuple[Walk, ...]:
    """The walks of ``shapes``, with each run of fixed-size fields made one skip."""
    walks: list[Walk] = []
    run = 0
    for shape in shapes:
        if shape.fixed is not None:
            run += shape.fixed
            continue
        if run:
            walks.append(_skip(run))
            run = 0
        walks.append(shape.walk)
    if run:
        walks.append(_skip(run))
    return tuple(walks)


def _tagged_fields(buf: Buffer, position: int, end: int, edits: list[Edit],
                   known: dict[int, Walk], name: str) -> int:
    start = position
    count, position = read_uvarint(buf, position, end)
    removed: list[Edit] = []
    for _ in range(count):  # each field takes at least two bytes: bounded by the body
        field_start = position
        tag, position = read_uvarint(buf, position, end)
        size, position = read_uvarint(buf, position, end)
        if size > end - position:
            raise Malformed(f"{name}: tagged field {tag} of {size} bytes runs past the end", position)
        walk = known.get(tag)
        if walk is None:
            removed.append((field_start, position + size, b""))
        elif walk(buf, position, position + size, edits) != position + size:
            raise Malformed(f"{name}: tagged field {tag} does not fill its {size} bytes", position)
        position += size
    if removed:
        kept = bytearray()
        write_uvarint(kept, count - len(removed))
        edits.append((start, start + _uvarint_bytes(buf, start), bytes(kept)))
        edits.extend(removed)
    return position


def _uvarint_bytes(buf: Buffer, position: int) -> int:
    size = 1
    while buf[position + size - 1] & 0x80:
        size += 1
    return size


def _field(field: Any, flexible: bool, header: bool) -> _Shape:
    _, inner, optional, is_array = _classify(field.type)
    if header and field.name == "client_id":  # Kafka keeps an int16 length here in every version
        return _Shape(_legacy_length(2, _int16), 2)
    if inner is not None:
        item = _entity(inner, optional and not is_array)
    else:
        item = _primitive(field.metadata["kafka_type"], flexible)
    if not is_array:
        return item
    return _array(item, flexible)


def _classify(annotation: Any) -> tuple[str, Any, bool, bool]:
    """(kind, entity class or None, optional, is_array) of a kio field annotation."""
    optional = False
    if get_origin(annotation) is UnionType:
        args = [a for a in get_args(annotation) if a is not NoneType]
        optional = len(args) < len(get_args(annotation))
        annotation = args[0]
    if get_origin(annotation) is tuple:
        item = get_args(annotation)[0]
        return "array", (item if is_dataclass(item) else None), optional, True
    if is_dataclass(annotation) and isinstance(annotation, type):
        return "entity", annotation, optional, False
    return "primitive", None, optional, False


def _primitive(kafka_type: str, flexible: bool) -> _Shape:
    fixed = _FIXED.get(kafka_type)
    if fixed is not None:
        return _Shape(_skip(fixed), fixed, fixed)
    if kafka_type in ("string", "bytes", "records"):
        if flexible:
            return _Shape(_compact_length, 1)
        if kafka_type == "string":
            return _Shape(_legacy_length(2, _int16), 2)
        return _Shape(_legacy_length(4, _int32), 4)
    raise NotImplementedError(f"kio type {kafka_type!r} has no bounds check")


@cache
def _skip(size: int) -> Walk:
    def walk_fixed(buf: Buffer, position: int, end: int, edits: list[Edit]) -> int:
        if end - position < size:
            raise Malformed(f"truncated: {size} bytes needed, {end - position} left", position)
        return position + size

    return walk_fixed


def _compact_length(buf: Buffer, position: int, end: int, edits: list[Edit]) -> int:
    length, after = read_uvarint(buf, position, end)
    if length == 0:  # null
        return after
    if length - 1 > end - after:
        raise Malformed(f"{length - 1} bytes declared, {end - after} left", position)
    return after + length - 1


@cache
def _legacy_length(width: int, unpack: struct.Struct) -> Walk:
    def walk_legacy(buf: Buffer, position: int, end: int, edits: list[Edit]) -> int:
        if end - position < width:
            raise Malformed("truncated length", position)
        length: int = unpack.unpack_from(buf, position)[0]
        after = position + width
        if length == -1:
            return after
        if length < 0 or length > end - after:
            raise Malformed(f"{length} bytes declared, {end - after} left", position)
        return after + length

    return walk_legacy


def _array(item: _Shape, flexible: bool) -> _Shape:
    fixed = item.fixed
    least = max(1, item.least)
    walk_item = item.walk

    def walk_array(buf: Buffer, position: int, end: int, edits: list[Edit]) -> int:
        start = position
        if flexible:
            raw, position = read_uvarint(buf, position, end)
            if raw == 0:
                return position
            count = raw - 1
        else:
            if end - position < 4:
                raise Malformed("truncated array length", position)
            count = int(_int32.unpack_from(buf, position)[0])
            position += 4
            if count == -1:
                return position
            if count < 0:
                raise Malformed(f"array length {count}", start)
        if count * least > end - position:
            raise Malformed(f"array of {count} items cannot fit in the {end - position} bytes left", start)
        if fixed is not None:
            return position + count * fixed
        for _ in range(count):  # bounded: count x least <= bytes left, each item takes >= least
            position = walk_item(buf, position, end, edits)
        return position

    return _Shape(walk_array, 1 if flexible else 4)
