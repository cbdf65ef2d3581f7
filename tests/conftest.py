"""Shared fixtures. Every store a test opens through ``store``/``open_store`` is
checked for consistency (every batch and index entry read back) at teardown."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import eventstore

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def assert_consistent(store: eventstore.Store) -> None:
    report = store.check()
    assert report.ok, "store consistency check failed:\n" + "\n".join(map(str, report.problems))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "es-data"


@pytest.fixture
def open_store(store_path: Path) -> Iterator[Callable[..., eventstore.Store]]:
    """Open stores at ``store_path`` (or elsewhere); each is checked and closed at teardown."""
    opened: list[eventstore.Store] = []

    def _open(path: Path | str | None = None, **kwargs: Any) -> eventstore.Store:
        s = eventstore.open(path or store_path, **kwargs)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        if not s.closed:
            assert_consistent(s)
            s.close()


@pytest.fixture
def store(open_store: Callable[..., eventstore.Store]) -> eventstore.Store:
    return open_store()
