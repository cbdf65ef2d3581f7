"""Writes a node may not apply (docs/replication.md, section 4.5): on a follower, or on a
leader fenced by a newer epoch, every write is answered with the error a Kafka client
follows to the leader, in the response shape of its API, without reaching its handler.

Produce answers NOT_LEADER_OR_FOLLOWER per partition; the group and producer-id writes
NOT_COORDINATOR (the client asks FindCoordinator again, which names the leader); the
administrative writes NOT_CONTROLLER per topic, resource, group, ACL creation or filter, user
or quota entry (ACLs, SCRAM users and quotas come from the leader's catalog); the extension APIs
that write NOT_LEADER_OR_FOLLOWER in their common ``error_code``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..wire import RequestHeader
from .entities import entity, item_class, response_class

__all__ = ["EXTENSION_WRITES", "KAFKA_WRITES", "NOT_CONTROLLER", "NOT_COORDINATOR", "NOT_LEADER_OR_FOLLOWER",
           "refused"]

NOT_LEADER_OR_FOLLOWER: Final = 6
NOT_COORDINATOR: Final = 16
NOT_CONTROLLER: Final = 41

EXTENSION_WRITES: Final = frozenset({20000, 20004, 20005, 20006, 20011, 20012})
"""AppendToStream, SetStreamMetadata, DeleteStream, TruncateStream, SaveSnapshot, AppendEvents."""


def _top(code: int) -> Callable[[Any, Any], Any]:
    """A response whose top-level ``error_code`` says it all."""
    return lambda cls, body: entity(cls, error_code=code)


def _produce(cls: Any, body: Any) -> Any:
    topic_cls = item_class(cls, "responses")
    partition_cls = item_class(topic_cls, "partition_responses")
    return entity(cls, responses=tuple(
        entity(topic_cls, name=t.name, partition_responses=tuple(
            entity(partition_cls, index=p.index, error_code=NOT_LEADER_OR_FOLLOWER, base_offset=-1,
                   log_start_offset=-1)
            for p in t.partition_data))
        for t in body.topic_data))


def _per_partition(code: int, extra: dict[str, Any]) -> Callable[[Any, Any], Any]:
    """``topics`` [``name``, ``partitions`` [``partition_index``, ``error_code``]] (OffsetCommit,
    DeleteRecords)."""

    def build(cls: Any, body: Any) -> Any:
        topic_cls = item_class(cls, "topics")
        partition_cls = item_class(topic_cls, "partitions")
        return entity(cls, topics=tuple(
            entity(topic_cls, name=t.name, partitions=tuple(
                entity(partition_cls, partition_index=p.partition_index, error_code=code, **extra)
                for p in t.partitions))
            for t in body.topics))

    return build


def _per_topic(field: str) -> Callable[[Any, Any], Any]:
    """One item per named topic in ``field`` (CreateTopics, CreatePartitions, DeleteTopics)."""

    def build(cls: Any, body: Any) -> Any:
        item = item_class(cls, field)
        names = (body.topic_names if hasattr(body, "topic_names")
                 else tuple(t.name for t in body.topics))
        return entity(cls, **{field: tuple(entity(item, name=n, error_code=NOT_CONTROLLER,
                                                  error_message=MESSAGE) for n in names)})

    return build


def _per_resource(cls: Any, body: Any) -> Any:
    item = item_class(cls, "responses")
    return entity(cls, responses=tuple(
        entity(item, error_code=NOT_CONTROLLER, error_message=MESSAGE, resource_type=r.resource_type,
               resource_name=r.resource_name)
        for r in body.resources))


def _per_group(cls: Any, body: Any) -> Any:
    item = item_class(cls, "results")
    return entity(cls, results=tuple(entity(item, group_id=g, error_code=NOT_CONTROLLER)
                                     for g in body.groups_names))


def _per_creation(cls: Any, body: Any) -> Any:
    item = item_class(cls, "results")
    return entity(cls, results=tuple(entity(item, error_code=NOT_CONTROLLER, error_message=MESSAGE)
                                     for _ in body.creations))


def _per_filter(cls: Any, body: Any) -> Any:
    item = item_class(cls, "filter_results")
    return entity(cls, filter_results=tuple(entity(item, error_code=NOT_CONTROLLER, error_message=MESSAGE,
                                                   matching_acls=()) for _ in body.filters))


def _per_user(cls: Any, body: Any) -> Any:
    item = item_class(cls, "results")
    names = dict.fromkeys(str(c.name) for c in (*body.deletions, *body.upsertions))
    return entity(cls, results=tuple(entity(item, user=n, error_code=NOT_CONTROLLER, error_message=MESSAGE)
                                     for n in names))


def _per_quota_entry(cls: Any, body: Any) -> Any:
    item = item_class(cls, "entries")
    named = item_class(item, "entity")
    return entity(cls, entries=tuple(
        entity(item, error_code=NOT_CONTROLLER, error_message=MESSAGE, entity=tuple(
            entity(named, entity_type=e.entity_type, entity_name=e.entity_name) for e in given.entity))
        for given in body.entries))


MESSAGE: Final = "this node does not lead: ask Metadata for the leader"

KAFKA_WRITES: Final[dict[int, Callable[[Any, Any], Any]]] = {
    0: _produce,
    8: _per_partition(NOT_COORDINATOR, {}),
    11: _top(NOT_COORDINATOR),  # JoinGroup
    12: _top(NOT_COORDINATOR),  # Heartbeat
    13: _top(NOT_COORDINATOR),  # LeaveGroup
    14: _top(NOT_COORDINATOR),  # SyncGroup
    22: _top(NOT_COORDINATOR),  # InitProducerId
    19: _per_topic("topics"),  # CreateTopics
    20: _per_topic("responses"),  # DeleteTopics
    37: _per_topic("results"),  # CreatePartitions
    33: _per_resource,  # AlterConfigs
    44: _per_resource,  # IncrementalAlterConfigs
    21: _per_partition(NOT_CONTROLLER, {"low_watermark": -1}),  # DeleteRecords
    42: _per_group,  # DeleteGroups
    47: _top(NOT_CONTROLLER),  # OffsetDelete
    30: _per_creation,  # CreateAcls
    31: _per_filter,  # DeleteAcls
    51: _per_user,  # AlterUserScramCredentials
    49: _per_quota_entry,  # AlterClientQuotas
}
"""Each write API and how its refusal is shaped, from the request's body."""


def refused(header: RequestHeader, body: Any) -> Any:
    """The refusal of a write request, in kio's response of its API and version."""
    return KAFKA_WRITES[header.api_key](response_class(header), body)
