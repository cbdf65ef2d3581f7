"""Projections: fold the events of ``$all`` or a category into state that survives restarts.

A :class:`Projection` says which events it reads (``category``, None for
``$all``) and how each one changes its state (``handle(event, state)``). A
:class:`ProjectionRunner` feeds it from a subscription and stores a
*checkpoint*, the position of the last event handled, so that it resumes
after a restart where it stopped.

Where the state lives, and why a crash never applies an event twice
---------------------------------------------------------------------

The state is a set of keys and values in the store's catalog, the LMDB
environment that the store commits with fsync (``<store>/catalog``), in the
``streams`` database under the projection's prefix (the layout is
``catalog/projections.py``'s)::

    proj 0x00 <name> 0x00 "c"          checkpoint: MessagePack [source, position, events handled]
    proj 0x00 <name> 0x00 "s" <key>    the projection's own keys and values

The runner handles events a batch at a time, in one LMDB write transaction:

1. read the stored checkpoint and check that it is the one this runner
   last saw (so two runners of one projection cannot both apply a batch);
2. call ``handle(event, state)`` for each event, where ``state`` reads and
   writes through that same transaction;
3. write the checkpoint (position of the batch's last event);
4. commit, which LMDB makes durable atomically (one meta-page switch after
   the data pages are synced).

A crash before step 4 leaves neither the batch's state nor its checkpoint;
after it, both. On restart the runner subscribes from ``checkpoint + 1``, so
each event changes the state exactly once. If ``handle`` raises, the
transaction is aborted, nothing of the batch stays, ``run`` re-raises, and a
later ``run`` starts again at the same event.

Rules for ``handle``, which follow from this design:

* Keep every effect in ``state``. The transaction may be run again (when the
  catalog's map grows, or after a failure), so effects elsewhere (memory,
  other databases, messages sent) may happen more than once: at-least-once.
* Do not write to the store from ``handle`` (stream appends, topics, commits,
  group offsets): LMDB allows one write transaction at a time, so such a
  write raises ``IllegalStateError`` before anything is written, and the batch
  is rolled back. Append derived events from ``on_commit`` or after
  ``catch_up()``/``run()`` returns.

Events handled are durable ones (below the watermark), so with
``durability="fsync"`` an operating-system crash cannot take back an event
that a projection has counted. (In the other modes it can: the log loses its
unsynced tail while the catalog keeps the checkpoint.)

Alternatives considered: appending the state as records in a
``store.transaction()`` with the checkpoint as a group offset would make
reading the state a replay, and a transaction's outputs are relayed after the
commit; a separate LMDB environment would need its own commit, and two
commits cannot be made atomic together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..catalog.projections import (
    ProjectionCheckpoint,
    ProjectionKeys,
    counter_of,
    decode_counter,
    encode_counter,
)
from ..errors import IllegalStateError, InvalidArgumentError
from .events import RecordedEvent
from .subscriptions import (
    ALL,
    CATEGORY_PREFIX,
    PAGE_EVENTS,
    Subscription,
    check_count,
    subscribe_to_all,
    subscribe_to_category,
)

if TYPE_CHECKING:
    from .streams import StreamsOwner

__all__ = ["Projection", "ProjectionCheckpoint", "ProjectionRunner", "ProjectionState", "decode_counter"]

NAME_BYTES_MAX = 200


class Projection:
    """Derive and implement ``handle``; set ``category`` to read one category (None: ``$all``)."""

    category: str | None = None

    def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
        """Apply ``event`` to ``state`` (runs inside the batch's transaction; see the module notes)."""
        raise NotImplementedError


class ProjectionState:
    """A projection's keys and values, read and written inside one batch's transaction.

    Keys and values are bytes; ``add`` keeps a signed 64-bit counter under a key,
    which ``counter`` reads back as an int (``get`` returns its 8 stored bytes).
    """

    __slots__ = ("_keys", "_txn")

    def __init__(self, txn: Any, keys: ProjectionKeys) -> None:
        self._txn = txn
        self._keys = keys

    def get(self, key: bytes) -> bytes | None:
        return self._keys.get(self._txn, key)

    def put(self, key: bytes, value: bytes) -> None:
        self._keys.put(self._txn, key, value)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it was there."""
        return self._keys.delete(self._txn, key)

    def add(self, key: bytes, amount: int = 1) -> int:
        """Add ``amount`` to the counter under ``key`` (0 if missing); returns the new value."""
        value = self.counter(key) + amount
        self.put(key, encode_counter(key, value))
        return value

    def counter(self, key: bytes) -> int:
        """The counter under ``key`` (kept with ``add``); 0 if missing."""
        return counter_of(key, self.get(key))

    def items(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        return self._keys.items(self._txn, prefix)


class ProjectionRunner:
    """Runs ``projection`` under ``name``: handles events in batches, checkpointed atomically.

    ``run()`` follows the source live until ``stop()``; ``catch_up()`` returns
    once everything appended so far is handled. ``on_commit(checkpoint)`` is
    called after each batch commits. One runner per name at a time.
    """

    def __init__(self, store: StreamsOwner, projection: Projection, *, name: str,
                 batch_events: int = PAGE_EVENTS,
                 on_commit: Callable[[ProjectionCheckpoint], object] | None = None) -> None:
        _check_name(name)
        check_count(batch_events, "batch_events")
        if not isinstance(projection, Projection):
            raise InvalidArgumentError(f"projection must be a Projection, got {type(projection).__name__}")
        self.store = store
        self.projection = projection
        self.name = name
        self.batch_events = batch_events
        self._on_commit = on_commit
        category = projection.category
        self.source = ALL if category is None else CATEGORY_PREFIX + category
        self._streams = store.streams
        self._catalog = self._streams.log.catalog
        self._keys = ProjectionKeys(self._catalog, name)
        self._running = threading.Lock()
        self._stop = threading.Event()
        self._subscription: Subscription | None = None

    # --- running ---------------------------------------------------------------------

    def run(self, idle_timeout_s: float | None = None) -> int:
        """Handle events, live, until ``stop()`` (or ``idle_timeout_s`` without any); returns how many."""
        return self._run(idle_timeout_s)

    def catch_up(self) -> int:
        """Handle every event below the watermark now, then return how many were handled."""
        return self._run(0)

    def stop(self) -> None:
        """Make the current (or next) ``run`` return once its batch in hand is committed."""
        self._stop.set()
        subscription = self._subscription
        if subscription is not None:
            subscription.close()

    def _run(self, idle_timeout_s: float | None) -> int:
        if not self._running.acquire(blocking=False):
            raise IllegalStateError(f"projection {self.name!r} is already running in this runner")
        try:
            last = self.checkpoint_record()
            subscription = self._subscribe(last)
            self._subscription = subscription
            handled = 0
            try:
                while not self._stop.is_set():  # bounded by stop() or the idle timeout
                    batch = subscription.next_batch(self.batch_events, idle_timeout_s)
                    if not batch:
                        break
                    last = self._commit(batch, last)
                    handled += len(batch)
                    if self._on_commit is not None:
                        self._on_commit(last)
            finally:
                self._subscription = None
                subscription.close()
            return handled
        finally:
            self._stop.clear()
            self._running.release()

    def _subscribe(self, last: ProjectionCheckpoint | None) -> Subscription:
        start = 0 if last is None else last.position + 1
        category = self.projection.category
        if category is None:
            return subscribe_to_all(self.store, start, page_events=self.batch_events)
        return subscribe_to_category(self.store, category, start, page_events=self.batch_events)

    def _commit(self, batch: list[RecordedEvent],
                last: ProjectionCheckpoint | None) -> ProjectionCheckpoint:
        """Handle ``batch`` and save the checkpoint after it, in one catalog transaction."""
        keys = self._keys
        record = ProjectionCheckpoint(self.source, batch[-1].position,
                                      (0 if last is None else last.events) + len(batch))
        handle = self.projection.handle

        def write(txn: Any) -> None:
            if self._from_source(keys.read_checkpoint(txn)) != last:
                raise IllegalStateError(
                    f"projection {self.name!r} was advanced by another runner; this one stops"
                )
            state = ProjectionState(txn, keys)
            for event in batch:  # the projection's own work: one call per event
                handle(event, state)
            keys.write_checkpoint(txn, record)

        self._catalog.write(write)
        return record

    # --- what it has stored ------------------------------------------------------------

    def checkpoint_record(self) -> ProjectionCheckpoint | None:
        """The stored checkpoint (None: nothing handled yet)."""
        return self._from_source(self._keys.committed_checkpoint(self._catalog))

    @property
    def checkpoint(self) -> int | None:
        """Position of the last event handled (None: none yet)."""
        record = self.checkpoint_record()
        return None if record is None else record.position

    def get(self, key: bytes) -> bytes | None:
        """A value of the projection's state as last committed: the bytes ``put`` there
        (a counter kept with ``add`` reads as an int through ``counter``)."""
        return self._keys.committed(self._catalog, key)

    def counter(self, key: bytes) -> int:
        """A counter of the projection's state (kept with ``add``), as last committed; 0 if missing."""
        return counter_of(key, self.get(key))

    def counters(self, prefix: bytes = b"") -> dict[bytes, int]:
        """The committed counters whose key starts with ``prefix``, by key."""
        return {key: counter_of(key, raw) for key, raw in self.items(prefix)}

    def items(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """The projection's committed (key, value) pairs whose key starts with ``prefix``."""
        return self._keys.committed_items(self._catalog, prefix)

    def reset(self) -> None:
        """Forget the state and the checkpoint (the next run starts from the first event)."""
        if not self._running.acquire(blocking=False):
            raise IllegalStateError(f"projection {self.name!r} is running; stop it before a reset")
        try:
            self._keys.forget(self._catalog)
        finally:
            self._running.release()

    def _from_source(self, record: ProjectionCheckpoint | None) -> ProjectionCheckpoint | None:
        """``record``, checked to come from this runner's source."""
        if record is None:
            return None
        if record.source != self.source:
            raise InvalidArgumentError(
                f"projection {self.name!r} was built from {record.source!r}, not {self.source!r}; "
                "reset() it to rebuild from the new source"
            )
        return record

    def __repr__(self) -> str:
        return f"<ProjectionRunner {self.name!r} from {self.source!r}>"


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name or "\x00" in name or len(name.encode()) > NAME_BYTES_MAX:
        raise InvalidArgumentError(
            f"a projection name is a non-empty str of at most {NAME_BYTES_MAX} bytes without NUL, "
            f"got {name!r}"
        )
