"""A served store with data for the console's tests: topics, a consumer group with lag,
streams, and a record whose key and value are markup."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import eventstore
from eventstore import NewEvent, OffsetAndMetadata, StreamState, TopicPartition
from eventstore.server import console_history

TIMEOUT_S = 10.0
MARKUP = "<script>window.pwned=1</script><img src=x onerror=alert(1)>"


def fill(store: eventstore.Store) -> None:
    """Two topics, a group 3 records behind on one partition and 5 on another, two
    categories of streams, and a record with markup in its key, value and header."""
    store.create_topic("orders", partitions=2, retention_ms=86_400_000)
    store.create_topic("audit", partitions=1)
    for i in range(12):
        store.append("orders", key=f"k{i}".encode(), value=json.dumps({"n": i}).encode(), partition=i % 2)
    store.append("audit", key=MARKUP.encode(), value=MARKUP.encode(), headers=[("h", MARKUP.encode())])
    store.append("audit", key=None, value=bytes(range(256)) * 40)
    store.groups.commit_offsets("billing", None, -1, {TopicPartition("orders", 0): OffsetAndMetadata(3),
                                                      TopicPartition("orders", 1): OffsetAndMetadata(1)})
    store.append_to_stream("order-1", [NewEvent(type="Placed", data=b'{"total": 5}'),
                                       NewEvent(type="Paid", data=MARKUP.encode())], StreamState.NO_STREAM)
    store.append_to_stream("order-2", [NewEvent(type="Placed", data=b"{}")], StreamState.NO_STREAM)
    store.append_to_stream("user-7", [NewEvent(type="Joined", data=b"{}")], StreamState.NO_STREAM)


@contextmanager
def console_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   prepare: Callable[[eventstore.Store], object] | None = None,
                   **options: Any) -> Iterator[tuple[eventstore.Store, str]]:
    """A filled store served with an HTTP port sampling every 0.2 s: ``(store, host:port)``;
    ``prepare`` gets the store before it is served, ``options`` go to ``serve``."""
    monkeypatch.setattr(console_history, "SAMPLE_INTERVAL_S", 0.2)
    store = eventstore.open(tmp_path / "store")
    try:
        fill(store)
        if prepare is not None:
            prepare(store)
        handle = store.serve("127.0.0.1:0", http="127.0.0.1:0", **options)
        try:
            assert handle.http_address is not None
            yield store, f"127.0.0.1:{handle.http_address[1]}"
        finally:
            handle.close()
    finally:
        store.close()


def request(address: str, path: str, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get_json(address: str, path: str, status: int = 200) -> Any:
    got, headers, body = request(address, path)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)
