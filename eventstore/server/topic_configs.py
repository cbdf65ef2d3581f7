"""Kafka's configuration names and the store's topic settings, both ways.

Five Kafka topic configs are the store's own settings (``Log.create_topic``,
``alter_topic``): ``retention.ms`` (-1: no limit), ``retention.bytes`` (-1: no limit),
``segment.bytes``, ``segment.ms`` and ``max.message.bytes`` (the store's
``max_record_bytes``), and ``message.timestamp.type`` (CreateTime or LogAppendTime:
the store's ``timestamp_type``). A few more are described, read-only, for clients
that look for them: ``cleanup.policy`` (delete: the store does not compact), and the
store's own
``eventstore.streams`` (true for a topic that holds event streams, which only the
event-sourcing API makes; a remote client reads it for ``TopicConfig.streams``).
Setting a read-only config to the value it has is accepted and changes nothing;
another value is INVALID_CONFIG. The broker's configs are read-only too. Any other
name is INVALID_CONFIG when set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..records import TopicConfig
from ..validation import check_topic_settings

__all__ = [
    "READ_ONLY_TOPIC_CONFIGS",
    "STREAMS_CONFIG",
    "TIMESTAMP_TYPE_CONFIG",
    "TOPIC_SETTINGS",
    "ConfigEntry",
    "ConfigError",
    "broker_configs",
    "settings_from",
    "topic_configs",
]

# config_type (DescribeConfigs v3+)
BOOLEAN, STRING, INT, LONG = 1, 2, 3, 5
# config_source
DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5

#: Kafka name -> (store setting, config type, whether -1 means "no limit")
TOPIC_SETTINGS: Final[dict[str, tuple[str, int, bool]]] = {
    "retention.ms": ("retention_ms", LONG, True),
    "retention.bytes": ("retention_bytes", LONG, True),
    "segment.bytes": ("segment_bytes", INT, False),
    "segment.ms": ("segment_ms", LONG, False),
    "max.message.bytes": ("max_record_bytes", INT, False),
}
READ_ONLY_TOPIC_CONFIGS: Final[dict[str, tuple[str, int]]] = {
    "cleanup.policy": ("delete", STRING),
}
#: CreateTime or LogAppendTime: the store's ``timestamp_type`` (a string, unlike the others).
TIMESTAMP_TYPE_CONFIG: Final = "message.timestamp.type"
#: Whether the topic holds event streams (``TopicConfig.streams``): read-only.
STREAMS_CONFIG: Final = "eventstore.streams"
_DEFAULTS: Final = TopicConfig(name="defaults", partitions=1)


class ConfigError(Exception):
    """A config a request sets that cannot be set: INVALID_CONFIG with this message."""


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One config as DescribeConfigs answers it."""

    name: str
    value: str | None
    read_only: bool
    source: int
    config_type: int


def _kafka_value(value: int | None) -> str:
    return "-1" if value is None else str(value)


def topic_configs(cfg: TopicConfig) -> list[ConfigEntry]:
    """Every config of a topic, its own settings first."""
    out = []
    for name, (setting, config_type, _nullable) in TOPIC_SETTINGS.items():
        value = getattr(cfg, setting)
        source = DEFAULT_CONFIG if value == getattr(_DEFAULTS, setting) else DYNAMIC_TOPIC_CONFIG
        out.append(ConfigEntry(name, _kafka_value(value), False, source, config_type))
    source = DEFAULT_CONFIG if cfg.timestamp_type == _DEFAULTS.timestamp_type else DYNAMIC_TOPIC_CONFIG
    out.append(ConfigEntry(TIMESTAMP_TYPE_CONFIG, cfg.timestamp_type, False, source, STRING))
    for name, (fixed, config_type) in READ_ONLY_TOPIC_CONFIGS.items():
        out.append(ConfigEntry(name, fixed, True, DEFAULT_CONFIG, config_type))
    source = DYNAMIC_TOPIC_CONFIG if cfg.streams else DEFAULT_CONFIG
    out.append(ConfigEntry(STREAMS_CONFIG, _boolean(cfg.streams), True, source, BOOLEAN))
    return out


def _boolean(value: bool) -> str:
    return "true" if value else "false"


def broker_configs(node_id: int, advertised: str, auto_create_topics: bool) -> list[ConfigEntry]:
    """The broker's configs, all read-only: what it was started with, and the topic defaults."""
    fixed: list[tuple[str, str, int]] = [
        ("broker.id", str(node_id), INT),
        ("node.id", str(node_id), INT),
        ("advertised.listeners", f"PLAINTEXT://{advertised}", STRING),
        ("auto.create.topics.enable", "true" if auto_create_topics else "false", BOOLEAN),
        ("num.partitions", "1", INT),
        ("default.replication.factor", "1", INT),
        ("log.segment.bytes", str(_DEFAULTS.segment_bytes), INT),
        ("log.roll.ms", str(_DEFAULTS.segment_ms), LONG),
        ("message.max.bytes", str(_DEFAULTS.max_record_bytes), INT),
        ("log.retention.ms", "-1", LONG),
        ("log.retention.bytes", "-1", LONG),
    ]
    return [ConfigEntry(name, value, True, STATIC_BROKER_CONFIG, kind) for name, value, kind in fixed]


def settings_from(configs: dict[str, str | None], current: TopicConfig | None = None) -> dict[str, Any]:
    """The store's settings for Kafka configs ``configs`` (a value None: the default),
    checked as ``create_topic`` checks them; :class:`ConfigError` on a name or value
    that cannot be set. ``current``: the topic altered (None: a topic being made)."""
    given: dict[str, Any] = {}
    for name, text in configs.items():  # bounded by the request
        if name == STREAMS_CONFIG:
            _check_streams(text, current is not None and current.streams)
            continue
        if name == TIMESTAMP_TYPE_CONFIG:
            given["timestamp_type"] = _DEFAULTS.timestamp_type if text is None else text
            continue
        if name in READ_ONLY_TOPIC_CONFIGS:
            if text is not None and text != READ_ONLY_TOPIC_CONFIGS[name][0]:
                fixed = READ_ONLY_TOPIC_CONFIGS[name][0]
                raise ConfigError(f"{name} is {fixed} on this server; it cannot be set")
            continue
        if name not in TOPIC_SETTINGS:
            raise ConfigError(f"unknown or unsupported topic config {name!r}; supported: "
                              f"{', '.join([*TOPIC_SETTINGS, TIMESTAMP_TYPE_CONFIG])}")
        setting, _kind, nullable = TOPIC_SETTINGS[name]
        if text is None:
            given[setting] = getattr(_DEFAULTS, setting)
            continue
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {text!r}") from None
        given[setting] = None if nullable and value == -1 else value
    try:
        return check_topic_settings(given)
    except ValueError as e:  # InvalidArgumentError: a value out of range
        raise ConfigError(str(e)) from None


def _check_streams(text: str | None, streams: bool) -> None:
    """``eventstore.streams`` given with a value: accepted only when it is the topic's."""
    if text is not None and text.strip().lower() != _boolean(streams):
        raise ConfigError(f"{STREAMS_CONFIG} is {_boolean(streams)} for this topic; it cannot be set "
                          "(topics of event streams are made by the event-sourcing API)")
