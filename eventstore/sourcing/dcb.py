"""Dynamic consistency boundaries on the stream layer (docs/format.md section 18).

DCB events are the events of one stream, ``$dcb``, in the streams topic
``__dcb`` of one partition, so they take global positions from the store-wide
counter and ``read_all`` and ``$all`` subscriptions see them among every other
stream's events. An event's tags are its metadata (a MessagePack array of str).
A DCB position is the global position + 1.

A conditional append is an ordinary append request to ``$dcb`` carrying a
*guard*: the leader that combines the partition's queued requests calls it
under the partition's write lock, after the version checks (see
``versions.check_requests``). The guard checks the condition against the tag
index in LMDB and against the DCB appends accepted since the last index write
(``_Pending``: earlier batches not yet indexed, and earlier requests of the
same batch, kept in memory by tag and by type); so of two conflicting appends
exactly one wins, and appends that do not conflict share a batch and its fsync.

The tag index is derived: once ``FLUSH_EVERY`` events are pending, the
requester that finds them durable writes them to LMDB in one transaction with
the ``$dcb`` stream version they cover. Open replays the stream from that
version, so a close, a crash between the log write and the index write, or a
deleted index, costs a replay of what the index lacks and nothing else.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import heapq
import itertools
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ..errors import InvalidArgumentError, StreamNotFoundError, TopicExistsError
from ..records import TopicConfig
from .dcbtypes import (
    DCB_STREAM,
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
)
from .events import NewEvent, StreamState
from .subscriptions import PAGE_EVENTS, Subscription

if TYPE_CHECKING:
    from ..log import Watch
    from .queue import AppendRequest
    from .streams import Streams

__all__ = ["DCB", "DCB_STREAM", "DCB_TOPIC", "FLUSH_EVERY", "TaggedSubscription", "dcb_of", "tags_of"]

DCB_TOPIC = "__dcb"
REPLAY_PAGE = 10_000
FLUSH_EVERY = 1024  # pending events that make a requester write them to the tag index
CHUNK = 64  # records in a chunk of a tag's (or a type's) range

DB_EVENTS = b"dcb"  # DCB position uint64 BE -> record
DB_TAGS = b"dcbtags"  # tag, 0x00, first DCB position uint64 BE -> chunk of records
DB_TYPES = b"dcbtypes"  # type, 0x00, first DCB position uint64 BE -> chunk of records
DB_META = b"dcbmeta"  # b"covered" -> next $dcb version not indexed; b"g" tag / b"y" type -> count
_DBS = (DB_EVENTS, DB_TAGS, DB_TYPES, DB_META)
_EVERYTHING = QueryItem()

_u64 = struct.Struct(">Q")
_tags_enc = msgspec.msgpack.Encoder()
_tags_dec = msgspec.msgpack.Decoder(list[str])
_rec_enc = msgspec.msgpack.Encoder()
_recs_dec = msgspec.msgpack.Decoder(list[SequencedEvent])


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _decode_values(values: list[bytes]) -> list[SequencedEvent]:
    """Records concatenated under one array header decode in one call."""
    if not values:
        return []
    return _recs_dec.decode(_array_header(len(values)) + b"".join(values))


def tags_of(metadata: bytes) -> tuple[str, ...]:
    """The tags stored as an event's metadata (none if it holds no array of str)."""
    if not metadata:
        return ()
    try:
        return tuple(_tags_dec.decode(metadata))
    except msgspec.DecodeError:
        return ()


class _Pending:
    """A DCB append accepted by its guard and not yet in the tag index."""

    __slots__ = ("_seq", "durable", "events", "req")

    def __init__(self, events: list[TaggedEvent]) -> None:
        self.events = events
        self.req: AppendRequest | None = None
        self.durable = False
        self._seq: list[SequencedEvent] | None = None

    def failed(self) -> bool:
        return self.req is None or self.req.error is not None

    def position(self, i: int) -> int:
        """Its ``i``-th event's DCB position; 0 while its batch has none (a later request of
        the same batch, checked before positions are given, sees it as after any)."""
        req = self.req
        return 0 if req is None or req.position_start < 0 else req.position_start + 1 + i

    def sequenced(self) -> list[SequencedEvent]:
        """Its events as read back (once its positions are given)."""
        if self._seq is None:
            self._seq = [SequencedEvent(self.position(i), e.type, e.data, e.tags)
                         for i, e in enumerate(self.events)]
        return self._seq


class _PendingIndex:
    """The pending appends in acceptance order, and their events by tag and by type.

    The leader adds (under the partition lock), a requester takes the written
    prefix off; both under ``lock``. Readers take the current dictionaries
    without it: additions only append to their lists, removals replace them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[_Pending] = []
        self.events = 0  # in the entries
        self.by_tag: dict[str, list[tuple[_Pending, int]]] = {}
        self.by_type: dict[str, list[tuple[_Pending, int]]] = {}

    def add(self, entry: _Pending) -> None:
        with self.lock:
            self.entries.append(entry)
            self.events += len(entry.events)
            self._index(entry, self.by_tag, self.by_type)

    @staticmethod
    def _index(entry: _Pending, by_tag: dict[str, list[tuple[_Pending, int]]],
               by_type: dict[str, list[tuple[_Pending, int]]]) -> None:
        for i, e in enumerate(entry.events):  # bounded by the append's events
            by_type.setdefault(e.type, []).append((entry, i))
            for tag in e.tags:  # bounded by the event's tags
                by_tag.setdefault(tag, []).append((entry, i))

    def drop_first(self, count: int) -> None:
        """Forget the first ``count`` entries (written to the index, or failed)."""
        with self.lock:
            rest = self.entries[count:]
            by_tag: dict[str, list[tuple[_Pending, int]]] = {}
            by_type: dict[str, list[tuple[_Pending, int]]] = {}
            for entry in rest:  # bounded by the pending appends
                self._index(entry, by_tag, by_type)
            self.entries, self.by_tag, self.by_type = rest, by_tag, by_type
            self.events = sum(len(e.events) for e in rest)

    def clear(self) -> None:
        self.drop_first(len(self.entries))

    def candidates(self, item: QueryItem) -> Sequence[tuple[_Pending, int]]:
        """Pending events that may match ``item``: those of its rarest tag, else of its types,
        else all; a tag's, or one type's, in acceptance order."""
        if item.tags:
            by_tag = self.by_tag
            return min((by_tag.get(t, ()) for t in item.tags), key=len)
        if item.types:
            by_type = self.by_type
            return [c for t in set(item.types) for c in by_type.get(t, ())]
        return [(e, i) for e in self.entries for i in range(len(e.events))]

    def any_after(self, query: Query, after: int) -> bool:
        """Whether a pending event matching ``query`` has a DCB position above ``after`` (or
        none yet). A tag's (or one type's) candidates are in position order, those without
        one last, so they are walked from the end until a position at or below ``after``."""
        for item in query.items or (_EVERYTHING,):  # bounded by the items
            ordered = bool(item.tags) or len(set(item.types)) <= 1
            for entry, i in reversed(self.candidates(item)):  # bounded by the pending events
                if entry.failed():
                    continue
                pos = entry.position(i)
                if pos and pos <= after:
                    if ordered:
                        break
                    continue
                e = entry.events[i]
                if item_matches(item, e.type, e.tags):
                    return True
        return False

    def matching(self, query: Query, after: int, upto: int | None) -> Iterator[SequencedEvent]:
        """Pending events matching ``query`` with a DCB position above ``after`` (0: none yet,
        counts as above) and at most ``upto`` (None: any, even none yet); not in order."""
        for item in query.items or (_EVERYTHING,):  # bounded by the items
            for entry, i in self.candidates(item):  # bounded by the pending events
                if entry.failed():
                    continue
                pos = entry.position(i)
                if upto is not None and not 0 < pos <= upto:
                    continue
                if pos and pos <= after:
                    continue
                e = entry.events[i]
                if item_matches(item, e.type, e.tags):
                    yield entry.sequenced()[i] if pos else SequencedEvent(0, e.type, e.data, e.tags)


class DCB:
    """Tagged events, conditional appends and reads by query over ``streams``."""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self.index = streams.index
        self._pending = _PendingIndex()
        self._flush_lock = threading.Lock()
        self.dbs = self._open_dbs()
        with self.index.read() as txn:
            #: the last DCB position in the index: a check after it needs no index read
            self.indexed_last = self._last(txn, 2**64 - 2) or 0
        self.catch_up()
        streams.log.add_delete_hook(self._drop_topic)
        streams.catch_up_hooks.append(self.catch_up)

    # --- the tag index ----------------------------------------------------------------

    def _open_dbs(self) -> dict[bytes, Any]:
        env = self.index.env
        return {name: env.open_db(name) for name in _DBS}

    def covered(self) -> int:
        """The first ``$dcb`` version the tag index lacks."""
        with self.index.read() as txn:
            raw = txn.get(b"covered", db=self.dbs[DB_META])
        return 0 if raw is None else int(_u64.unpack(raw)[0])

    def catch_up(self) -> None:
        """Index the ``$dcb`` events the tag index lacks, in pages: at open (appends not yet
        written to it when the store closed or crashed, or an index deleted or rebuilt), and
        after the stream index caught up with records that reached the log without these
        streams (a follower's replica appends: ``Streams.catch_up``). Nothing may append to
        ``$dcb`` through this store meanwhile (a follower refuses local writes)."""
        with self._flush_lock:
            self._index_missing()

    def _index_missing(self) -> None:
        version = self.covered()
        while True:  # bounded by the stream's length
            try:
                events = self.streams.read(DCB_STREAM, version, REPLAY_PAGE, False)
            except StreamNotFoundError:
                return
            if not events:
                return
            records = [SequencedEvent(e.position + 1, e.type, e.data, tags_of(e.metadata)) for e in events]
            version = events[-1].version + 1
            self.index.write(functools.partial(self._put, records, version))
            self.indexed_last = records[-1].position

    def _put(self, records: list[SequencedEvent], covered: int, txn: Any) -> None:
        """Index ``records`` (in position order) and mark the index as covering ``$dcb`` up to
        version ``covered``: each by position, and appended to the chunks of its tags and
        of its type."""
        events, tags, types, meta = (self.dbs[n] for n in _DBS)
        by_tag: dict[bytes, list[tuple[int, bytes]]] = {}
        by_type: dict[bytes, list[tuple[int, bytes]]] = {}
        for rec in records:  # bounded by the records
            value = _rec_enc.encode(rec)
            txn.put(_u64.pack(rec.position), value, db=events)
            by_type.setdefault(b"y" + rec.type.encode(), []).append((rec.position, value))
            for tag in set(rec.tags):  # bounded by the event's tags
                by_tag.setdefault(b"g" + tag.encode(), []).append((rec.position, value))
        for group, db in ((by_tag, tags), (by_type, types)):  # bounded: two kinds
            for key, items in group.items():  # bounded by the tags and types
                _append_chunks(txn, db, key[1:] + b"\x00", items)
                raw = txn.get(key, db=meta)
                txn.put(key, _u64.pack(len(items) + (0 if raw is None else _u64.unpack(raw)[0])), db=meta)
        txn.put(b"covered", _u64.pack(covered), db=meta)

    def flush(self, every: int = 1) -> None:
        """Write the pending appends that are durable to the index, in acceptance order, up
        to the first still in flight, if at least ``every`` events are pending; forget those
        whose batch failed."""
        if self._pending.events < every:
            return
        with self._flush_lock:
            done: list[_Pending] = []
            for p in list(self._pending.entries):  # bounded by the pending appends
                if not p.failed() and not p.durable:
                    break
                done.append(p)
            written = [p for p in done if not p.failed()]
            if written:
                records = [r for p in written for r in p.sequenced()]
                last = written[-1].req
                assert last is not None and last.result is not None
                self.index.write(functools.partial(self._put, records, last.result.next_expected_version + 1))
                self.indexed_last = records[-1].position  # before they leave the pending ones
            if done:
                self._pending.drop_first(len(done))

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
            self.indexed_last = 0

    # --- appending ----------------------------------------------------------------------

    def append(self, events: Sequence[TaggedEvent] | TaggedEvent,
               condition: AppendCondition | None = None) -> int:
        """Append ``events`` atomically unless ``condition`` fails (``ConditionFailedError``,
        nothing written). Returns the DCB position of the last event."""
        tagged = check_tagged(events)
        cond = check_condition(condition)
        new = [NewEvent(type=e.type, data=e.data, metadata=_tags_enc.encode(e.tags) if e.tags else b"")
               for e in tagged]
        self._topic()
        entry = _Pending(tagged)
        guard = functools.partial(self._guard, entry, cond)
        try:
            result = self.streams.append(DCB_STREAM, new, StreamState.ANY, DCB_TOPIC, guard=guard)
            entry.durable = True
        finally:
            if entry.req is not None:  # handled: no cycle (request, guard, entry) is left to the collector
                entry.req.guard = None
            self.flush(FLUSH_EVERY if entry.durable else 1)
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
            after = check_after(condition.after)
            if self._conflicts(condition.fail_if_events_match, after):
                raise ConditionFailedError(
                    f"an event matching the append condition exists after position {condition.after}")
        entry.req = req
        self._pending.add(entry)

    def _conflicts(self, query: Query, after: int) -> bool:
        """Whether an event after DCB position ``after`` matches ``query``: pending ones first
        (looked at before the index is read, so none is missed as it moves there)."""
        if self._pending.any_after(query, after):
            return True
        if after >= self.indexed_last:  # read after the pending ones: see flush
            return False
        with self.index.read() as txn:
            return any(self._item_first(txn, item, after) for item in (query.items or (_EVERYTHING,)))

    def _item_first(self, txn: Any, item: QueryItem, after: int) -> bool:
        if item.tags or item.types:
            return bool(self._item_records(txn, item, after, 1))
        cur = txn.cursor(db=self.dbs[DB_EVENTS])
        return bool(cur.set_range(_u64.pack(after + 1)))

    # --- reading ------------------------------------------------------------------------

    def _count(self, txn: Any, key: bytes) -> int:
        raw = txn.get(key, db=self.dbs[DB_META])
        return 0 if raw is None else int(_u64.unpack(raw)[0])

    def _item_records(self, txn: Any, item: QueryItem, after: int,
                      limit: int | None) -> list[SequencedEvent]:
        """The indexed events matching an item with tags or types, after ``after``, in order,
        up to ``limit``: the chunks of its rarest tag (the other tags and the types then
        checked on each), else of each of its types, merged."""
        if item.tags:
            counted = [(self._count(txn, b"g" + t.encode()), t) for t in item.tags]
            n, tag = min(counted)
            exact = len(item.tags) == 1 and not item.types
            recs = _chunk_records(txn, self.dbs[DB_TAGS], tag.encode() + b"\x00", after,
                                  limit if exact else None, n)
            if not exact:
                recs = [r for r in recs if item_matches(item, r.type, r.tags)]
                if limit is not None:
                    del recs[limit:]
            return recs
        runs = [_chunk_records(txn, self.dbs[DB_TYPES], t.encode() + b"\x00", after, limit,
                               self._count(txn, b"y" + t.encode())) for t in sorted(set(item.types))]
        recs = runs[0] if len(runs) == 1 else list(heapq.merge(*runs, key=_position))
        if limit is not None:
            del recs[limit:]
        return recs

    def _all_records(self, txn: Any, after: int, limit: int | None) -> list[SequencedEvent]:
        cur = txn.cursor(db=self.dbs[DB_EVENTS])
        if not cur.set_range(_u64.pack(after + 1)):
            return []
        values = cur.iternext(keys=False, values=True)
        return _decode_values(list(values if limit is None else itertools.islice(values, limit)))

    def read(self, query: Query | None = None, after: int | None = None,
             limit: int | None = None) -> TaggedRead:
        """The DCB events matching ``query`` after DCB position ``after``, in order, up to
        ``limit``; only events below the watermark (durable, no gap before them)."""
        self.streams.check_open()
        query = check_query(query)
        start = check_after(after)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be an int >= 0 or None, got {limit!r}")
        upto = self.streams.positions.watermark  # DCB positions up to it: global below it
        # what is pending is looked at before the index is read: an append that moves from one
        # to the other meanwhile is found in both, never in neither
        pending = _unique(sorted(self._pending.matching(query, start, upto), key=_position))
        tail = self._pending_last(upto) if limit is None else 0
        with self.index.read() as txn:
            records = self._matching(txn, query, start, upto, limit) if limit != 0 else []
            last = None if limit is not None else self._last(txn, upto)
        if pending:
            if records and pending[0].position <= records[-1].position:
                records = _unique(heapq.merge(records, pending, key=_position))
            else:  # the usual case: what is pending is newer than what is indexed
                records = records + pending
            if limit is not None:
                del records[limit:]
        if limit is not None:
            head = records[-1].position if records else None
        else:
            head = max(last or 0, tail) or None
        return TaggedRead(records, head)

    def head(self) -> int | None:
        """The store's last DCB position readers may see (None: none), as a read without a
        limit answers it."""
        self.streams.check_open()
        upto = self.streams.positions.watermark
        tail = self._pending_last(upto)  # before the index: see read
        with self.index.read() as txn:
            last = self._last(txn, upto)
        return max(last or 0, tail) or None

    def _pending_last(self, upto: int) -> int:
        """The last pending DCB position readers may see (0: none)."""
        best = 0
        for entry in reversed(self._pending.entries):  # bounded by the pending appends
            if entry.failed():
                continue
            for i in range(len(entry.events) - 1, -1, -1):  # bounded by the append's events
                pos = entry.position(i)
                if 0 < pos <= upto:
                    return max(best, pos)
        return best

    def _matching(self, txn: Any, query: Query, after: int, upto: int,
                  limit: int | None) -> list[SequencedEvent]:
        """The index's records matching ``query``: each item's, merged by position."""
        runs = [self._item_records(txn, item, after, limit) if item.tags or item.types
                else self._all_records(txn, after, limit)
                for item in query.items or (_EVERYTHING,)]  # bounded by the items
        merged = runs[0] if len(runs) == 1 else _unique(heapq.merge(*runs, key=_position))
        cut = len(merged)
        while cut and merged[cut - 1].position > upto:  # bounded by the records
            cut -= 1
        return merged[:cut if limit is None else min(cut, limit)]

    def _last(self, txn: Any, upto: int) -> int | None:
        """The last indexed DCB position up to ``upto``."""
        cur = txn.cursor(db=self.dbs[DB_EVENTS])
        if not cur.set_range(_u64.pack(upto + 1)):
            if not cur.last():
                return None
        elif not cur.prev():
            return None
        return int(_u64.unpack(cur.key())[0])

    def subscribe(self, query: Query | None = None, after: int | None = None,
                  page_events: int = PAGE_EVENTS) -> TaggedSubscription:
        """The matching events after ``after``, history then live."""
        self.streams.check_open()
        query = check_query(query)
        start = check_after(after)
        reader = _TaggedReader(self, query)
        return TaggedSubscription(Subscription(self.streams, cast(Any, reader), start, page_events))


def _position(event: SequencedEvent) -> int:
    return event.position


def _chunk_header(count: int) -> bytes:
    """A chunk's MessagePack array header, always 3 bytes (array 16) so it can be rewritten."""
    return b"\xdc" + count.to_bytes(2, "big")


def _last_chunk(cur: Any, prefix: bytes) -> tuple[bytes, bytes] | None:
    """The last chunk of ``prefix`` (key, value), if it has one; leaves ``cur`` on it."""
    found = cur.prev() if cur.set_range(prefix[:-1] + b"\x01") else cur.last()
    if found and cur.key().startswith(prefix):
        return bytes(cur.key()), bytes(cur.value())
    return None


def _append_chunks(txn: Any, db: Any, prefix: bytes, items: list[tuple[int, bytes]]) -> None:
    """Append encoded records (with their positions, increasing) to the chunks of ``prefix``:
    the last chunk is filled up to ``CHUNK`` records, then new ones are keyed by their first
    record's position."""
    cur = txn.cursor(db=db)
    last = _last_chunk(cur, prefix)
    taken = 0
    if last is not None:
        key, value = last
        count = int.from_bytes(value[1:3], "big")
        taken = min(CHUNK - count, len(items))
        if taken:
            added = b"".join(v for _, v in items[:taken])
            txn.put(key, _chunk_header(count + taken) + value[3:] + added, db=db)
    for start in range(taken, len(items), CHUNK):  # bounded by the records
        part = items[start:start + CHUNK]
        txn.put(prefix + _u64.pack(part[0][0]), _chunk_header(len(part)) + b"".join(v for _, v in part),
                db=db)


def _chunk_records(txn: Any, db: Any, prefix: bytes, after: int, limit: int | None,
                   total: int) -> list[SequencedEvent]:
    """The records of ``prefix``'s chunks with positions above ``after``, up to ``limit``.

    The chunks from the one that may hold ``after + 1`` are read with one cursor
    walk, each decoded in one call (a chunk is a MessagePack array of records).
    ``total`` (the prefix's count) says whether there is anything to read.
    """
    if total <= 0 or limit == 0:
        return []
    cur = txn.cursor(db=db)
    start = prefix + _u64.pack(after + 1)
    found = cur.set_range(start)
    if not (found and bytes(cur.key()) == start):  # the chunk before may hold later positions
        back = cur.prev() if found else cur.last()
        if not (back and cur.key().startswith(prefix)):
            if not found:
                return []
            cur.set_range(start)
    values: list[bytes] = []
    held = 0
    for key, value in cur:  # bounded by the prefix's chunks
        if not key.startswith(prefix):
            break
        values.append(value)
        held += int.from_bytes(value[1:3], "big")
        if limit is not None and held >= limit + CHUNK:
            break
    if not values:
        return []
    chunks = [_recs_dec.decode(v) for v in values]  # no joined copy of the range
    first = chunks[0]
    if first and first[0].position <= after:
        chunks[0] = first[bisect.bisect_right([r.position for r in first], after):]
    recs = chunks[0] if len(chunks) == 1 else list(itertools.chain.from_iterable(chunks))
    if limit is not None:
        del recs[limit:]
    return recs


def _unique(records: Iterable[SequencedEvent]) -> list[SequencedEvent]:
    out: list[SequencedEvent] = []
    last = -1
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


_layers_lock = threading.Lock()


def dcb_of(streams: Streams) -> DCB:
    """The one DCB layer of ``streams`` (made, and its tag index caught up, on first use).

    One per store: the appends it has pending are what every conditional append
    of the store, embedded or served, is checked against.
    """
    with _layers_lock:
        layer = streams.layers.get("dcb")
        if layer is None:
            streams.check_open()
            layer = streams.layers["dcb"] = DCB(streams)
        return cast(DCB, layer)
