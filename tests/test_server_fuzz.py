"""Whatever bytes one client sends, the server stays up for the others (Hypothesis, bounded).

One in-process server per test; each example opens its own connection, sends what was
drawn, and reads until the server closes or goes quiet; then a fresh connection must get
its ApiVersions answered. Frames of an API that does not exist must get no answer at all.
Also: the cache of converted native batches stays within its bound.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverkit import RawClient, served

import eventstore
from eventstore.server.batches import ConvertedBatches, as_kafka_batches
from eventstore.storage import format as fmt
from eventstore.wire.apis import SERVED
from eventstore.wire.batch import decode_records, parse_header

QUIET_S = 0.3
EXAMPLES = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(tmp_path_factory.mktemp("fuzz")) as (store, address):
        store.create_topic("t", partitions=2)
        store.append_batch("t", [b"a", b"b"])
        yield address


def _send_and_drain(bootstrap: str, data: bytes) -> bytes:
    """Send ``data``; everything the server writes back until it closes or is quiet."""
    got = b""
    with RawClient(bootstrap, timeout_s=QUIET_S) as client:
        try:
            client.send(data)
            while len(got) < 1 << 20:  # bounded; each pass reads at least one byte or ends
                chunk = client.sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
    return got


def _still_serving(bootstrap: str) -> None:
    with RawClient(bootstrap) as client:
        client.request(18, 0, 4242, b"")
        response = client.response()
    assert response is not None and struct.unpack_from(">ih", response) == (4242, 0)


def _frames(answer: bytes) -> list[bytes]:
    """The frames in ``answer``; each must be whole and well framed."""
    out = []
    position = 0
    while position < len(answer):  # one frame per pass
        (size,) = struct.unpack_from(">i", answer, position)
        assert 4 <= size <= len(answer) - position - 4, "a response frame cut or lying"
        out.append(answer[position + 4:position + 4 + size])
        position += 4 + size
    return out


@EXAMPLES
@given(data=st.binary(max_size=300))
def test_any_bytes(bootstrap: str, data: bytes) -> None:
    _frames(_send_and_drain(bootstrap, data))
    _still_serving(bootstrap)


@EXAMPLES
@given(api_key=st.sampled_from(sorted(SERVED)), version=st.integers(-2, 20),
       correlation_id=st.integers(0, 2**31 - 1), body=st.binary(max_size=200), flexible=st.booleans())
def test_served_apis_with_random_bodies(bootstrap: str, api_key: int, version: int, correlation_id: int,
                                        body: bytes, flexible: bool) -> None:
    tags = b"\x00" if flexible else b""
    header = struct.pack(">hhih", api_key, version, correlation_id, 3) + b"fuz" + tags
    frame = header + body
    answer = _send_and_drain(bootstrap, struct.pack(">i", len(frame)) + frame)
    for response in _frames(answer):  # at most the one answer, to this request
        assert struct.unpack_from(">i", response)[0] == correlation_id
    _still_serving(bootstrap)


@EXAMPLES
@given(api_key=st.integers(-32768, 32767).filter(lambda k: k not in SERVED and not 20000 <= k <= 20011),
       rest=st.binary(max_size=100))
def test_unknown_apis_get_nothing(bootstrap: str, api_key: int, rest: bytes) -> None:
    frame = struct.pack(">hhih", api_key, 0, 7, -1) + rest
    assert _send_and_drain(bootstrap, struct.pack(">i", len(frame)) + frame) == b""
    _still_serving(bootstrap)


def test_converted_batches_are_cached_within_their_bound(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        cfg = store.create_topic("t")
        for i in range(10):
            store.append("t", b"v" * 100, key=b"k%d" % i, headers=[("n", b"%d" % i)], timestamp_ms=1000 + i)
        stored, end = store.log.read_batches("t", 0, 0, 1 << 20)
        assert end == 10
        assert as_kafka_batches(b"", cfg.topic_id, 0, ConvertedBatches(0)) == b""
        cache = ConvertedBatches(1000)  # room for a few converted batches, not ten
        first = as_kafka_batches(stored, cfg.topic_id, 0, cache)
        assert cache.bytes <= 1000 and 0 < len(cache) < 10 and (cache.hits, cache.misses) == (0, 10)
        last = len(stored) - fmt.read_prefix(stored, 0)[1]  # the ten stored batches are the same size
        tail = first[len(first) - len(first) // 10:]
        assert as_kafka_batches(stored[last:], cfg.topic_id, 0, cache) == tail
        assert cache.hits == 1  # the last batch converted is still there
        assert as_kafka_batches(stored, cfg.topic_id, 0, cache) == first
        rows = []
        position = 0
        while position < len(first):  # one batch per pass
            header = parse_header(first, position)
            assert header.magic == 2 and header.compression == 0
            rows += decode_records(first[position:position + header.size])
            position += header.size
        assert rows == [(i, 1000 + i, b"k%d" % i, b"v" * 100, (("n", b"%d" % i),)) for i in range(10)]
