"""Reads served from decoded chunks kept in memory return exactly what decoding the index does."""

from __future__ import annotations

import random
from typing import Any

import eventstore
from eventstore import NewEvent, StreamMetadata
from eventstore.sourcing.chunks import ChunkCache
from eventstore.sourcing.index import CHUNK_EVENTS


def _append(store: eventstore.Store, stream_id: str, start: int, count: int, per_append: int) -> None:
    for i in range(start, start + count, per_append):
        n = min(per_append, start + count - i)
        store.append_to_stream(stream_id, [NewEvent(type=f"E{i + k}") for k in range(n)])


def _expected(total: int, from_version: int, limit: int | None, backwards: bool) -> list[str]:
    types = [f"E{v}" for v in range(total)]
    if backwards:  # from_version 0 backwards means from the end, as read_stream says
        from_version = -1 if from_version == 0 else from_version
        top = total - 1 if from_version < 0 else min(from_version, total - 1)
        low = 0 if limit is None else max(0, top - limit + 1)
        return types[low:top + 1][::-1]
    last = total - 1 if limit is None else min(total - 1, from_version + limit - 1)
    return types[from_version:last + 1]


def _check_reads(store: eventstore.Store, total: int, rng: random.Random) -> None:
    cases = [(0, None, False), (0, None, True), (total - 1, 1, False)]
    cases += [(rng.randrange(total), rng.choice([None, 1, 127, 128, 129, 300]), rng.random() < 0.3)
              for _ in range(40)]
    for from_version, limit, backwards in cases:  # each twice: decoded, then (partly) cached
        for _ in range(2):
            got = [e.type for e in store.read_stream("order-1", from_version, limit, backwards)]
            assert got == _expected(total, from_version, limit, backwards), (from_version, limit, backwards)


def test_reads_across_chunk_boundaries_while_the_stream_grows(store: eventstore.Store) -> None:
    rng = random.Random(7)
    total = 0
    for count, per_append in [(5, 1), (CHUNK_EVENTS - 5, 50), (1, 1), (3 * CHUNK_EVENTS + 17, 100),
                              (CHUNK_EVENTS - 17, 7)]:
        _append(store, "order-1", total, count, per_append)
        total += count
        _check_reads(store, total, rng)
    events = store.read_stream("order-1")
    assert [e.version for e in events] == list(range(total))
    assert {(e.stream_id, e.topic) for e in events} == {("order-1", "order")}


def test_a_returned_list_is_the_callers_own(store: eventstore.Store) -> None:
    _append(store, "order-1", 0, 2 * CHUNK_EVENTS, 64)
    first = store.read_stream("order-1")
    first.clear()
    again = store.read_stream("order-1")
    assert len(again) == 2 * CHUNK_EVENTS
    again.reverse()
    assert store.read_stream("order-1")[0].version == 0


def test_metadata_still_hides_cached_events(store: eventstore.Store) -> None:
    _append(store, "order-1", 0, 3 * CHUNK_EVENTS, 128)
    assert len(store.read_stream("order-1")) == 3 * CHUNK_EVENTS  # now cached
    store.set_stream_metadata("order-1", StreamMetadata(max_count=10))
    assert [e.version for e in store.read_stream("order-1")] == list(range(374, 384))
    store.truncate_stream("order-1", 200)
    assert store.read_stream("order-1")[0].version == 374
    store.delete_stream("order-1")
    assert store.list_streams() == []


def test_a_topic_deleted_and_made_again_is_not_served_from_memory(store: eventstore.Store) -> None:
    _append(store, "order-1", 0, 2 * CHUNK_EVENTS, 128)
    assert len(store.read_stream("order-1")) == 2 * CHUNK_EVENTS
    store.delete_topic("order")
    store.append_to_stream("order-1", [NewEvent(type="Fresh") for _ in range(2 * CHUNK_EVENTS)])
    assert {e.type for e in store.read_stream("order-1")} == {"Fresh"}


def test_the_cache_keeps_a_bounded_number_of_chunks() -> None:
    cache = ChunkCache(chunks_max=3)
    chunk: list[Any] = [object()] * CHUNK_EVENTS
    cache.put("s", "t", 0, 0, [chunk] * 5 + [chunk[:3]])  # the last, partial, is not kept
    assert len(cache._chunks) == 3  # the first three: a read from the start finds them
    got, next_chunk = cache.run("s", "t", 0, 0, 4)
    assert (len(got), next_chunk) == (3 * CHUNK_EVENTS, 3)
    cache.put("u", "t", 0, 0, [chunk])
    assert cache.run("s", "t", 0, 0, 4) == ([], 0)  # the oldest went first
    assert cache.run("s", "t", 0, 1, 2)[1] == 3
    assert cache.run("s", "other", 0, 1, 2) == ([], 1)  # same stream id, other topic: no hit
    cache.forget_topic("t")
    assert cache.run("s", "t", 0, 1, 2) == ([], 1)
