"""The slow-request log (docs/operations.md, section 4) counts a request's handling time,
not the wait it asked for: a Fetch long poll held for its ``max_wait_ms`` is not slow,
a handler that is slow on its own still is. In-process server on 127.0.0.1, port 0."""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from kio.index import load_request_schema
from serverkit import RawClient, served

from eventstore.server import dispatch
from eventstore.server.entities import entity, item_class

SLOW_MS = 150
LONG_POLL_MS = 600


def fetch(topic: str, max_wait_ms: int) -> Any:
    cls = load_request_schema(1, 11)
    topic_cls = item_class(cls, "topics")
    part = entity(item_class(topic_cls, "partitions"), partition=0, fetch_offset=0,
                  partition_max_bytes=1 << 20)
    return entity(cls, max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=1, max_bytes=1 << 20,
                  forgotten_topics_data=(), topics=(entity(topic_cls, topic=topic, partitions=(part,)),))


def slow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow request")]


def test_a_long_poll_wait_is_not_a_slow_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="eventstore.server")
    with served(tmp_path, slow_request_ms=SLOW_MS) as (store, bootstrap), RawClient(bootstrap) as raw:
        store.create_topic("t")
        started = time.monotonic()
        answer = raw.call(fetch("t", LONG_POLL_MS))  # nothing to read: held for max_wait_ms
        assert time.monotonic() - started >= LONG_POLL_MS / 1000 * 0.9
        assert answer.responses[0].partitions[0].records in (None, b"")
    assert slow_lines(caplog) == []


def test_a_handler_slow_on_its_own_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="eventstore.server")
    original = dispatch._answer

    async def sluggish(*args: Any) -> Any:
        import anyio

        await anyio.sleep(SLOW_MS * 2 / 1000)
        return await original(*args)

    monkeypatch.setattr(dispatch, "_answer", sluggish)
    with served(tmp_path, slow_request_ms=SLOW_MS) as (store, bootstrap), RawClient(bootstrap) as raw:
        store.create_topic("t")
        raw.call(fetch("t", 0))
    assert any(line.startswith("slow request: API 1 v11") for line in slow_lines(caplog)), caplog.records
