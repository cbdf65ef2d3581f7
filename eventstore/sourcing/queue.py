"""Stream appends waiting for a leader: one queue per partition, and the hand-off between the
threads that combine the queued requests into one write.

A request is queued without a lock; one thread at a time (the leader, holding
a token that is only ever tried) takes a batch of requests, writes them, wakes
each requester and makes the first request still queued the next leader.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable

from .events import AppendResult, NewEvent
from .index import Head
from .rules import META_PREFIX, Expected

__all__ = ["BATCH_REQUESTS_MAX", "FILL_WAIT_S", "Accepted", "AppendQueue", "AppendRequest", "Batch",
           "await_batch", "hand_off", "take_batch"]

FILL_WAIT_S = 0.002  # how long a leader waits for its batch to fill (see await_batch)
BATCH_REQUESTS_MAX = 1000


class AppendRequest:
    """One ``append_to_stream`` call waiting for a leader.

    ``seen`` is the stream's head as the requester found it (None: no such
    stream) when the head-eviction count was ``generation``; the leader may
    use it instead of reading the index again (see ``versions.current_heads``).
    """

    __slots__ = ("error", "events", "expected", "generation", "guard", "lead", "lock",
                 "position_start", "result", "seen", "stream_id")

    def __init__(self, stream_id: str, events: list[NewEvent], expected: Expected,
                 seen: Head | None, generation: int,
                 guard: Callable[[AppendRequest], None] | None = None) -> None:
        self.stream_id, self.events, self.expected = stream_id, events, expected
        #: called under the partition lock once the version check passed; raising refuses
        #: the request (a DCB append condition, dcb.py). A guarded request's event ids are
        #: new, made for it: it is never taken for a retry (``versions.duplicate``)
        self.guard = guard
        self.seen, self.generation = seen, generation
        self.result: AppendResult | None = None
        self.error: BaseException | None = None
        self.position_start = -1
        self.lead = False  # woken to combine the queue, not because it was handled
        self.lock = threading.Lock()
        self.lock.acquire()


class AppendQueue:
    """The appends waiting for one partition, and the token of the thread combining them.

    ``items`` takes no lock: a deque's appends and pops are atomic under the
    GIL, and a thread that lost the GIL while holding a lock every appender
    needs would make all of them queue behind it. ``leader`` is held by the
    thread that leads; it is only ever tried, never waited for. Only its
    holder takes requests out of ``items``.
    """

    __slots__ = ("filled", "items", "last", "leader", "want")

    def __init__(self) -> None:
        self.items: deque[AppendRequest] = deque()
        self.leader = threading.Lock()
        self.last = 1  # requests in the last batch
        self.want = 1  # requests the waiting leader waits for
        self.filled: threading.Lock | None = None  # released once ``want`` are queued

    def put(self, request: AppendRequest) -> None:
        """Queue ``request``; wake the waiting leader if that fills its batch."""
        self.items.append(request)
        filled = self.filled
        if filled is not None and len(self.items) >= self.want:
            if self.filled is filled:
                self.filled = None
            with contextlib.suppress(RuntimeError):  # another appender released it first
                filled.release()


def take_batch(items: deque[AppendRequest]) -> list[AppendRequest]:
    """The next requests to combine: up to a bound, a metadata append alone."""
    if not items:
        return []
    if items[0].stream_id.startswith(META_PREFIX):
        return [items.popleft()]
    batch: list[AppendRequest] = []
    while items and len(batch) < BATCH_REQUESTS_MAX and not items[0].stream_id.startswith(META_PREFIX):
        batch.append(items.popleft())
    return batch


def await_batch(queue: AppendQueue) -> None:
    """Wait until as many requests are queued as the last batch held, or ``FILL_WAIT_S``.

    Group commit with a delay, as databases do it: under many threads, those
    the last batch released come back with their next appends within about a
    batch's time. Taking the queue before they do splits the batch into ever
    smaller ones, each paying an fsync and a GIL hand-off per thread. A lone
    appender never waits (its last batch held one request: itself), and after
    a wait that timed out the next batch expects no more than came.
    """
    want = queue.last
    if len(queue.items) >= want:
        return
    filled = threading.Lock()
    filled.acquire()
    queue.want, queue.filled = want, filled
    if len(queue.items) < want:  # looked at after publishing ``filled``: no append is missed
        filled.acquire(timeout=FILL_WAIT_S)
    queue.filled = None


def hand_off(queue: AppendQueue) -> None:
    """Make the first queued request's thread the next leader, or leave the queue idle.

    A request queued just as the token is let go is seen by the look that
    follows: either its own thread got the token, or this one takes it back.
    """
    items = queue.items
    while True:  # bounded: a second pass finds the queue non-empty
        if items:
            nxt = items[0]
            nxt.lead = True
            nxt.lock.release()
            return
        queue.leader.release()
        if not items or not queue.leader.acquire(blocking=False):
            return


# An accepted request: (request, its stream's version before it, its head, its first offset)
Accepted = tuple[AppendRequest, int, Head | None, int]


class Batch:
    """Requests combined into one write: those accepted, their envelopes and positions."""

    __slots__ = ("accepted", "end", "envelopes", "followers", "requests", "reserved")

    def __init__(self, requests: list[AppendRequest]) -> None:
        self.requests = requests
        self.accepted: list[Accepted] = []
        self.followers: list[tuple[AppendRequest, AppendRequest]] = []  # (resent, the accepted original)
        self.envelopes: list[list[bytes]] = []  # per accepted request
        self.reserved: list[int] = []  # start of the batch's range of global positions
        self.end = -1  # the offset after the batch's records, once written

    def fail(self, error: BaseException) -> None:
        """Give ``error`` to every request not already refused or found to be a retry."""
        taken = {id(a[0]) for a in self.accepted} | {id(f) for f, _ in self.followers}
        for req in self.requests:  # bounded by the batch
            if req.error is None and (req.result is None or id(req) in taken):
                req.result, req.error = None, error
