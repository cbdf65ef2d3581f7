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

from ..errors import CorruptionError
from ..records import CREATE_TIME, TopicConfig
from . import disk, faults
from .index import write_synced
from .recovery import fsync_dir
from .segment import storage_error

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
    fields = msgspec.to_builtins(config)
    if config.timestamp_type == CREATE_TIME:  # the default, absent: CreateTime topics' files as before
        del fields["timestamp_type"]
    data = json.dumps(fields, indent=1, sort_keys=True).encode() + b"\n"
    try:
        write_synced(tmp, data)
        disk.replace(tmp, path)
        fsync_dir(directory)
    except OSError as e:
        raise storage_error(path, e, "writing topic configuration") from e


def create(root: str, config: TopicConfig) -> None:
    staging = os.path.join(root, f"{TRANSIENT_PREFIX}creating-{uuid.uuid4().hex}")
    final = os.path.join(root, config.name)
    try:
        shutil.rmtree(staging, ignore_errors=True)
        disk.mkdir(staging)
        for p in range(config.partitions):
            disk.mkdir(os.path.join(staging, str(p)))
        write_config(staging, config)
        faults.point("create-topic.staged")
        disk.rename(staging, final)
        faults.point("create-topic.renamed")
        fsync_dir(root)
        faults.point("create-topic.dir-synced")
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise storage_error(final, e, "creating topic") from e


def add_partitions(root: str, config: TopicConfig, old_count: int) -> None:
    directory = os.path.join(root, config.name)
    try:
        for p in range(old_count, config.partitions):
            if not os.path.isdir(os.path.join(directory, str(p))):
                disk.mkdir(os.path.join(directory, str(p)))
        fsync_dir(directory)
    except OSError as e:
        raise storage_error(directory, e, "adding partitions") from e
    write_config(directory, config)


def delete(root: str, name: str) -> None:
    remove(root, retire(root, name))


def retire(root: str, name: str) -> str:
    """Rename a topic's directory to a transient name, the point of no return of a deletion;
    returns that name. If this raises, the topic is untouched."""
    final = os.path.join(root, name)
    doomed = os.path.join(root, f"{TRANSIENT_PREFIX}deleting-{uuid.uuid4().hex}")
    try:
        disk.rename(final, doomed)
    except OSError as e:
        raise storage_error(final, e, "deleting topic") from e
    faults.point("delete-topic.renamed")
    return doomed


def remove(root: str, doomed: str) -> None:
    """Finish a deletion ``retire`` began (open sweeps what a crash leaves of it, R7).

    A failed fsync of ``root`` is raised once the files are removed anyway: the
    rename stands in this run, and if it did not reach the disk the topic comes
    back whole after a power loss, never half.
    """
    failed: OSError | None = None
    try:
        fsync_dir(root)
        faults.point("delete-topic.dir-synced")
    except OSError as e:
        failed = e
    with contextlib.suppress(OSError):
        shutil.rmtree(doomed)
    faults.point("delete-topic.removed")
    if failed is not None:
        raise storage_error(root, failed, "deleting topic")
