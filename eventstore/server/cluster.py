"""The store's Kafka cluster id: made by the first server over a store, the same ever after.

Clients compare the cluster id across reconnects (a changed id means another cluster),
so it must survive restarts: it lives in ``<store>/cluster.id`` (docs/format.md,
section 1), 22 characters, Kafka's form (URL-safe base64 of a random UUID, no
padding), written once by replace-by-rename and read at every later start.
"""

from __future__ import annotations

import base64
import os
import re
import uuid

from ..errors import StorageError
from ..storage import disk
from ..storage.index import write_synced
from ..storage.recovery import fsync_dir

__all__ = ["CLUSTER_ID_FILE", "cluster_id"]

CLUSTER_ID_FILE = "cluster.id"
_VALID = re.compile(r"[A-Za-z0-9_-]{22}")


def cluster_id(store_path: str) -> str:
    """The cluster id of the store at ``store_path``; made and written if it has none (or if
    the file does not hold one: a torn write cannot happen, but an edit can)."""
    path = os.path.join(store_path, CLUSTER_ID_FILE)
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
        if _VALID.fullmatch(text):
            return text
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StorageError(path, f"reading the cluster id: {e.strerror}") from e
    made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
    tmp = path + ".tmp"
    try:
        write_synced(tmp, made.encode("ascii") + b"\n")
        disk.replace(tmp, path)
        fsync_dir(store_path)
    except OSError as e:
        raise StorageError(path, f"writing the cluster id: {e.strerror}") from e
    return made
