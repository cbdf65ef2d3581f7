"""Helpers shared by test files: load a helper script that lives beside the tests (a writer
or worker the tests also run as a child process) as a module, by path, whether or not
tests/ is a package; and simulate a SIGKILL of a store in this process."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventstore.sourcing import index as stream_index

if TYPE_CHECKING:
    import eventstore


def load(name: str) -> Any:
    """The module ``tests/<name>.py``, loaded once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def crash(store: eventstore.Store) -> None:
    """What SIGKILL leaves behind, in-process: every file closed without a sync or a
    checkpoint (the page cache keeps what was written), the catalog and the lock released.
    The store object is dead afterwards. (No public method may do this: it reaches into
    the log's own state.)"""
    log = store.log
    segments = [seg for topic in log.topics() for p in range(topic.partitions)
                for seg in log.partition(topic.name, p).segments()]
    log._closed = True
    log._stop.set()
    if log._flusher is not None:
        log._flusher.join()
    for seg in segments:
        seg.close()
    stream_index.abandon(os.path.join(store.path, "index"))  # closed, not marked clean
    log.catalog.close()
    log._dir_lock.release()


def close_checked(store: eventstore.Store | None, directory: Any) -> None:
    """A state machine's teardown: the store passes its consistency check and closes, and its
    directory goes, whatever happened."""
    try:
        if store is not None and not store.closed:
            report = store.check()
            assert report.ok, report.problems
            store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
