"""DescribeClientQuotas (48) 0 to 1, AlterClientQuotas (49) 0 to 1 (docs/operations.md, "Quotas").

Entities are Kafka's ``user`` and ``client-id`` (a name, or null for the default);
keys ``producer_byte_rate``, ``consumer_byte_rate`` and ``request_percentage``.
Another entity type (``ip``) or key is INVALID_REQUEST: for a whole Describe, for
that entry of an Alter. An Alter's valid entries are written to the catalog in one
transaction, durable before the answer, and apply from the next request on.
"""

from __future__ import annotations

from typing import Any, Final

import anyio

from ...wire import RequestHeader
from ..context import Context
from ..dispatch import handles
from ..entities import entity, item_class, response_class
from ..quotas import Entity, QuotaError, check_entity

NONE: Final = 0
INVALID_REQUEST: Final = 42
_LOCK = "client_quotas.lock"


@handles(48)
async def describe_client_quotas(ctx: Context, header: RequestHeader, body: Any) -> Any:
    cls = response_class(header)
    components = [(c.entity_type, int(c.match_type), c.match) for c in body.components]
    try:
        found = ctx.broker.quotas.describe(components, bool(body.strict))
    except QuotaError as e:
        return entity(cls, error_code=INVALID_REQUEST, error_message=str(e), entries=None)
    entry_cls = item_class(cls, "entries")
    entity_cls, value_cls = item_class(entry_cls, "entity"), item_class(entry_cls, "values")
    entries = tuple(
        entity(entry_cls,
               entity=tuple(entity(entity_cls, entity_type=t, entity_name=n) for t, n in named),
               values=tuple(entity(value_cls, key=k, value=v) for k, v in sorted(values.items())))
        for named, values in found)
    return entity(cls, error_code=NONE, error_message=None, entries=entries)


@handles(49)
async def alter_client_quotas(ctx: Context, header: RequestHeader, body: Any) -> Any:
    cls = response_class(header)
    entry_cls = item_class(cls, "entries")
    entity_cls = item_class(entry_cls, "entity")
    quotas = ctx.broker.quotas
    lock: anyio.Lock = ctx.state.setdefault(_LOCK, anyio.Lock())
    async with lock:  # one Alter at a time: each starts from the quotas the last one left
        results: list[tuple[tuple[Any, ...], str | None]] = []
        changed: dict[Entity, dict[str, float]] = {}
        for item in body.entries:  # bounded by the request
            named = tuple(sorted((e.entity_type, e.entity_name) for e in item.entity))
            try:
                check_entity(named)
                if named in changed:
                    raise QuotaError(f"entity {list(named)!r} is altered twice in one request")
                changed[named] = quotas.altered(named, [(op.key, float(op.value), bool(op.remove))
                                                        for op in item.ops])
                results.append((item.entity, None))
            except QuotaError as e:
                results.append((item.entity, str(e)))
        if changed and not body.validate_only:
            await ctx.blocking(quotas.save, changed)
            quotas.apply(changed)
    entries = tuple(
        entity(entry_cls, error_code=NONE if error is None else INVALID_REQUEST, error_message=error,
               entity=tuple(entity(entity_cls, entity_type=e.entity_type, entity_name=e.entity_name)
                            for e in given))
        for given, error in results)
    return entity(cls, entries=entries)
