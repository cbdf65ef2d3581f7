"""The cached topic configurations in the catalog's ``topics`` database (docs/format.md, 6).

Key: the topic name (UTF-8). Value: the ``TopicConfig`` as MessagePack. Each
topic's ``topic.json`` is the source of truth (section 5); this table is a
cache that open brings in line with the files.
"""

from __future__ import annotations

import msgspec

from ..records import TopicConfig
from . import keys
from .env import Catalog

_encode = msgspec.msgpack.encode
_decoder = msgspec.msgpack.Decoder(TopicConfig)


def encode(config: TopicConfig) -> bytes:
    return _encode(config)


def decode(name: str, raw: bytes) -> TopicConfig:
    """A cached configuration; one that does not decode is taken for a streams topic of that
    name with default settings (what is kept under its name is dropped with it)."""
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return TopicConfig(name=name, partitions=1, streams=True)


def cached(catalog: Catalog) -> dict[str, bytes]:
    """Every cached configuration, still encoded, by topic name."""
    return {k.decode(): v for k, v in catalog.items(keys.DB_TOPICS)}


def put(catalog: Catalog, config: TopicConfig) -> None:
    catalog.put(keys.DB_TOPICS, keys.topic_key(config.name), _encode(config))


def delete(catalog: Catalog, name: str) -> None:
    catalog.delete(keys.DB_TOPICS, keys.topic_key(name))
