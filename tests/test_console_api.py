"""The web console's JSON API (docs/operations.md, 6), without a browser: figures equal to the
store's, bounded pages, values shown as text, JSON or hex, markup returned as data, the lag
history and throughput sampled, no write route, and errors as 400/404 with a JSON body."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from consolekit import MARKUP, console_server, get_json, request

from eventstore import OffsetAndMetadata, TopicPartition
from eventstore.server.console import RECORDS_MAX, VALUE_BYTES_MAX, shown

DEADLINE_S = 10.0


def test_topics_and_partitions_equal_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch) as (store, address):
        stats = {(p.topic, p.partition): p for p in store.statistics().partition_stats}
        topics = {t["name"]: t for t in get_json(address, "/api/topics")["topics"]}
        names = ["audit", "order", "orders", "user"]
        assert sorted(topics) == sorted(t.name for t in store.topics()) == names
        orders = topics["orders"]
        assert (orders["partition_count"], orders["retention_ms"], orders["records"]) == (2, 86_400_000, 12)
        for p in orders["partitions"]:
            s = stats[("orders", p["partition"])]
            assert (p["log_start_offset"], p["end_offset"], p["size_bytes"]) == (
                s.log_start_offset, s.end_offset, s.size_bytes)
        assert get_json(address, "/api/topics/orders") == orders
        overview = get_json(address, "/api/overview")
        assert (overview["topics"], overview["records"], overview["groups"], overview["read_only"]) == (
            4, store.statistics().records, 1, True)
        assert get_json(address, "/api/topics/nope", 404)["error"]


def test_group_lag_and_its_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch) as (store, address):
        assert get_json(address, "/api/groups")["groups"] == [
            {"group": "billing", "state": "Empty", "members": 0, "lag": 3 + 5}]
        deadline = time.monotonic() + DEADLINE_S
        while True:  # until the sampler has two samples
            group = get_json(address, "/api/groups/billing")
            if len(group["history"]["t"]) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [(p["topic"], p["partition"], p["committed"], p["end_offset"], p["lag"])
                for p in group["partitions"]] == [("orders", 0, 3, 6, 3), ("orders", 1, 1, 6, 5)]
        series = {(s["topic"], s["partition"]): s["lag"] for s in group["history"]["series"]}
        assert len(group["history"]["t"]) >= 2
        assert set(series[("orders", 0)]) == {3} and set(series[("orders", 1)]) == {5}
        store.groups.commit_offsets("billing", None, -1, {TopicPartition("orders", 1): OffsetAndMetadata(6)})
        assert get_json(address, "/api/groups/billing")["partitions"][1]["lag"] == 0
        assert get_json(address, "/api/groups/nobody", 404)["error"]


def test_throughput_counts_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch) as (store, address):
        deadline = time.monotonic() + DEADLINE_S
        seen = 0.0
        while seen == 0 and time.monotonic() < deadline:  # appends until a sample sees them
            store.append("orders", b"x", partition=0)
            time.sleep(0.05)
            seen = max((s["records_in_per_s"] for s in get_json(address, "/api/throughput")["samples"]),
                       default=0.0)
        assert seen > 0


def test_message_browser_by_offset_and_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch) as (store, address):
        page = get_json(address, "/api/messages?topic=orders&partition=1&offset=2&limit=3&format=json")
        expected = store.read("orders", 1, 2, max_records=3)
        assert [r["offset"] for r in page["records"]] == [r.offset for r in expected] == [2, 3, 4]
        assert json.loads(page["records"][0]["value"]["text"]) == json.loads(expected[0].value or b"")
        assert page["records"][0]["value"]["format"] == "json"
        assert (page["from_offset"], page["next_offset"], page["end_offset"]) == (2, 5, 6)
        at = expected[1].timestamp_ms
        by_time = get_json(address, f"/api/messages?topic=orders&partition=1&time={at}&limit=1")
        assert by_time["records"][0]["offset"] == store.offset_for_time("orders", 1, at)
        markup = get_json(address, "/api/messages?topic=audit")["records"]
        assert markup[0]["key"]["text"] == MARKUP and markup[0]["value"]["text"] == MARKUP
        assert markup[0]["headers"] == [{"key": "h", "value": shown(MARKUP.encode(), "text")}]
        big = markup[1]["value"]
        assert markup[1]["key"] is None
        assert (big["size"], big["truncated"], big["format"]) == (10240, True, "text")
        hexed = get_json(address, "/api/messages?topic=audit&offset=1&format=hex")["records"][0]["value"]
        assert hexed["text"].startswith("00 01 02") and len(hexed["text"].split()) == VALUE_BYTES_MAX
        as_json = get_json(address, "/api/messages?topic=audit&offset=1&format=json")["records"][0]["value"]
        assert as_json["format"] == "text"  # not JSON: shown as text, and said so


@pytest.mark.parametrize("query", ["topic=orders&limit=0", f"topic=orders&limit={RECORDS_MAX + 1}",
                                   "topic=orders&offset=x", "topic=orders&format=html", "partition=0"])
def test_bad_parameters_are_400(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str) -> None:
    with console_server(tmp_path, monkeypatch) as (_, address):
        assert get_json(address, f"/api/messages?{query}", 400)["error"]


def test_streams_by_category(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch) as (store, address):
        listing = get_json(address, "/api/streams?category=order")
        assert listing["categories"] == [{"name": "order", "streams": 2}, {"name": "user", "streams": 1}]
        assert listing["streams"] == ["order-1", "order-2"]
        assert get_json(address, "/api/streams?category=order&limit=1")["next_after"] == "order-1"
        one = get_json(address, "/api/streams/order-1?format=json")
        events = store.read_stream("order-1")
        assert [(e["version"], e["type"], e["position"]) for e in one["events"]] == [
            (e.version, e.type, e.position) for e in events]
        assert one["events"][1]["data"]["text"] == MARKUP
        assert get_json(address, "/api/streams/order-9", 404)["error"]


def test_read_only_and_page_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch) as (_, address):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/api/topics", "/api/topics/orders", "/api/messages", "/console"):
                assert request(address, path, method)[0] == 405
        status, headers, body = request(address, "/console")
        assert status == 200 and b"/console/console.js" in body
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert request(address, "/console/console.js")[1]["content-type"].startswith("text/javascript")
        assert request(address, "/console/other.js")[0] == 404
