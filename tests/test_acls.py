"""ACLs: the model and its catalog rows, the authorizer's decisions, every API's check for
two principals (allowed, denied, no ACL), and the admin APIs and checks through kafka-python.

Real clients connect without authentication, as ``User:ANONYMOUS``; a second principal is
given to the checks directly (a connection's ``principal``, as authentication sets it).
"""

from __future__ import annotations

import json
import threading
import time
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import TopicAuthorizationFailedError
from serverkit import RawClient, es_serve, served
from typer.testing import CliRunner

import eventstore
from eventstore.catalog import acls as acl_rows
from eventstore.catalog.acls import AclBinding, AclFilter, Operation, PatternType, Permission
from eventstore.catalog.acls import ResourceType as RT
from eventstore.cli.app import app
from eventstore.errors import InvalidArgumentError
from eventstore.server.authorization import check, check_extension
from eventstore.server.authorizer import Authorizer
from eventstore.server.config import server_config
from eventstore.server.entities import entity, item_class, response_class
from eventstore.wire import RequestHeader
from eventstore.wire import extensions as extension_codec
from eventstore.wire.apis import SERVED
from eventstore.wire.header import parse_request_header
from eventstore.wire.messages import request_type

ALICE, BOB, ANON = "User:alice", "User:bob", "User:ANONYMOUS"
HOST = "127.0.0.1"


def acl(rt: int, name: str, op: int, principal: str = ALICE, perm: int = Permission.ALLOW,
        pattern: int = PatternType.LITERAL, host: str = "*") -> AclBinding:
    return acl_rows.binding(rt, name, pattern, principal, host, op, perm)


# --- the authorizer ----------------------------------------------------------------------


def test_no_acl_at_all_permits_everything() -> None:
    auth = Authorizer()
    assert auth.authorize(BOB, HOST, Operation.WRITE, RT.TOPIC, "t")


def test_once_an_acl_exists_an_unmatched_request_is_refused() -> None:
    auth = Authorizer([acl(RT.TOPIC, "orders", Operation.READ)])
    assert auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "orders")
    assert not auth.authorize(BOB, HOST, Operation.READ, RT.TOPIC, "orders")
    assert not auth.authorize(ALICE, HOST, Operation.WRITE, RT.TOPIC, "orders")
    assert not auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "other")


def test_allow_everyone_if_no_acl_found_opens_only_resources_without_acls() -> None:
    auth = Authorizer([acl(RT.TOPIC, "orders", Operation.READ)], allow_if_no_acl=True)
    assert auth.authorize(BOB, HOST, Operation.WRITE, RT.TOPIC, "other")
    assert not auth.authorize(BOB, HOST, Operation.READ, RT.TOPIC, "orders")


def test_prefixed_and_literal_patterns() -> None:
    auth = Authorizer([acl(RT.TOPIC, "sales-", Operation.READ, pattern=PatternType.PREFIXED),
                       acl(RT.TOPIC, "audit", Operation.READ)])
    assert auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "sales-eu")
    assert auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "sales-")
    assert not auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "sales")
    assert auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "audit")
    assert not auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "audit-log")  # literal is not a prefix


def test_deny_wins_over_allow() -> None:
    auth = Authorizer([acl(RT.TOPIC, "*", Operation.ALL),
                       acl(RT.TOPIC, "secret-", Operation.READ, perm=Permission.DENY,
                           pattern=PatternType.PREFIXED)])
    assert auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "public")
    assert not auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "secret-plans")
    assert auth.authorize(ALICE, HOST, Operation.WRITE, RT.TOPIC, "secret-plans")


def test_implied_operations() -> None:
    auth = Authorizer([acl(RT.TOPIC, "t", Operation.WRITE), acl(RT.TOPIC, "t", Operation.ALTER_CONFIGS)])
    assert auth.authorize(ALICE, HOST, Operation.DESCRIBE, RT.TOPIC, "t")
    assert auth.authorize(ALICE, HOST, Operation.DESCRIBE_CONFIGS, RT.TOPIC, "t")
    assert not auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "t")


def test_wildcard_principal_host_and_super_user() -> None:
    auth = Authorizer([acl(RT.GROUP, "g", Operation.READ, principal="User:*", host="10.0.0.1")],
                      super_users=[BOB])
    assert auth.authorize(ALICE, "10.0.0.1", Operation.READ, RT.GROUP, "g")
    assert not auth.authorize(ALICE, HOST, Operation.READ, RT.GROUP, "g")
    assert auth.authorize(BOB, HOST, Operation.DELETE, RT.CLUSTER, "kafka-cluster")


def test_replace_drops_cached_decisions() -> None:
    auth = Authorizer([acl(RT.TOPIC, "t", Operation.READ)])
    assert auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "t")
    auth.replace([acl(RT.TOPIC, "t", Operation.READ, perm=Permission.DENY)])
    assert not auth.authorize(ALICE, HOST, Operation.READ, RT.TOPIC, "t")


def test_a_check_looks_only_at_the_resource_acls() -> None:
    many = [acl(RT.TOPIC, f"topic-{i}", Operation.READ) for i in range(1000)]
    auth = Authorizer([*many, acl(RT.TOPIC, "topic-", Operation.WRITE, pattern=PatternType.PREFIXED)])
    assert len(auth.matching_resource(RT.TOPIC, "topic-7")) == 2


def test_bindings_are_checked() -> None:
    for bad in [dict(principal="alice"), dict(host=""), dict(resource_name=""), dict(operation=99),
                dict(pattern_type=PatternType.MATCH), dict(resource_type=RT.CLUSTER, resource_name="x")]:
        args = dict(resource_type=RT.TOPIC, resource_name="t", pattern_type=PatternType.LITERAL,
                    principal=ALICE, host="*", operation=Operation.READ, permission=Permission.ALLOW) | bad
        with pytest.raises(InvalidArgumentError):
            acl_rows.binding(**args)


def test_filters_match_as_kafka() -> None:
    prefixed = acl(RT.TOPIC, "sales-", Operation.READ, pattern=PatternType.PREFIXED)
    literal = acl(RT.TOPIC, "sales-eu", Operation.READ)
    match = AclFilter(resource_type=RT.TOPIC, resource_name="sales-eu", pattern_type=PatternType.MATCH)
    assert match.matches(prefixed) and match.matches(literal)
    assert not AclFilter(resource_name="sales-eu", pattern_type=PatternType.LITERAL).matches(prefixed)
    assert AclFilter(principal=ALICE).matches(literal) and not AclFilter(principal=BOB).matches(literal)


# --- the catalog rows ----------------------------------------------------------------------


def test_acls_survive_a_reopen_and_are_removed(tmp_path: Path) -> None:
    one, two = acl(RT.TOPIC, "t", Operation.READ), acl(RT.GROUP, "g", Operation.READ, principal=BOB)
    with eventstore.open(tmp_path / "s") as store:
        acl_rows.add(store.log.catalog, [one, two, one])
    with eventstore.open(tmp_path / "s") as store:
        assert sorted(acl_rows.load(store.log.catalog), key=str) == sorted([one, two], key=str)
        acl_rows.remove(store.log.catalog, [one])
        assert acl_rows.load(store.log.catalog) == [two]


# --- every API's check, for two principals -------------------------------------------------


class FakeBroker:
    def __init__(self, bindings: list[AclBinding], **options: Any) -> None:
        self.config = server_config("127.0.0.1:0", **options)
        self.state: dict[str, Any] = {"authorization": Authorizer(
            bindings, self.config.super_users, self.config.allow_everyone_if_no_acl_found)}
        self.log = types.SimpleNamespace(topic_by_id=lambda topic_id: None)


def ctx_for(broker: FakeBroker, principal: str) -> Any:
    return types.SimpleNamespace(broker=broker, principal=principal, client="127.0.0.1:40000", log=broker.log,
                                 state=broker.state)


def request(api_key: int, version: int, **values: Any) -> tuple[RequestHeader, Any]:
    cls = request_type(api_key, version)
    return RequestHeader(api_key, version, 1, "test", 2, 0), build(cls, values)


def build(cls: Any, values: dict[str, Any]) -> Any:
    """``values`` by field name; a list of dicts becomes items of the field's class."""
    out = {}
    for name, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            item = item_class(cls, name)
            out[name] = tuple(build(item, v) for v in value)
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return entity(cls, **out)


T, G, TX, C = RT.TOPIC, RT.GROUP, RT.TRANSACTIONAL_ID, RT.CLUSTER
TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED, TXN_DENIED = 29, 30, 31, 53
PARTS = [{"partition_index": 0}]

# api key, version, request fields, the ACL that permits it, the code a refusal carries
CASES: list[tuple[int, int, dict[str, Any], tuple[int, str, int], int]] = [
    (0, 9, {"acks": 1, "topic_data": [{"name": "t", "partition_data": [{"index": 0}]}]},
     (T, "t", Operation.WRITE), TOPIC_DENIED),
    (1, 12, {"topics": [{"topic": "t", "partitions": [{"partition": 0}]}]}, (T, "t", Operation.READ),
     TOPIC_DENIED),
    (2, 7, {"topics": [{"name": "t", "partitions": PARTS}]}, (T, "t", Operation.DESCRIBE), TOPIC_DENIED),
    (8, 8, {"group_id": "g", "topics": [{"name": "t", "partitions": PARTS}]}, (G, "g", Operation.READ),
     GROUP_DENIED),
    (9, 7, {"group_id": "g"}, (G, "g", Operation.DESCRIBE), GROUP_DENIED),
    (9, 8, {"groups": [{"group_id": "g"}]}, (G, "g", Operation.DESCRIBE), GROUP_DENIED),
    (10, 3, {"key": "g", "key_type": 0}, (G, "g", Operation.DESCRIBE), GROUP_DENIED),
    (10, 4, {"key_type": 1, "coordinator_keys": ["x"]}, (TX, "x", Operation.DESCRIBE), TXN_DENIED),
    (11, 5, {"group_id": "g"}, (G, "g", Operation.READ), GROUP_DENIED),
    (12, 4, {"group_id": "g"}, (G, "g", Operation.READ), GROUP_DENIED),
    (13, 4, {"group_id": "g"}, (G, "g", Operation.READ), GROUP_DENIED),
    (14, 5, {"group_id": "g"}, (G, "g", Operation.READ), GROUP_DENIED),
    (15, 5, {"groups": ["g"]}, (G, "g", Operation.DESCRIBE), GROUP_DENIED),
    (19, 5, {"topics": [{"name": "t"}]}, (T, "t", Operation.CREATE), TOPIC_DENIED),
    (20, 4, {"topic_names": ["t"]}, (T, "t", Operation.DELETE), TOPIC_DENIED),
    (21, 2, {"topics": [{"name": "t", "partitions": PARTS}]}, (T, "t", Operation.DELETE), TOPIC_DENIED),
    (22, 4, {"transactional_id": None}, (C, "kafka-cluster", Operation.IDEMPOTENT_WRITE), CLUSTER_DENIED),
    (22, 4, {"transactional_id": "x"}, (TX, "x", Operation.WRITE), TXN_DENIED),
    (23, 4, {"topics": [{"topic": "t", "partitions": [{"partition": 0}]}]}, (T, "t", Operation.DESCRIBE),
     TOPIC_DENIED),
    (29, 3, {"resource_type_filter": 1, "pattern_type_filter": 1, "operation": 1, "permission_type": 1},
     (C, "kafka-cluster", Operation.DESCRIBE), CLUSTER_DENIED),
    (30, 3, {"creations": [{"resource_type": 2, "resource_name": "t"}]},
     (C, "kafka-cluster", Operation.ALTER), CLUSTER_DENIED),
    (31, 3, {"filters": [{"resource_type_filter": 2}]}, (C, "kafka-cluster", Operation.ALTER),
     CLUSTER_DENIED),
    (32, 4, {"resources": [{"resource_type": 2, "resource_name": "t"}]}, (T, "t", Operation.DESCRIBE_CONFIGS),
     TOPIC_DENIED),
    (32, 4, {"resources": [{"resource_type": 4, "resource_name": "0"}]},
     (C, "kafka-cluster", Operation.DESCRIBE_CONFIGS), CLUSTER_DENIED),
    (33, 2, {"resources": [{"resource_type": 2, "resource_name": "t"}]}, (T, "t", Operation.ALTER_CONFIGS),
     TOPIC_DENIED),
    (44, 1, {"resources": [{"resource_type": 2, "resource_name": "t"}]}, (T, "t", Operation.ALTER_CONFIGS),
     TOPIC_DENIED),
    (35, 4, {}, (C, "kafka-cluster", Operation.DESCRIBE), CLUSTER_DENIED),
    (37, 3, {"topics": [{"name": "t", "count": 2}]}, (T, "t", Operation.ALTER), TOPIC_DENIED),
    (42, 2, {"groups_names": ["g"]}, (G, "g", Operation.DELETE), GROUP_DENIED),
    (47, 0, {"group_id": "g", "topics": [{"name": "t", "partitions": PARTS}]}, (G, "g", Operation.DELETE),
     GROUP_DENIED),
    (61, 0, {"topics": [{"name": "t", "partition_indexes": [0]}]}, (T, "t", Operation.READ), TOPIC_DENIED),
    (48, 1, {}, (C, "kafka-cluster", Operation.DESCRIBE_CONFIGS), CLUSTER_DENIED),
    (49, 1, {"entries": [{"entity": [{"entity_type": "user", "entity_name": "a"}]}]},
     (C, "kafka-cluster", Operation.ALTER_CONFIGS), CLUSTER_DENIED),
    (50, 0, {}, (C, "kafka-cluster", Operation.DESCRIBE), CLUSTER_DENIED),
    (51, 0, {"deletions": [{"name": "a", "mechanism": 1}]}, (C, "kafka-cluster", Operation.ALTER),
     CLUSTER_DENIED),
]


def codes(response: Any) -> set[int]:
    """Every ``error_code`` but NONE in a response, nested items included (Fetch's top level
    says NONE, its partitions the error, as Kafka answers)."""
    found: set[int] = set()
    stack = [response]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack.extend(item)
        elif hasattr(item, "__dataclass_fields__"):
            for name in item.__dataclass_fields__:
                value = getattr(item, name)
                if name == "error_code" and int(value) != 0:
                    found.add(int(value))
                else:
                    stack.append(value)
    return found


@pytest.mark.parametrize(("api_key", "version", "fields", "permits", "code"), CASES,
                         ids=[f"{c[0]}v{c[1]}-{c[3][2].name}" for c in CASES])
def test_every_api_checks_for_two_principals(api_key: int, version: int, fields: dict[str, Any],
                                             permits: tuple[int, str, int], code: int) -> None:
    if api_key not in SERVED:
        pytest.skip(f"API {api_key} is not served by this build")
    header, body = request(api_key, version, **fields)
    rt, name, op = permits
    extra = [acl(RT.TOPIC, "t", Operation.READ)] if api_key in (8, 47) else []  # their topic part
    allowing = FakeBroker([acl(rt, name, op), *extra])
    for principal, refused in ((ALICE, False), (BOB, True)):
        _, refusal, _ = check(ctx_for(allowing, principal), header, body)
        assert (refusal is not None) == refused, principal
        if refused:
            assert codes(refusal) == {code}
    denying = FakeBroker([acl(rt, name, op), *extra, acl(rt, name, op, perm=Permission.DENY)])
    _, refusal, _ = check(ctx_for(denying, ALICE), header, body)
    assert refusal is not None and codes(refusal) == {code}
    for no_acl in (FakeBroker([]), FakeBroker([acl(T, "other", Operation.READ)], super_users=[BOB])):
        _, refusal, _ = check(ctx_for(no_acl, BOB), header, body)
        assert refusal is None


NEW = {"id": uuid.UUID(int=1), "type": "Opened", "data": b"{}", "metadata": b""}
QUERY = [{"types": ["Opened"], "tags": []}]
# api key, request fields, the operation and topic that permit it
STREAM_CASES: list[tuple[int, dict[str, Any], int, str]] = [
    (20000, {"stream_id": "account-1", "topic": None, "expected_kind": 1, "expected_version": 0,
             "events": [NEW]}, Operation.WRITE, "account"),
    (20000, {"stream_id": "account-1", "topic": "ledger", "expected_kind": 1, "expected_version": 0,
             "events": [NEW]}, Operation.WRITE, "ledger"),
    (20001, {"stream_id": "account-1", "from_version": 0, "limit": 10, "backwards": False, "max_bytes": 1000},
     Operation.READ, "account"),
    (20002, {"from_position": 0, "limit": 10, "max_bytes": 1000}, Operation.READ, "*"),
    (20003, {"stream_id": "account-1"}, Operation.READ, "account"),
    (20004, {"stream_id": "account-1", "metadata": b"{}"}, Operation.WRITE, "account"),
    (20005, {"stream_id": "account-1"}, Operation.WRITE, "account"),
    (20006, {"stream_id": "account-1", "before_version": 1}, Operation.WRITE, "account"),
    (20007, {"kind": 1, "target": "account", "from": 0, "max_events": 10}, Operation.READ, "account"),
    (20007, {"kind": 2, "target": "account-1", "from": 0, "max_events": 10}, Operation.READ, "account"),
    (20008, {"stream_ids": ["account-1", "account-2"]}, Operation.READ, "account"),
    (20009, {"category": "account"}, Operation.DESCRIBE, "account"),
    (20009, {"category": None}, Operation.DESCRIBE, "*"),
    (20010, {"stream_id": "account-1"}, Operation.READ, "account"),
    (20012, {"events": [], "conditional": False, "fail_if_events_match": QUERY, "after": 0}, Operation.WRITE,
     "__dcb"),
    (20013, {"query": QUERY, "after": 0, "limit": 10, "max_bytes": 1000}, Operation.READ, "__dcb"),
]


@pytest.mark.parametrize(("api_key", "fields", "operation", "topic"), STREAM_CASES,
                         ids=[f"{c[0]}-{c[3]}" for c in STREAM_CASES])
def test_stream_apis_check_the_category_topic(api_key: int, fields: dict[str, Any], operation: int,
                                              topic: str) -> None:
    layout = dict(extension_codec.REQUESTS[api_key])
    values = {name: fields.get(name, extension_codec._empty(kind)) for name, kind in layout.items()}
    framed = extension_codec.encode_request(api_key, 7, values)[4:]
    header = parse_request_header(framed)
    allowing = FakeBroker([acl(T, topic, operation)])
    assert check_extension(ctx_for(allowing, ALICE), header, framed) is None
    refused = check_extension(ctx_for(allowing, BOB), header, framed)
    assert refused is not None
    assert extension_codec.decode_response(api_key, refused[4:])[1]["error_code"] == TOPIC_DENIED
    other = FakeBroker([acl(T, "elsewhere", Operation.ALL)])
    assert check_extension(ctx_for(other, ALICE), header, framed) is not None
    assert check_extension(ctx_for(FakeBroker([]), BOB), header, framed) is None


def test_metadata_lists_only_describable_topics() -> None:
    broker = FakeBroker([acl(T, "mine", Operation.READ)])
    header, body = request(3, 12, topics=[{"name": "mine"}, {"name": "theirs"}],
                           allow_auto_topic_creation=True)
    narrowed, refusal, after = check(ctx_for(broker, ALICE), header, body)
    assert refusal is None and after is not None
    assert [t.name for t in narrowed.topics] == ["mine"] and not narrowed.allow_auto_topic_creation
    cls = response_class(header)
    topic_cls = item_class(cls, "topics")
    answered = after(entity(cls, topics=(entity(topic_cls, name="mine"), entity(topic_cls, name="other"))))
    assert [(t.name, int(t.error_code)) for t in answered.topics] == [("mine", 0), ("theirs", TOPIC_DENIED)]


def test_list_groups_shows_only_describable_groups() -> None:
    broker = FakeBroker([acl(G, "mine", Operation.DESCRIBE)])
    header, body = request(16, 4)
    _, refusal, after = check(ctx_for(broker, ALICE), header, body)
    assert refusal is None and after is not None
    cls = response_class(header)
    group_cls = item_class(cls, "groups")
    groups = (entity(group_cls, group_id="mine"), entity(group_cls, group_id="x"))
    answered = after(entity(cls, groups=groups))
    assert [g.group_id for g in answered.groups] == ["mine"]


# --- one request, allowed and refused items: per item, as Kafka --------------------------------

MIXED_ACLS = [acl(T, "ok", Operation.ALL, principal=ANON, pattern=PatternType.PREFIXED),
              acl(G, "g", Operation.ALL, principal=ANON, pattern=PatternType.PREFIXED)]
"""ANONYMOUS may do everything on topics ``ok*`` and groups ``g*``, nothing on ``no*``, ``h*``
or the cluster."""


@contextmanager
def mixed(tmp_path: Path) -> Iterator[tuple[eventstore.Store, RawClient]]:
    """Topics ``ok`` and ``no`` with two records each, offsets 1 of both committed by group
    ``g`` and ``h``; the ACLs ``MIXED_ACLS``; a raw connection (``User:ANONYMOUS``)."""
    with served(tmp_path) as (store, bootstrap):
        for name in ("ok", "no"):
            store.create_topic(name)
            store.append_batch(name, [b"a", b"b"])
        for group in ("g", "h"):
            store.reset_group_offsets(group, {("ok", 0): 1, ("no", 0): 1})
        acl_rows.add(store.log.catalog, MIXED_ACLS)
        with RawClient(bootstrap) as client:
            yield store, client


def call(client: RawClient, api_key: int, version: int, **fields: Any) -> Any:
    return client.call(request(api_key, version, **fields)[1])


def by_name(items: Any, name_field: str = "name") -> dict[Any, Any]:
    return {getattr(i, name_field): i for i in items}


def part_codes(topics: Any, name_field: str = "name") -> dict[str, list[int]]:
    """``{topic: [each partition's error code]}`` of a response's topics."""
    return {getattr(t, name_field): [int(p.error_code) for p in t.partitions] for t in topics}


def committed(store: eventstore.Store, group: str) -> dict[str, int]:
    return {tp.topic: offset for tp, offset in store.group_offsets(group).items()}


def test_fetch_reads_the_allowed_topics_and_refuses_the_others(tmp_path: Path) -> None:
    with mixed(tmp_path) as (store, client):
        ids = {name: store.topic(name).topic_id for name in ("ok", "no")}
        for version, key, named in ((12, "topic", ids.keys()), (13, "topic_id", ids.values())):
            answer = call(client, 1, version, max_wait=0, min_bytes=1, max_bytes=1 << 20, topics=[
                {key: n, "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}
                for n in named])
            parts = {getattr(t, key): t.partitions[0] for t in answer.responses}
            ok, no = (parts[n] for n in named)
            assert (int(ok.error_code), int(ok.high_watermark)) == (0, 2) and ok.records
            assert (int(no.error_code), int(no.high_watermark)) == (TOPIC_DENIED, -1) and not no.records


def test_fetch_long_poll_watches_only_the_allowed_topics(tmp_path: Path) -> None:
    """At the end of both topics, an append to the refused one does not answer the poll."""
    with mixed(tmp_path) as (store, client):
        timer = threading.Timer(0.1, store.append, ("no", b"c"))
        timer.start()
        started = time.monotonic()
        try:
            answer = call(client, 1, 12, max_wait=1000, min_bytes=1, max_bytes=1 << 20, topics=[
                {"topic": n, "partitions": [{"partition": 0, "fetch_offset": 2, "partition_max_bytes": 1000}]}
                for n in ("ok", "no")])
        finally:
            timer.join(5)
        assert time.monotonic() - started >= 0.9
        assert part_codes(answer.responses, "topic") == {"ok": [0], "no": [TOPIC_DENIED]}
        assert store.offsets("no", 0) == (0, 3)


def test_offset_lookups_answer_per_topic(tmp_path: Path) -> None:
    """ListOffsets, OffsetForLeaderEpoch and DescribeProducers: the allowed topic answered,
    the refused one 29."""
    with mixed(tmp_path) as (_, client):
        listed = call(client, 2, 7, replica_id=-1, topics=[
            {"name": n, "partitions": [{"partition_index": 0, "timestamp": -1}]} for n in ("ok", "no")])
        assert {t.name: (int(t.partitions[0].error_code), int(t.partitions[0].offset))
                for t in listed.topics} == {"ok": (0, 2), "no": (TOPIC_DENIED, -1)}
        epochs = call(client, 23, 4, replica_id=-1, topics=[
            {"topic": n, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}
            for n in ("ok", "no")])
        assert part_codes(epochs.topics, "topic") == {"ok": [0], "no": [TOPIC_DENIED]}
        assert int(by_name(epochs.topics, "topic")["ok"].partitions[0].end_offset) == 2
        producers = call(client, 61, 0, topics=[{"name": n, "partition_indexes": [0]} for n in ("ok", "no")])
        assert part_codes(producers.topics) == {"ok": [0], "no": [TOPIC_DENIED]}


def test_offset_commit_commits_only_the_allowed_topics(tmp_path: Path) -> None:
    with mixed(tmp_path) as (store, client):
        def commit(group: str, *topics: str) -> Any:
            return call(client, 8, 8, group_id=group, generation_id_or_member_epoch=-1, member_id="", topics=[
                {"name": n, "partitions": [{"partition_index": 0, "committed_offset": 2}]} for n in topics])

        assert part_codes(commit("g", "ok", "no").topics) == {"ok": [0], "no": [TOPIC_DENIED]}
        assert committed(store, "g") == {"ok": 2, "no": 1}
        assert part_codes(commit("g2", "no").topics) == {"no": [TOPIC_DENIED]}
        assert part_codes(commit("h", "ok", "no").topics) == {"ok": [GROUP_DENIED], "no": [GROUP_DENIED]}
        assert "g2" not in store.list_groups() and committed(store, "h") == {"ok": 1, "no": 1}


def test_offset_fetch_shows_only_describable_topics(tmp_path: Path) -> None:
    """All of a group's partitions: the refused topic left out; named ones: 29 and no offset;
    v8 several groups: each decided on its own."""
    with mixed(tmp_path) as (_, client):
        everything = call(client, 9, 7, group_id="g", topics=None)
        assert [t.name for t in everything.topics] == ["ok"]
        named = call(client, 9, 7, group_id="g", topics=[{"name": n, "partition_indexes": [0]}
                                                          for n in ("ok", "no")])
        assert {t.name: (int(t.partitions[0].error_code), int(t.partitions[0].committed_offset))
                for t in named.topics} == {"ok": (0, 1), "no": (TOPIC_DENIED, -1)}
        no_0 = [{"name": "no", "partition_indexes": [0]}]
        groups = call(client, 9, 8, groups=[{"group_id": "g", "topics": None},
                                            {"group_id": "h", "topics": None},
                                            {"group_id": "g2", "topics": no_0}])
        assert [(g.group_id, int(g.error_code), part_codes(g.topics)) for g in groups.groups] == [
            ("g", 0, {"ok": [0]}), ("g2", 0, {"no": [TOPIC_DENIED]}), ("h", GROUP_DENIED, {})]


def test_offset_delete_deletes_only_the_allowed_topics(tmp_path: Path) -> None:
    with mixed(tmp_path) as (store, client):
        answer = call(client, 47, 0, group_id="g", topics=[{"name": n, "partitions": PARTS}
                                                           for n in ("ok", "no")])
        assert int(answer.error_code) == 0 and part_codes(answer.topics) == {"ok": [0], "no": [TOPIC_DENIED]}
        assert committed(store, "g") == {"no": 1}
        refused = call(client, 47, 0, group_id="h", topics=[{"name": "ok", "partitions": PARTS}])
        assert int(refused.error_code) == GROUP_DENIED and committed(store, "h") == {"ok": 1, "no": 1}


def test_topic_administration_per_topic(tmp_path: Path) -> None:
    """CreateTopics, CreatePartitions, DeleteRecords, DeleteTopics (by name, by id): the
    allowed topic changed, the refused one answered 29 and left as it was."""
    with mixed(tmp_path) as (store, client):
        created = call(client, 19, 5, topics=[{"name": n, "num_partitions": 1, "replication_factor": -1}
                                              for n in ("ok-new", "no-new")])
        assert {t.name: int(t.error_code) for t in created.topics} == {"ok-new": 0, "no-new": TOPIC_DENIED}
        assert {t.name for t in store.topics()} == {"ok", "no", "ok-new"}

        grown = call(client, 37, 3, topics=[{"name": n, "count": 2} for n in ("ok", "no")])
        assert {t.name: int(t.error_code) for t in grown.results} == {"ok": 0, "no": TOPIC_DENIED}
        assert (store.topic("ok").partitions, store.topic("no").partitions) == (2, 1)

        deleted = call(client, 21, 2, topics=[{"name": n, "partitions": [{"partition_index": 0, "offset": 1}]}
                                              for n in ("ok", "no")])
        assert part_codes(deleted.topics) == {"ok": [0], "no": [TOPIC_DENIED]}
        assert (store.offsets("ok", 0), store.offsets("no", 0)) == ((1, 2), (0, 2))

        gone = call(client, 20, 4, topic_names=["ok-new", "no"])
        assert {t.name: int(t.error_code) for t in gone.responses} == {"ok-new": 0, "no": TOPIC_DENIED}
        assert {t.name for t in store.topics()} == {"ok", "no"}
        ids = [store.topic(n).topic_id for n in ("ok", "no")]
        by_id = call(client, 20, 6, topics=[{"name": None, "topic_id": i} for i in ids])
        assert {t.topic_id: (t.name, int(t.error_code)) for t in by_id.responses} == {
            ids[0]: ("ok", 0), ids[1]: (None, TOPIC_DENIED)}  # no DESCRIBE on "no": its name not shown
        assert {t.name for t in store.topics()} == {"no"}


def test_configs_per_resource(tmp_path: Path) -> None:
    """DescribeConfigs answers the allowed topic, 29 for the refused one, 31 for the broker
    (no cluster ACL); AlterConfigs and IncrementalAlterConfigs change only the allowed topic."""
    with mixed(tmp_path) as (store, client):
        described = call(client, 32, 4, resources=[{"resource_type": 2, "resource_name": "ok"},
                                                   {"resource_type": 2, "resource_name": "no"},
                                                   {"resource_type": 4, "resource_name": ""}])
        assert {r.resource_name: int(r.error_code) for r in described.results} == {
            "ok": 0, "no": TOPIC_DENIED, "": CLUSTER_DENIED}
        assert by_name(described.results, "resource_name")["ok"].configs
        replaced = call(client, 33, 2, resources=[
            {"resource_type": 2, "resource_name": n, "configs": [{"name": "retention.ms", "value": "1000"}]}
            for n in ("ok", "no")])
        assert {r.resource_name: int(r.error_code) for r in replaced.responses} == {"ok": 0,
                                                                                    "no": TOPIC_DENIED}
        assert (store.topic("ok").retention_ms, store.topic("no").retention_ms) == (1000, None)
        altered = call(client, 44, 1, resources=[
            {"resource_type": 2, "resource_name": n,
             "configs": [{"name": "retention.ms", "config_operation": 0, "value": "2000"}]}
            for n in ("ok", "no")])
        assert {r.resource_name: int(r.error_code) for r in altered.responses} == {"ok": 0,
                                                                                   "no": TOPIC_DENIED}
        assert (store.topic("ok").retention_ms, store.topic("no").retention_ms) == (2000, None)


def test_group_administration_per_group(tmp_path: Path) -> None:
    """DescribeGroups, FindCoordinator v4 and DeleteGroups: the allowed group answered (and
    deleted), the refused one 30 (and kept)."""
    with mixed(tmp_path) as (store, client):
        described = call(client, 15, 5, groups=["g", "h"])
        assert {g.group_id: int(g.error_code) for g in described.groups} == {"g": 0, "h": GROUP_DENIED}
        found = call(client, 10, 4, key_type=0, coordinator_keys=["g", "h"])
        assert {c.key: int(c.error_code) for c in found.coordinators} == {"g": 0, "h": GROUP_DENIED}
        deleted = call(client, 42, 2, groups_names=["g", "h"])
        assert {g.group_id: int(g.error_code) for g in deleted.results} == {"g": 0, "h": GROUP_DENIED}
        assert committed(store, "g") == {} and committed(store, "h") == {"ok": 1, "no": 1}


# --- through kafka-python ------------------------------------------------------------------


def test_admin_client_manages_acls_and_produce_is_checked(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.create_topic("open-t")
        store.create_topic("closed-t")
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            everything = ResourcePattern(ResourceType.CLUSTER, "kafka-cluster")
            granted = [
                ACL(ANON, "*", ACLOperation.ALL, ACLPermissionType.ALLOW, everything),
                ACL(ANON, "*", ACLOperation.ALL, ACLPermissionType.ALLOW,
                    ResourcePattern(ResourceType.TOPIC, "open-", ACLResourcePatternType.PREFIXED)),
                ACL(ANON, "*", ACLOperation.ALL, ACLPermissionType.ALLOW,
                    ResourcePattern(ResourceType.GROUP, "*")),
                ACL(BOB, "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                    ResourcePattern(ResourceType.TOPIC, "closed-t")),
            ]
            result = admin.create_acls(granted)
            assert not result["failed"] and len(result["succeeded"]) == 4
            described, _ = admin.describe_acls(ACLFilter(
                principal=None, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
            assert len(described) == 4
            assert sorted(t for t in admin.list_topics()) == ["open-t"]

            producer = KafkaProducer(bootstrap_servers=bootstrap, retries=0, max_block_ms=5_000)
            try:
                producer.send("open-t", b"yes").get(timeout=10)
                with pytest.raises(TopicAuthorizationFailedError):
                    producer.send("closed-t", b"no").get(timeout=10)
            finally:
                producer.close(timeout=5)
            assert store.log.offsets("closed-t", 0)[1] == 0  # nothing written on the refused request

            consumer = KafkaConsumer("open-t", bootstrap_servers=bootstrap, group_id="g",
                                     auto_offset_reset="earliest", consumer_timeout_ms=5_000)
            try:
                assert [r.value for r in consumer] == [b"yes"]
            finally:
                consumer.close()

            removed = admin.delete_acls([ACLFilter(
                principal=BOB, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))])
            assert [len(matches) for _, matches, _ in removed] == [1]
            assert len(acl_rows.load(store.log.catalog)) == 3
        finally:
            admin.close()


def test_super_user_passes_every_check(tmp_path: Path) -> None:
    with served(tmp_path, super_users=[ANON]) as (store, bootstrap):
        acl_rows.add(store.log.catalog, [acl(T, "x", Operation.READ, principal=BOB)])
        store.create_topic("t")
        producer = KafkaProducer(bootstrap_servers=bootstrap, retries=0, max_block_ms=5_000)
        try:
            producer.send("t", b"v").get(timeout=10)
        finally:
            producer.close(timeout=5)
        assert store.log.offsets("t", 0)[1] == 1


# --- es acls -----------------------------------------------------------------------------


def test_es_acls_add_list_remove(tmp_path: Path) -> None:
    data = str(tmp_path / "s")
    eventstore.open(data).close()
    runner = CliRunner()

    def es(*args: str) -> Any:
        return runner.invoke(app, [*args[:2], "--data", data, *args[2:]])

    added = es("acls", "add", "--principal", ALICE, "--operation", "read", "--operation", "WRITE",
               "--topic", "sales-", "--prefixed")
    assert added.exit_code == 0, added.output
    bob_on_g = ("--principal", BOB, "--operation", "READ", "--group", "g")
    assert es("acls", "add", *bob_on_g, "--deny").exit_code == 0
    listed = es("acls", "list", "--json", "--topic", "sales-eu")
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [(r["principal"], r["operation"]) for r in rows] == [(ALICE, "READ"), (ALICE, "WRITE")]
    not_denied = es("acls", "remove", *bob_on_g)
    assert not_denied.exit_code == 1  # it was added with --deny
    assert es("acls", "remove", *bob_on_g, "--deny").exit_code == 0
    bad = es("acls", "add", "--principal", "bob", "--operation", "READ", "--topic", "t")
    assert bad.exit_code == 1 and "TYPE:NAME" in bad.output
    with eventstore.open(data) as store:
        assert {a.principal for a in acl_rows.load(store.log.catalog)} == {ALICE}


def test_es_serve_super_user_flag(tmp_path: Path) -> None:
    data = tmp_path / "s"
    with eventstore.open(data) as store:
        store.create_topic("t")
        acl_rows.add(store.log.catalog, [acl(T, "t", Operation.READ, principal=BOB)])
    for flags, permitted in (((), False), (("--super-user", "User:carol", "--super-user", ANON), True)):
        with es_serve(data, *flags) as server:
            producer = KafkaProducer(bootstrap_servers=server.bootstrap, retries=0, max_block_ms=5_000)
            try:
                sent = producer.send("t", b"v")
                if permitted:
                    sent.get(timeout=10)
                else:
                    with pytest.raises(TopicAuthorizationFailedError):
                        sent.get(timeout=10)
            finally:
                producer.close(timeout=5)
    with eventstore.open(data) as store:
        assert store.log.offsets("t", 0)[1] == 1
