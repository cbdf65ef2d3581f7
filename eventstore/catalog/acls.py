"""Access control lists: Kafka's ACL model and their rows in the catalog (docs/format.md, 6).

An :class:`AclBinding` says that a principal (``User:alice``, ``User:*`` for every
one) from a host (an IP address, ``*`` for any) is allowed or denied one operation
on the resources a pattern names: a LITERAL pattern names one resource (or every
one with ``*``), a PREFIXED one every resource whose name starts with it. The
numbers are Kafka's (its ``AclOperation``, ``AclPermissionType``, ``ResourceType``
and ``PatternType`` codes), so the wire's CreateAcls / DescribeAcls / DeleteAcls
carry them unchanged.

Storage: the catalog's ``meta`` database, one row per binding under
``acl 0x00 <16-byte BLAKE2b of the encoded binding>``; the value is the binding as
MessagePack, sealed (``sealed.py``). ACLs are primary data: a row that fails its
checksum is a ``CorruptionError``, never an ACL silently dropped (that could widen
access). Adding a binding twice keeps one row; every change is one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from enum import IntEnum
from typing import Any

import msgspec

from ..errors import InvalidArgumentError
from . import keys, sealed
from .env import Catalog

__all__ = [
    "ACL_PREFIX", "CLUSTER_NAME", "AclBinding", "AclFilter", "Operation", "PatternType", "Permission",
    "ResourceType", "add", "binding", "load", "remove",
]

ACL_PREFIX = b"acl\x00"
CLUSTER_NAME = "kafka-cluster"
"""The one CLUSTER resource's name, as Kafka names it."""
WILDCARD = "*"
ANY = 1
"""Kafka's ANY in a filter (every type, pattern, operation or permission)."""


class ResourceType(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    MATCH = 2
    """Filters only: every pattern that matches the filter's name (literal, ``*``, prefixes)."""
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    """On the cluster: what a follower does (replica Fetch, OffsetForLeaderEpoch, ReplicaCatalog, Promote)."""
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(IntEnum):
    DENY = 2
    ALLOW = 3


class AclBinding(msgspec.Struct, frozen=True, array_like=True):
    """One ACL; the fields hold Kafka's codes (the enums above)."""

    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission: int

    def describe(self) -> str:
        """One line for people: ``ALLOW User:alice from * READ on TOPIC orders (LITERAL)``."""
        return (f"{Permission(self.permission).name} {self.principal} from {self.host} "
                f"{Operation(self.operation).name} on {ResourceType(self.resource_type).name} "
                f"{self.resource_name} ({PatternType(self.pattern_type).name})")


class AclFilter(msgspec.Struct, frozen=True):
    """What DescribeAcls and DeleteAcls select: None or ANY (1) in a field selects every value."""

    resource_type: int = ANY
    resource_name: str | None = None
    pattern_type: int = ANY
    principal: str | None = None
    host: str | None = None
    operation: int = ANY
    permission: int = ANY

    def matches(self, acl: AclBinding) -> bool:
        return (self.resource_type in (ANY, acl.resource_type)
                and self._resource_matches(acl)
                and self.principal in (None, acl.principal)
                and self.host in (None, acl.host)
                and self.operation in (ANY, acl.operation)
                and self.permission in (ANY, acl.permission))

    def _resource_matches(self, acl: AclBinding) -> bool:
        if self.pattern_type == PatternType.MATCH:
            name = self.resource_name
            if name is None:
                return True
            if acl.pattern_type == PatternType.LITERAL:
                return acl.resource_name in (name, WILDCARD)
            return name.startswith(acl.resource_name)
        if self.pattern_type not in (ANY, acl.pattern_type):
            return False
        return self.resource_name in (None, acl.resource_name)


def binding(resource_type: int, resource_name: str, pattern_type: int, principal: str, host: str,
            operation: int, permission: int) -> AclBinding:
    """A checked binding; ``InvalidArgumentError`` saying what is wrong otherwise."""
    checks: list[tuple[int, type[IntEnum], str]] = [
        (resource_type, ResourceType, "resource type"), (operation, Operation, "operation"),
        (permission, Permission, "permission")]
    for value, kind, what in checks:  # bounded: three codes
        if value not in {int(m) for m in kind}:
            raise InvalidArgumentError(f"unknown ACL {what} {value!r}")
    if pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        raise InvalidArgumentError(f"an ACL's pattern type is LITERAL (3) or PREFIXED (4), "
                                   f"got {pattern_type!r}")
    if not resource_name:
        raise InvalidArgumentError("an ACL needs a resource name")
    cluster = (CLUSTER_NAME, PatternType.LITERAL)
    if resource_type == ResourceType.CLUSTER and (resource_name, pattern_type) != cluster:
        raise InvalidArgumentError(f"the CLUSTER resource is named {CLUSTER_NAME!r} (LITERAL)")
    kind_name, sep, name = principal.partition(":")
    if not sep or not kind_name or not name:
        raise InvalidArgumentError(f"a principal is TYPE:NAME (User:alice, User:*), got {principal!r}")
    if not host:
        raise InvalidArgumentError("an ACL needs a host ('*' for any)")
    return AclBinding(int(resource_type), resource_name, int(pattern_type), principal, host,
                      int(operation), int(permission))


_encode = msgspec.msgpack.encode
_decoder = msgspec.msgpack.Decoder(AclBinding)


def _key(acl: AclBinding) -> bytes:
    return ACL_PREFIX + hashlib.blake2b(_encode(acl), digest_size=16).digest()


def load(catalog: Catalog) -> list[AclBinding]:
    """Every stored binding (``CorruptionError`` for a row that fails its checksum)."""
    out = []
    for key, value in catalog.items(keys.DB_META, ACL_PREFIX):  # bounded by the stored ACLs
        payload = sealed.primary(catalog.path, "ACL row of the meta database", key, value, catalog.legacy)
        out.append(_decoder.decode(payload))
    return out


def add(catalog: Catalog, bindings: Iterable[AclBinding]) -> None:
    """Store ``bindings`` in one transaction (one already stored stays as it is)."""
    rows = [(_key(acl), acl) for acl in bindings]

    def put(txn: Any) -> None:
        db = catalog.dbs[keys.DB_META]
        for key, acl in rows:  # bounded by the caller's list
            txn.put(key, sealed.seal(key, _encode(acl)), db=db)

    catalog.write(put)


def remove(catalog: Catalog, bindings: Iterable[AclBinding]) -> None:
    """Delete ``bindings`` in one transaction (one not stored is ignored)."""
    found = [_key(acl) for acl in bindings]

    def drop(txn: Any) -> None:
        db = catalog.dbs[keys.DB_META]
        for key in found:  # bounded by the caller's list
            txn.delete(key, db=db)

    catalog.write(drop)
