"""Topic directories: ``topics/<name>/topic.json`` plus one directory per partition.

Creation and deletion are atomic renames, so a crash leaves either the whole
topic or none of it. Transient directories are named ``+creating-<hex>`` and
``+deleting-<hex>``: ``+`` cannot start a topic name, and the names stay short
whatever the topic's length. They are swept on open.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid

import msgspec

from ..errors import CorruptionError, StorageError
from ..records import TopicConfig
from .recovery import fsync_dir

CONFIG_NAME = "topic.json"


def topics_root(store_dir: str) -> str:
    return os.path.join(store_dir, "topics")


def partition_dir(store_dir: str, topic: str, partition: int) -> str:
    return os.path.join(topics_root(store_dir), topic, str(partition))


TRANSIENT_PREFIX = "+"


def sweep_transient(root: str) -> list[str]:
    """Remove ``+creating-*`` / ``+deleting-*`` directories left by a crash (R7)."""
    removed = []
    for name in os.listdir(root):
        if name.startswith(TRANSIENT_PREFIX):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed


def load_configs(root: str) -> dict[str, TopicConfig]:
    configs: dict[str, TopicConfig] = {}
    for name in sorted(os.listdir(root)):
        if name.startswith(TRANSIENT_PREFIX):
            continue
        path = os.path.join(root, name, CONFIG_NAME)
        try:
            with open(path, "rb") as f:
                configs[name] = msgspec.json.decode(f.read(), type=TopicConfig)
        except FileNotFoundError:
            continue  # not a topic directory
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise CorruptionError(path, 0, f"unreadable topic configuration: {e}") from e
    return configs


def write_config(directory: str, config: TopicConfig) -> None:
    """Write ``topic.json`` atomically: temp file, fsync, rename, fsync directory."""
    path = os.path.join(directory, CONFIG_NAME)
    tmp = path + ".tmp"
    data = json.dumps(msgspec.to_builtins(config), indent=1, sort_keys=True).encode() + b"\n"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except OSError as e:
        raise StorageError(path, f"writing topic configuration failed: {e.strerror}") from e


def create(root: str, config: TopicConfig) -> None:
    staging = os.path.join(root, f"{TRANSIENT_PREFIX}creating-{uuid.uuid4().hex}")
    final = os.path.join(root, config.name)
    try:
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        for p in range(config.partitions):
            os.mkdir(os.path.join(staging, str(p)))
        write_config(staging, config)
        os.rename(staging, final)
        fsync_dir(root)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(final, f"creating topic failed: {e.strerror}") from e


def add_partitions(root: str, config: TopicConfig, old_count: int) -> None:
    directory = os.path.join(root, config.name)
    try:
        for p in range(old_count, config.partitions):
            os.makedirs(os.path.join(directory, str(p)), exist_ok=True)
        fsync_dir(directory)
    except OSError as e:
        raise StorageError(directory, f"adding partitions failed: {e.strerror}") from e
    write_config(directory, config)


def delete(root: str, name: str) -> None:
    final = os.path.join(root, name)
    doomed = os.path.join(root, f"{TRANSIENT_PREFIX}deleting-{uuid.uuid4().hex}")
    try:
        os.rename(final, doomed)
        fsync_dir(root)
    except OSError as e:
        raise StorageError(final, f"deleting topic failed: {e.strerror}") from e
    with contextlib.suppress(OSError):
        shutil.rmtree(doomed)
