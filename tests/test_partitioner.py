"""Kafka-compatible key partitioning: murmur2 bit for bit, and where appends land."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventstore
from eventstore import Message, murmur2, partition_for_key

# org.apache.kafka.common.utils.UtilsTest#testMurmur2
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def _i32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _java_murmur2(data: bytes) -> int:
    """A line-by-line transcription of Kafka's Java ``Utils.murmur2`` with int overflow."""
    length = len(data)
    seed = _i32(0x9747B28C)
    m = 0x5BD1E995
    r = 24
    h = _i32(seed ^ length)
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (data[i4] & 0xFF) + ((data[i4 + 1] & 0xFF) << 8) + ((data[i4 + 2] & 0xFF) << 16) + (
            (data[i4 + 3] & 0xFF) << 24
        )
        k = _i32(k)
        k = _i32(k * m)
        k ^= (k & 0xFFFFFFFF) >> r  # k >>> r
        k = _i32(k)
        k = _i32(k * m)
        h = _i32(h * m)
        h = _i32(h ^ k)
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h = _i32(h ^ ((data[tail + 2] & 0xFF) << 16))
    if rest >= 2:
        h = _i32(h ^ ((data[tail + 1] & 0xFF) << 8))
    if rest >= 1:
        h = _i32(h ^ (data[tail] & 0xFF))
        h = _i32(h * m)
    h = _i32(h ^ ((h & 0xFFFFFFFF) >> 13))
    h = _i32(h * m)
    h = _i32(h ^ ((h & 0xFFFFFFFF) >> 15))
    return h


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
def test_murmur2_kafka_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_reference_transcription_matches_the_kafka_vectors() -> None:
    for data, expected in KAFKA_VECTORS:
        assert _java_murmur2(data) == expected


@given(st.binary(max_size=64))
def test_murmur2_matches_the_java_transcription(data: bytes) -> None:
    h = murmur2(data)
    assert -(2**31) <= h < 2**31
    assert h == _java_murmur2(data)


def test_murmur2_of_every_tail_length_and_high_bytes() -> None:
    """Bytes ≥ 0x80 are signed in Java; every length mod 4 takes a different tail path."""
    for n in range(0, 13):
        data = bytes((0x80 + 37 * i) & 0xFF for i in range(n))
        assert murmur2(data) == _java_murmur2(data), n


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
@pytest.mark.parametrize("partitions", [1, 2, 3, 7, 16, 100])
def test_partition_for_key_is_positive_murmur2_mod_n(data: bytes, expected: int, partitions: int) -> None:
    assert partition_for_key(data, partitions) == (expected & 0x7FFFFFFF) % partitions


@given(st.binary(max_size=40), st.integers(1, 1000))
def test_partition_for_key_in_range(data: bytes, partitions: int) -> None:
    p = partition_for_key(data, partitions)
    assert 0 <= p < partitions
    assert p == (_java_murmur2(data) & 0x7FFFFFFF) % partitions


def _keys(n: int) -> list[bytes]:
    return [f"key-{i}".encode() for i in range(n)]


def test_keyed_append_lands_on_the_key_partition(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=5)
    for key in _keys(60):
        meta = store.append("t", b"v:" + key, key=key)
        assert meta.partition == partition_for_key(key, 5)
        got = store.read("t", meta.partition, meta.offset, max_records=1)
        assert got[0].key == key and got[0].value == b"v:" + key


def test_kafka_vector_keys_land_where_kafka_puts_them(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=6)
    for data, expected in KAFKA_VECTORS:
        assert store.append("t", b"x", key=data).partition == (expected & 0x7FFFFFFF) % 6


def test_keyed_append_batch_lands_on_the_key_partition(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=4)
    keys = _keys(40)
    items: list[object] = []
    for i, key in enumerate(keys):
        items.append((key, b"pair") if i % 2 else Message(value=b"msg", key=key))
    metas = store.append_batch("t", items)
    for key, meta in zip(keys, metas, strict=True):
        assert meta.partition == partition_for_key(key, 4)
        assert store.read("t", meta.partition, meta.offset, max_records=1)[0].key == key


def test_explicit_partition_wins_over_the_key(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=4)
    key = next(k for k in _keys(20) if partition_for_key(k, 4) != 3)
    assert store.append("t", b"v", key=key, partition=3).partition == 3
    metas = store.append_batch("t", [Message(value=b"v", key=key, partition=3), (key, b"w")], partition=1)
    assert [m.partition for m in metas] == [3, 1]


def test_same_key_same_partition_after_reopen(open_store: Callable[..., eventstore.Store]) -> None:
    s = open_store()
    s.create_topic("t", partitions=7)
    before = {k: s.append("t", b"v", key=k).partition for k in _keys(30)}
    s.close()
    s = open_store()
    assert {k: s.append("t", b"v", key=k).partition for k in _keys(30)} == before


def test_keyless_appends_round_robin_over_every_partition(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=4)
    parts = [store.append("t", b"v").partition for _ in range(40)]
    assert Counter(parts) == {0: 10, 1: 10, 2: 10, 3: 10}
    # strictly cyclic: each append goes to the partition after the previous one
    for a, b in itertools.pairwise(parts):
        assert b == (a + 1) % 4
    for p in range(4):
        assert store.offsets("t", p) == (0, 10)


def test_keyless_append_batch_calls_are_sticky_and_spread(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=3)
    used = []
    for i in range(12):
        items = [b"a", b"b", b"c"] if i % 2 else [b"a", None, Message(value=b"c")]
        metas = store.append_batch("t", items)
        partitions = {m.partition for m in metas}
        assert len(partitions) == 1  # one call, one partition
        used.append(partitions.pop())
    assert set(used) == {0, 1, 2}
    assert Counter(used) == {0: 4, 1: 4, 2: 4}


def test_keyless_and_keyed_items_in_one_batch(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=8)
    keys = _keys(16)
    items: list[object] = []
    for key in keys:
        items += [(key, b"k"), b"free"]
    metas = store.append_batch("t", items)
    keyless = {m.partition for m, item in zip(metas, items, strict=True) if not isinstance(item, tuple)}
    assert len(keyless) == 1
    for key, meta in zip(keys, metas[0::2], strict=True):
        assert meta.partition == partition_for_key(key, 8)
