"""Repairing a store whose catalog is damaged (``es verify --repair``; docs/format.md,
section 15, case L3).

The catalog holds two kinds of data. Derived: the ``topics`` table (a cache of
each ``topic.json``) and the recovery checkpoints (without one, recovery scans
the last segment of each partition from its start). Primary: committed group
offsets, transactions committed but not yet relayed (the outbox), projection
checkpoints and state, the transaction id sequence. A repair keeps the damaged
catalog aside (``catalog.broken``), lets the store make a new one from the log
and the ``topic.json`` files, and says exactly which primary data did not come
back, as far as the damaged copy can still be read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from . import store as store_module
from .catalog import datafile
from .catalog.env import CATALOG_REPAIR
from .errors import CorruptionError, StorageError
from .storage import disk
from .storage.lock import DirectoryLock

CATALOG_DIR = "catalog"
BROKEN_SUFFIX = ".broken"
_BROKEN_COPIES_MAX = 1000
_INVENTORY_TIMEOUT_S = 120


@dataclass(frozen=True)
class CatalogRepair:
    """What ``repair_catalog`` did and what could not be rebuilt."""

    broken: str  # where the damaged catalog is kept
    damage: str  # what was wrong with it
    topics: int  # topics rebuilt from their topic.json
    readable: bool  # whether the damaged copy could be read at all (else the losses are unknown)
    lost_groups: dict[str, int] = field(default_factory=dict)  # group -> committed partitions
    lost_transactions: int = 0  # committed, not yet relayed: their records were never appended
    restarted_projections: list[str] = field(default_factory=list)  # replay from the first event
    unreadable: dict[str, str] = field(default_factory=dict)  # database -> why it could not be read

    def lines(self) -> list[str]:
        """The report, one line per fact, for people."""
        out = [f"the catalog was damaged ({self.damage}); kept it in {self.broken}",
               f"made a new catalog: {self.topics} topic(s) from their topic.json, recovery "
               "checkpoints from the log"]
        if not self.readable:
            out.append("the damaged catalog cannot be read: committed group offsets, transactions "
                       "not yet relayed and projection checkpoints it held are lost (how many is unknown)")
            return out
        for group, partitions in sorted(self.lost_groups.items()):
            out.append(f"lost: committed offsets of group {group!r} ({partitions} partition(s)); "
                       "its consumers start at their auto_offset_reset position")
        if self.lost_transactions:
            out.append(f"lost: {self.lost_transactions} committed transaction(s) not yet relayed "
                       "(their records were never appended)")
        for name in self.restarted_projections:
            out.append(f"projection {name!r} starts over from the first event (its state is rebuilt "
                       "as it runs; effects outside its state happen again)")
        for db, why in sorted(self.unreadable.items()):
            out.append(f"unreadable in the damaged catalog: database {db!r} ({why}); what it held is lost")
        return out


def catalog_damage(path: str) -> str | None:
    """Why the catalog of the store at ``path`` is damaged, or None if its data file passes
    the check and every database reads to the end (read in a child process, so a damaged
    page that faults kills only the child). The store may be open."""
    directory = os.path.join(path, CATALOG_DIR)
    damage = datafile.check(directory)
    if damage is not None:
        return damage.reason
    if not os.path.exists(os.path.join(directory, datafile.DATA_FILE)):
        return None
    found, why = _inventory(directory)
    if found is None:
        return why
    problems = {db: v["error"] for db, v in found["databases"].items() if "error" in v}
    return "; ".join(f"database {db!r}: {e}" for db, e in sorted(problems.items())) or None


def repair_catalog(path: str) -> CatalogRepair | None:
    """If the catalog of the (closed) store at ``path`` is damaged, keep it aside and make a new
    one; None if it is sound. ``StoreLockedError`` if another process has the store open; a
    ``CorruptionError`` that is not the catalog's is raised as it is."""
    lock = DirectoryLock(path)
    lock.acquire()
    try:
        reason = catalog_damage(path)
    finally:
        lock.release()
    if reason is None:
        try:
            with store_module.open(path):  # damage only a write meets (the free-page list)
                return None
        except CorruptionError as e:
            if not damaged_catalog(e):
                raise
            reason = e.reason.replace(f"; {CATALOG_REPAIR}", "")
    directory = os.path.join(path, CATALOG_DIR)
    lock.acquire()
    try:
        found = None if datafile.check(directory) is not None else _inventory(directory)[0]
        broken = _keep_aside(path, directory)
    finally:
        lock.release()
    with store_module.open(path) as store:  # makes the new catalog
        topics = len(store.topics())
    return _report(broken, reason, topics, found)


def _report(broken: str, reason: str, topics: int, found: dict[str, Any] | None) -> CatalogRepair:
    if found is None:
        return CatalogRepair(broken, reason, topics, readable=False)
    return CatalogRepair(
        broken, reason, topics, readable=True, lost_groups=dict(found["groups"]),
        lost_transactions=int(found["transactions"]),
        restarted_projections=sorted(found["projections"]),
        unreadable={db: v["error"] for db, v in found["databases"].items() if "error" in v},
    )


def _inventory(directory: str) -> tuple[dict[str, Any] | None, str]:
    """What the catalog holds, read in a child process; (None, why) if it could not be read."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "eventstore.catalog.inventory", directory],
            capture_output=True, text=True, timeout=_INVENTORY_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"reading it failed: {e}"
    if done.returncode < 0:
        return None, f"reading it killed the reader (signal {-done.returncode})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"it cannot be read: {last}"
    try:
        found: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return None, "its reader said something unreadable"
    return found, ""


def _keep_aside(path: str, directory: str) -> str:
    """Rename the damaged catalog to ``catalog.broken`` (``catalog.<n>.broken`` if taken)."""
    for n in range(_BROKEN_COPIES_MAX):  # bounded by the copies kept
        target = f"{directory}{BROKEN_SUFFIX}" if n == 0 else f"{directory}.{n}{BROKEN_SUFFIX}"
        if not os.path.exists(target):
            break
    else:
        raise StorageError(directory, "too many damaged catalogs kept; remove old catalog.*.broken")
    try:
        disk.rename(directory, target)
        disk.fsync_dir(path)
    except OSError as e:
        raise StorageError(directory, f"keeping the damaged catalog aside failed: {e.strerror}") from e
    return target


def damaged_catalog(error: BaseException) -> bool:
    """Whether ``error`` says the catalog is damaged (what ``repair_catalog`` repairs)."""
    return isinstance(error, CorruptionError) and \
        error.path.endswith(os.path.join(CATALOG_DIR, datafile.DATA_FILE))
