"""The cached topic configurations in the catalog's ``topics`` database (docs/format.md, 6).

Key: the topic name (UTF-8). Value: the ``TopicConfig`` as MessagePack, sealed
(``sealed.py``). Each topic's ``topic.json`` is the source of truth (section
5); this table is a cache that open brings in line with the files: a value
that fails its checksum differs from the file's and is written again.
"""

from __future__ import annotations

import msgspec

from ..records import TopicConfig
from . import keys, sealed
from .env import Catalog

_encode = msgspec.msgpack.encode
_decoder = msgspec.msgpack.Decoder(TopicConfig)


def encode(config: TopicConfig) -> bytes:
    """The stored value of ``config`` (what ``cached`` returns when the cache holds it)."""
    return sealed.seal(keys.topic_key(config.name), _encode(config))


def decode(name: str, raw: bytes, legacy: bool = False) -> TopicConfig:
    """A cached configuration; one that fails its checksum or does not decode is taken for a
    streams topic of that name with default settings (what is kept under its name is dropped
    with it)."""
    payload = sealed.opened(keys.topic_key(name), raw, legacy)
    try:
        if payload is not None:
            return _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    return TopicConfig(name=name, partitions=1, streams=True)


def cached(catalog: Catalog) -> dict[str, bytes]:
    """Every cached configuration, still encoded, by topic name."""
    return {k.decode(): v for k, v in catalog.items(keys.DB_TOPICS)}


def put(catalog: Catalog, config: TopicConfig) -> None:
    catalog.put(keys.DB_TOPICS, keys.topic_key(config.name), encode(config))


def delete(catalog: Catalog, name: str) -> None:
    catalog.delete(keys.DB_TOPICS, keys.topic_key(name))
