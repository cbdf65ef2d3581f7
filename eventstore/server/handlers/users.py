"""DescribeUserScramCredentials (50) and AlterUserScramCredentials (51): SASL users for admin clients.

The users are those ``es users`` manages (``catalog/users.py``). Kafka's admin clients
send a salted password, never the password; the server keeps only the keys derived
from it (``auth.credential_from_salted``). Each user's result carries its own error
code, as Kafka's do (docs/operations.md, section 1.4).
"""

from __future__ import annotations

from typing import Any, Final

from ...catalog import Catalog, users
from ...errors import InvalidArgumentError
from ...wire import RequestHeader
from ..auth import SCRAM_MECHANISMS, credential_from_salted
from ..context import Context
from ..dispatch import handles
from ..entities import entity, item_class, response_class

__all__ = ["alter_user_scram_credentials", "describe_user_scram_credentials"]

RESOURCE_NOT_FOUND: Final = 91
DUPLICATE_RESOURCE: Final = 92
UNACCEPTABLE_CREDENTIAL: Final = 93
UNSUPPORTED_SASL_MECHANISM: Final = 33
MECHANISM_CODES: Final = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
"""Kafka's ScramMechanism numbers."""
_CODE_OF: Final = {name: code for code, name in MECHANISM_CODES.items()}


@handles(50)
async def describe_user_scram_credentials(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Each user's mechanisms and iterations (all users when none are named: a null or an
    empty list, as Kafka; librdkafka sends the empty one); never a key."""
    cls = response_class(header)
    result_cls = item_class(cls, "results")
    info_cls = item_class(result_cls, "credential_infos")
    catalog = ctx.log.catalog
    if not body.users:
        known = await ctx.blocking(users.names, catalog)
        asked = sorted(known)
    else:
        asked = [str(u.name) for u in body.users]
        known = {name: await ctx.blocking(users.get, catalog, name) for name in set(asked)}
    results = []
    for name in asked:  # bounded by the request (or the users)
        found = known.get(name) or {}
        if not found:
            results.append(entity(result_cls, user=name, error_code=RESOURCE_NOT_FOUND,
                                  error_message=f"no SCRAM credentials for user {name!r}"))
            continue
        infos = tuple(entity(info_cls, mechanism=_CODE_OF[m], iterations=c.iterations)
                      for m, c in sorted(found.items()) if m in _CODE_OF)
        results.append(entity(result_cls, user=name, error_code=0, credential_infos=infos))
    return entity(cls, error_code=0, results=tuple(results))


@handles(51)
async def alter_user_scram_credentials(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Deletions, then upsertions; a user named twice for one mechanism is refused whole."""
    cls = response_class(header)
    result_cls = item_class(cls, "results")
    changes = [(str(d.name), int(d.mechanism), None) for d in body.deletions]
    changes += [(str(u.name), int(u.mechanism), u) for u in body.upsertions]
    seen: dict[tuple[str, int], int] = {}
    for name, mechanism, _ in changes:  # bounded by the request
        seen[(name, mechanism)] = seen.get((name, mechanism), 0) + 1
    errors: dict[str, tuple[int, str]] = {}
    for name, mechanism, change in changes:  # bounded by the request
        if name in errors:
            continue
        if seen[(name, mechanism)] > 1:
            errors[name] = (DUPLICATE_RESOURCE, f"user {name!r} is altered twice for one mechanism")
            continue
        errors.update(await ctx.blocking(_apply, ctx.log.catalog, name, mechanism, change))
    order = list(dict.fromkeys(name for name, _, _ in changes))
    return entity(cls, results=tuple(entity(result_cls, user=name, error_code=errors.get(name, (0, None))[0],
                                            error_message=errors.get(name, (0, None))[1]) for name in order))


def _apply(catalog: Catalog, name: str, code: int, upsertion: Any) -> dict[str, tuple[int, str]]:
    """One deletion (``upsertion`` None) or upsertion; ``{name: (error code, message)}`` if refused."""
    mechanism = MECHANISM_CODES.get(code)
    if mechanism is None or mechanism not in SCRAM_MECHANISMS:
        return {name: (UNSUPPORTED_SASL_MECHANISM, f"unknown SCRAM mechanism {code}")}
    if not name:
        return {name: (UNACCEPTABLE_CREDENTIAL, "the user name is empty")}
    if upsertion is None:
        if not users.remove_mechanism(catalog, name, mechanism):
            return {name: (RESOURCE_NOT_FOUND, f"user {name!r} has no {mechanism} credential")}
        return {}
    try:
        made = credential_from_salted(mechanism, bytes(upsertion.salt), int(upsertion.iterations),
                                      bytes(upsertion.salted_password))
    except InvalidArgumentError as e:
        return {name: (UNACCEPTABLE_CREDENTIAL, str(e))}
    if not upsertion.salt or not upsertion.salted_password:
        return {name: (UNACCEPTABLE_CREDENTIAL, "an empty salt or salted password")}
    users.put(catalog, name, mechanism, made)
    return {}
