"""The ACL matrix through real Kafka clients (docs/operations.md, section 2.2): every API that
names a resource, in three cases (allowed, denied, no ACL), for two SASL SCRAM principals, alice and bob.

One server per module, with a SASL_PLAINTEXT listener on 127.0.0.1 and the super user
``User:admin``, who prepares each case's resources and ACLs and reads back what was done. One
standing ACL (for ``User:carol``, on a topic no case uses) keeps checking on throughout.

Each case varies one ACL, the API's *target* need (the first of ``Api.needs``); its other needs
are granted in every case, so a refusal can only come from the target:

- ``allowed``: an ALLOW of the target for the principal: the request is served and done;
- ``denied``: an ALLOW of the target for both principals and a DENY for this one (DENY wins):
  refused with Kafka's code and nothing done; then the *other* principal sends the same request
  on the same state and is served, so the refusal was this principal's alone;
- ``no_acl``: nothing names the target (ACLs exist elsewhere): refused, nothing done.

Requests go out on kafka-python's authenticated connections (``KafkaNetClient`` and its
``kafka.protocol`` request classes), so exact error codes can be checked; produce, consume in a
group, topic creation and the ACL APIs also go through kafka-python's and confluent-kafka's
high-level clients. Every request has a bounded timeout; clients are closed by the test, the
server by its handle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import pytest
from kafka.net.compat import KafkaNetClient
from kafka.protocol.admin import (
    AlterClientQuotasRequest,
    AlterConfigsRequest,
    AlterUserScramCredentialsRequest,
    CreateAclsRequest,
    CreatePartitionsRequest,
    CreateTopicsRequest,
    DeleteAclsRequest,
    DeleteGroupsRequest,
    DeleteRecordsRequest,
    DeleteTopicsRequest,
    DescribeAclsRequest,
    DescribeClientQuotasRequest,
    DescribeConfigsRequest,
    DescribeGroupsRequest,
    DescribeLogDirsRequest,
    DescribeProducersRequest,
    DescribeUserScramCredentialsRequest,
    IncrementalAlterConfigsRequest,
    ListGroupsRequest,
)
from kafka.protocol.consumer import (
    FetchRequest,
    HeartbeatRequest,
    JoinGroupRequest,
    LeaveGroupRequest,
    ListOffsetsRequest,
    OffsetCommitRequest,
    OffsetDeleteRequest,
    OffsetFetchRequest,
    OffsetForLeaderEpochRequest,
    SyncGroupRequest,
)
from kafka.protocol.metadata import FindCoordinatorRequest, MetadataRequest
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest
from kafka.record.memory_records import MemoryRecordsBuilder

import eventstore
from eventstore.catalog import users
from eventstore.catalog.acls import Operation, PatternType, Permission, ResourceType
from eventstore.server.auth import credential

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TIMEOUT_S: Final = 15.0
TIMEOUT_MS: Final = int(TIMEOUT_S * 1000)
NODE: Final = "bootstrap-0"
PASSWORDS: Final = {"alice": "alice-secret", "bob": "bob-secret", "admin": "admin-secret"}
MECHANISMS: Final = {"alice": "SCRAM-SHA-256", "bob": "SCRAM-SHA-512", "admin": "SCRAM-SHA-512"}
OTHER: Final = {"alice": "bob", "bob": "alice"}
CASES: Final = ("allowed", "denied", "no_acl")
STANDING_TOPIC: Final = "elsewhere"

NONE, TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED = 0, 29, 30
CLUSTER_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 31, 53
INVALID_CONFIG, MEMBER_ID_REQUIRED = 40, 79
ANY: Final = 1
"""ANY in a filter: resource type, pattern type, operation and permission alike."""
TOPIC_CONFIG, BROKER_CONFIG = 2, 4
CLUSTER_NAME: Final = "kafka-cluster"


# --- the server and its clients ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Names:
    """The resources of one case, unique to it: no case sees another's topics, groups or users."""

    topic: str
    group: str
    txn: str
    user: str
    client_id: str

    @classmethod
    def of(cls, api: str, case: str, who: str) -> Names:
        slug = "-".join("".join(c if c.isalnum() else " " for c in f"{api} {case} {who}".lower()).split())
        return cls(topic=f"t-{slug}", group=f"g-{slug}", txn=f"x-{slug}", user=f"u-{slug}",
                   client_id=f"c-{slug}")


Need = tuple[int, str, int]
"""``(resource type, resource name, operation)``."""


def client_options(who: str, bootstrap: str) -> dict[str, Any]:
    """kafka-python's options for ``who`` over SASL SCRAM."""
    return {"bootstrap_servers": bootstrap, "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": MECHANISMS[who], "sasl_plain_username": who,
            "sasl_plain_password": PASSWORDS[who], "request_timeout_ms": 10_000}


def confluent_options(who: str, bootstrap: str) -> dict[str, Any]:
    """confluent-kafka's (librdkafka's) options for ``who`` over SASL SCRAM."""
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": MECHANISMS[who], "sasl.username": who, "sasl.password": PASSWORDS[who]}


class World:
    """The served store as its clients see it: one authenticated connection per principal."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.clients = {who: KafkaNetClient(**client_options(who, bootstrap)) for who in PASSWORDS}
        self.members: dict[str, tuple[str, int]] = {}
        """The super user's ``(member id, generation)`` in each group it joined."""

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def send(self, who: str, request: Any) -> Any:
        return self.clients[who].send_and_receive(NODE, request, timeout_ms=TIMEOUT_MS)

    # --- the super user's preparations and read-backs ---

    def create_topic(self, name: str, partitions: int = 1) -> None:
        topic = CreateTopicsRequest.CreatableTopic(name=name, num_partitions=partitions, replication_factor=1)
        answer = self.send("admin", CreateTopicsRequest(topics=[topic], timeout_ms=TIMEOUT_MS))
        assert [t.error_code for t in answer.topics] == [NONE], answer

    def produce(self, topic: str, count: int) -> None:
        assert produce_codes(self, "admin", topic, count) == NONE

    def offsets(self, topic: str) -> tuple[int, int]:
        """The partition's log start and end offsets."""
        (_, start), (_, end) = (list_offsets(self, "admin", [topic], t)[topic] for t in (-2, -1))
        return start, end

    def partitions(self, topic: str) -> int:
        """How many partitions the topic has (0: no such topic)."""
        return metadata_of(self, "admin", topic)[1]

    def commit(self, group: str, topic: str, offset: int) -> None:
        assert commit_codes(self, "admin", group, [topic], offset) == {topic: NONE}

    def committed(self, group: str, topic: str) -> int:
        return fetch_committed(self, "admin", group, topic)[1]

    def join(self, group: str) -> tuple[str, int]:
        """The super user joins ``group`` as its only member: ``(member id, generation)``."""
        answer = join_group(self, "admin", group)
        assert answer.error_code == NONE, answer
        return answer.member_id, answer.generation_id

    def sync(self, group: str, member: str, generation: int) -> None:
        assert sync_code(self, "admin", group, member, generation) == NONE

    def group_state(self, group: str) -> tuple[str, int]:
        """``(state, number of members)`` of ``group``."""
        (described,) = self.send("admin", DescribeGroupsRequest(groups=[group])).groups
        assert described.error_code == NONE, described
        return described.group_state, len(described.members)

    def acls_on(self, resource_type: int, name: str) -> list[tuple[str, int, int]]:
        """``(principal, operation, permission)`` of each literal ACL on that resource."""
        answer = self.send("admin", DescribeAclsRequest(
            resource_type_filter=resource_type, resource_name_filter=name,
            pattern_type_filter=PatternType.LITERAL, principal_filter=None, host_filter=None,
            operation=ANY, permission_type=ANY))
        assert answer.error_code == NONE, answer
        return sorted((a.principal, a.operation, a.permission_type) for r in answer.resources for a in r.acls)

    def all_acls(self) -> int:
        answer = self.send("admin", describe_all_acls())
        return sum(len(r.acls) for r in answer.resources)

    def create_acls(self, bindings: list[tuple[int, str, str, int, int]]) -> None:
        """``(resource type, name, principal, operation, permission)`` each, literal, any host."""
        if not bindings:
            return
        creation = CreateAclsRequest.AclCreation
        answer = self.send("admin", CreateAclsRequest(creations=[
            creation(resource_type=t, resource_name=n, resource_pattern_type=PatternType.LITERAL, principal=p,
                     host="*", operation=o, permission_type=m) for t, n, p, o, m in bindings]))
        assert [r.error_code for r in answer.results] == [NONE] * len(bindings), answer

    def delete_acls(self, filters: list[dict[str, Any]]) -> None:
        answer = self.send("admin", DeleteAclsRequest(filters=[acl_filter(**f) for f in filters]))
        assert all(r.error_code == NONE for r in answer.filter_results), answer

    def quota(self, client_id: str) -> dict[str, float]:
        component = DescribeClientQuotasRequest.ComponentData
        answer = self.send("admin", DescribeClientQuotasRequest(
            components=[component(entity_type="client-id", match_type=0, match=client_id)], strict=False))
        assert answer.error_code == NONE, answer
        return {v.key: v.value for e in answer.entries or () for v in e.values}

    def scram_user_known(self, user: str) -> bool:
        name = DescribeUserScramCredentialsRequest.UserName
        answer = self.send("admin", DescribeUserScramCredentialsRequest(users=[name(name=user)]))
        (result,) = answer.results
        return result.error_code == NONE and bool(result.credential_infos)

    def topic_config(self, topic: str, key: str) -> str | None:
        (result,) = describe_configs(self, "admin", TOPIC_CONFIG, topic).results
        assert result.error_code == NONE, result
        return {c.name: c.value for c in result.configs}.get(key)


def describe_all_acls() -> Any:
    return DescribeAclsRequest(resource_type_filter=ANY, resource_name_filter=None, pattern_type_filter=ANY,
                               principal_filter=None, host_filter=None, operation=ANY, permission_type=ANY)


def acl_filter(resource_type: int = ANY, name: str | None = None, principal: str | None = None,
               operation: int = ANY, permission: int = ANY) -> Any:
    return DeleteAclsRequest.DeleteAclsFilter(
        resource_type_filter=resource_type, resource_name_filter=name,
        pattern_type_filter=PatternType.LITERAL if name is not None else ANY, principal_filter=principal,
        host_filter=None, operation=operation, permission_type=permission)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("matrix")
    with eventstore.open(tmp / "store") as store:
        for name, password in PASSWORDS.items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                users.put(store.log.catalog, name, mechanism, credential(mechanism, password))
        with store.serve("127.0.0.1:0", listeners=["SASL_PLAINTEXT://127.0.0.1:0"],
                         super_users=["User:admin"]) as handle:
            host, port = handle.listeners["SASL_PLAINTEXT"]
            served = World(f"{host}:{port}")
            try:
                served.create_acls([(ResourceType.TOPIC, STANDING_TOPIC, "User:carol", Operation.READ,
                                     Permission.ALLOW)])
                yield served
            finally:
                served.close()


# --- the APIs: each principal's request and what it answers ---------------------------------


def produce_codes(world: World, who: str, topic: str, count: int = 1) -> int:
    builder = MemoryRecordsBuilder(2, 0, 1 << 16)
    for i in range(count):
        builder.append(0, None, b"value-%d" % i, [])
    builder.close()
    data = ProduceRequest.TopicProduceData
    partition = data.PartitionProduceData(index=0, records=builder.buffer())
    answer = world.send(who, ProduceRequest(transactional_id=None, acks=-1, timeout_ms=TIMEOUT_MS,
                                            topic_data=[data(name=topic, partition_data=[partition])]))
    (answered,) = answer.responses
    (partition,) = answered.partition_responses
    return int(partition.error_code)


def per_topic(topics: Any, name_field: str = "name") -> dict[str, Any]:
    """Each answered topic's only partition, by topic name."""
    out = {}
    for answered in topics:  # bounded by the answer
        (partition,) = answered.partitions
        out[str(getattr(answered, name_field))] = partition
    return out


def fetch_records(world: World, who: str, topics: list[str]) -> dict[str, tuple[int, bool]]:
    """``(error code, whether records came back)`` per topic of one Fetch by topic names (v12)."""
    fetch = FetchRequest.FetchTopic
    partition = fetch.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)
    answer = world.send(who, FetchRequest(
        max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
        topics=[fetch(topic=t, partitions=[partition]) for t in topics], forgotten_topics_data=[],
        max_version=12))
    return {t: (int(p.error_code), bool(p.records)) for t, p in per_topic(answer.responses, "topic").items()}


def list_offsets(world: World, who: str, topics: list[str], timestamp: int) -> dict[str, tuple[int, int]]:
    """``(error code, offset)`` per topic of one ListOffsets."""
    listed = ListOffsetsRequest.ListOffsetsTopic
    partition = listed.ListOffsetsPartition(partition_index=0, timestamp=timestamp)
    answer = world.send(who, ListOffsetsRequest(
        replica_id=-1, isolation_level=0, topics=[listed(name=t, partitions=[partition]) for t in topics]))
    return {t: (int(p.error_code), int(p.offset)) for t, p in per_topic(answer.topics).items()}


def metadata_of(world: World, who: str, topic: str) -> tuple[int, int]:
    """``(error code, partitions listed)`` of the topic in a Metadata request naming it."""
    answer = world.send(who, MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                                             allow_auto_topic_creation=False))
    (answered,) = answer.topics
    if answered.error_code == 3:  # UNKNOWN_TOPIC_OR_PARTITION
        return NONE, 0
    return int(answered.error_code), len(answered.partitions)


def commit_codes(world: World, who: str, group: str, topics: list[str], offset: int) -> dict[str, int]:
    """The code per topic of one commit outside any generation (as a consumer that assigns
    itself partitions does)."""
    committed = OffsetCommitRequest.OffsetCommitRequestTopic
    partition = committed.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset,
                                                       committed_metadata=None)
    answer = world.send(who, OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=-1, member_id="",
        topics=[committed(name=t, partitions=[partition]) for t in topics]))
    return {t: int(p.error_code) for t, p in per_topic(answer.topics).items()}


def fetch_committed(world: World, who: str, group: str, topic: str) -> tuple[int, int]:
    """``(error code, committed offset)``: the group's code, else the partition's."""
    asked = OffsetFetchRequest.OffsetFetchRequestGroup
    answer = world.send(who, OffsetFetchRequest(groups=[asked(
        group_id=group, topics=[asked.OffsetFetchRequestTopics(name=topic, partition_indexes=[0])])]))
    (answered,) = answer.groups
    if answered.error_code != NONE:
        return int(answered.error_code), -1
    (topic_answer,) = answered.topics
    (partition,) = topic_answer.partitions
    return int(partition.error_code), int(partition.committed_offset)


def join_group(world: World, who: str, group: str) -> Any:
    """A JoinGroup as a new member (again with the member id a v4+ answer hands out)."""
    protocol = JoinGroupRequest.JoinGroupRequestProtocol

    def join(member: str) -> Any:
        return world.send(who, JoinGroupRequest(
            group_id=group, session_timeout_ms=30_000, rebalance_timeout_ms=10_000, member_id=member,
            protocol_type="consumer", protocols=[protocol(name="range", metadata=b"")]))

    answer = join("")
    if answer.error_code == MEMBER_ID_REQUIRED:
        answer = join(answer.member_id)
    return answer


def sync_code(world: World, who: str, group: str, member: str, generation: int) -> int:
    assignment = SyncGroupRequest.SyncGroupRequestAssignment
    answer = world.send(who, SyncGroupRequest(
        group_id=group, generation_id=generation, member_id=member, protocol_type="consumer",
        protocol_name="range", assignments=[assignment(member_id=member, assignment=b"")]))
    return int(answer.error_code)


def describe_configs(world: World, who: str, resource_type: int, name: str) -> Any:
    resource = DescribeConfigsRequest.DescribeConfigsResource
    return world.send(who, DescribeConfigsRequest(resources=[
        resource(resource_type=resource_type, resource_name=name, configuration_keys=None)]))


def alter_configs_code(world: World, who: str, resource_type: int, name: str) -> int:
    resource = AlterConfigsRequest.AlterConfigsResource
    answer = world.send(who, AlterConfigsRequest(validate_only=False, resources=[resource(
        resource_type=resource_type, resource_name=name,
        configs=[resource.AlterableConfig(name="retention.ms", value="123456")])]))
    (result,) = answer.responses
    return int(result.error_code)


def incremental_alter_code(world: World, who: str, resource_type: int, name: str) -> int:
    resource = IncrementalAlterConfigsRequest.AlterConfigsResource
    answer = world.send(who, IncrementalAlterConfigsRequest(validate_only=False, resources=[resource(
        resource_type=resource_type, resource_name=name,
        configs=[resource.AlterableConfig(name="retention.ms", config_operation=0, value="654321")])]))
    (result,) = answer.responses
    return int(result.error_code)


def find_coordinator_code(world: World, who: str, key: str, key_type: int) -> int:
    answer = world.send(who, FindCoordinatorRequest(key_type=key_type, coordinator_keys=[key]))
    (coordinator,) = answer.coordinators
    return int(coordinator.error_code)


def marker_acl(names: Names) -> tuple[int, str, str, int, int]:
    """The ACL the CreateAcls and DeleteAcls cases create and delete: carol may read the case's topic."""
    return ResourceType.TOPIC, names.topic, "User:carol", Operation.READ, Permission.ALLOW


def create_acl_code(world: World, who: str, names: Names) -> int:
    kind, name, principal, operation, permission = marker_acl(names)
    answer = world.send(who, CreateAclsRequest(creations=[CreateAclsRequest.AclCreation(
        resource_type=kind, resource_name=name, resource_pattern_type=PatternType.LITERAL,
        principal=principal, host="*", operation=operation, permission_type=permission)]))
    (result,) = answer.results
    return int(result.error_code)


def delete_acl_code(world: World, who: str, names: Names) -> int:
    kind, name, principal, operation, permission = marker_acl(names)
    wanted = acl_filter(kind, name, principal, operation, permission)
    answer = world.send(who, DeleteAclsRequest(filters=[wanted]))
    (result,) = answer.filter_results
    return int(result.error_code)


def marker_present(world: World, names: Names) -> bool:
    kind, name, principal, operation, permission = marker_acl(names)
    return (principal, operation, permission) in world.acls_on(kind, name)


def alter_quota_code(world: World, who: str, names: Names) -> int:
    entry = AlterClientQuotasRequest.EntryData
    answer = world.send(who, AlterClientQuotasRequest(validate_only=False, entries=[entry(
        entity=[entry.EntityData(entity_type="client-id", entity_name=names.client_id)],
        ops=[entry.OpData(key="producer_byte_rate", value=1024.0, remove=False)])]))
    (result,) = answer.entries
    return int(result.error_code)


def upsert_user_code(world: World, who: str, names: Names) -> int:
    salt = b"salt-of-" + names.user.encode()
    upsertion = AlterUserScramCredentialsRequest.ScramCredentialUpsertion
    answer = world.send(who, AlterUserScramCredentialsRequest(deletions=[], upsertions=[upsertion(
        name=names.user, mechanism=1, iterations=4096, salt=salt,
        salted_password=hashlib.pbkdf2_hmac("sha256", b"pw", salt, 4096))]))
    (result,) = answer.results
    return int(result.error_code)


def top_code(answer: Any) -> int:
    return int(answer.error_code)


def partition_code(answer: Any) -> int:
    """The code of the only partition of the only topic of ``answer.topics``."""
    (answered,) = answer.topics
    (partition,) = answered.partitions
    return int(partition.error_code)


# --- the table ---------------------------------------------------------------------------


Call = Callable[[World, str, Names], Any]


def nothing(world: World, names: Names) -> None:
    """No preparation: the request needs no state."""


@dataclasses.dataclass(frozen=True)
class Api:
    """One row of the matrix: what the request needs (the first need is the one each case
    varies), how a principal sends it, its outcome when permitted and when refused, and what
    it does, as the super user sees it (None: the request changes nothing)."""

    name: str
    needs: Callable[[Names], list[Need]]
    call: Call
    allowed: Any
    refused: Any
    prepare: Callable[[World, Names], None] = nothing
    done: Callable[[World, Names], bool] | None = None


def on(*wanted: tuple[str, int]) -> Callable[[Names], list[Need]]:
    """The needs ``(resource, operation)``, ``resource`` one of topic, group, cluster, txn: the
    case's resource of that kind."""
    def needs(n: Names) -> list[Need]:
        resources = {"topic": (ResourceType.TOPIC, n.topic), "group": (ResourceType.GROUP, n.group),
                     "cluster": (ResourceType.CLUSTER, CLUSTER_NAME),
                     "txn": (ResourceType.TRANSACTIONAL_ID, n.txn)}
        return [(*resources[kind], operation) for kind, operation in wanted]
    return needs


def with_topic(world: World, names: Names) -> None:
    world.create_topic(names.topic)


def with_record(world: World, names: Names) -> None:
    world.create_topic(names.topic)
    world.produce(names.topic, 1)


def with_commit(world: World, names: Names) -> None:
    world.create_topic(names.topic)
    world.commit(names.group, names.topic, 5)


def with_member(world: World, names: Names) -> None:
    """A group whose one member (the super user's) has joined but not synced."""
    member, generation = world.join(names.group)
    world.members[names.group] = (member, generation)


def with_stable_member(world: World, names: Names) -> None:
    with_member(world, names)
    member, generation = member_of(world, names)
    world.sync(names.group, member, generation)


def with_marker(world: World, names: Names) -> None:
    world.create_acls([marker_acl(names)])


def member_of(world: World, names: Names) -> tuple[str, int]:
    member, generation = world.members[names.group]
    return str(member), int(generation)


def leave_code(world: World, who: str, names: Names) -> int:
    member, _generation = member_of(world, names)
    answer = world.send(who, LeaveGroupRequest(group_id=names.group, members=[
        LeaveGroupRequest.MemberIdentity(member_id=member)]))
    return int(answer.error_code) or max(int(m.error_code) for m in answer.members)


def offset_delete_code(world: World, who: str, names: Names) -> int:
    deleted = OffsetDeleteRequest.OffsetDeleteRequestTopic
    answer = world.send(who, OffsetDeleteRequest(group_id=names.group, topics=[deleted(
        name=names.topic, partitions=[deleted.OffsetDeleteRequestPartition(partition_index=0)])]))
    return int(answer.error_code) or partition_code(answer)


def listed_group(world: World, who: str, names: Names) -> str:
    answer = world.send(who, ListGroupsRequest(states_filter=[], types_filter=[]))
    groups = [g.group_id for g in answer.groups]
    return "listed" if names.group in groups else "hidden"


def init_producer(world: World, who: str, names: Names) -> tuple[int, bool]:
    answer = world.send(who, InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000))
    return int(answer.error_code), int(answer.producer_id) >= 0


def delete_topic_codes(world: World, who: str, topics: list[str]) -> dict[str, int]:
    state = DeleteTopicsRequest.DeleteTopicState
    answer = world.send(who, DeleteTopicsRequest(
        topics=[state(name=t, topic_id=uuid.UUID(int=0)) for t in topics], timeout_ms=TIMEOUT_MS))
    return {str(r.name): int(r.error_code) for r in answer.responses}


def create_topic_codes(world: World, who: str, topics: list[str]) -> dict[str, int]:
    topic = CreateTopicsRequest.CreatableTopic
    answer = world.send(who, CreateTopicsRequest(
        topics=[topic(name=t, num_partitions=1, replication_factor=1) for t in topics],
        timeout_ms=TIMEOUT_MS))
    return {str(r.name): int(r.error_code) for r in answer.topics}


def delete_topic_code(world: World, who: str, names: Names) -> int:
    return delete_topic_codes(world, who, [names.topic])[names.topic]


def create_topic_code(world: World, who: str, names: Names) -> int:
    return create_topic_codes(world, who, [names.topic])[names.topic]


def delete_records_code(world: World, who: str, names: Names) -> int:
    deleted = DeleteRecordsRequest.DeleteRecordsTopic
    answer = world.send(who, DeleteRecordsRequest(timeout_ms=TIMEOUT_MS, topics=[deleted(
        name=names.topic, partitions=[deleted.DeleteRecordsPartition(partition_index=0, offset=1)])]))
    return partition_code(answer)


def create_partitions_code(world: World, who: str, names: Names) -> int:
    topic = CreatePartitionsRequest.CreatePartitionsTopic(name=names.topic, count=2, assignments=None)
    request = CreatePartitionsRequest(topics=[topic], timeout_ms=TIMEOUT_MS, validate_only=False)
    answer = world.send(who, request)
    (result,) = answer.results
    return int(result.error_code)


def describe_producers_code(world: World, who: str, names: Names) -> int:
    asked = DescribeProducersRequest.TopicRequest(name=names.topic, partition_indexes=[0])
    answer = world.send(who, DescribeProducersRequest(topics=[asked]))
    return partition_code(answer)


def leader_epoch_code(world: World, who: str, names: Names) -> int:
    asked = OffsetForLeaderEpochRequest.OffsetForLeaderTopic
    answer = world.send(who, OffsetForLeaderEpochRequest(replica_id=-1, topics=[asked(
        topic=names.topic, partitions=[asked.OffsetForLeaderPartition(partition=0, leader_epoch=0)])]))
    return partition_code(answer)


def two_records(world: World, names: Names) -> None:
    world.create_topic(names.topic)
    world.produce(names.topic, 2)


READ, WRITE, CREATE, DELETE = Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DELETE
ALTER, DESCRIBE = Operation.ALTER, Operation.DESCRIBE
DESCRIBE_CONFIGS, ALTER_CONFIGS = Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS


def committed_is(offset: int) -> Callable[[World, Names], bool]:
    return lambda w, n: w.committed(n.group, n.topic) == offset


def partitions_are(count: int) -> Callable[[World, Names], bool]:
    return lambda w, n: w.partitions(n.topic) == count


def retention_is(value: str) -> Callable[[World, Names], bool]:
    return lambda w, n: w.topic_config(n.topic, "retention.ms") == value


def written(world: World, names: Names) -> bool:
    return world.offsets(names.topic)[1] > 0


def commit_one(w: World, who: str, n: Names) -> int:
    return commit_codes(w, who, n.group, [n.topic], 1)[n.topic]


def fetch_commit(w: World, who: str, n: Names) -> tuple[int, int]:
    return fetch_committed(w, who, n.group, n.topic)


def join_code(w: World, who: str, n: Names) -> int:
    return int(join_group(w, who, n.group).error_code)


def heartbeat_code(w: World, who: str, n: Names) -> int:
    member, generation = member_of(w, n)
    request = HeartbeatRequest(group_id=n.group, generation_id=generation, member_id=member)
    return top_code(w.send(who, request))


def describe_group_code(w: World, who: str, n: Names) -> int:
    return int(w.send(who, DescribeGroupsRequest(groups=[n.group])).groups[0].error_code)


def delete_group_code(w: World, who: str, n: Names) -> int:
    return int(w.send(who, DeleteGroupsRequest(groups_names=[n.group])).results[0].error_code)


def config_code(resource_type: int, alter: Callable[..., int] | None = None) -> Call:
    """DescribeConfigs (``alter`` None) or an alteration of the case's topic or of broker 0."""
    def call(w: World, who: str, n: Names) -> int:
        name = n.topic if resource_type == TOPIC_CONFIG else "0"
        if alter is not None:
            return alter(w, who, resource_type, name)
        return int(describe_configs(w, who, resource_type, name).results[0].error_code)
    return call


def describe_acls_code(w: World, who: str, n: Names) -> int:
    return top_code(w.send(who, describe_all_acls()))


def quota_set(w: World, n: Names) -> bool:
    return w.quota(n.client_id) == {"producer_byte_rate": 1024.0}


APIS: Final[list[Api]] = [
    Api("Produce", on(("topic", WRITE)), lambda w, who, n: produce_codes(w, who, n.topic),
        NONE, TOPIC_AUTHORIZATION_FAILED, with_topic, written),
    Api("Fetch", on(("topic", READ)), lambda w, who, n: fetch_records(w, who, [n.topic])[n.topic],
        (NONE, True), (TOPIC_AUTHORIZATION_FAILED, False), with_record),
    Api("ListOffsets", on(("topic", DESCRIBE)),
        lambda w, who, n: list_offsets(w, who, [n.topic], -1)[n.topic],
        (NONE, 1), (TOPIC_AUTHORIZATION_FAILED, -1), with_record),
    Api("Metadata", on(("topic", DESCRIBE)), lambda w, who, n: metadata_of(w, who, n.topic),
        (NONE, 1), (TOPIC_AUTHORIZATION_FAILED, 0), with_topic),
    Api("OffsetForLeaderEpoch", on(("topic", DESCRIBE)), leader_epoch_code,
        NONE, TOPIC_AUTHORIZATION_FAILED, with_record),
    Api("DescribeProducers", on(("topic", READ)), describe_producers_code,
        NONE, TOPIC_AUTHORIZATION_FAILED, with_record),
    Api("OffsetCommit (group)", on(("group", READ), ("topic", READ)), commit_one,
        NONE, GROUP_AUTHORIZATION_FAILED, with_topic, committed_is(1)),
    Api("OffsetCommit (topic)", on(("topic", READ), ("group", READ)), commit_one,
        NONE, TOPIC_AUTHORIZATION_FAILED, with_topic, committed_is(1)),
    Api("OffsetFetch (group)", on(("group", DESCRIBE), ("topic", DESCRIBE)), fetch_commit,
        (NONE, 5), (GROUP_AUTHORIZATION_FAILED, -1), with_commit),
    Api("OffsetFetch (topic)", on(("topic", DESCRIBE), ("group", DESCRIBE)), fetch_commit,
        (NONE, 5), (TOPIC_AUTHORIZATION_FAILED, -1), with_commit),
    Api("FindCoordinator (group)", on(("group", DESCRIBE)),
        lambda w, who, n: find_coordinator_code(w, who, n.group, 0), NONE, GROUP_AUTHORIZATION_FAILED),
    Api("FindCoordinator (transaction)", on(("txn", DESCRIBE)),
        lambda w, who, n: find_coordinator_code(w, who, n.txn, 1),
        NONE, TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
    Api("JoinGroup", on(("group", READ)), join_code, NONE, GROUP_AUTHORIZATION_FAILED,
        nothing, lambda w, n: w.group_state(n.group)[1] == 1),
    Api("SyncGroup", on(("group", READ)), lambda w, who, n: sync_code(w, who, n.group, *member_of(w, n)),
        NONE, GROUP_AUTHORIZATION_FAILED, with_member, lambda w, n: w.group_state(n.group)[0] == "Stable"),
    Api("Heartbeat", on(("group", READ)), heartbeat_code, NONE, GROUP_AUTHORIZATION_FAILED,
        with_stable_member),
    Api("LeaveGroup", on(("group", READ)), leave_code, NONE, GROUP_AUTHORIZATION_FAILED,
        with_stable_member, lambda w, n: w.group_state(n.group)[1] == 0),
    Api("DescribeGroups", on(("group", DESCRIBE)), describe_group_code, NONE, GROUP_AUTHORIZATION_FAILED,
        with_commit),
    Api("ListGroups (group)", on(("group", DESCRIBE)), listed_group, "listed", "hidden", with_commit),
    Api("ListGroups (cluster)", on(("cluster", DESCRIBE)), listed_group, "listed", "hidden", with_commit),
    Api("DeleteGroups", on(("group", DELETE)), delete_group_code, NONE, GROUP_AUTHORIZATION_FAILED,
        with_commit, committed_is(-1)),
    Api("OffsetDelete (group)", on(("group", DELETE), ("topic", READ)), offset_delete_code,
        NONE, GROUP_AUTHORIZATION_FAILED, with_commit, committed_is(-1)),
    Api("OffsetDelete (topic)", on(("topic", READ), ("group", DELETE)), offset_delete_code,
        NONE, TOPIC_AUTHORIZATION_FAILED, with_commit, committed_is(-1)),
    Api("CreateTopics (topic)", on(("topic", CREATE)), create_topic_code, NONE, TOPIC_AUTHORIZATION_FAILED,
        nothing, partitions_are(1)),
    Api("CreateTopics (cluster)", on(("cluster", CREATE)), create_topic_code,
        NONE, TOPIC_AUTHORIZATION_FAILED, nothing, partitions_are(1)),
    Api("DeleteTopics", on(("topic", DELETE)), delete_topic_code, NONE, TOPIC_AUTHORIZATION_FAILED,
        with_topic, partitions_are(0)),
    Api("DeleteRecords", on(("topic", DELETE)), delete_records_code, NONE, TOPIC_AUTHORIZATION_FAILED,
        two_records, lambda w, n: w.offsets(n.topic)[0] == 1),
    Api("CreatePartitions", on(("topic", ALTER)), create_partitions_code, NONE, TOPIC_AUTHORIZATION_FAILED,
        with_topic, partitions_are(2)),
    Api("DescribeConfigs (topic)", on(("topic", DESCRIBE_CONFIGS)), config_code(TOPIC_CONFIG),
        NONE, TOPIC_AUTHORIZATION_FAILED, with_topic),
    Api("DescribeConfigs (broker)", on(("cluster", DESCRIBE_CONFIGS)), config_code(BROKER_CONFIG),
        NONE, CLUSTER_AUTHORIZATION_FAILED),
    Api("AlterConfigs (topic)", on(("topic", ALTER_CONFIGS)), config_code(TOPIC_CONFIG, alter_configs_code),
        NONE, TOPIC_AUTHORIZATION_FAILED, with_topic, retention_is("123456")),
    # The broker's configs are read-only here: permitted, an alteration is answered INVALID_CONFIG.
    Api("AlterConfigs (broker)", on(("cluster", ALTER_CONFIGS)),
        config_code(BROKER_CONFIG, alter_configs_code), INVALID_CONFIG, CLUSTER_AUTHORIZATION_FAILED),
    Api("IncrementalAlterConfigs (topic)", on(("topic", ALTER_CONFIGS)),
        config_code(TOPIC_CONFIG, incremental_alter_code), NONE, TOPIC_AUTHORIZATION_FAILED,
        with_topic, retention_is("654321")),
    Api("IncrementalAlterConfigs (broker)", on(("cluster", ALTER_CONFIGS)),
        config_code(BROKER_CONFIG, incremental_alter_code), INVALID_CONFIG, CLUSTER_AUTHORIZATION_FAILED),
    Api("InitProducerId (idempotent)", on(("cluster", Operation.IDEMPOTENT_WRITE)), init_producer,
        (NONE, True), (CLUSTER_AUTHORIZATION_FAILED, False)),
    Api("InitProducerId (topic write)", on(("topic", WRITE)), init_producer,
        (NONE, True), (CLUSTER_AUTHORIZATION_FAILED, False)),
    Api("DescribeAcls", on(("cluster", DESCRIBE)), describe_acls_code, NONE, CLUSTER_AUTHORIZATION_FAILED),
    Api("CreateAcls", on(("cluster", ALTER)), create_acl_code, NONE, CLUSTER_AUTHORIZATION_FAILED,
        nothing, marker_present),
    Api("DeleteAcls", on(("cluster", ALTER)), delete_acl_code, NONE, CLUSTER_AUTHORIZATION_FAILED,
        with_marker, lambda w, n: not marker_present(w, n)),
    Api("DescribeClientQuotas", on(("cluster", DESCRIBE_CONFIGS)),
        lambda w, who, n: top_code(w.send(who, DescribeClientQuotasRequest(components=[], strict=False))),
        NONE, CLUSTER_AUTHORIZATION_FAILED),
    Api("AlterClientQuotas", on(("cluster", ALTER_CONFIGS)), alter_quota_code,
        NONE, CLUSTER_AUTHORIZATION_FAILED, nothing, quota_set),
    Api("DescribeUserScramCredentials", on(("cluster", DESCRIBE)),
        lambda w, who, n: top_code(w.send(who, DescribeUserScramCredentialsRequest(users=None))),
        NONE, CLUSTER_AUTHORIZATION_FAILED),
    Api("AlterUserScramCredentials", on(("cluster", ALTER)), upsert_user_code,
        NONE, CLUSTER_AUTHORIZATION_FAILED, nothing, lambda w, n: w.scram_user_known(n.user)),
    Api("DescribeLogDirs", on(("cluster", DESCRIBE)),
        lambda w, who, n: top_code(w.send(who, DescribeLogDirsRequest(topics=None))),
        NONE, CLUSTER_AUTHORIZATION_FAILED),
]


# --- the same through the clients' high-level APIs ------------------------------------------


def error_code(error: BaseException) -> int:
    """Kafka's error code in a kafka-python or confluent-kafka exception."""
    from confluent_kafka import KafkaException

    if isinstance(error, KafkaException):
        return int(error.args[0].code())
    code = getattr(error, "errno", None)
    if code is None:
        raise error
    return int(code)


def kafka_python_produce(world: World, who: str, names: Names) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    producer = KafkaProducer(**client_options(who, world.bootstrap), max_block_ms=10_000, retries=0)
    try:
        producer.send(names.topic, b"high-level").get(timeout=TIMEOUT_S)
        return NONE
    except KafkaError as e:
        return error_code(e)
    finally:
        producer.close(timeout=5)


def kafka_python_consume(world: World, who: str, names: Names) -> tuple[int, list[bytes]]:
    """Subscribe in the case's group, read the topic's record, commit: ``(code, values)``."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    consumer = KafkaConsumer(names.topic, **client_options(who, world.bootstrap), group_id=names.group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             metadata_max_age_ms=1_000)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:  # bounded by the deadline
            polled = consumer.poll(timeout_ms=500)
            values = [r.value for records in polled.values() for r in records]
            if values:
                consumer.commit()
                return NONE, values
        raise AssertionError("nothing consumed, no error")
    except KafkaError as e:
        return error_code(e), []
    finally:
        consumer.close(autocommit=False)


def kafka_python_create_topic(world: World, who: str, names: Names) -> int:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(**client_options(who, world.bootstrap))
    try:
        admin.create_topics({names.topic: {"num_partitions": 1, "replication_factor": 1}})
        return NONE
    except KafkaError as e:
        return error_code(e)
    finally:
        admin.close()


def confluent_produce(world: World, who: str, names: Names) -> int:
    from confluent_kafka import Producer

    producer = Producer({**confluent_options(who, world.bootstrap), "message.timeout.ms": 10_000})
    delivered: list[Any] = []
    producer.produce(names.topic, b"high-level", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(TIMEOUT_S)
    (error,) = delivered
    return NONE if error is None else int(error.code())


def confluent_consume(world: World, who: str, names: Names) -> tuple[int, list[bytes]]:
    """Subscribe in the case's group, read the topic's record, commit: ``(code, values)``."""
    from confluent_kafka import Consumer

    consumer = Consumer({**confluent_options(who, world.bootstrap), "group.id": names.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([names.topic])
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:  # bounded by the deadline
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                return int(message.error().code()), []
            consumer.commit(message, asynchronous=False)
            return NONE, [bytes(message.value() or b"")]
        raise AssertionError("nothing consumed, no error")
    finally:
        consumer.close()


@contextmanager
def confluent_admin(world: World, who: str) -> Iterator[Any]:
    from confluent_kafka.admin import AdminClient

    yield AdminClient(confluent_options(who, world.bootstrap))


def confluent_marker(names: Names) -> Any:
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType
    from confluent_kafka.admin import ResourceType as ConfluentResourceType

    _kind, name, principal, _operation, _permission = marker_acl(names)
    return AclBinding(ConfluentResourceType.TOPIC, name, ResourcePatternType.LITERAL, principal, "*",
                      AclOperation.READ, AclPermissionType.ALLOW)


def confluent_marker_filter(names: Names) -> Any:
    from confluent_kafka.admin import AclBindingFilter

    marker = confluent_marker(names)
    return AclBindingFilter(marker.restype, marker.name, marker.resource_pattern_type, marker.principal,
                            marker.host, marker.operation, marker.permission_type)


def confluent_create_acl(world: World, who: str, names: Names) -> int:
    from confluent_kafka import KafkaException

    with confluent_admin(world, who) as admin:
        marker = confluent_marker(names)
        try:
            admin.create_acls([marker], request_timeout=TIMEOUT_S)[marker].result(TIMEOUT_S)
            return NONE
        except KafkaException as e:
            return error_code(e)


def confluent_describe_acls(world: World, who: str, names: Names) -> tuple[int, bool]:
    """``(code, whether the case's marker ACL is listed)``."""
    from confluent_kafka import KafkaException

    with confluent_admin(world, who) as admin:
        try:
            listing = admin.describe_acls(confluent_marker_filter(names), request_timeout=TIMEOUT_S)
            found = listing.result(TIMEOUT_S)
        except KafkaException as e:
            return error_code(e), False
        return NONE, confluent_marker(names) in found


def confluent_delete_acl(world: World, who: str, names: Names) -> int:
    from confluent_kafka import KafkaException

    with confluent_admin(world, who) as admin:
        wanted = confluent_marker_filter(names)
        try:
            admin.delete_acls([wanted], request_timeout=TIMEOUT_S)[wanted].result(TIMEOUT_S)
            return NONE
        except KafkaException as e:
            return error_code(e)


HIGH_LEVEL: Final[list[Api]] = [
    Api("Produce [KafkaProducer]", on(("topic", WRITE)), kafka_python_produce, NONE,
        TOPIC_AUTHORIZATION_FAILED, with_topic, written),
    Api("Consume in a group [KafkaConsumer]", on(("group", READ), ("topic", READ)), kafka_python_consume,
        (NONE, [b"value-0"]), (GROUP_AUTHORIZATION_FAILED, []), with_record,
        committed_is(1)),
    Api("CreateTopics [KafkaAdminClient]", on(("topic", CREATE)), kafka_python_create_topic, NONE,
        TOPIC_AUTHORIZATION_FAILED, nothing, lambda w, n: w.partitions(n.topic) == 1),
    Api("Produce [confluent Producer]", on(("topic", WRITE)), confluent_produce, NONE,
        TOPIC_AUTHORIZATION_FAILED, with_topic, written),
    Api("Consume in a group [confluent Consumer]", on(("group", READ), ("topic", READ)), confluent_consume,
        (NONE, [b"value-0"]), (GROUP_AUTHORIZATION_FAILED, []), with_record,
        committed_is(1)),
    Api("CreateAcls [confluent AdminClient]", on(("cluster", ALTER)), confluent_create_acl, NONE,
        CLUSTER_AUTHORIZATION_FAILED, nothing, marker_present),
    # librdkafka reports a refused DescribeAcls (31 on the wire: the DescribeAcls row above) as an
    # empty listing: what matters here is that the marker ACL is not shown.
    Api("DescribeAcls [confluent AdminClient]", on(("cluster", DESCRIBE)), confluent_describe_acls,
        (NONE, True), (NONE, False), with_marker),
    Api("DeleteAcls [confluent AdminClient]", on(("cluster", ALTER)), confluent_delete_acl, NONE,
        CLUSTER_AUTHORIZATION_FAILED, with_marker, lambda w, n: not marker_present(w, n)),
]


def bindings(needs: list[Need], case: str, who: str) -> list[tuple[int, str, str, int, int]]:
    """The ACLs of one case: every need but the first granted to both principals; the first
    granted to ``who`` (allowed), granted to both and denied to ``who`` (denied), or named by
    no ACL at all (no_acl)."""
    (kind, name, operation), *rest = needs
    both = (f"User:{who}", f"User:{OTHER[who]}")
    out = [(k, n, p, o, Permission.ALLOW) for k, n, o in rest for p in both]
    if case == "allowed":
        out.append((kind, name, f"User:{who}", operation, Permission.ALLOW))
    elif case == "denied":
        out += [(kind, name, p, operation, Permission.ALLOW) for p in both]
        out.append((kind, name, f"User:{who}", operation, Permission.DENY))
    return out


@contextmanager
def granted(world: World, names: Names, acls: list[tuple[int, str, str, int, int]]) -> Iterator[None]:
    """The case's ACLs for its duration; afterwards every ACL but the standing one is gone."""
    world.create_acls(acls)
    try:
        yield
    finally:
        world.delete_acls([{"principal": "User:alice"}, {"principal": "User:bob"},
                           {"resource_type": ResourceType.TOPIC, "name": names.topic}])
        assert world.all_acls() == 1


@pytest.mark.parametrize("who", ["alice", "bob"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("api", APIS + HIGH_LEVEL, ids=[a.name.replace(" ", "") for a in APIS + HIGH_LEVEL])
def test_acl_matrix(world: World, api: Api, case: str, who: str) -> None:
    names = Names.of(api.name, case, who)
    api.prepare(world, names)
    with granted(world, names, bindings(api.needs(names), case, who)):
        outcome = api.call(world, who, names)
        if case == "allowed":
            assert outcome == api.allowed
            assert api.done is None or api.done(world, names)
            return
        assert outcome == api.refused
        assert api.done is None or not api.done(world, names), "refused, yet done"
        if case == "denied":  # the same request on the same state: the other principal is served
            assert api.call(world, OTHER[who], names) == api.allowed
            assert api.done is None or api.done(world, names)


# --- one request, an allowed and a refused topic: answered per topic, as Kafka does ----------


@dataclasses.dataclass(frozen=True)
class Mixed:
    """A request naming two topics: ``operation`` is needed on each (and ``also`` besides);
    the principal may use the first, not the second."""

    name: str
    operation: int
    call: Callable[[World, str, Names, list[str]], dict[str, Any]]
    allowed: Any
    refused: Any
    prepare: Callable[[World, list[str]], None]
    done: Callable[[World, Names, str], bool] | None = None
    also: Callable[[Names], list[Need]] = lambda n: []


def topics_made(world: World, topics: list[str]) -> None:
    for topic in topics:
        world.create_topic(topic)


def topics_with_a_record(world: World, topics: list[str]) -> None:
    for topic in topics:
        world.create_topic(topic)
        world.produce(topic, 1)


def no_topics(world: World, topics: list[str]) -> None:
    """No preparation: the topics do not exist yet."""


MIXED: Final[list[Mixed]] = [
    Mixed("Fetch", READ, lambda w, who, n, ts: fetch_records(w, who, ts),
          (NONE, True), (TOPIC_AUTHORIZATION_FAILED, False), topics_with_a_record),
    Mixed("ListOffsets", DESCRIBE, lambda w, who, n, ts: list_offsets(w, who, ts, -1),
          (NONE, 1), (TOPIC_AUTHORIZATION_FAILED, -1), topics_with_a_record),
    Mixed("OffsetCommit", READ, lambda w, who, n, ts: commit_codes(w, who, n.group, ts, 1),
          NONE, TOPIC_AUTHORIZATION_FAILED, topics_made, lambda w, n, t: w.committed(n.group, t) == 1,
          on(("group", READ))),
    Mixed("CreateTopics", CREATE, lambda w, who, n, ts: create_topic_codes(w, who, ts),
          NONE, TOPIC_AUTHORIZATION_FAILED, no_topics, lambda w, n, t: w.partitions(t) == 1),
    Mixed("DeleteTopics", DELETE, lambda w, who, n, ts: delete_topic_codes(w, who, ts),
          NONE, TOPIC_AUTHORIZATION_FAILED, topics_made, lambda w, n, t: w.partitions(t) == 0),
]


@pytest.mark.parametrize("who", ["alice", "bob"])
@pytest.mark.parametrize("case", ["denied", "no_acl"])
@pytest.mark.parametrize("mixed", MIXED, ids=[m.name for m in MIXED])
def test_mixed_request_is_answered_per_topic(world: World, mixed: Mixed, case: str, who: str) -> None:
    """The allowed topic is served as without ACLs, the refused one answered 29 in the same
    response, and nothing of it done."""
    names = Names.of(f"mixed {mixed.name}", case, who)
    allowed, refused = f"{names.topic}-allowed", f"{names.topic}-refused"
    mixed.prepare(world, [allowed, refused])
    needs = [(ResourceType.TOPIC, refused, mixed.operation), (ResourceType.TOPIC, allowed, mixed.operation),
             *mixed.also(names)]
    with granted(world, names, bindings(needs, case, who)):
        got = mixed.call(world, who, names, [refused, allowed])
        assert got == {allowed: mixed.allowed, refused: mixed.refused}
        if mixed.done is not None:
            assert mixed.done(world, names, allowed)
            assert not mixed.done(world, names, refused), "refused, yet done"
