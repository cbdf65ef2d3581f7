"""The async API mirrors the blocking one: every public method of a blocking class has an async
twin of the same name with the same parameters (names, kinds, defaults), and the twin is a
coroutine unless it only reads or changes memory. Compared programmatically, so any drift fails.

Deliberate differences are listed below, each with its reason; anything else is drift.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import eventstore
import eventstore.aio
from eventstore.aio import subscriptions as async_subscriptions
from eventstore.sourcing import subscriptions as sync_subscriptions

# (blocking class, async class): the facades users get from the async API.
PAIRS: list[tuple[type, type]] = [
    (eventstore.Store, eventstore.aio.Store),
    (eventstore.Consumer, eventstore.aio.Consumer),
    (eventstore.Producer, eventstore.aio.Producer),
    (eventstore.FutureRecordMetadata, eventstore.aio.FutureRecordMetadata),
    (eventstore.Transaction, eventstore.aio.Transaction),
    (eventstore.StoreReader, eventstore.aio.StoreReader),
    (eventstore.Subscription, eventstore.aio.Subscription),
    (eventstore.DeadLetterProcessor, eventstore.aio.DeadLetterProcessor),
]

# Functions users call to open things.
FUNCTIONS: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
    (eventstore.open, eventstore.aio.open),
    (eventstore.open_reader, eventstore.aio.open_reader),
    (sync_subscriptions.subscribe_to_all, async_subscriptions.subscribe_to_all),
    (sync_subscriptions.subscribe_to_category, async_subscriptions.subscribe_to_category),
    (sync_subscriptions.subscribe_to_stream, async_subscriptions.subscribe_to_stream),
]

# Blocking methods with no async twin, and why.
NO_TWIN: dict[str, str] = {
    # The hooks the async consumer itself uses to be woken on the loop; async code awaits
    # poll() or iterates instead.
    "Consumer.add_wake_callback": "wake-up hook used by the async facade",
    "Consumer.remove_wake_callback": "wake-up hook used by the async facade",
    # What the async subscription calls on the blocking one to filter its read-ahead buffer,
    # to name its checkpoint, and to be woken on the loop.
    "Subscription.visible": "used by the async facade on events it read ahead",
    "Subscription.checkpoint_of": "used by the async facade on the events it hands out",
    "Subscription.watch": "wake-up hook used by the async facade",
    # The layer under the store's stream methods (blocking); async code has those methods.
    "Store.streams": "the blocking layer itself, reached through Store.blocking",
    "Store.dcb": "the blocking DCB layer itself, reached through Store.blocking",
}

# Twins that are plain methods, not coroutines: they only read or change memory (a client's own
# state) or make an object (factories); nothing waits, so nothing to await.
PLAIN: set[str] = {
    # factories: the object they return is the async facade
    "Store.consumer", "Store.producer", "Store.transaction",
    "Store.subscribe_to_all", "Store.subscribe_to_category", "Store.subscribe_to_stream",
    "Store.subscribe_events",
    "Consumer.transaction",
    # a consumer's own state
    "Consumer.assign", "Consumer.assignment", "Consumer.subscription", "Consumer.seek",
    "Consumer.pause", "Consumer.resume", "Consumer.paused", "Consumer.metrics",
    # collecting a transaction (commit is the coroutine)
    "Transaction.append", "Transaction.commit_offsets", "Transaction.abort",
    # a future's state and its callbacks (result/get are the coroutines)
    "FutureRecordMetadata.done", "FutureRecordMetadata.is_done", "FutureRecordMetadata.succeeded",
    "FutureRecordMetadata.exception", "FutureRecordMetadata.add_callback",
    "FutureRecordMetadata.add_errback",
    # the retry schedule (the waits between retries are on the loop)
    "DeadLetterProcessor.attempts",
}

# Parameters whose default differs on purpose: (method, parameter) -> why.
DEFAULTS_DIFFER: dict[tuple[str, str], str] = {
    ("DeadLetterProcessor.__init__", "sleep"): "time.sleep blocks; the async processor awaits anyio.sleep",
}

# Constructors compared: the ones users call themselves. The others wrap a blocking object.
CONSTRUCTED_BY_USERS = {"DeadLetterProcessor"}


def _public_methods(cls: type) -> dict[str, Any]:
    out = {}
    for name, value in inspect.getmembers(cls):
        if name.startswith("_") and not (name == "__init__" and cls.__name__ in CONSTRUCTED_BY_USERS):
            continue
        if callable(value) or isinstance(inspect.getattr_static(cls, name), property):
            out[name] = value
    return out


def _params(fn: Callable[..., Any], where: str) -> list[tuple[str, Any, Any]]:
    out = []
    for p in inspect.signature(fn).parameters.values():
        default = p.default
        if (where, p.name) in DEFAULTS_DIFFER:
            default = "<differs on purpose>"
        out.append((p.name, p.kind, default))
    return out


def _drift(blocking: type, facade: type) -> list[str]:
    problems = []
    sync_methods, async_methods = _public_methods(blocking), _public_methods(facade)
    for name, sync_fn in sorted(sync_methods.items()):
        where = f"{blocking.__name__}.{name}"
        if where in NO_TWIN:
            continue
        if name not in async_methods:
            problems.append(f"{where}: no async twin")
            continue
        async_fn = async_methods[name]
        if isinstance(inspect.getattr_static(blocking, name), property):
            if not isinstance(inspect.getattr_static(facade, name), property):
                problems.append(f"{where}: a property in the blocking API, not in the async one")
            continue
        if _params(sync_fn, where) != _params(async_fn, where):
            problems.append(f"{where}: {inspect.signature(sync_fn)} != {inspect.signature(async_fn)}")
        if name == "__init__":
            continue
        is_coroutine = inspect.iscoroutinefunction(async_fn)
        if where in PLAIN and is_coroutine:
            problems.append(f"{where}: listed as plain, but the async twin is a coroutine")
        if where not in PLAIN and not is_coroutine:
            problems.append(f"{where}: the async twin is not a coroutine (await would fail)")
    return problems


@pytest.mark.parametrize(("blocking", "facade"), PAIRS, ids=[b.__name__ for b, _ in PAIRS])
def test_every_blocking_method_has_an_async_twin_with_the_same_parameters(
        blocking: type, facade: type) -> None:
    assert _drift(blocking, facade) == []


@pytest.mark.parametrize(("sync_fn", "async_fn"), FUNCTIONS,
                         ids=[f"{f.__module__}.{f.__name__}" for f, _ in FUNCTIONS])
def test_opening_functions_take_the_same_parameters(sync_fn: Callable[..., Any],
                                                    async_fn: Callable[..., Any]) -> None:
    where = sync_fn.__name__
    assert _params(sync_fn, where) == _params(async_fn, where)


def test_the_exception_lists_name_real_methods() -> None:
    """An exception for a method that no longer exists (or became equal) is itself drift."""
    classes = {b.__name__: b for b, _ in PAIRS}
    for where in [*NO_TWIN, *PLAIN, *(w for w, _ in DEFAULTS_DIFFER)]:
        cls_name, _, method = where.partition(".")
        assert hasattr(classes[cls_name], method), where


def test_the_check_detects_drift() -> None:
    """The comparison itself fails on a missing twin, a renamed parameter, a changed default,
    and a twin that cannot be awaited."""

    class Sync:
        def read(self, topic: str, offset: int = 0) -> None: ...
        def gone(self) -> None: ...
        def renamed(self, a: int) -> None: ...
        def must_await(self) -> None: ...

    class Async:
        async def read(self, topic: str, offset: int = 1) -> None: ...
        async def renamed(self, b: int) -> None: ...
        def must_await(self) -> None: ...

    problems = _drift(Sync, Async)
    assert [p.split(":")[0] for p in problems] == [
        "Sync.gone", "Sync.must_await", "Sync.read", "Sync.renamed"]
