"""The store's Kafka cluster id: made by the first server over a store, the same ever after.

Clients compare the cluster id across reconnects (a changed id means another cluster),
so it must survive restarts: it lives in ``<store>/cluster.id`` (docs/format.md,
section 1), 22 characters, Kafka's form (URL-safe base64 of a random UUID, no
padding), written by replace-by-rename and read at every later start. A follower
takes its leader's (one cluster, one id; it then survives the follower's promotion).
"""

from __future__ import annotations

import base64
import os
import re
import uuid

from ..errors import InvalidArgumentError, StorageError
from ..storage import disk
from ..storage.index import write_synced
from ..storage.recovery import fsync_dir

__all__ = ["CLUSTER_ID_FILE", "cluster_id", "new_cluster_id", "read_cluster_id", "write_cluster_id"]

CLUSTER_ID_FILE = "cluster.id"
_VALID = re.compile(r"[A-Za-z0-9_-]{22}")


def cluster_id(store_path: str) -> str:
    """The cluster id of the store at ``store_path``; made and written if it has none (or if
    the file does not hold one: a torn write cannot happen, but an edit can)."""
    found = read_cluster_id(store_path)
    if found is not None:
        return found
    made = new_cluster_id()
    write_cluster_id(store_path, made)
    return made


def write_cluster_id(store_path: str, cluster: str) -> None:
    """Make ``cluster`` the store's cluster id (replace by rename, synced): at the first
    server's start, and when a follower takes its leader's (docs/replication.md, section 4).
    Not an id of Kafka's form: ``InvalidArgumentError``."""
    if not isinstance(cluster, str) or not _VALID.fullmatch(cluster):
        raise InvalidArgumentError(f"a cluster id is 22 characters of [A-Za-z0-9_-], got {cluster!r}")
    path = os.path.join(store_path, CLUSTER_ID_FILE)
    tmp = path + ".tmp"
    try:
        write_synced(tmp, cluster.encode("ascii") + b"\n")
        disk.replace(tmp, path)
        fsync_dir(store_path)
    except OSError as e:
        raise StorageError(path, f"writing the cluster id: {e.strerror}") from e


def read_cluster_id(store_path: str) -> str | None:
    """The cluster id the store's file holds, or None (no file, or not an id): what a server
    that may write nothing into the store (``es replicate``) answers with."""
    path = os.path.join(store_path, CLUSTER_ID_FILE)
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(path, f"reading the cluster id: {e.strerror}") from e
    return text if _VALID.fullmatch(text) else None


def new_cluster_id() -> str:
    """A fresh id in Kafka's form."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
