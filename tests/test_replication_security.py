"""ACLs, SCRAM users and client quotas reach a follower with the rest of the catalog
(docs/replication.md, section 5), and its running server decides from them at once.

A leader and an in-process follower on 127.0.0.1 (ports the system picked); what the
follower enforces is seen over the wire as an unauthenticated client (``User:ANONYMOUS``).
Every wait is bounded and every server is closed by its handle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clusterkit import until
from kafka import KafkaAdminClient
from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern
from kafka.admin import ResourceType as KafkaResourceType
from serverkit import RawClient

import eventstore
from eventstore.catalog import acls as acl_rows
from eventstore.catalog import quotas as quota_rows
from eventstore.catalog import users as user_rows
from eventstore.catalog.acls import Operation, PatternType, Permission, ResourceType
from eventstore.server.entities import entity, item_class

kio_index = pytest.importorskip("kio.index")

TIMEOUT_S = 30.0
ANON = "User:ANONYMOUS"
TOPIC_AUTHORIZATION_FAILED = 29
NOT_CONTROLLER = 41



@contextmanager
def pair(tmp_path: Path, before: Callable[[eventstore.Store], object]
         ) -> Iterator[tuple[eventstore.Store, str, eventstore.Store, str]]:
    """(leader, its address, follower, its address); ``before`` gets the leader's store before
    the follower starts, so what it writes comes in the follower's first (full) catalog."""
    with eventstore.open(tmp_path / "leader") as leader, leader.serve("127.0.0.1:0") as lh:
        before(leader)
        with eventstore.open(tmp_path / "follower") as follower, \
                follower.serve("127.0.0.1:0", replica_of=f"127.0.0.1:{lh.address[1]}", node_id=1) as fh:
            yield leader, f"127.0.0.1:{lh.address[1]}", follower, f"127.0.0.1:{fh.address[1]}"


def allow(resource_type: int, name: str, operation: int, principal: str = ANON) -> acl_rows.AclBinding:
    return acl_rows.binding(resource_type, name, PatternType.LITERAL, principal, "*", operation,
                            Permission.ALLOW)


def metadata_code(address: str, topic: str) -> int:
    """The follower's Metadata answer for ``topic`` to an unauthenticated client."""
    cls = kio_index.load_request_schema(3, 12)
    topic_cls = item_class(cls, "topics")
    with RawClient(address) as raw:
        answer = raw.call(entity(cls, topics=(entity(topic_cls, name=topic),),
                                 allow_auto_topic_creation=False))
    return int(answer.topics[0].error_code)


def described_quotas(address: str) -> list[tuple[Any, dict[str, float]]]:
    cls = kio_index.load_request_schema(48, 1)
    with RawClient(address) as raw:
        answer = raw.call(entity(cls, strict=False, components=()))
    return sorted((tuple((e.entity_type, e.entity_name) for e in entry.entity),
                   {v.key: v.value for v in entry.values}) for entry in answer.entries or ())


def test_acls_users_and_quotas_reach_a_follower_and_are_enforced(tmp_path: Path) -> None:
    def before(leader: eventstore.Store) -> None:
        leader.create_topic("t")
        leader.create_topic("u")
        acl_rows.add(leader.log.catalog, [
            allow(ResourceType.TOPIC, "u", Operation.DESCRIBE),
            allow(ResourceType.CLUSTER, acl_rows.CLUSTER_NAME, Operation.DESCRIBE_CONFIGS),
            allow(ResourceType.CLUSTER, acl_rows.CLUSTER_NAME, Operation.CLUSTER_ACTION)])

    with pair(tmp_path, before) as (leader, _leader_address, follower, address):
        catalog = follower.log.catalog
        until(lambda: len(acl_rows.load(catalog)) == 3, "the first ACLs on the follower")
        until(lambda: follower.log.find_topic("t") is not None, "the topics on the follower")
        # enforced: only 'u' may be described by an unauthenticated client
        assert metadata_code(address, "t") == TOPIC_AUTHORIZATION_FAILED
        assert metadata_code(address, "u") == 0

        # later changes come as a delta: an ACL added and one removed, a user, a quota
        acl_rows.add(leader.log.catalog, [allow(ResourceType.TOPIC, "t", Operation.DESCRIBE)])
        acl_rows.remove(leader.log.catalog, [allow(ResourceType.TOPIC, "u", Operation.DESCRIBE)])
        credential = user_rows.Credential(b"salt", 4096, b"s" * 32, b"k" * 32)
        user_rows.put(leader.log.catalog, "alice", "SCRAM-SHA-256", credential)
        quota_rows.replace(leader.log.catalog, {(("user", "alice"),): {"producer_byte_rate": 1024.0}})

        until(lambda: metadata_code(address, "t") == 0, "the added ACL enforced on the follower")
        until(lambda: metadata_code(address, "u") == TOPIC_AUTHORIZATION_FAILED, "the removed ACL enforced")
        until(lambda: user_rows.get(catalog, "alice") == {"SCRAM-SHA-256": credential}, "the user")
        until(lambda: described_quotas(address) == [((("user", "alice"),), {"producer_byte_rate": 1024.0})],
              "the quota in the follower's DescribeClientQuotas")

        # deletions too
        user_rows.delete(leader.log.catalog, "alice")
        quota_rows.replace(leader.log.catalog, {(("user", "alice"),): {}})
        until(lambda: not user_rows.get(catalog, "alice"), "the user deleted on the follower")
        until(lambda: described_quotas(address) == [], "the quota deleted on the follower")
        assert {(a.resource_name, a.operation) for a in acl_rows.load(catalog)} == {
            ("t", Operation.DESCRIBE), (acl_rows.CLUSTER_NAME, Operation.DESCRIBE_CONFIGS),
            (acl_rows.CLUSTER_NAME, Operation.CLUSTER_ACTION)}


def test_a_follower_needs_cluster_action_once_acls_exist(tmp_path: Path) -> None:
    """Followers connect unauthenticated (``User:ANONYMOUS``): with ACLs defined, the leader
    serves their ReplicaCatalog, replica Fetch and OffsetForLeaderEpoch only once CLUSTER_ACTION
    on the cluster is granted to them (here from their address)."""
    def before(leader: eventstore.Store) -> None:
        leader.create_topic("t")
        leader.append("t", b"one")
        acl_rows.add(leader.log.catalog, [
            allow(ResourceType.TOPIC, "t", Operation.READ, "User:alice"),
            allow(ResourceType.CLUSTER, acl_rows.CLUSTER_NAME, Operation.ALTER)])

    with pair(tmp_path, before) as (_leader, leader_address, follower, _address):
        time.sleep(1.5)  # three catalog retries: each refused
        assert follower.log.find_topic("t") is None
        admin = KafkaAdminClient(bootstrap_servers=leader_address)
        try:
            admin.create_acls([ACL(ANON, "127.0.0.1", ACLOperation.CLUSTER_ACTION, ACLPermissionType.ALLOW,
                                   ResourcePattern(KafkaResourceType.CLUSTER, acl_rows.CLUSTER_NAME))])
        finally:
            admin.close()
        until(lambda: follower.log.find_topic("t") is not None, "the topic once CLUSTER_ACTION is granted")
        until(lambda: follower.offsets("t", 0) == (0, 1), "the record replicated")


def _security_writes() -> dict[str, Any]:
    """One request of each security write (ACLs, SCRAM users, client quotas), by name."""
    def req(api: int, version: int, **fields: Any) -> Any:
        return entity(kio_index.load_request_schema(api, version), **fields)

    def item(api: int, version: int, *path: str, **fields: Any) -> Any:
        cls = kio_index.load_request_schema(api, version)
        for name in path:
            cls = item_class(cls, name)
        return entity(cls, **fields)

    return {
        "CreateAcls": req(30, 3, creations=(item(
            30, 3, "creations", resource_type=ResourceType.TOPIC, resource_name="t",
            resource_pattern_type=PatternType.LITERAL, principal="User:bob", host="*",
            operation=Operation.READ, permission_type=Permission.ALLOW),)),
        "DeleteAcls": req(31, 3, filters=(item(
            31, 3, "filters", resource_type_filter=1, resource_name_filter=None, pattern_type_filter=1,
            principal_filter=None, host_filter=None, operation=1, permission_type=1),)),
        "AlterUserScramCredentials": req(51, 0, deletions=(), upsertions=(item(
            51, 0, "upsertions", name="bob", mechanism=1, iterations=4096, salt=b"salt",
            salted_password=b"p" * 32),)),
        "AlterClientQuotas": req(49, 1, validate_only=False, entries=(item(
            49, 1, "entries",
            entity=(item(49, 1, "entries", "entity", entity_type="user", entity_name="bob"),),
            ops=(item(49, 1, "entries", "ops", key="producer_byte_rate", value=1024.0, remove=False),)),)),
    }


def _codes(answer: Any, field: str) -> list[int]:
    return [int(getattr(r.error_code, "value", r.error_code)) for r in getattr(answer, field)]


def test_a_follower_refuses_acl_user_and_quota_writes(tmp_path: Path) -> None:
    """They are the leader's to make (they reach followers with its catalog): a follower answers
    NOT_CONTROLLER per item, as for the other administrative writes, and writes nothing."""
    def before(leader: eventstore.Store) -> None:
        leader.create_topic("t")
        acl_rows.add(leader.log.catalog, [
            allow(ResourceType.TOPIC, "t", Operation.DESCRIBE, "User:alice"),
            allow(ResourceType.CLUSTER, acl_rows.CLUSTER_NAME, Operation.CLUSTER_ACTION),
            allow(ResourceType.CLUSTER, acl_rows.CLUSTER_NAME, Operation.ALTER),
            allow(ResourceType.CLUSTER, acl_rows.CLUSTER_NAME, Operation.ALTER_CONFIGS),
            allow(ResourceType.CLUSTER, acl_rows.CLUSTER_NAME, Operation.DESCRIBE_CONFIGS)])

    with pair(tmp_path, before) as (_leader, _leader_address, follower, address):
        catalog = follower.log.catalog
        until(lambda: len(acl_rows.load(catalog)) == 5, "the ACLs on the follower")
        fields = {"CreateAcls": "results", "DeleteAcls": "filter_results",
                  "AlterUserScramCredentials": "results", "AlterClientQuotas": "entries"}
        with RawClient(address) as raw:
            for name, request in _security_writes().items():
                assert _codes(raw.call(request), fields[name]) == [NOT_CONTROLLER], name
        assert len(acl_rows.load(catalog)) == 5
        assert not user_rows.get(catalog, "bob")
        assert described_quotas(address) == []
