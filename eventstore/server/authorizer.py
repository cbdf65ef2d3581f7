"""The authorizer: may this principal, from this host, do this operation on this resource?

One :class:`Authorizer` per server, over the ACLs of the catalog (``catalog/acls.py``),
decides as Kafka's does (docs/protocol.md, "Authorization"):

1. a super user (``--super-user``) may do everything;
2. with no ACL defined at all, everyone may do everything (a store without ACLs
   behaves as before ACLs existed);
3. otherwise the ACLs that match the resource (LITERAL with its name or ``*``,
   PREFIXED with a prefix of its name), the principal (itself or ``User:*``) and the
   host (itself or ``*``) decide: a DENY of the operation (or ALL) refuses, whatever
   allows it; else an ALLOW of the operation, of ALL, or of an operation that implies
   it (READ, WRITE, DELETE, ALTER imply DESCRIBE; ALTER_CONFIGS implies
   DESCRIBE_CONFIGS) permits;
4. no ACL matching: refused; with ``--allow-everyone-if-no-acl-found``, permitted when
   the resource has no ACL at all (for any principal, host or operation).

A check costs the ACLs of that resource, not all of them: literal ACLs are indexed by
(type, name), prefixed ones by (type, prefix), and a name is looked up under each
prefix length in use. Decisions are cached by (principal, host, operation, type,
name) and the cache is dropped whenever the ACLs change (:meth:`replace`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from ..catalog.acls import WILDCARD, AclBinding, Operation, PatternType, Permission, ResourceType

__all__ = ["Authorizer"]

ALL_PRINCIPALS = "User:*"
CACHE_ENTRIES = 65_536
"""Decisions kept; past this the cache starts again (a bound, not a policy)."""
_IMPLIES: dict[int, frozenset[int]] = {
    Operation.DESCRIBE: frozenset({Operation.DESCRIBE, Operation.READ, Operation.WRITE, Operation.DELETE,
                                   Operation.ALTER, Operation.ALL}),
    Operation.DESCRIBE_CONFIGS: frozenset({Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS,
                                           Operation.ALL}),
}
"""The ALLOWed operations that permit a requested one (besides itself and ALL)."""

Decision = tuple[str, str, int, int, str]


class Authorizer:
    """Decides requests from the ACLs it was last given; not thread-safe (the event loop's)."""

    def __init__(self, bindings: Iterable[AclBinding] = (), super_users: Iterable[str] = (),
                 allow_if_no_acl: bool = False) -> None:
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self._literal: dict[tuple[int, str], list[AclBinding]] = {}
        self._prefixed: dict[tuple[int, str], list[AclBinding]] = {}
        self._prefix_lengths: dict[int, tuple[int, ...]] = {}
        self._cache: dict[Decision, bool] = {}
        self.bindings: tuple[AclBinding, ...] = ()
        self.replace(bindings)

    def replace(self, bindings: Iterable[AclBinding]) -> None:
        """Decide from ``bindings`` from now on (every cached decision dropped)."""
        literal: dict[tuple[int, str], list[AclBinding]] = defaultdict(list)
        prefixed: dict[tuple[int, str], list[AclBinding]] = defaultdict(list)
        lengths: dict[int, set[int]] = defaultdict(set)
        self.bindings = tuple(dict.fromkeys(bindings))
        for acl in self.bindings:  # bounded by the ACLs
            if acl.pattern_type == PatternType.PREFIXED:
                prefixed[(acl.resource_type, acl.resource_name)].append(acl)
                lengths[acl.resource_type].add(len(acl.resource_name))
            else:
                literal[(acl.resource_type, acl.resource_name)].append(acl)
        self._literal, self._prefixed = dict(literal), dict(prefixed)
        self._prefix_lengths = {t: tuple(sorted(n)) for t, n in lengths.items()}
        self._cache = {}

    @property
    def enforcing(self) -> bool:
        """Whether any ACL exists (without one, every request is permitted)."""
        return bool(self.bindings)

    def authorize(self, principal: str, host: str, operation: int, resource_type: int, name: str) -> bool:
        """Whether ``principal`` from ``host`` may do ``operation`` on the resource."""
        if not self.bindings or principal in self.super_users:
            return True
        key = (principal, host, operation, resource_type, name)
        decided = self._cache.get(key)
        if decided is None:
            decided = self._decide(principal, host, operation, resource_type, name)
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache = {}
            self._cache[key] = decided
        return decided

    def _decide(self, principal: str, host: str, operation: int, resource_type: int, name: str) -> bool:
        acls = self.matching_resource(resource_type, name)
        if not acls:
            return self.allow_if_no_acl
        allowing = _IMPLIES.get(operation, frozenset({operation, Operation.ALL}))
        allowed = False
        for acl in acls:  # bounded by the ACLs of this resource
            if acl.principal not in (principal, ALL_PRINCIPALS) or acl.host not in (host, WILDCARD):
                continue
            if acl.permission == Permission.DENY:
                if acl.operation in (operation, Operation.ALL):
                    return False
            elif acl.operation in allowing:
                allowed = True
        return allowed

    def may_write_some_topic(self, principal: str, host: str) -> bool:
        """Whether an ALLOW of WRITE (or ALL) on some topic covers the principal and no DENY of
        the same ACL's resource refuses it: Kafka permits an idempotent producer with it."""
        if not self.bindings or principal in self.super_users:
            return True
        for acl in self.bindings:  # bounded by the ACLs; asked once per producer
            if (acl.resource_type == ResourceType.TOPIC and acl.permission == Permission.ALLOW
                    and acl.operation in (Operation.WRITE, Operation.ALL)
                    and acl.principal in (principal, ALL_PRINCIPALS) and acl.host in (host, WILDCARD)
                    and self.authorize(principal, host, Operation.WRITE, ResourceType.TOPIC,
                                       acl.resource_name)):
                return True
        return False

    def matching_resource(self, resource_type: int, name: str) -> list[AclBinding]:
        """The ACLs whose pattern matches the resource, whoever and whatever they are for."""
        found = list(self._literal.get((resource_type, name), ()))
        found += self._literal.get((resource_type, WILDCARD), ())
        for length in self._prefix_lengths.get(resource_type, ()):  # bounded by the prefix lengths in use
            if length > len(name):
                break
            found += self._prefixed.get((resource_type, name[:length]), ())
        return found
