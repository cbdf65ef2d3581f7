"""The frame splitter: frames out of any chunking, bounded before buffering, fuzzed."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.errors import EventStoreError
from eventstore.wire import FrameSplitter, FrameTooLargeError, ProtocolError, frame


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.lists(st.integers(0, 10_000)))
def test_frames_come_out_whole_whatever_the_chunking(contents: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(c) for c in contents)
    splitter = FrameSplitter(max_frame_bytes=300)
    out: list[bytes] = []
    for chunk in chunked(stream, cuts):
        out += splitter.feed(chunk)
        assert splitter.buffered_bytes <= 4 + 300
    assert out == contents
    assert splitter.buffered_bytes == 0
    assert splitter.bytes_wanted == 4


def test_a_size_above_the_limit_fails_at_its_fourth_byte_before_anything_is_kept() -> None:
    splitter = FrameSplitter(max_frame_bytes=1000)
    assert splitter.feed(b"\x00\x00\x03") == []
    with pytest.raises(FrameTooLargeError) as caught:
        splitter.feed(b"\xe9")  # 1001
    assert caught.value.size == 1001 and caught.value.limit == 1000
    assert splitter.buffered_bytes == 0
    assert isinstance(caught.value, ProtocolError) and isinstance(caught.value, EventStoreError)
    with pytest.raises(FrameTooLargeError):  # unusable from then on
        splitter.feed(b"")


@pytest.mark.parametrize("size", [0, -1, -(2**31), 2**31 - 1])
def test_sizes_that_are_not_positive_or_too_large_fail(size: int) -> None:
    with pytest.raises(FrameTooLargeError):
        FrameSplitter().feed(struct.pack(">i", size) + b"x" * 10)


def test_the_frames_before_a_bad_size_are_answered_and_the_next_feed_raises() -> None:
    splitter = FrameSplitter(max_frame_bytes=100)
    data = frame(b"one") + frame(b"two") + struct.pack(">i", 101) + b"rest"
    assert splitter.feed(data) == [b"one", b"two"]
    assert splitter.failed is not None
    with pytest.raises(FrameTooLargeError):
        splitter.feed(b"more")


def test_a_partial_frame_waits_and_says_how_much_is_missing() -> None:
    splitter = FrameSplitter()
    assert splitter.bytes_wanted == 4
    assert splitter.feed(b"\x00\x00") == []
    assert splitter.bytes_wanted == 2
    assert splitter.feed(b"\x00\x05ab") == []
    assert splitter.bytes_wanted == 3
    assert splitter.buffered_bytes == 6
    assert splitter.feed(b"cde\x00\x00") == [b"abcde"]
    assert splitter.bytes_wanted == 2  # half of the next size is there
    assert splitter.feed(b"\x00\x01Z") == [b"Z"]


def test_a_frame_at_exactly_the_limit_passes() -> None:
    splitter = FrameSplitter(max_frame_bytes=64)
    assert splitter.feed(frame(b"x" * 64)) == [b"x" * 64]


def test_the_limit_must_be_a_positive_int32() -> None:
    with pytest.raises(ValueError):
        FrameSplitter(max_frame_bytes=0)
    with pytest.raises(ValueError):
        FrameSplitter(max_frame_bytes=2**31)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 4000), max_size=10))
def test_random_bytes_give_frames_or_a_protocol_error_and_memory_stays_bounded(
    data: bytes, cuts: list[int]
) -> None:
    limit = 512
    splitter = FrameSplitter(max_frame_bytes=limit)
    total = 0
    try:
        for chunk in chunked(data, cuts):
            for got in splitter.feed(chunk):
                assert 1 <= len(got) <= limit
                total += 4 + len(got)
            assert splitter.buffered_bytes <= 4 + limit
    except ProtocolError:
        return
    if splitter.failed is not None:  # frames before a bad size came out; the rest is refused
        return
    assert total + splitter.buffered_bytes == len(data)
