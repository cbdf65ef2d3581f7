"""kio's entities built by field name, whatever the version: what every handler writes.

kio has one class per API version, each with the fields of that version only. A
handler says what it knows once, by name, and :func:`entity` keeps the fields the
class has, fills the ones not given with their default (or an empty value: 0, "",
(), None, a zero duration, an empty nested entity), and converts the plain values
kio wants typed (an int error code to ``ErrorCode``, milliseconds to a duration).
So one handler body serves every version of its API.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
import uuid
from functools import cache
from typing import Any

from ..wire import RequestHeader
from ..wire.messages import response_type

try:
    from kio.schema.errors import ErrorCode
except ImportError as e:  # pragma: no cover - depends on the installation
    from ..wire.errors import SERVER_EXTRA

    raise ImportError(f"{__name__}: {e.name} is missing; {SERVER_EXTRA}") from e

__all__ = ["entity", "has_field", "item_class", "response_class", "response_for"]


def response_class(header: RequestHeader) -> Any:
    """kio's response class for the request's API and version."""
    return response_type(header.api_key, header.api_version)


def response_for(header: RequestHeader, **values: Any) -> Any:
    """``entity(response_class(header), **values)``."""
    return entity(response_class(header), **values)


def has_field(cls: Any, name: str) -> bool:
    return name in cls.__dataclass_fields__


def item_class(cls: Any, name: str) -> Any:
    """The entity class of the items of the array field ``name`` of ``cls`` (or of the
    nested entity field ``name``)."""
    return _item_class(cls, name)


@cache
def _item_class(cls: Any, name: str) -> Any:
    annotation = _hints(cls)[name]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        annotation = typing.get_args(annotation)[0]
    return annotation


def entity(cls: Any, **values: Any) -> Any:
    """An instance of the kio entity ``cls`` from ``values`` by field name; names the class
    does not have (fields of other versions) are left out."""
    hints = _hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            fields[f.name] = _typed(hints[f.name], values[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            fields[f.name] = _zero(hints[f.name])
    return cls(**fields)


@cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _typed(annotation: Any, value: Any) -> Any:
    if value is None or not isinstance(annotation, type):
        return value
    if issubclass(annotation, ErrorCode) and not isinstance(value, ErrorCode):
        return ErrorCode(value)
    if issubclass(annotation, datetime.timedelta) and not isinstance(value, datetime.timedelta):
        return annotation.parse(datetime.timedelta(milliseconds=value))  # type: ignore[attr-defined]
    return value


def _zero(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return ()
    if origin in (typing.Union, types.UnionType):
        return None  # only nullable fields are unions with None
    if isinstance(annotation, type):
        return _zero_of_type(annotation)
    raise TypeError(f"no empty value for {annotation!r}")


def _zero_of_type(cls: type[Any]) -> Any:
    if issubclass(cls, ErrorCode):
        return ErrorCode.none
    if issubclass(cls, datetime.timedelta):
        return cls.parse(datetime.timedelta(0))  # type: ignore[attr-defined]
    if issubclass(cls, datetime.datetime):
        return cls.parse(datetime.datetime.fromtimestamp(0, datetime.UTC))  # type: ignore[attr-defined]
    for base in (bool, int, float, str, bytes):  # kio's phantom types parse their base's value
        if issubclass(cls, base):
            return cls(base())  # type: ignore[arg-type]
    if issubclass(cls, uuid.UUID):
        return uuid.UUID(int=0)
    if dataclasses.is_dataclass(cls):
        return entity(cls)
    raise TypeError(f"no empty value for {cls!r}")
