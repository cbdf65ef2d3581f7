"""Who may use the web console (docs/operations.md, 6.2): ``--no-console`` turns it off; once the
store has a SCRAM user every console path asks for HTTP Basic credentials checked against the
stored SCRAM record, failures are delayed, and the API shows only what the principal's ACLs
allow; ``/healthz``, ``/readyz`` and ``/metrics`` stay open. No browser: plain HTTP requests."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from consolekit import console_server, request

import eventstore
from eventstore.catalog import acls as acl_rows
from eventstore.catalog import users as user_rows
from eventstore.catalog.acls import Operation, PatternType, Permission, ResourceType
from eventstore.server.auth import credential

OPEN_PATHS = ("/healthz", "/readyz", "/metrics")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def add_user(store: eventstore.Store, name: str, password: str) -> None:
    user_rows.put(store.log.catalog, name, "SCRAM-SHA-256", credential("SCRAM-SHA-256", password))


def as_user(address: str, path: str, who: str, status: int = 200) -> Any:
    got, _, body = request(address, path, headers=basic(who, f"{who}-secret"))
    assert got == status, (path, who, body)
    return json.loads(body)


def test_no_console_leaves_only_metrics_and_health(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch, console=False) as (_store, address):
        for path in ("/console", "/console/console.js", "/api/overview", "/api/topics"):
            assert request(address, path)[0] == 404, path
        for path in OPEN_PATHS:
            assert request(address, path)[0] == 200, path


def test_a_stored_user_makes_the_console_ask_for_credentials(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch) as (store, address):
        assert request(address, "/api/topics")[0] == 200  # no user yet: open
        add_user(store, "alice", "alice-secret")
        for path in ("/console", "/api/topics", "/api/overview", "/api/throughput"):
            status, headers, _ = request(address, path)
            assert status == 401, path
            assert headers["www-authenticate"].startswith("Basic ")
        for path in OPEN_PATHS:
            assert request(address, path)[0] == 200, path
        assert request(address, "/console", headers=basic("alice", "alice-secret"))[0] == 200
        assert len(as_user(address, "/api/topics", "alice")["topics"]) == 4
        started = time.monotonic()
        wrong = [request(address, "/api/topics", headers=headers)[0]
                 for headers in (basic("alice", "wrong"), basic("nobody", "alice-secret"),
                                 {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"})]
        assert wrong == [401] * 4
        assert time.monotonic() - started >= 0.1 + 0.2 + 0.4 + 0.8  # doubling per address
        assert request(address, "/api/topics", headers=basic("alice", "alice-secret"))[0] == 200


def _grants(store: eventstore.Store) -> None:
    """alice and bob; alice may describe and read 'orders', describe the group 'billing' and
    read the streams of category 'order'; bob may only describe 'audit'."""
    add_user(store, "alice", "alice-secret")
    add_user(store, "bob", "bob-secret")

    def allow(resource_type: int, name: str, operation: int, user: str) -> acl_rows.AclBinding:
        return acl_rows.binding(resource_type, name, PatternType.LITERAL, f"User:{user}", "*", operation,
                                Permission.ALLOW)

    acl_rows.add(store.log.catalog, [
        allow(ResourceType.TOPIC, "orders", Operation.READ, "alice"),
        allow(ResourceType.TOPIC, "order", Operation.READ, "alice"),
        allow(ResourceType.GROUP, "billing", Operation.DESCRIBE, "alice"),
        allow(ResourceType.TOPIC, "audit", Operation.DESCRIBE, "bob")])


def test_the_api_shows_what_the_principals_acls_allow(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with console_server(tmp_path, monkeypatch, _grants) as (store, address):
        # alice: READ implies DESCRIBE, as in Kafka
        assert [t["name"] for t in as_user(address, "/api/topics", "alice")["topics"]] == ["order", "orders"]
        assert as_user(address, "/api/topics/orders", "alice")["name"] == "orders"
        as_user(address, "/api/topics/audit", "alice", 403)
        assert len(as_user(address, "/api/messages?topic=orders", "alice")["records"]) == 6
        assert "alice" in as_user(address, "/api/messages?topic=audit", "alice", 403)["error"]
        assert [g["group"] for g in as_user(address, "/api/groups", "alice")["groups"]] == ["billing"]
        assert as_user(address, "/api/groups/billing", "alice")["group"] == "billing"
        streams = as_user(address, "/api/streams", "alice")
        assert streams["streams"] == ["order-1", "order-2"]
        assert streams["categories"] == [{"name": "order", "streams": 2}]
        assert as_user(address, "/api/streams/order-1", "alice")["version"] == 1
        as_user(address, "/api/streams/user-7", "alice", 403)
        overview = as_user(address, "/api/overview", "alice")
        seen = [p for p in store.statistics().partition_stats if p.topic in ("order", "orders")]
        assert (overview["topics"], overview["partitions"], overview["groups"]) == (2, len(seen), 1)
        assert overview["records"] == sum(p.end_offset - p.log_start_offset for p in seen) > 12

        # bob: describes 'audit' only; may read nothing
        assert [t["name"] for t in as_user(address, "/api/topics", "bob")["topics"]] == ["audit"]
        as_user(address, "/api/messages?topic=audit", "bob", 403)
        as_user(address, "/api/messages?topic=orders", "bob", 403)
        assert as_user(address, "/api/groups", "bob")["groups"] == []
        as_user(address, "/api/groups/billing", "bob", 403)
        assert as_user(address, "/api/streams", "bob")["streams"] == []
        as_user(address, "/api/streams/order-1", "bob", 403)
        assert as_user(address, "/api/overview", "bob")["groups"] == 0
