"""Every request checked before it acts (docs/protocol.md, "Authorization").

``dispatch.answer`` calls :func:`check` with the decoded request before its handler.
The rules are Kafka's, per API: Produce needs WRITE on each topic, Fetch READ,
Metadata lists only the topics the principal may DESCRIBE, CreateTopics needs CREATE
on the cluster or the topic, the group APIs READ on the group, and so on (the table
``_CHECKS``). As Kafka, a request naming several resources is decided per item
(:func:`_split`): the items the principal may not use are taken out of the request
before its handler, so nothing of them is done, and are answered with the authorization
error (TOPIC_AUTHORIZATION_FAILED 29, GROUP_AUTHORIZATION_FAILED 30,
CLUSTER_AUTHORIZATION_FAILED 31) beside the handler's answer for the others. A request
whose every item is refused, or whose one resource is (the group of an OffsetCommit, a
transactional id: 53, the cluster), is answered without its handler. Metadata, ListGroups
and OffsetFetch leave out what the principal may not DESCRIBE.

The principal is the connection's ``ctx.principal`` (``User:ANONYMOUS`` before
authentication), the host the client's IP address. The extension APIs are checked on
their streams' category topics (:func:`check_extension`); the replication APIs (a
Fetch or OffsetForLeaderEpoch with a replica id >= 0, ReplicaCatalog, Promote) need
CLUSTER_ACTION on the cluster, as Kafka's inter-broker requests do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final

from ..catalog import acls as acl_rows
from ..catalog.acls import CLUSTER_NAME, WILDCARD, AclBinding, Operation, ResourceType
from ..sourcing.dcb import DCB_TOPIC
from ..sourcing.rules import category_of
from ..wire import RequestHeader
from ..wire import extensions as extension_codec
from ..wire.apis import REPLICATION_KEYS
from ..wire.errors import ProtocolError
from .authorizer import Authorizer
from .context import Broker, Context
from .entities import entity, has_field, item_class, response_class

__all__ = ["Checker", "Verdict", "authorizer_of", "catalog_changed", "check", "check_extension",
           "client_host",
           "set_acls"]

TOPIC_AUTHORIZATION_FAILED: Final = 29
GROUP_AUTHORIZATION_FAILED: Final = 30
CLUSTER_AUTHORIZATION_FAILED: Final = 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED: Final = 53
TOPIC_CONFIG: Final = 2
"""The config resource type of a topic (4 is the broker: the cluster's configuration)."""
_STATE_KEY = "authorization"


def authorizer_of(broker: Broker) -> Authorizer:
    """The server's authorizer, made from the catalog's ACLs and the configuration at first use."""
    found = broker.state.get(_STATE_KEY)
    if found is None:
        config = broker.config
        found = Authorizer(acl_rows.load(broker.log.catalog), config.super_users,
                           config.allow_everyone_if_no_acl_found)
        broker.state[_STATE_KEY] = found
    return found


def set_acls(broker: Broker, bindings: list[AclBinding]) -> None:
    """The server's ACLs changed (CreateAcls, DeleteAcls): decide from ``bindings`` now."""
    authorizer_of(broker).replace(bindings)


def catalog_changed(broker: Broker, kinds: frozenset[str]) -> None:
    """A follower copied its leader's ACLs or client quotas (``Replication.on_catalog``):
    decide from them now. Users need nothing: each authentication reads its row."""
    if "acls" in kinds:
        set_acls(broker, acl_rows.load(broker.log.catalog))
    if "quotas" in kinds:
        broker.quotas.reload()


class Checker:
    """One request's questions to the authorizer, for one principal and host."""

    __slots__ = ("authorizer", "host", "principal")

    def __init__(self, authorizer: Authorizer, principal: str, host: str) -> None:
        self.authorizer = authorizer
        self.principal = principal
        self.host = host

    def may(self, operation: int, resource_type: int, name: str) -> bool:
        return self.authorizer.authorize(self.principal, self.host, operation, resource_type, name)

    def topic(self, operation: int, name: Any) -> bool:
        return self.may(operation, ResourceType.TOPIC, str(name))

    def group(self, operation: int, name: Any) -> bool:
        return self.may(operation, ResourceType.GROUP, str(name))

    def cluster(self, operation: int) -> bool:
        return self.may(operation, ResourceType.CLUSTER, CLUSTER_NAME)

    def create_topic(self, name: Any) -> bool:
        return self.cluster(Operation.CREATE) or self.topic(Operation.CREATE, name)


def checker(ctx: Context) -> Checker | None:
    """The request's checker, or None when every request is permitted (no ACL at all)."""
    authorizer = authorizer_of(ctx.broker)
    if not authorizer.enforcing:
        return None
    return Checker(authorizer, ctx.principal, client_host(ctx.client))


def client_host(client: str) -> str:
    """The host of ``host:port`` (an IPv6 one without its brackets)."""
    host = client.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


Refusal = Callable[[Any, Any], Any]
"""``(response class, request body) -> refusal``."""
After = Callable[[Any], Any]
"""``response -> response``: what the principal may see of a handler's answer."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's answer: go on with ``body`` (perhaps narrowed), or answer ``refusal``;
    ``after`` filters the handler's response."""

    body: Any
    refusal: Refusal | None = None
    after: After | None = None


Check = Callable[[Context, Checker, Any], Verdict]


def check(ctx: Context, header: RequestHeader, body: Any) -> tuple[Any, Any, After | None]:
    """``(body, None, after)`` to go on with (the body perhaps narrowed: Metadata; ``after``,
    if not None, filters the handler's response), or ``(body, refusal response, None)`` to
    answer without the handler."""
    rule = _CHECKS.get(header.api_key)
    if rule is None:
        return body, None, None
    who = checker(ctx)
    if who is None:
        return body, None, None
    verdict = rule(ctx, who, body)
    if verdict.refusal is None:
        return verdict.body, None, verdict.after
    return body, verdict.refusal(response_class(header), body), None


# --- refusals, in each API's response shape --------------------------------------------


def _top(code: int) -> Refusal:
    return lambda cls, body: entity(cls, error_code=code)


def _produce(code: int) -> Refusal:
    def build(cls: Any, body: Any) -> Any:
        topic_cls = item_class(cls, "responses")
        part_cls = item_class(topic_cls, "partition_responses")
        return entity(cls, responses=tuple(
            entity(topic_cls, name=t.name, partition_responses=tuple(
                entity(part_cls, index=p.index, error_code=code, base_offset=-1, log_start_offset=-1)
                for p in t.partition_data))
            for t in body.topic_data))
    return build


def _fetch(cls: Any, body: Any) -> Any:
    topic_cls = item_class(cls, "responses")
    part_cls = item_class(topic_cls, "partitions")
    return entity(cls, responses=tuple(
        entity(topic_cls, topic=getattr(t, "topic", None), topic_id=getattr(t, "topic_id", None),
               partitions=tuple(entity(part_cls, partition_index=p.partition,
                                       error_code=TOPIC_AUTHORIZATION_FAILED, high_watermark=-1,
                                       last_stable_offset=-1, log_start_offset=-1)
                                for p in t.partitions))
        for t in body.topics))


def _partitions(field: str, topic_field: str, index_field: str, code: int, **extra: Any) -> Refusal:
    """``<field>`` [``<topic_field>``, ``partitions`` [``<index_field>``, ``error_code``]]."""
    def build(cls: Any, body: Any) -> Any:
        topic_cls = item_class(cls, field)
        part_cls = item_class(topic_cls, "partitions")
        return entity(cls, **{field: tuple(
            entity(topic_cls, **{topic_field: getattr(t, topic_field), "partitions": tuple(
                entity(part_cls, **{index_field: getattr(p, index_field)}, error_code=code, **extra)
                for p in t.partitions)})
            for t in body.topics)})
    return build


def _describe_producers(cls: Any, body: Any) -> Any:
    topic_cls = item_class(cls, "topics")
    part_cls = item_class(topic_cls, "partitions")
    return entity(cls, topics=tuple(
        entity(topic_cls, name=t.name, partitions=tuple(
            entity(part_cls, partition_index=i, error_code=TOPIC_AUTHORIZATION_FAILED)
            for i in t.partition_indexes))
        for t in body.topics))


def _named(field: str, code: int, names: Callable[[Any], list[Any]], key: str = "name",
           **extra: Any) -> Refusal:
    """One item per name the request holds, in ``field``, carrying ``code``."""
    def build(cls: Any, body: Any) -> Any:
        item = item_class(cls, field)
        return entity(cls, **{field: tuple(entity(item, **{key: n}, error_code=code, **extra)
                                           for n in names(body))})
    return build


def _configs(codes: dict[int, int]) -> Refusal:
    def build(cls: Any, body: Any) -> Any:
        field = "results" if has_field(cls, "results") else "responses"
        item = item_class(cls, field)
        return entity(cls, **{field: tuple(
            entity(item, error_code=codes.get(int(r.resource_type), CLUSTER_AUTHORIZATION_FAILED),
                   resource_type=r.resource_type, resource_name=r.resource_name)
            for r in body.resources)})
    return build


def _find_coordinator(code: int) -> Refusal:
    def build(cls: Any, body: Any) -> Any:
        if not has_field(cls, "coordinators"):
            return entity(cls, error_code=code, node_id=-1, port=-1)
        item = item_class(cls, "coordinators")
        return entity(cls, coordinators=tuple(entity(item, key=k, error_code=code, node_id=-1, port=-1)
                                              for k in body.coordinator_keys))
    return build


def _offset_fetch(cls: Any, body: Any) -> Any:
    if not has_field(cls, "groups"):
        return entity(cls, error_code=GROUP_AUTHORIZATION_FAILED)
    item = item_class(cls, "groups")
    return entity(cls, groups=tuple(entity(item, group_id=g.group_id, error_code=GROUP_AUTHORIZATION_FAILED)
                                    for g in body.groups))


def _acl_results(field: str, request_field: str) -> Refusal:
    def build(cls: Any, body: Any) -> Any:
        item = item_class(cls, field)
        return entity(cls, **{field: tuple(entity(item, error_code=CLUSTER_AUTHORIZATION_FAILED)
                                           for _ in getattr(body, request_field))})
    return build


def _client_quota_entries(cls: Any, body: Any) -> Any:
    entry_cls = item_class(cls, "entries")
    entity_cls = item_class(entry_cls, "entity")
    return entity(cls, entries=tuple(
        entity(entry_cls, error_code=CLUSTER_AUTHORIZATION_FAILED, entity=tuple(
            entity(entity_cls, entity_type=e.entity_type, entity_name=e.entity_name) for e in entry.entity))
        for entry in body.entries))


def _scram_users(body: Any) -> list[str]:
    return list(dict.fromkeys([*(d.name for d in body.deletions), *(u.name for u in body.upsertions)]))


# --- the rules, per API -------------------------------------------------------------------

def _refuse_if(allowed: bool, body: Any, refusal: Refusal) -> Verdict:
    return Verdict(body, None if allowed else refusal)


def _split(body: Any, field: str, may: list[bool], refusal: Refusal, answer: str) -> Verdict:
    """Per item, as Kafka: the items of ``body.<field>`` the principal may not use (``may``
    False) are taken out of the request and answered by ``refusal`` in the response's
    ``answer``, after the handler's answer for the others. All refused: ``refusal`` for the
    whole request, without the handler (so nothing of it is done)."""
    if all(may):
        return Verdict(body)
    if not any(may):
        return Verdict(body, refusal)
    items = getattr(body, field)
    allowed = tuple(i for i, ok in zip(items, may, strict=True) if ok)
    refused_items = tuple(i for i, ok in zip(items, may, strict=True) if not ok)
    denied = dataclasses.replace(body, **{field: refused_items})

    def after(response: Any) -> Any:
        refused = getattr(refusal(type(response), denied), answer)
        return dataclasses.replace(response, **{answer: (*getattr(response, answer), *refused)})

    return Verdict(dataclasses.replace(body, **{field: allowed}), None, after)


def _produce_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """WRITE on the transactional id (if any) for the whole request, then per topic."""
    txn = getattr(body, "transactional_id", None)
    if txn is not None and not who.may(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, txn):
        return Verdict(body, _produce(TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    may = [who.topic(Operation.WRITE, t.name) for t in body.topic_data]
    return _split(body, "topic_data", may, _produce(TOPIC_AUTHORIZATION_FAILED), "responses")


def _replica_id(body: Any) -> int:
    """A Fetch's or OffsetForLeaderEpoch's replica id (-1: a client; v15+ Fetch: in ``replica_state``)."""
    state = getattr(body, "replica_state", None)
    return int(state.replica_id) if state is not None else int(getattr(body, "replica_id", -1))


def _fetch_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """A follower's: CLUSTER_ACTION, whole. A consumer's: READ per topic; the refused topics
    are not read, nor watched by the long poll."""
    if _replica_id(body) >= 0:
        return _refuse_if(who.cluster(Operation.CLUSTER_ACTION), body, _fetch)
    may = []
    for t in body.topics:  # bounded by the request
        name = getattr(t, "topic", None)
        if name is None:  # v13+: by id; an unknown id is the handler's UNKNOWN_TOPIC_ID
            cfg = ctx.log.topic_by_id(t.topic_id)
            name = None if cfg is None else cfg.name
        may.append(name is None or who.topic(Operation.READ, name))
    return _split(body, "topics", may, _fetch, "responses")


def _topics_check(operation: int, refusal: Refusal, name_field: str = "name",
                  answer: str = "topics") -> Check:
    """``operation`` on each of ``body.topics``, per topic."""
    def rule(ctx: Context, who: Checker, body: Any) -> Verdict:
        may = [who.topic(operation, getattr(t, name_field)) for t in body.topics]
        return _split(body, "topics", may, refusal, answer)
    return rule


def _metadata_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """Only the topics the principal may DESCRIBE are listed; one it names but may not is
    answered TOPIC_AUTHORIZATION_FAILED (and not looked up); auto-creation needs CREATE."""
    named = body.topics or ()
    hidden = [t for t in named if t.name is not None and not who.topic(Operation.DESCRIBE, t.name)]
    changes: dict[str, Any] = {}
    if hidden:
        changes["topics"] = tuple(t for t in named if t not in hidden)
    if getattr(body, "allow_auto_topic_creation", False) and not all(
            who.create_topic(t.name) for t in named if t.name is not None):
        changes["allow_auto_topic_creation"] = False
    narrowed = dataclasses.replace(body, **changes) if changes else body

    def after(response: Any) -> Any:
        topic_cls = item_class(type(response), "topics")
        shown = tuple(t for t in response.topics if t.name is None or who.topic(Operation.DESCRIBE, t.name))
        shown += tuple(entity(topic_cls, name=t.name, error_code=TOPIC_AUTHORIZATION_FAILED,
                              topic_id=getattr(t, "topic_id", None)) for t in hidden)
        return dataclasses.replace(response, topics=shown)

    return Verdict(narrowed, None, after)


def _list_groups_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """All groups with DESCRIBE on the cluster; otherwise those the principal may DESCRIBE."""
    if who.cluster(Operation.DESCRIBE):
        return Verdict(body)

    def after(response: Any) -> Any:
        return dataclasses.replace(response, groups=tuple(
            g for g in response.groups if who.group(Operation.DESCRIBE, g.group_id)))

    return Verdict(body, None, after)


def _create_topics_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    may = [who.create_topic(t.name) for t in body.topics]
    return _split(body, "topics", may, _named("topics", TOPIC_AUTHORIZATION_FAILED,
                                              lambda b: [t.name for t in b.topics]), "topics")


def _group_check(operation: int, refusal: Refusal) -> Check:
    def rule(ctx: Context, who: Checker, body: Any) -> Verdict:
        return _refuse_if(who.group(operation, body.group_id), body, refusal)
    return rule


_COMMIT_REFUSAL: Final = _partitions("topics", "name", "partition_index", TOPIC_AUTHORIZATION_FAILED)
"""OffsetCommit's and OffsetDelete's answer for the partitions of refused topics."""


def _offset_commit_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """READ on the group for the whole request, then READ per topic: a refused topic's
    partitions are not committed."""
    if not who.group(Operation.READ, body.group_id):
        return Verdict(body, _partitions("topics", "name", "partition_index", GROUP_AUTHORIZATION_FAILED))
    return _topics_check(Operation.READ, _COMMIT_REFUSAL)(ctx, who, body)


def _offset_fetch_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """DESCRIBE on each group (v8+: per group, the others answered GROUP_AUTHORIZATION_FAILED),
    then, as Kafka, only topics the principal may DESCRIBE: left out of an answer for all
    the group's partitions, answered TOPIC_AUTHORIZATION_FAILED when named."""
    if not hasattr(body, "groups"):
        if not who.group(Operation.DESCRIBE, body.group_id):
            return Verdict(body, _offset_fetch)

        def after_one(response: Any) -> Any:
            if getattr(response, "error_code", 0):
                return response
            return dataclasses.replace(response, topics=_offsets_shown(who, body.topics, response.topics,
                                                                       type(response)))

        return Verdict(dataclasses.replace(body, topics=_describable(who, body.topics)), None, after_one)
    may = [who.group(Operation.DESCRIBE, g.group_id) for g in body.groups]
    if not any(may):
        return Verdict(body, _offset_fetch)
    asked = [g for g, ok in zip(body.groups, may, strict=True) if ok]
    narrowed = tuple(dataclasses.replace(g, topics=_describable(who, g.topics)) for g in asked)

    def after(response: Any) -> Any:
        group_cls = item_class(type(response), "groups")
        shown = tuple(g if g.error_code else dataclasses.replace(
            g, topics=_offsets_shown(who, a.topics, g.topics, group_cls))
            for g, a in zip(response.groups, asked, strict=False))  # the handler's: one per group asked
        refused = tuple(entity(group_cls, group_id=g.group_id, error_code=GROUP_AUTHORIZATION_FAILED)
                        for g, ok in zip(body.groups, may, strict=True) if not ok)
        return dataclasses.replace(response, groups=(*shown, *refused))

    return Verdict(dataclasses.replace(body, groups=narrowed), None, after)


def _describable(who: Checker, topics: Any) -> Any:
    """The named topics the principal may DESCRIBE (None, all of the group's, stays None)."""
    if topics is None:
        return None
    return tuple(t for t in topics if who.topic(Operation.DESCRIBE, t.name))


def _offsets_shown(who: Checker, asked: Any, answered: tuple[Any, ...], holder: Any) -> tuple[Any, ...]:
    """One group's answered topics as the principal may see them: for all partitions
    (``asked`` None), those it may DESCRIBE; for named ones, those answered and each
    partition of a refused topic with TOPIC_AUTHORIZATION_FAILED and no offset."""
    if asked is None:
        return tuple(t for t in answered if who.topic(Operation.DESCRIBE, t.name))
    topic_cls = item_class(holder, "topics")
    part_cls = item_class(topic_cls, "partitions")
    refused = tuple(entity(topic_cls, name=t.name, partitions=tuple(
        entity(part_cls, partition_index=p, committed_offset=-1, committed_leader_epoch=-1, metadata="",
               error_code=TOPIC_AUTHORIZATION_FAILED) for p in t.partition_indexes))
        for t in asked if not who.topic(Operation.DESCRIBE, t.name))
    return (*answered, *refused)


def _find_coordinator_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """DESCRIBE on the group or transactional id; v4+ per key."""
    keys = list(body.coordinator_keys) if hasattr(body, "coordinator_keys") else [body.key]
    if int(getattr(body, "key_type", 0)) == 1:
        may = [who.may(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, k) for k in keys]
        refusal = _find_coordinator(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    else:
        may = [who.group(Operation.DESCRIBE, k) for k in keys]
        refusal = _find_coordinator(GROUP_AUTHORIZATION_FAILED)
    if not hasattr(body, "coordinator_keys"):
        return _refuse_if(all(may), body, refusal)
    return _split(body, "coordinator_keys", may, refusal, "coordinators")


def _init_producer_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    txn = body.transactional_id
    if txn is not None:
        return _refuse_if(who.may(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, txn), body,
                          _top(TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    allowed = (who.cluster(Operation.IDEMPOTENT_WRITE)
               or who.authorizer.may_write_some_topic(who.principal, who.host))
    return _refuse_if(allowed, body, _top(CLUSTER_AUTHORIZATION_FAILED))


def _config_resources(operation: int, answer: str) -> Check:
    """``operation`` per resource: on the topic for a topic, on the cluster for the others."""
    def rule(ctx: Context, who: Checker, body: Any) -> Verdict:
        may = [who.topic(operation, r.resource_name) if int(r.resource_type) == TOPIC_CONFIG
               else who.cluster(operation) for r in body.resources]
        return _split(body, "resources", may, _configs({TOPIC_CONFIG: TOPIC_AUTHORIZATION_FAILED}), answer)
    return rule


def _cluster_check(operation: int, refusal: Refusal) -> Check:
    def rule(ctx: Context, who: Checker, body: Any) -> Verdict:
        return _refuse_if(who.cluster(operation), body, refusal)
    return rule


def _delete_topics_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """DELETE per topic; a topic named by an unknown id is left to the handler (UNKNOWN_TOPIC_ID)."""
    field = "topic_names" if hasattr(body, "topic_names") else "topics"
    may = [n is None or who.topic(Operation.DELETE, n) for n in _delete_topic_names(ctx, body)]
    return _split(body, field, may, _delete_topics_refusal(ctx, who), "responses")


def _delete_topics_refusal(ctx: Context, who: Checker) -> Refusal:
    """TOPIC_AUTHORIZATION_FAILED per topic; one named by id shows its name only to a
    principal that may DESCRIBE it (as Kafka)."""
    def build(cls: Any, body: Any) -> Any:
        item = item_class(cls, "responses")
        if hasattr(body, "topic_names"):
            return entity(cls, responses=tuple(entity(item, name=n, error_code=TOPIC_AUTHORIZATION_FAILED)
                                               for n in body.topic_names))
        names = _delete_topic_names(ctx, body)
        return entity(cls, responses=tuple(
            entity(item, name=_shown_name(who, t.name, n), topic_id=t.topic_id,
                   error_code=TOPIC_AUTHORIZATION_FAILED)
            for t, n in zip(body.topics, names, strict=True)))
    return build


def _shown_name(who: Checker, asked: str | None, found: str | None) -> str | None:
    """The name a refused topic is answered with: the one asked, else (named by id) the one
    found if the principal may DESCRIBE it, else none."""
    if asked is not None:
        return asked
    return found if found is not None and who.topic(Operation.DESCRIBE, found) else None


def _delete_topic_names(ctx: Context, body: Any) -> list[str | None]:
    if hasattr(body, "topic_names"):
        return [str(n) for n in body.topic_names]
    out: list[str | None] = []
    for t in body.topics:  # bounded by the request
        if t.name is not None:
            out.append(str(t.name))
        else:
            cfg = ctx.log.topic_by_id(t.topic_id)
            out.append(None if cfg is None else cfg.name)
    return out


def _groups_check(operation: int, field: str, answer: str) -> Check:
    """``operation`` per group of ``body.<field>`` (a list of group ids)."""
    def rule(ctx: Context, who: Checker, body: Any) -> Verdict:
        may = [who.group(operation, g) for g in getattr(body, field)]
        refusal = _named(answer, GROUP_AUTHORIZATION_FAILED, lambda b: list(getattr(b, field)),
                         key="group_id")
        return _split(body, field, may, refusal, answer)
    return rule


def _offset_delete_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """DELETE on the group for the whole request, then READ per topic."""
    if not who.group(Operation.DELETE, body.group_id):
        return Verdict(body, _top(GROUP_AUTHORIZATION_FAILED))
    return _topics_check(Operation.READ, _COMMIT_REFUSAL)(ctx, who, body)


def _epoch_check(ctx: Context, who: Checker, body: Any) -> Verdict:
    """OffsetForLeaderEpoch: a follower's (replica id >= 0) needs CLUSTER_ACTION, a client's
    DESCRIBE per topic."""
    if _replica_id(body) >= 0:
        return _refuse_if(who.cluster(Operation.CLUSTER_ACTION), body, _EPOCH_REFUSAL)
    return _topics_check(Operation.DESCRIBE, _EPOCH_REFUSAL, name_field="topic")(ctx, who, body)


_EPOCH_REFUSAL: Final = _partitions("topics", "topic", "partition", TOPIC_AUTHORIZATION_FAILED,
                                    leader_epoch=-1, end_offset=-1)

_CHECKS: Final[dict[int, Check]] = {
    0: _produce_check,
    1: _fetch_check,
    2: _topics_check(Operation.DESCRIBE, _partitions("topics", "name", "partition_index",
                                                     TOPIC_AUTHORIZATION_FAILED, timestamp=-1, offset=-1)),
    3: _metadata_check,
    8: _offset_commit_check,
    9: _offset_fetch_check,
    10: _find_coordinator_check,
    11: _group_check(Operation.READ, _top(GROUP_AUTHORIZATION_FAILED)),
    12: _group_check(Operation.READ, _top(GROUP_AUTHORIZATION_FAILED)),
    13: _group_check(Operation.READ, _top(GROUP_AUTHORIZATION_FAILED)),
    14: _group_check(Operation.READ, _top(GROUP_AUTHORIZATION_FAILED)),
    15: _groups_check(Operation.DESCRIBE, "groups", "groups"),
    16: _list_groups_check,
    19: _create_topics_check,
    20: _delete_topics_check,
    21: _topics_check(Operation.DELETE, _partitions("topics", "name", "partition_index",
                                                    TOPIC_AUTHORIZATION_FAILED, low_watermark=-1)),
    22: _init_producer_check,
    23: _epoch_check,
    29: _cluster_check(Operation.DESCRIBE, _top(CLUSTER_AUTHORIZATION_FAILED)),
    30: _cluster_check(Operation.ALTER, _acl_results("results", "creations")),
    31: _cluster_check(Operation.ALTER, _acl_results("filter_results", "filters")),
    32: _config_resources(Operation.DESCRIBE_CONFIGS, "results"),
    33: _config_resources(Operation.ALTER_CONFIGS, "responses"),
    35: _cluster_check(Operation.DESCRIBE, _top(CLUSTER_AUTHORIZATION_FAILED)),
    37: _topics_check(Operation.ALTER, _named("results", TOPIC_AUTHORIZATION_FAILED,
                                              lambda b: [t.name for t in b.topics]), answer="results"),
    42: _groups_check(Operation.DELETE, "groups_names", "results"),
    44: _config_resources(Operation.ALTER_CONFIGS, "responses"),
    47: _offset_delete_check,
    48: _cluster_check(Operation.DESCRIBE_CONFIGS, _top(CLUSTER_AUTHORIZATION_FAILED)),
    49: _cluster_check(Operation.ALTER_CONFIGS, _client_quota_entries),
    50: _cluster_check(Operation.DESCRIBE, _top(CLUSTER_AUTHORIZATION_FAILED)),
    51: _cluster_check(Operation.ALTER, _named("results", CLUSTER_AUTHORIZATION_FAILED, _scram_users,
                                               key="user")),
    61: _topics_check(Operation.READ, _describe_producers),
}
"""The rule of each API. An API not listed needs nothing: ApiVersions, SaslHandshake and
SaslAuthenticate (asked before anything is known), DescribeCluster (as Kafka)."""


# --- the extension APIs: the stream's category topic ----------------------------------------

_STREAM_READS: Final = frozenset({20001, 20003, 20010})
"""ReadStream, GetStreamMetadata, LoadSnapshot: READ on the stream's category topic."""
_STREAM_WRITES: Final = frozenset({20000, 20004, 20005, 20006, 20011})
"""AppendToStream, SetStreamMetadata, DeleteStream, TruncateStream, SaveSnapshot: WRITE."""
POLL_ALL, POLL_CATEGORY = 0, 1


def check_extension(ctx: Context, header: RequestHeader, frame_bytes: bytes) -> bytes | None:
    """The refusal frame of an extension request the principal may not make, or None.
    A stream is checked on its category topic (the topic a new stream of it goes to, or
    the one an append names); ReadAll, a PollSubscription of all and ListStreams without a
    category need READ (DESCRIBE) on every topic, i.e. an ACL for the topic ``*``; the DCB
    APIs WRITE or READ on its topic. Bad bytes are left to the handler to answer."""
    who = checker(ctx)
    key = header.api_key
    if who is not None and key in REPLICATION_KEYS:
        if who.cluster(Operation.CLUSTER_ACTION):
            return None
        return extension_codec.error_response(key, header.correlation_id, CLUSTER_AUTHORIZATION_FAILED,
                                              "not authorized for CLUSTER_ACTION on the cluster")
    if who is None or key not in _EXTENSION_NEEDS:
        return None
    try:
        request = extension_codec.decode_request_body(key, frame_bytes, header.body_position)
    except ProtocolError:
        return None
    operation, topics = _EXTENSION_NEEDS[key](request)
    if all(who.topic(operation, t) for t in topics):
        return None
    return extension_codec.error_response(key, header.correlation_id, TOPIC_AUTHORIZATION_FAILED,
                                          "not authorized for the stream's topic")


def _stream_topic(request: dict[str, Any]) -> list[str]:
    return [request.get("topic") or category_of(request["stream_id"])]


def _poll_topics(request: dict[str, Any]) -> list[str]:
    kind, target = request["kind"], request["target"]
    if kind == POLL_ALL or target is None:
        return [WILDCARD]
    return [target if kind == POLL_CATEGORY else category_of(target)]


Needs = Callable[[dict[str, Any]], tuple[int, list[str]]]
_EXTENSION_NEEDS: Final[dict[int, Needs]] = {
    **{k: (lambda r: (Operation.READ, _stream_topic(r))) for k in _STREAM_READS},
    **{k: (lambda r: (Operation.WRITE, _stream_topic(r))) for k in _STREAM_WRITES},
    20002: lambda r: (Operation.READ, [WILDCARD]),
    20007: lambda r: (Operation.READ, _poll_topics(r)),
    20008: lambda r: (Operation.READ, sorted({category_of(s) for s in r["stream_ids"]})),
    20009: lambda r: (Operation.DESCRIBE, [r["category"] or WILDCARD]),
    20012: lambda r: (Operation.WRITE, [DCB_TOPIC]),
    20013: lambda r: (Operation.READ, [DCB_TOPIC]),
    20014: lambda r: (Operation.READ, [DCB_TOPIC]),
}
"""What each extension API needs: an operation on topics, from the decoded request."""
