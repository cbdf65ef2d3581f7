"""A node's durable role (``<store>/replication.json``) and the address of the server that
holds a store (``<store>/serving``): docs/replication.md, sections 1 and 6.

``replication.json`` is written by temp file, fsync, rename and directory fsync, so a
crash leaves the old role or the new one, never a torn file. Absent, the node is a
leader of epoch 0 (every store before replication). ``serving`` is written when a
server starts and removed when it stops; ``es promote`` asks that server over the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Final

from ...errors import CorruptionError, InvalidArgumentError, ServerError, StorageError
from ...log import Log
from ..config import ServerConfig, format_address, parse_address
from .secure import replica_security
from .state import NodeAddress, Replication, Role

__all__ = [
    "ROLE_FILE", "SERVING_FILE", "DurableRole", "initial_replication", "read_role", "read_serving",
    "remove_serving", "write_role", "write_serving",
]

ROLE_FILE: Final = "replication.json"
SERVING_FILE: Final = "serving"
VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class DurableRole:
    """What ``replication.json`` says: the role this node starts in, its epoch, its leader."""

    role: Role = "leader"
    epoch: int = 0
    leader: str | None = None
    """The leader's ``host:port`` when a follower; None for a leader (or not known)."""


def read_role(store_path: str) -> DurableRole:
    """The store's durable role; a leader of epoch 0 when the file is absent;
    ``CorruptionError`` when it does not say a role."""
    path = os.path.join(store_path, ROLE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return DurableRole()
    except OSError as e:
        raise StorageError(path, f"cannot read: {e.strerror}") from e
    try:
        data = json.loads(text)
        role, epoch, leader = data["role"], data["epoch"], data.get("leader")
        if data.get("version") != VERSION or role not in ("leader", "follower"):
            raise ValueError(f"version {data.get('version')!r}, role {role!r}")
        if type(epoch) is not int or not 0 <= epoch < 2**31 or not isinstance(leader, (str, type(None))):
            raise ValueError(f"epoch {epoch!r}, leader {leader!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptionError(path, 0, f"not a replication role file: {e}") from None
    return DurableRole(role, epoch, leader)


def write_role(store_path: str, role: DurableRole) -> None:
    """Replace ``replication.json`` atomically and durably."""
    if role.role not in ("leader", "follower") or not 0 <= role.epoch < 2**31:
        raise InvalidArgumentError(f"not a durable role: {role!r}")
    data = {"version": VERSION, "role": role.role, "epoch": role.epoch, "leader": role.leader}
    _replace(os.path.join(store_path, ROLE_FILE), json.dumps(data) + "\n")


def write_serving(store_path: str, address: str) -> None:
    """Say which address serves the store (the admin address ``es promote`` asks)."""
    _replace(os.path.join(store_path, SERVING_FILE), address + "\n")


def read_serving(store_path: str) -> str | None:
    """The address a server of the store wrote at its start, or None (no server)."""
    try:
        with open(os.path.join(store_path, SERVING_FILE), encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def remove_serving(store_path: str) -> None:
    """At a server's stop: no server holds the store any more."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(store_path, SERVING_FILE))


def _replace(path: str, text: str) -> None:
    """Write ``text`` at ``path`` by temp file, fsync, rename, directory fsync."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as e:
        raise StorageError(path, f"cannot write: {e.strerror}") from e


def initial_replication(store_log: Log, config: ServerConfig) -> Replication:
    """The node's replication state at a server's start, from its options and its durable
    role; a follower's role is written down (so ``es promote`` finds it offline), and the
    log stamps new batches with the epoch the file says if it is larger. A store
    whose file says follower is not led without ``--replica-of`` or ``es promote`` first:
    that would fork its leader's history."""
    store_path = store_log.path
    durable = read_role(store_path)
    if durable.epoch > store_log.leader_epoch:
        store_log.set_leader_epoch(durable.epoch)
    enabled = (bool(config.replica_of) or config.min_insync_replicas is not None
               or config.coordinator is not None)
    state = Replication(node_id=config.node_id, epoch=store_log.leader_epoch, enabled=enabled,
                        min_insync_replicas=config.min_insync_replicas or 1,
                        replica_lag_ms=config.replica_lag_ms, security=replica_security(config))
    if config.replica_of:
        host, port = parse_address(config.replica_of[0], "replica_of address")
        state.role, state.leader = "follower", NodeAddress(-1, host, port)
        if durable != DurableRole("follower", durable.epoch, config.replica_of[0]):
            write_role(store_path, DurableRole("follower", durable.epoch, config.replica_of[0]))
    elif config.coordinator is not None:  # leaderless, refusing writes, until etcd names a leader
        state.role, state.leader = "follower", None
    elif durable.role == "follower":
        raise ServerError(format_address(config.host, config.port),
                          f"the store is a follower of {durable.leader} ({ROLE_FILE}): serve it with "
                          f"--replica-of, or make it the leader with 'es promote' first")
    return state
