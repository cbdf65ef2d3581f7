"""DescribeAcls (29), CreateAcls (30), DeleteAcls (31), versions 1 to 3: ACLs managed by
Kafka admin clients (docs/protocol.md, "Authorization").

Each change is one catalog transaction, durable before the answer, and the server's
authorizer decides from the new ACLs for the next request. (Version 0, without
pattern types, is not served.) A creation that is not a valid binding is answered
INVALID_REQUEST (42) with the reason, and the others of the request are still made.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

from ...catalog import acls as acl_rows
from ...catalog.acls import AclBinding, AclFilter
from ...errors import InvalidArgumentError
from ...wire import RequestHeader
from ..authorization import authorizer_of, set_acls
from ..context import Context
from ..dispatch import handles
from ..entities import entity, item_class, response_class

NONE: Final = 0
INVALID_REQUEST: Final = 42


@handles(29)
async def describe_acls(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """The ACLs the filter selects, grouped by resource pattern."""
    cls = response_class(header)
    chosen = acl_filter(body, "_filter", "pattern_type_filter")
    by_resource: dict[tuple[int, str, int], list[AclBinding]] = defaultdict(list)
    for acl in authorizer_of(ctx.broker).bindings:  # bounded by the ACLs
        if chosen.matches(acl):
            by_resource[(acl.resource_type, acl.resource_name, acl.pattern_type)].append(acl)
    resource_cls = item_class(cls, "resources")
    acl_cls = item_class(resource_cls, "acls")
    return entity(cls, error_code=NONE, resources=tuple(
        entity(resource_cls, resource_type=t, resource_name=n, pattern_type=p, acls=tuple(
            entity(acl_cls, principal=a.principal, host=a.host, operation=a.operation,
                   permission_type=a.permission) for a in found))
        for (t, n, p), found in by_resource.items()))


@handles(30)
async def create_acls(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Store each valid creation; one answer per creation, in order."""
    results: list[tuple[int, str | None]] = []
    made: list[AclBinding] = []
    for c in body.creations:  # bounded by the request
        try:
            made.append(acl_rows.binding(
                int(c.resource_type), str(c.resource_name), int(c.resource_pattern_type), str(c.principal),
                str(c.host), int(c.operation), int(c.permission_type)))
            results.append((NONE, None))
        except InvalidArgumentError as e:
            results.append((INVALID_REQUEST, str(e)))
    if made:
        catalog = ctx.log.catalog
        await ctx.blocking(acl_rows.add, catalog, made)
        set_acls(ctx.broker, await ctx.blocking(acl_rows.load, catalog))
    cls = response_class(header)
    item = item_class(cls, "results")
    return entity(cls, results=tuple(entity(item, error_code=code, error_message=message)
                                     for code, message in results))


@handles(31)
async def delete_acls(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Delete what each filter selects; each filter's answer lists the ACLs it deleted."""
    current = authorizer_of(ctx.broker).bindings
    matched = [[acl for acl in current if acl_filter(f, "_filter", "pattern_type_filter").matches(acl)]
               for f in body.filters]
    doomed = list(dict.fromkeys(acl for found in matched for acl in found))
    if doomed:
        catalog = ctx.log.catalog
        await ctx.blocking(acl_rows.remove, catalog, doomed)
        set_acls(ctx.broker, await ctx.blocking(acl_rows.load, catalog))
    cls = response_class(header)
    result_cls = item_class(cls, "filter_results")
    acl_cls = item_class(result_cls, "matching_acls")
    return entity(cls, filter_results=tuple(
        entity(result_cls, error_code=NONE, matching_acls=tuple(
            entity(acl_cls, error_code=NONE, resource_type=a.resource_type, resource_name=a.resource_name,
                   pattern_type=a.pattern_type, principal=a.principal, host=a.host, operation=a.operation,
                   permission_type=a.permission) for a in found))
        for found in matched))


def acl_filter(request: Any, suffix: str, pattern_field: str) -> AclFilter:
    """The filter of a DescribeAcls request or of one DeleteAcls filter (fields
    ``resource_type<suffix>``, ``resource_name<suffix>``, ...)."""
    return AclFilter(
        resource_type=int(getattr(request, f"resource_type{suffix}")),
        resource_name=getattr(request, f"resource_name{suffix}"),
        pattern_type=int(getattr(request, pattern_field)),
        principal=getattr(request, f"principal{suffix}"),
        host=getattr(request, f"host{suffix}"),
        operation=int(request.operation),
        permission=int(request.permission_type),
    )
