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


#: The initial rebalance delay of the servers tests start (in-process, and ``es serve`` through
#: its variable), instead of Kafka's 3 s, the default: long enough for a kafka-python leader to
#: learn its topics' partitions before it assigns (docs/protocol.md, JoinGroup), short enough
#: for a suite that forms hundreds of groups. A test that passes its own value keeps it.
TEST_GROUP_DELAY_MS = 300


@pytest.fixture(autouse=True, scope="session")
def _short_initial_rebalance_delay() -> Iterator[None]:
    import eventstore.server.server as server_module

    real = server_module.server_config

    def config(address: str | None, **options: Any) -> Any:
        options.setdefault("group_initial_rebalance_delay_ms", TEST_GROUP_DELAY_MS)
        return real(address, **options)

    patch = pytest.MonkeyPatch()
    patch.setattr(server_module, "server_config", config)
    patch.setenv("ES_GROUP_INITIAL_REBALANCE_DELAY_MS", str(TEST_GROUP_DELAY_MS))
    try:
        yield
    finally:
        patch.undo()


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
