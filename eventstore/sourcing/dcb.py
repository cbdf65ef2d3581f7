"""Dynamic consistency boundaries on the stream layer (docs/format.md section 18).

DCB events are the events of one stream, ``$dcb``, in the streams topic
``__dcb`` of one partition, so they take global positions from the store-wide
counter and ``read_all`` and ``$all`` subscriptions see them among every other
stream's events. An event's tags are its metadata (a MessagePack array of str).

A conditional append is an ordinary append request to ``$dcb`` carrying a
*guard*: the leader that combines the partition's queued requests calls it
under the partition's write lock, after the version checks (see
``versions.check_requests``). The guard checks the condition against the tag
index in LMDB and against the DCB requests accepted since the last index write
(``_pending``: earlier batches not yet indexed, and earlier requests of the
same batch); so of two conflicting appends exactly one wins, and appends that
do not conflict share a batch and its fsync.

The tag index is derived: after an append is durable, its requester writes
the pending requests (in acceptance order, up to the first one still in
flight) to LMDB with the ``$dcb`` stream version they cover. Open replays the
stream from that version, so a crash between the log write and the index
write, or a deleted index, costs a replay and nothing else.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import heapq
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ..errors import InvalidArgumentError, StreamNotFoundError, TopicExistsError
from ..records import TopicConfig
from .dcbtypes import (
    AppendCondition,
    ConditionFailedError,
    Query,
    QueryItem,
    SequencedEvent,
    TaggedEvent,
    TaggedRead,
    check_after,
    check_condition,
    check_query,
    check_tagged,
    item_matches,
    query_matches,
)
from .events import NewEvent, StreamState
from .subscriptions import PAGE_EVENTS, Subscription

if TYPE_CHECKING:
    from ..log import Watch
    from .queue import AppendRequest
    from .streams import Streams

__all__ = ["DCB_STREAM", "DCB_TOPIC", "DCB", "TaggedSubscription"]

DCB_TOPIC = "__dcb"
DCB_STREAM = "$dcb"
REPLAY_PAGE = 10_000

DB_EVENTS = b"dcb"  # position uint64 BE -> record
DB_TAGS = b"dcbtags"  # tag, 0x00, position uint64 BE -> record
DB_TYPES = b"dcbtypes"  # type, 0x00, position uint64 BE -> record
DB_META = b"dcbmeta"  # b"covered" -> next $dcb version not indexed; b"n" tag -> count
_DBS = (DB_EVENTS, DB_TAGS, DB_TYPES, DB_META)

_u64 = struct.Struct(">Q")
_tags_enc = msgspec.msgpack.Encoder()
_tags_dec = msgspec.msgpack.Decoder(list[str])


class _Record(msgspec.Struct, array_like=True, gc=False):
    """One DCB event in the tag index: its global position, type, data and tags."""

    position: int
    type: str
    data: bytes
    tags: list[str]


_rec_enc = msgspec.msgpack.Encoder()
_recs_dec = msgspec.msgpack.Decoder(list[_Record])


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _decode_values(values: list[bytes]) -> list[_Record]:
    """Records concatenated under one array header decode in one call."""
    return _recs_dec.decode(_array_header(len(values)) + b"".join(values))


def tags_of(metadata: bytes) -> list[str]:
    """The tags stored as an event's metadata (none if it holds no array of str)."""
    if not metadata:
        return []
    try:
        return _tags_dec.decode(metadata)
    except msgspec.DecodeError:
        return []


class _Pending:
    """A DCB append accepted by its guard and not yet in the tag index."""

    __slots__ = ("durable", "events", "req")

    def __init__(self, events: list[TaggedEvent]) -> None:
        self.events = events
        self.req: AppendRequest | None = None
        self.durable = False

    def failed(self) -> bool:
        return self.req is None or self.req.error is not None

    def records(self) -> list[_Record]:
        """Its events with their global positions; -1 while the batch has none yet (a later
        request of the same batch sees them as after any position)."""
        req = self.req
        start = -1 if req is None or req.position_start < 0 else req.position_start
        return [_Record(-1 if start < 0 else start + i, e.type, e.data, list(e.tags))
                for i, e in enumerate(self.events)]


class DCB:
    """Tagged events, conditional appends and reads by query over ``streams``."""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self.index = streams.index
        self._pending: collections.deque[_Pending] = collections.deque()
        self._flush_lock = threading.Lock()
        self.dbs = self._open_dbs()
        self._catch_up()
        streams.log.add_delete_hook(self._drop_topic)

    # --- the tag index ----------------------------------------------------------------

    def _open_dbs(self) -> dict[bytes, Any]:
        env = self.index.env
        return {name: env.open_db(name) for name in _DBS}

    def covered(self) -> int:
        with self.index.read() as txn:
            raw = txn.get(b"covered", db=self.dbs[DB_META])
        return 0 if raw is None else int(_u64.unpack(raw)[0])

    def _catch_up(self) -> None:
        """Index the ``$dcb`` events the tag index lacks (a crash after the log write, or an
        index deleted or rebuilt), from the version it covers, in pages."""
        version = self.covered()
        while True:  # bounded by the stream's length
            try:
                events = self.streams.read(DCB_STREAM, version, REPLAY_PAGE, False)
            except StreamNotFoundError:
                return
            if not events:
                return
            records = [_Record(e.position, e.type, e.data, tags_of(e.metadata)) for e in events]
            version = events[-1].version + 1
            self.index.write(functools.partial(self._put, records, version))

    def _put(self, records: list[_Record], covered: int, txn: Any) -> None:
        events, tags, types, meta = (self.dbs[n] for n in _DBS)
        counts: dict[str, int] = {}
        for rec in records:  # bounded by the records
            value = _rec_enc.encode(rec)
            pos = _u64.pack(rec.position)
            txn.put(pos, value, db=events)
            txn.put(rec.type.encode() + b"\x00" + pos, value, db=types)
            for tag in set(rec.tags):  # bounded by the event's tags
                txn.put(tag.encode() + b"\x00" + pos, value, db=tags)
                counts[tag] = counts.get(tag, 0) + 1
        for tag, n in counts.items():  # bounded by the tags
            key = b"n" + tag.encode()
            raw = txn.get(key, db=meta)
            txn.put(key, _u64.pack(n + (0 if raw is None else _u64.unpack(raw)[0])), db=meta)
        txn.put(b"covered", _u64.pack(covered), db=meta)

    def _flush(self) -> None:
        """Write the pending appends that are durable to the index, in acceptance order, up
        to the first still in flight; drop those whose batch failed."""
        with self._flush_lock:
            pending = self._pending
            done: list[_Pending] = []
            for p in list(pending):  # bounded by the pending appends
                if not p.failed() and not p.durable:
                    break
                done.append(p)
            written = [p for p in done if not p.failed()]
            if written:
                records = [r for p in written for r in p.records()]
                last = written[-1].req
                assert last is not None and last.result is not None
                self.index.write(functools.partial(self._put, records, last.result.next_expected_version + 1))
            for _ in done:  # only this lock's holder takes from the left
                pending.popleft()

    def _drop_topic(self, cfg: TopicConfig) -> None:
        """The log deletes ``__dcb``: the tag index goes with it (a delete hook)."""
        if cfg.name != DCB_TOPIC:
            return

        def drop(txn: Any) -> None:
            for name in _DBS:  # bounded: four databases
                txn.drop(self.dbs[name], delete=False)

        with self._flush_lock:
            self._pending.clear()
            self.index.write(drop)

    # --- appending ----------------------------------------------------------------------

    def append(self, events: Sequence[TaggedEvent] | TaggedEvent,
               condition: AppendCondition | None = None) -> int:
        """Append ``events`` atomically unless ``condition`` fails (``ConditionFailedError``,
        nothing written). Returns the DCB position of the last event."""
        tagged = check_tagged(events)
        cond = check_condition(condition)
        new = [NewEvent(type=e.type, data=e.data, metadata=_tags_enc.encode(list(e.tags)) if e.tags else b"")
               for e in tagged]
        self._topic()
        entry = _Pending(tagged)
        guard = functools.partial(self._guard, entry, cond)
        try:
            result = self.streams.append(DCB_STREAM, new, StreamState.ANY, DCB_TOPIC, guard=guard)
            entry.durable = True
        finally:
            self._flush()
        return result.position + 1

    def _topic(self) -> None:
        """``__dcb`` exists, with one partition: one leader orders every DCB append."""
        log = self.streams.log
        cfg = log.find_topic(DCB_TOPIC)
        if cfg is not None:
            if not cfg.streams:
                raise InvalidArgumentError(f"topic {DCB_TOPIC!r} holds plain records, not DCB events")
            return
        with contextlib.suppress(TopicExistsError):
            log.create_topic(DCB_TOPIC, partitions=1, streams=True)

    def _guard(self, entry: _Pending, condition: AppendCondition | None, req: AppendRequest) -> None:
        """Under the partition lock, once the request passed its version check: refuse it if
        its condition fails, else count it pending (later checks see it)."""
        if condition is not None:
            query = condition.fail_if_events_match
            start = check_after(condition.after)
            if self._conflicts(query, start):
                raise ConditionFailedError(
                    f"an event matching the append condition exists after position {condition.after}")
        entry.req = req
        self._pending.append(entry)

    def _conflicts(self, query: Query, start: int) -> bool:
        """Whether an event from global position ``start`` on matches ``query``: pending ones
        first (taken before the index is read, so none is missed as it moves there)."""
        for p in list(self._pending):  # bounded by the pending appends
            if p.failed():
                continue
            for rec in p.records():  # bounded by the append's events
                if (rec.position < 0 or rec.position >= start) and query_matches(query, rec.type, rec.tags):
                    return True
        with self.index.read() as txn:
            return any(self._item_first(txn, item, start) for item in (query.items or (QueryItem(),)))

    def _item_first(self, txn: Any, item: QueryItem, start: int) -> bool:
        for value in self._scan(txn, item, start):  # stops at the first match
            if not (item.tags or item.types) or item_matches(item, *_type_tags(value)):
                return True
        return False

    # --- reading ------------------------------------------------------------------------

    def _scan(self, txn: Any, item: QueryItem, start: int) -> Iterator[bytes]:
        """Raw records that may match ``item`` from global position ``start`` on, in order:
        the range of its least frequent tag, else of each of its types (merged), else all."""
        pos = _u64.pack(start)
        if item.tags:
            tag = min(item.tags, key=lambda t: self._count(txn, t))
            return _prefixed(txn, self.dbs[DB_TAGS], tag.encode() + b"\x00", pos)
        if item.types:
            if len(item.types) == 1:
                return _prefixed(txn, self.dbs[DB_TYPES], item.types[0].encode() + b"\x00", pos)
            runs = [_keyed(txn, self.dbs[DB_TYPES], t.encode() + b"\x00", pos) for t in set(item.types)]
            return (v for _, v in heapq.merge(*runs))
        return _prefixed(txn, self.dbs[DB_EVENTS], b"", pos)

    def _count(self, txn: Any, tag: str) -> int:
        raw = txn.get(b"n" + tag.encode(), db=self.dbs[DB_META])
        return 0 if raw is None else int(_u64.unpack(raw)[0])

    def read(self, query: Query | None = None, after: int | None = None,
             limit: int | None = None) -> TaggedRead:
        """The DCB events matching ``query`` after DCB position ``after``, in order, up to
        ``limit``; only events below the watermark (durable, no gap before them)."""
        self.streams.check_open()
        query = check_query(query)
        start = check_after(after)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be an int >= 0 or None, got {limit!r}")
        watermark = self.streams.positions.watermark
        pending = [r for p in list(self._pending) if not p.failed() for r in p.records()
                   if 0 <= r.position < watermark]
        with self.index.read() as txn:
            records = self._matching(txn, query, start, watermark, limit)
            last = None if limit is not None else self._last(txn, watermark)
        if pending:
            records = self._merge(records, pending, query, start, limit)
        if pending and limit is None:
            last = max(last or -1, pending[-1].position)
        events = [SequencedEvent(r.position + 1, r.type, r.data, tuple(r.tags)) for r in records]
        if limit is not None:
            head = events[-1].position if events else None
        else:
            head = None if last is None or last < 0 else last + 1
        return TaggedRead(events, head)

    def _matching(self, txn: Any, query: Query, start: int, watermark: int,
                  limit: int | None) -> list[_Record]:
        """The index's records matching ``query``, by scanning each item's range; one item's
        values decode in one call, several items' merge by position."""
        if limit == 0:
            return []
        runs: list[list[_Record]] = []
        for item in query.items or (QueryItem(),):  # bounded by the items
            values = []
            exact = not item.tags or (len(item.tags) == 1 and not item.types)
            for value in self._scan(txn, item, start):  # bounded by the range (and limit)
                values.append(value)
                if exact and limit is not None and len(values) >= limit:
                    break
            recs = _decode_values(values)
            if not exact:
                recs = [r for r in recs if item_matches(item, r.type, r.tags)]
            runs.append(recs)
        merged = runs[0] if len(runs) == 1 else _unique(heapq.merge(*runs, key=lambda r: r.position))
        cut = len(merged)
        while cut and merged[cut - 1].position >= watermark:
            cut -= 1
        return merged[:cut if limit is None else min(cut, limit)]

    def _last(self, txn: Any, watermark: int) -> int | None:
        """The last indexed DCB event's global position below the watermark."""
        cur = txn.cursor(db=self.dbs[DB_EVENTS])
        if not cur.set_range(_u64.pack(watermark)):
            if not cur.last():
                return None
        elif not cur.prev():
            return None
        return int(_u64.unpack(cur.key())[0])

    @staticmethod
    def _merge(records: list[_Record], pending: list[_Record], query: Query, start: int,
               limit: int | None) -> list[_Record]:
        extra = [r for r in pending if r.position >= start and query_matches(query, r.type, r.tags)]
        merged = _unique(heapq.merge(records, extra, key=lambda r: r.position))
        return merged if limit is None else merged[:limit]

    def subscribe(self, query: Query | None = None, after: int | None = None,
                  page_events: int = PAGE_EVENTS) -> TaggedSubscription:
        """The matching events after ``after``, history then live."""
        self.streams.check_open()
        query = check_query(query)
        start = check_after(after)
        reader = _TaggedReader(self, query)
        return TaggedSubscription(Subscription(self.streams, cast(Any, reader), start, page_events))


def _type_tags(value: bytes) -> tuple[str, list[str]]:
    rec = _recs_dec.decode(b"\x91" + value)[0]
    return rec.type, rec.tags


def _prefixed(txn: Any, db: Any, prefix: bytes, pos: bytes) -> Iterator[bytes]:
    """Values of keys ``prefix + position`` from ``pos`` on, in key order."""
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix + pos):
        return
    if not prefix:
        yield from cur.iternext(keys=False, values=True)
        return
    for key, value in cur:  # bounded by the range
        if not key.startswith(prefix):
            return
        yield value


def _keyed(txn: Any, db: Any, prefix: bytes, pos: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(position key, value) pairs of one range, for merging ranges by position."""
    n = len(prefix)
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix + pos):
        return
    for key, value in cur:  # bounded by the range
        if not key.startswith(prefix):
            return
        yield key[n:], value


def _unique(records: Iterator[_Record] | Any) -> list[_Record]:
    out: list[_Record] = []
    last = -2
    for r in records:  # bounded by the records
        if r.position != last:
            out.append(r)
            last = r.position
    return out


class _TaggedReader:
    """A subscription's pages: the cursor is the last DCB position delivered."""

    source = DCB_STREAM

    def __init__(self, dcb: DCB, query: Query) -> None:
        self.dcb, self.query = dcb, query

    def read(self, streams: Streams, cursor: int, page_events: int) -> tuple[list[SequencedEvent], int]:
        got = self.dcb.read(self.query, cursor, page_events).events
        return got, (got[-1].position if got else cursor)

    def checkpoint_of(self, event: SequencedEvent) -> int:
        return event.position

    def visible(self, streams: Streams, events: list[SequencedEvent]) -> list[SequencedEvent]:
        return events


class TaggedSubscription:
    """Events matching a query, history then live (``store.subscribe_events``).

    ``next(timeout_s)`` returns the next event (None on timeout or once closed),
    ``next_batch`` up to ``max_events``, iteration yields events until ``close()``;
    ``checkpoint`` is the DCB position of the last event delivered.
    """

    def __init__(self, inner: Subscription) -> None:
        self._inner = inner
        self.subscription = inner
        """The position subscription it wraps (its events are ``SequencedEvent``)."""

    @property
    def checkpoint(self) -> int | None:
        return self._inner.checkpoint

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def next(self, timeout_s: float | None = None) -> SequencedEvent | None:
        return cast("SequencedEvent | None", self._inner.next(timeout_s))

    def next_batch(self, max_events: int = PAGE_EVENTS,
                   timeout_s: float | None = None) -> list[SequencedEvent]:
        return cast("list[SequencedEvent]", self._inner.next_batch(max_events, timeout_s))

    def watch(self, callback: Callable[[], object]) -> Watch:
        return self._inner.watch(callback)

    def close(self) -> None:
        self._inner.close()

    def __iter__(self) -> Iterator[SequencedEvent]:
        return self

    def __next__(self) -> SequencedEvent:
        return cast(SequencedEvent, next(self._inner))

    def __enter__(self) -> TaggedSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dcb(streams: Streams) -> DCB:
    """The DCB layer over ``streams`` with its tag index caught up with the log."""
    return DCB(streams)

