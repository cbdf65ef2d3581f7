"""Client quotas set by AlterClientQuotas: ``meta/quota`` keys (docs/format.md, section 6).

Key: ``b"quota" 0x00`` then the entity as MessagePack, an array of
``[entity_type, name]`` pairs sorted by type (``name`` nil: that type's default).
Value: a MessagePack map from quota key (``producer_byte_rate``, ...) to a float,
sealed (``sealed.py``). Primary data: an operator set it and nothing derives it,
so a value that fails its checksum is a ``CorruptionError``, never a quota
silently lifted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from ..errors import CorruptionError
from . import datafile, keys, sealed
from .env import Catalog

__all__ = ["Entity", "load", "replace"]

PREFIX = b"quota\x00"

Entity = tuple[tuple[str, str | None], ...]
"""``((entity_type, name or None for the default), ...)`` sorted by type."""

_encode = msgspec.msgpack.encode
_entity_decoder = msgspec.msgpack.Decoder(list[tuple[str, str | None]])
_values_decoder = msgspec.msgpack.Decoder(dict[str, float])


def _key(entity: Entity) -> bytes:
    return PREFIX + _encode([list(part) for part in sorted(entity)])


def load(catalog: Catalog) -> dict[Entity, dict[str, float]]:
    """Every stored entity's quotas."""
    out: dict[Entity, dict[str, float]] = {}
    for key, raw in catalog.items(keys.DB_META, PREFIX):  # bounded by the quotas stored
        payload = sealed.primary(catalog.path, "a client quota", key, raw, catalog.legacy)
        try:
            entity = tuple(_entity_decoder.decode(key[len(PREFIX):]))
            out[entity] = _values_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise CorruptionError(os.path.join(catalog.path, datafile.DATA_FILE), 0,
                                  f"the client quota under {key!r} does not decode: {e}") from None
    return out


def replace(catalog: Catalog, changed: Mapping[Entity, Mapping[str, float]]) -> None:
    """Set each entity's quotas to the given ones (none: its row is deleted), all in one write
    transaction; durable once this returns."""
    db = catalog.dbs[keys.DB_META]

    def write(txn: Any) -> None:
        for entity, values in changed.items():  # bounded by the request's entries
            key = _key(entity)
            if values:
                txn.put(key, sealed.seal(key, _encode(dict(sorted(values.items())))), db=db)
            else:
                txn.delete(key, db=db)

    catalog.write(write)
