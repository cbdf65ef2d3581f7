"""The persistence module's settings, read from the application's environment.

As the library's other modules do, each key is looked up first with the
application's name in front (``BANKACCOUNTS_EVENTSTORE_PATH``), then alone:

==================================  ===========================================================
key                                 meaning (default)
==================================  ===========================================================
``EVENTSTORE_PATH``                 the store's directory (required); made if missing
``EVENTSTORE_DURABILITY``           ``fsync``, ``interval``, ``none`` or ``replicated``
                                    (``fsync``)
``EVENTSTORE_FSYNC_INTERVAL_MS``    the background fsync period of ``interval`` (1000)
``EVENTSTORE_PARTITIONS``           partitions of the topics it creates (4)
``ORIGINATOR_ID_TYPE``              ``uuid`` or ``text``: what notifications' originator ids
                                    are made of (``uuid``: stream ids that are UUIDs become
                                    ``UUID`` values), as for the SQLite and PostgreSQL modules
==================================  ===========================================================

Topic names come from the application's name, as the PostgreSQL module's
table names do: ``<name>_events``, ``<name>_snapshots``, ``<name>_tracking``
(``stored_...`` for a factory made without an application).
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec
from eventsourcing.persistence import InfrastructureFactoryError
from eventsourcing.utils import Environment

from eventstore import InvalidArgumentError

__all__ = ["Settings", "SettingsError", "topic_prefix"]

PATH = "EVENTSTORE_PATH"
DURABILITY = "EVENTSTORE_DURABILITY"
FSYNC_INTERVAL_MS = "EVENTSTORE_FSYNC_INTERVAL_MS"
PARTITIONS = "EVENTSTORE_PARTITIONS"
ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"

_DURABILITIES = ("fsync", "interval", "none", "replicated")
_NOT_IN_TOPIC_NAMES = re.compile(r"[^A-Za-z0-9._-]")
_PREFIX_MAX = 200  # leaves room for "_tracking" within a topic name's 249 characters


class SettingsError(InvalidArgumentError, InfrastructureFactoryError):
    """An environment setting is missing or has a value the module cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    durability: Literal["fsync", "interval", "none", "replicated"] = "fsync"
    fsync_interval_ms: int = 1000
    partitions: int = 4
    originator_id_type: Literal["uuid", "text"] = "uuid"

    @classmethod
    def from_env(cls, env: Environment) -> Settings:
        path = (env.get(PATH) or "").strip()
        if not path:
            raise SettingsError(f"no store path: set one of {', '.join(env.create_keys(PATH))}")
        durability = (env.get(DURABILITY) or "fsync").strip().lower()
        if durability not in _DURABILITIES:
            raise SettingsError(f"{_keys(env, DURABILITY)} must be one of {', '.join(_DURABILITIES)}, "
                                f"got {durability!r}")
        id_type = (env.get(ORIGINATOR_ID_TYPE) or "uuid").strip().lower()
        if id_type not in ("uuid", "text"):
            raise SettingsError(f"{_keys(env, ORIGINATOR_ID_TYPE)} must be 'uuid' or 'text', got {id_type!r}")
        return cls(path=path, durability=durability,  # type: ignore[arg-type]
                   fsync_interval_ms=_int(env, FSYNC_INTERVAL_MS, 1000),
                   partitions=_int(env, PARTITIONS, 4), originator_id_type=id_type)  # type: ignore[arg-type]


def topic_prefix(env: Environment) -> str:
    """The application's name, lower case, as topic names allow (``stored`` without one)."""
    name = _NOT_IN_TOPIC_NAMES.sub("_", env.name.lower())[:_PREFIX_MAX]
    return name or "stored"


def _int(env: Environment, key: str, default: int) -> int:
    text = (env.get(key) or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError(f"{_keys(env, key)} must be a positive integer, got {text!r}")
    return value


def _keys(env: Environment, key: str) -> str:
    return " or ".join(env.create_keys(key))
