"""Rule K5 on batches of many records of one shape (docs/format.md, 17.2): the append path
checks runs of same-shaped records field by field over all of them at once; it must accept
and refuse exactly what the codec's decoder does, whatever is changed in the records.

The batches are what producers send: fixed-size values, null or fixed-size keys, no
headers, timestamp deltas of one or two bytes, offset deltas of one to three bytes,
with records of another shape among them.
"""

from __future__ import annotations

import random
import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.batches import check_kafka_records
from eventstore.wire import batch as kb
from eventstore.wire.errors import CorruptRecordError

TS = 1_700_000_000_000
MAX_TIMESTAMP_AT = 35  # the header's max_timestamp (int64)
RECORDS_AT = 61


def fix_crc(batch: bytearray) -> bytearray:
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    return batch


def uniform_batch(count: int, seed: int, *, key_size: int | None, value_size: int, ts_spread: int,
                  odd: int = 0) -> bytearray:
    """``count`` records of one shape (random values, timestamps within ``ts_spread`` ms of the
    first), ``odd`` of them of another shape (another value size, or a header)."""
    rnd = random.Random(seed)
    odd_at = set(rnd.sample(range(count), min(odd, count)))
    rows = []
    for i in range(count):  # bounded by count
        size = value_size + rnd.randint(1, 5) if i in odd_at and rnd.random() < 0.5 else value_size
        headers = (("h", b"v"),) if i in odd_at and size == value_size else ()
        key = None if key_size is None else rnd.randbytes(key_size)
        ts = TS if i == 0 else TS + rnd.randint(0, ts_spread)
        rows.append((i, ts, key, rnd.randbytes(size), headers))
    return bytearray(kb.encode_batch(rows))


def agree(batch: bytearray) -> bool:
    """Whether the append path's check and the decoder agree on ``batch``; and what they said
    (False too for a header K1-K4 refuse, e.g. a max_timestamp before the base timestamp)."""
    try:
        header = kb.check_batch(bytes(fix_crc(batch)))
    except CorruptRecordError:
        return False
    try:
        kb.decode_records(batch, verify=False)
        decoded = True
    except CorruptRecordError:
        decoded = False
    try:
        check_kafka_records(batch, header)
        checked = True
    except CorruptRecordError:
        checked = False
    assert checked == decoded
    return checked


@settings(max_examples=300, deadline=None)
@given(count=st.integers(1, 300), seed=st.integers(0, 1 << 32),
       key_size=st.one_of(st.none(), st.integers(0, 3)), value_size=st.integers(0, 150),
       ts_spread=st.sampled_from([0, 5, 63, 64, 300, 9000]), odd=st.integers(0, 3),
       max_ts_shift=st.sampled_from([0, 0, -1, -3, -70, 1]),
       flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=3))
def test_runs_of_one_shape_are_checked_as_the_decoder_reads_them(
        count: int, seed: int, key_size: int | None, value_size: int, ts_spread: int, odd: int,
        max_ts_shift: int, flips: list[tuple[int, int]]) -> None:
    batch = uniform_batch(count, seed, key_size=key_size, value_size=value_size, ts_spread=ts_spread, odd=odd)
    max_ts = struct.unpack_from(">q", batch, MAX_TIMESTAMP_AT)[0]
    struct.pack_into(">q", batch, MAX_TIMESTAMP_AT, max_ts + max_ts_shift)
    for at, value in flips:
        batch[RECORDS_AT + at % (len(batch) - RECORDS_AT)] = value
    agree(batch)


def test_an_untouched_batch_of_every_shape_is_accepted() -> None:
    """The runs accept what they should (a check that refused everything would pass the test above)."""
    for count, ts_spread in ((1, 0), (64, 5), (65, 63), (3000, 70), (9000, 5)):  # bounded
        for key_size in (None, 4):
            assert agree(uniform_batch(count, count, key_size=key_size, value_size=100, ts_spread=ts_spread))


@pytest.mark.parametrize("count", [9_000, 70_000])
def test_one_changed_byte_in_a_long_batch_is_found_wherever_it_is(count: int) -> None:
    """A batch past the two-byte (8,192) and the tabled (65,536) offset deltas: one byte of one
    record changed (its length, offset delta, timestamp, size varints, header count) is refused,
    or accepted only where the decoder accepts it too (a value byte)."""
    batch = uniform_batch(count, 7, key_size=None, value_size=20, ts_spread=5)
    assert agree(batch)
    rnd = random.Random(count)
    refused = 0
    for _ in range(60):  # bounded
        changed = bytearray(batch)
        at = rnd.randrange(RECORDS_AT, len(batch))
        changed[at] ^= 1 << rnd.randrange(8)
        refused += not agree(changed)
    assert refused > 0
