"""The event-sourcing suites of the embedded store (``test_aggregate``, ``test_streams``,
``test_subscriptions``) run again on a remote store: each test's ``store`` is
``eventstore.connect`` to a store this module serves on 127.0.0.1 (port 0). The
subscription suite's ``subscribe_to_*(store, ...)`` calls go to the remote store's methods.

Left out, each with its reason (``LEFT_OUT``): tests that reach into the embedded store's
internals (its watermark listeners, its index, its log) or race its own threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_aggregate
import test_streams
import test_subscriptions

import eventstore

LEFT_OUT: dict[str, str] = {
    "test_streams.test_a_stream_append_that_makes_its_topic_races_a_create_topic_of_the_same_name":
        "patches the embedded Log to race create_topic inside an append",
    "test_subscriptions.test_a_forgotten_subscription_stops_listening":
        "counts the embedded watermark's listeners",
    "test_subscriptions.test_bad_arguments": "counts the embedded watermark's listeners",
    "test_subscriptions.test_close_wakes_a_waiting_reader_and_ends_iteration":
        "counts the embedded watermark's listeners (test_remote: close under a long poll)",
    "test_subscriptions.test_concurrent_writers_every_event_once_in_order":
        "counts the embedded watermark's listeners",
    "test_subscriptions.test_idle_waiting_reads_nothing": "counts reads of the embedded index",
    "test_subscriptions.test_a_closed_store_ends_a_wait":
        "closes the embedded store under a subscription (test_remote: a stopping server)",
    "test_subscriptions.test_never_delivers_at_or_above_the_watermark":
        "holds the embedded watermark back by hand",
    "test_subscriptions.test_a_category_skips_whole_pages_of_other_streams":
        "counts reads of the embedded index",
}


def _collect() -> dict[str, Callable[..., Any]]:
    out = {}
    for module in (test_aggregate, test_streams, test_subscriptions):
        for name in dir(module):
            test = getattr(module, name)
            if name.startswith("test_") and callable(test) and f"{module.__name__}.{name}" not in LEFT_OUT:
                if getattr(test, "pytestmark", None) and any(m.name == "anyio" for m in test.pytestmark):
                    continue  # the async subscriptions: test_remote_api runs the async facade
                out[f"{module.__name__}__{name.removeprefix('test_')}"] = test
    return out


globals().update(_collect())  # collected here as "test_<suite>__<test>"
fast_store = test_aggregate.fast_store


@pytest.fixture(autouse=True)
def remote_subscriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subscription suite's module-level ``subscribe_to_*(store, ...)`` go to the store."""
    monkeypatch.setattr(test_subscriptions, "subscribe_to_all",
                        lambda store, *a, **k: store.subscribe_to_all(*a, **k))
    monkeypatch.setattr(test_subscriptions, "subscribe_to_category",
                        lambda store, *a, **k: store.subscribe_to_category(*a, **k))
    monkeypatch.setattr(test_subscriptions, "subscribe_to_stream",
                        lambda store, *a, **k: store.subscribe_to_stream(*a, **k))


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A remote store per call, each over an embedded store of its own (checked at teardown)."""
    made: list[tuple[Any, Any, Any]] = []

    def _open(path: Path | str | None = None, **kwargs: Any) -> Any:
        embedded = eventstore.open(path or tmp_path / f"es-data-{len(made)}", **kwargs)
        server = embedded.serve("127.0.0.1:0")
        remote = eventstore.connect(f"127.0.0.1:{server.address[1]}")
        made.append((embedded, server, remote))
        return remote

    yield _open
    for embedded, server, remote in made:
        remote.close()
        server.close()
        report = embedded.check()
        assert report.ok, "\n".join(map(str, report.problems))
        embedded.close()


@pytest.fixture
def store(open_store: Callable[..., Any]) -> Any:
    return open_store()
