"""Faults on purpose: failing disk calls (for tests) and kills between the steps of an operation.

**Failing disk calls.** ``FaultPlan`` swaps the functions of ``storage/disk.py``
(the one door of the log engine to the disk) for wrappers that count the calls
of each kind and fail the chosen ones: the N-th write, fsync, rename, directory
fsync, truncation, unlink or file creation raises ``ENOSPC`` or ``EIO``, or a
write is cut short (half its bytes written, the call after it failing with
``ENOSPC``, as a filling disk does). A fault may be *sticky*: every later call
of its kind fails too, until the plan is removed — a disk that stays full.
Nothing here runs unless a test installs a plan.

**Kills between steps.** Multi-step operations (roll, retention, checkpoint,
topic creation and deletion, a replica's truncation and reset) call ``point(name)``
between their steps. With the
environment variable ``EVENTSTORE_KILL_AT=<name>:<n>`` set when this module is
imported, the process SIGKILLs itself the n-th time it reaches point ``name``
(n from 1); crash tests run a writer that way once per point. Without it,
``point`` is a function that does nothing, chosen once at import.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from . import disk

# --- kills between steps -------------------------------------------------------------------

#: Every kill point, by operation, in the order an operation reaches them.
POINTS: dict[str, tuple[str, ...]] = {
    "roll": ("roll.sealed", "roll.created", "roll.dir-synced", "roll.checkpointed"),
    "retention": ("retention.log-unlinked", "retention.segment-unlinked", "retention.dir-synced"),
    "checkpoint": ("checkpoint.synced", "checkpoint.written"),
    "create-topic": ("create-topic.staged", "create-topic.renamed", "create-topic.dir-synced",
                     "create-topic.cached", "create-topic.opened"),
    "delete-topic": ("delete-topic.renamed", "delete-topic.closed", "delete-topic.dir-synced",
                     "delete-topic.removed", "delete-topic.checkpoints-dropped",
                     "delete-topic.offsets-dropped", "delete-topic.uncached"),
}
#: The kill points of a replica's truncation and reset (``storage/truncation.py``): apart from
#: ``POINTS``, whose operations keep every acknowledged record; these cut records on purpose.
REPLICA_POINTS: dict[str, tuple[str, ...]] = {
    "truncate": ("truncate.intent", "truncate.deleted", "truncate.cut", "truncate.checkpointed",
                 "truncate.epochs", "truncate.done"),
    "reset": ("truncate.intent", "truncate.deleted", "truncate.cut", "truncate.log-start",
              "truncate.checkpointed", "truncate.epochs", "truncate.done"),
}
KILL_AT_VARIABLE = "EVENTSTORE_KILL_AT"


def _no_kill(name: str) -> None:
    return None


def _killer(spec: str) -> Callable[[str], None]:
    target, _, nth = spec.rpartition(":")
    known = {p for table in (POINTS, REPLICA_POINTS) for points in table.values() for p in points}
    if target not in known or not nth.isdigit() or int(nth) < 1:
        raise ValueError(f"{KILL_AT_VARIABLE}={spec!r}: expected <point>:<n ≥ 1>, point one of "
                         f"{', '.join(sorted(known))}")
    left = [int(nth)]
    lock = threading.Lock()

    def kill_at(name: str) -> None:
        if name != target:
            return
        with lock:
            left[0] -= 1
            due = left[0] == 0
        if due:
            os.kill(os.getpid(), signal.SIGKILL)

    return kill_at


_spec = os.environ.get(KILL_AT_VARIABLE, "")
#: ``point(name)``: the step ``name`` of a multi-step operation is done (see the module docstring)
point: Callable[[str], None] = _killer(_spec) if _spec else _no_kill


# --- failing disk calls --------------------------------------------------------------------

#: The kinds of disk call a fault can target, and the ``disk`` functions of each kind.
KINDS: dict[str, tuple[str, ...]] = {
    "write": ("pwrite", "write"),
    "fsync": ("fdatasync", "fsync"),
    "dirsync": ("fsync_dir",),
    "rename": ("replace", "rename"),
    "truncate": ("ftruncate", "truncate"),
    "unlink": ("unlink",),
    "create": ("open_file", "mkdir"),
}
_ERRNOS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}


@dataclass
class Fault:
    """Fail the ``nth`` call (from 1) of ``kind`` whose file path contains ``where``.

    ``error``: ``"ENOSPC"`` or ``"EIO"``; ``short`` (writes only): write half the
    bytes and return that count, failing the next write of the kind with
    ``error``; ``sticky``: every later matching call fails as well.
    """

    kind: str
    nth: int = 1
    error: str = "ENOSPC"
    where: str = ""
    short: bool = False
    sticky: bool = False
    seen: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.error not in _ERRNOS or self.nth < 1:
            raise ValueError(f"bad fault {self!r}")
        if self.short and self.kind != "write":
            raise ValueError("only writes can be cut short")


@dataclass
class FaultPlan:
    """Install with ``with FaultPlan([...]):``; calls are counted and faults fired inside it.

    ``calls`` counts every call of each kind made meanwhile; ``fired`` lists
    ``(kind, path, error)`` of every failure injected.
    """

    faults: list[Fault]
    calls: dict[str, int] = field(default_factory=dict)
    fired: list[tuple[str, str, str]] = field(default_factory=list)
    _saved: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending_short: set[int] = field(default_factory=set)

    def __enter__(self) -> FaultPlan:
        assert not self._saved, "a FaultPlan is installed once at a time"
        for kind, names in KINDS.items():
            for name in names:
                self._saved[name] = getattr(disk, name)
                setattr(disk, name, self._wrap(kind, name, self._saved[name]))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()

    def remove(self) -> None:
        """Put the real disk calls back (the faults are gone: space came back)."""
        for name, fn in self._saved.items():
            setattr(disk, name, fn)
        self._saved.clear()

    @property
    def injected(self) -> int:
        return len(self.fired)

    def _wrap(self, kind: str, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            path = _path_of(name, args)
            fault = self._due(kind, path)
            if fault is None:
                return real(*args, **kwargs)
            if fault.short and kind == "write" and id(fault) not in self._pending_short:
                self._pending_short.add(id(fault))
                data = memoryview(args[1])
                cut = data[: max(1, len(data) // 2)]
                return real(args[0], cut, *args[2:]) if len(data) > 1 else real(*args)
            self._pending_short.discard(id(fault))
            self.fired.append((kind, path, fault.error))
            raise OSError(_ERRNOS[fault.error], os.strerror(_ERRNOS[fault.error]), path)

        return call

    def _due(self, kind: str, path: str) -> Fault | None:
        """The fault that fails this call, if any (counting it for every fault of the kind)."""
        with self._lock:
            self.calls[kind] = self.calls.get(kind, 0) + 1
            due = None
            for fault in self.faults:  # bounded by the plan
                if fault.kind != kind or fault.where not in path:
                    continue
                if id(fault) in self._pending_short:
                    return fault  # the call after a short write fails
                fault.seen += 1
                if fault.seen == fault.nth or (fault.sticky and fault.seen > fault.nth):
                    fault.fired += 1
                    due = due or fault
            return due


def _path_of(name: str, args: tuple[Any, ...]) -> str:
    """The file a disk call is about: its path argument, or the path of its descriptor."""
    if not args:
        return ""
    first = args[0]
    if isinstance(first, int):
        try:
            return os.readlink(f"/proc/self/fd/{first}")
        except OSError:
            return f"fd:{first}"
    return os.fspath(first) if isinstance(first, (str, os.PathLike)) else ""
