"""Version checks of a batch of stream appends, under the partition's write lock: which requests
are written, which are refused (``WrongExpectedVersionError``), which are retries of appends
already written (idempotent: they get the original result and write nothing)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import EventStoreError, InvalidArgumentError, WrongExpectedVersionError
from .events import AppendResult, NewEvent, StreamState
from .index import Head
from .queue import AppendRequest, Batch
from .rules import check_version, is_deleted
from .staging import Staging

__all__ = ["check_requests", "current_heads", "duplicate", "idempotent", "twin"]


def check_requests(staging: Staging, batch: Batch, topic: str, partition: int, base_offset: int) -> None:
    """Decide which requests of ``batch`` are written, refused or retries (fills ``batch``).

    A request that resends the events of one accepted earlier in the same
    batch (the same retry sent twice at once) gets that one's result: its
    event ids are in no index yet.
    """
    heads = current_heads(staging, batch.requests)
    firsts: dict[bytes, AppendRequest] = {}  # first event id -> request accepted in this batch
    offset = base_offset
    for req in batch.requests:  # bounded by the batch
        sid = req.stream_id
        try:
            earlier = twin(firsts.get(req.events[0].id.bytes), req)
            if earlier is not None:
                batch.followers.append((req, earlier))
                continue
            head = heads[sid]
            current = head.last_version if head is not None else -1
            original = duplicate(staging, req, head, current)
            if original is None and req.guard is not None:
                req.guard(req)
        except EventStoreError as e:
            req.error = e
            continue
        if original is not None:
            req.result = original
            continue
        batch.accepted.append((req, current, head, offset))
        firsts.setdefault(req.events[0].id.bytes, req)
        count = len(req.events)
        heads[sid] = Head(topic, partition, current + count, head.meta if head else b"")
        offset += count


def current_heads(staging: Staging, requests: list[AppendRequest]) -> dict[str, Head | None]:
    """The head of each requested stream, read from the index only when memory cannot tell.

    Called under the partition lock, so no other append changes these heads
    meanwhile. Memory answers for what it holds. For a stream it does not
    hold, the requester's own look-up is still current if no head was evicted
    since it started: anything written to the stream after that look-up would
    be in memory now. Otherwise one read transaction, opened after memory was
    consulted, serves every remaining stream: a head leaves memory only once
    committed, so the transaction sees it. Heads found are kept in memory for
    the next appends.
    """
    heads: dict[str, Head | None] = {}
    unknown: list[str] = []
    for req in requests:  # bounded by the batch
        sid = req.stream_id
        if sid in heads:
            continue
        head = staging.head(sid)
        if head is None:
            if req.generation != staging.evictions:  # read after memory: see the docstring
                unknown.append(sid)
                heads[sid] = None
                continue
            head = req.seen
            if head is not None:
                staging.remember(sid, head)
        heads[sid] = head
    if unknown:
        index = staging.index
        with index.read() as txn:
            for sid in unknown:  # bounded by the batch
                head = heads[sid] = index.head(txn, sid)
                if head is not None:
                    staging.remember(sid, head)
    return heads


def duplicate(staging: Staging, req: AppendRequest, head: Head | None, current: int) -> AppendResult | None:
    """The original result if ``req`` is a retry of an append already written, else None.

    Raises ``WrongExpectedVersionError`` if the stream is not at the
    expected version and this is no retry. Event ids are looked up when the
    check refuses, and when it passes but a retry could pass it too: the
    expected state does not pin a version (``ANY``, ``STREAM_EXISTS``), or
    ``NO_STREAM`` meets a deleted stream. An int expected version, or
    ``NO_STREAM`` for a stream never written, passes only if nothing was
    appended since, so a first append (the common case) costs no look-up.
    A guarded request (a DCB append) is never a retry: its caller made its
    event ids for this one append, so they are not looked up either.
    """
    sid = req.stream_id
    try:
        check_version(sid, req.expected, current, head is not None and is_deleted(head))
    except WrongExpectedVersionError:
        original = idempotent(staging, sid, req.events)
        if original is None:
            raise
        return original
    if req.guard is not None:
        return None
    if req.expected is StreamState.ANY or req.expected is StreamState.STREAM_EXISTS or (
            req.expected is StreamState.NO_STREAM and head is not None):
        return idempotent(staging, sid, req.events)
    return None


def idempotent(staging: Staging, stream_id: str, events: Sequence[NewEvent]) -> AppendResult | None:
    """The original result if every event id was already appended to this stream, in order."""
    first = staging.event_ids([events[0].id.bytes])[0]
    if first is None or first[0] != stream_id:
        return None
    found = staging.event_ids([e.id.bytes for e in events])
    expected = [(stream_id, first[1] + i) for i in range(len(events))]
    if [f[:2] if f else None for f in found] != expected:
        raise InvalidArgumentError(
            f"some of these events were already appended to {stream_id!r}, others not; "
            "an idempotent retry must resend exactly the same events"
        )
    last = found[-1]
    assert last is not None
    return AppendResult(stream_id, last[1], last[2])


def twin(earlier: AppendRequest | None, req: AppendRequest) -> AppendRequest | None:
    """``earlier`` if ``req`` resends exactly its events to the same stream, else None.

    Raises if ``req`` resends some of them but not all, as a retry must not.
    """
    if earlier is None or earlier.stream_id != req.stream_id:
        return None
    if [e.id for e in earlier.events] != [e.id for e in req.events]:
        raise InvalidArgumentError(
            f"some of these events were already appended to {req.stream_id!r}, others not; "
            "an idempotent retry must resend exactly the same events"
        )
    return earlier
