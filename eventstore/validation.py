"""Checking and normalising what callers hand to ``append`` and ``append_batch``.

Everything here runs before any byte is written, so bad input never leaves a
partial write behind.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .errors import (
    InvalidArgumentError,
    PartitionNotFoundError,
    RecordTooLargeError,
    StreamsTopicError,
)
from .records import TIMESTAMP_TYPES, Message, OffsetAndMetadata, TopicConfig, TopicPartition

_BYTES_LIKE = (bytearray, memoryview)
NO_HEADERS: tuple[()] = ()
# Timestamps, offsets, positions and versions are int64 in the format (docs/format.md);
# a larger int would make the encoder overflow after some of the input was checked.
INT64_MAX = 2**63 - 1


def as_bytes(value: object, what: str, where: str) -> bytes | None:
    """``value`` as bytes (None stays None); a clear error for anything else."""
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, _BYTES_LIKE):
        return bytes(value)
    hint = "; encode it first, e.g. .encode()" if isinstance(value, str) else ""
    raise InvalidArgumentError(
        f"{what} must be bytes or None, got {type(value).__name__}{hint} ({where})"
    )


def check_headers(headers: object, where: str) -> Any:
    """Headers as a list of (str, bytes) pairs."""
    if headers is None:
        return NO_HEADERS
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise InvalidArgumentError(f"headers must be a list of (str, bytes) pairs ({where})")
    out = []
    for pair in pairs:  # bounded by the caller's header count
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InvalidArgumentError(
                f"each header must be a (str, bytes) pair, got {pair!r} ({where})"
            )
        try:
            pair[0].encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"header name {pair[0]!r} cannot be encoded as UTF-8 ({where})"
            ) from None
        value = as_bytes(pair[1], f"header {pair[0]!r} value", where)
        out.append((pair[0], value if value is not None else b""))
    return out


def check_plain_topic(config: TopicConfig) -> None:
    """Refuse a plain write to a streams topic: only the stream API writes there
    (docs/format.md, section 12)."""
    if config.streams:
        raise StreamsTopicError(config.name)


def check_partition(config: TopicConfig, partition: object) -> int:
    if type(partition) is not int or not 0 <= partition < config.partitions:
        raise PartitionNotFoundError(config.name, partition, config.partitions)
    return partition


def check_timestamp(timestamp_ms: object, where: str) -> int:
    if type(timestamp_ms) is not int or not 0 <= timestamp_ms <= INT64_MAX:
        raise InvalidArgumentError(
            f"timestamp_ms must be an int in 0..2**63-1 (milliseconds since the epoch), "
            f"got {timestamp_ms!r} ({where})"
        )
    return timestamp_ms


def check_int64(value: object, what: str, *, optional: bool = False) -> int | None:
    """``value`` as an int in 0..2**63-1 (or None when ``optional``); a clear error otherwise."""
    if value is None and optional:
        return None
    if type(value) is not int or not 0 <= value <= INT64_MAX:
        none = " or None" if optional else ""
        raise InvalidArgumentError(f"{what} must be an int in 0..2**63-1{none}, got {value!r}")
    return value


def check_wait(offset: object, timeout_s: object) -> float | None:
    """A ``wait_for``'s offset (an int ≥ 0) and timeout (see ``check_timeout``)."""
    if type(offset) is not int or offset < 0:
        raise InvalidArgumentError(f"offset must be an int ≥ 0, got {offset!r}")
    return check_timeout(timeout_s)


def check_timeout(timeout_s: object) -> float | None:
    """A wait's timeout in seconds: None (or one too long for the OS to wait) waits forever."""
    if timeout_s is None:
        return None
    if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) \
            or timeout_s != timeout_s:
        raise InvalidArgumentError(f"timeout_s must be a number or None, got {timeout_s!r}")
    return None if timeout_s >= threading.TIMEOUT_MAX else timeout_s


def record_size(key: bytes | None, value: bytes | None, headers: Any) -> int:
    size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    if headers:
        size += sum(len(k.encode()) + len(v) for k, v in headers)
    return size


def check_size(config: TopicConfig, size: int, index: int | None) -> None:
    if size > config.max_record_bytes:
        raise RecordTooLargeError(config.name, size, config.max_record_bytes, index)


# (key, value, headers, partition or None, timestamp_ms or None)
Normalized = tuple[bytes | None, bytes | None, Any, int | None, int | None]


def normalize_item(config: TopicConfig, item: object, index: int) -> Normalized:
    """One ``append_batch`` item: a value, a (key, value) pair or a ``Message``."""
    where = f"item {index} of the batch for topic {config.name!r}"
    if type(item) is bytes or item is None:
        key, value, headers, partition, ts = None, item, NO_HEADERS, None, None
    elif isinstance(item, Message):
        key = as_bytes(item.key, "key", where)
        value = as_bytes(item.value, "value", where)
        headers = check_headers(item.headers, where)
        partition = None if item.partition is None else check_partition(config, item.partition)
        ts = None if item.timestamp_ms is None else check_timestamp(item.timestamp_ms, where)
    elif isinstance(item, tuple) and len(item) == 2:
        key = as_bytes(item[0], "key", where)
        value = as_bytes(item[1], "value", where)
        headers, partition, ts = NO_HEADERS, None, None
    else:
        key, value = None, as_bytes(item, "value", where)
        headers, partition, ts = NO_HEADERS, None, None
    check_size(config, record_size(key, value, headers), index)
    return key, value, headers, partition, ts


def check_group_id(group_id: object) -> str:
    """Group ids are non-empty str without NUL (NUL separates the parts of cursor keys)."""
    if not isinstance(group_id, str) or not group_id or "\x00" in group_id:
        raise InvalidArgumentError(
            f"group_id must be a non-empty str without NUL characters, got {group_id!r}"
        )
    return group_id


def check_topic_partition(tp: object, what: str) -> TopicPartition:
    """A ``TopicPartition`` of a str topic and an int partition (not a bool, not "0")."""
    if not isinstance(tp, TopicPartition):
        raise InvalidArgumentError(f"{what} must be TopicPartition, got {tp!r}")
    if not isinstance(tp.topic, str):
        raise InvalidArgumentError(f"topic must be a str, got {tp.topic!r} in {tp!r}")
    if type(tp.partition) is not int:
        raise InvalidArgumentError(
            f"partition must be an int, got {tp.partition!r} ({type(tp.partition).__name__}) "
            f"for topic {tp.topic!r}"
        )
    return tp


def normalize_offsets(offsets: object) -> dict[TopicPartition, OffsetAndMetadata]:
    """Offsets to commit: ``{TopicPartition: int | OffsetAndMetadata}``, checked."""
    if not isinstance(offsets, Mapping):
        raise InvalidArgumentError(f"offsets must be a mapping, got {type(offsets).__name__}")
    out = {}
    for tp, value in offsets.items():
        check_topic_partition(tp, "offsets keys")
        om = value if isinstance(value, OffsetAndMetadata) else OffsetAndMetadata(value)
        if type(om.offset) is not int or not 0 <= om.offset <= INT64_MAX:
            raise InvalidArgumentError(
                f"offset for {tp.topic}/{tp.partition} must be an int in 0..2**63-1, "
                f"got {om.offset!r}"
            )
        if type(om.metadata) is not str:
            raise InvalidArgumentError(
                f"metadata for {tp.topic}/{tp.partition} must be a str, got {om.metadata!r}"
            )
        out[tp] = om
    return out


_TOPIC_LIMITS = {"partitions": (1, 100_000), "segment_bytes": (1024, 0x7FFFFFFF),
                 "segment_ms": (1, 2**62), "max_record_bytes": (1, 0x7FFFFFFF - 1024)}


def check_topic_settings(given: Mapping[str, Any], *, partitions_min: int = 1) -> dict[str, Any]:
    """Topic settings given to ``create_topic`` or ``alter_topic``, checked (those absent keep
    their defaults, or their values). ``partitions_min``: partitions can only grow."""
    out: dict[str, Any] = {}
    for key, value in given.items():  # bounded by the settings
        if key == "partitions":
            out[key] = _int_in(value, key, partitions_min, _TOPIC_LIMITS[key][1])
        elif key in _TOPIC_LIMITS:
            out[key] = _int_in(value, key, *_TOPIC_LIMITS[key])
        elif key == "streams":
            out[key] = bool(value)
        elif key == "timestamp_type":
            if value not in TIMESTAMP_TYPES:
                raise InvalidArgumentError(f"timestamp_type must be one of {', '.join(TIMESTAMP_TYPES)}, "
                                           f"got {value!r}")
            out[key] = value
        else:  # retention_ms, retention_bytes: None for no limit
            out[key] = None if value is None else _int_in(value, key, 1, 2**62)
    return out


def _int_in(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgumentError(f"{what} must be an int in {low}..{high}, got {value!r}")
    return value
