"""``es acls``: add, list and remove the ACLs of a store (docs/operations.md, "Authorization").

With ``--data`` these commands open the store itself, so the server must be stopped;
with ``--bootstrap`` they are a Kafka admin client of the running server (CreateAcls,
DescribeAcls, DeleteAcls; ``admin_client.py``), which applies a change at once. Both
forms take the same options and print the same output.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import store as store_module
from ..catalog import acls as acl_rows
from ..catalog.acls import (
    CLUSTER_NAME,
    AclBinding,
    AclFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from ..errors import InvalidArgumentError
from .access import CliError, DataOption, open_store
from .admin_client import (
    DEFAULT_TIMEOUT_S,
    BootstrapOption,
    CommandConfigOption,
    PasswordEnvOption,
    SaslMechanismOption,
    SecurityProtocolOption,
    TimeoutOption,
    UsernameOption,
    connect,
    connection,
)
from .output import JsonOption, add_row, console, note, plural, print_json, table

acls_app = typer.Typer(help="Add, list and remove ACLs of a stopped store (--data) or a running server "
                            "(--bootstrap).", no_args_is_help=True)

Json = Annotated[bool, JsonOption]
Principal = Annotated[str, typer.Option(
    "--principal", metavar="User:NAME", help="Who: User:NAME, or User:* for all.")]
Host = Annotated[str, typer.Option("--host", help="From which client address ('*': any).")]
Operations = Annotated[list[str], typer.Option(
    "--operation", metavar="OP", help=f"Repeatable; one of {', '.join(o.name for o in Operation)}.")]
Topic = Annotated[str | None, typer.Option("--topic", metavar="NAME", help="A topic ('*': every topic).")]
Group = Annotated[str | None, typer.Option(
    "--group", metavar="NAME", help="A consumer group ('*': every group).")]
Cluster = Annotated[bool, typer.Option(
    "--cluster", help="The cluster (topic creation, ACLs, configuration).")]
TransactionalId = Annotated[str | None, typer.Option(
    "--transactional-id", metavar="ID", help="A transactional id.")]
Prefixed = Annotated[bool, typer.Option("--prefixed", help="The name is a prefix: every resource it begins.")]
Deny = Annotated[bool, typer.Option("--deny", help="Deny instead of allow (a DENY wins over any ALLOW).")]


def _resource(topic: str | None, group: str | None, cluster: bool, transactional_id: str | None,
              ) -> tuple[int, str] | None:
    """The one resource named by the options, or None when none is."""
    named = [(ResourceType.TOPIC, topic), (ResourceType.GROUP, group),
             (ResourceType.CLUSTER, CLUSTER_NAME if cluster else None),
             (ResourceType.TRANSACTIONAL_ID, transactional_id)]
    given = [(int(t), n) for t, n in named if n is not None]
    if len(given) > 1:
        raise CliError("name one resource: --topic, --group, --cluster or --transactional-id")
    return given[0] if given else None


def _operation(name: str) -> int:
    try:
        return int(Operation[name.strip().upper().replace("-", "_")])
    except KeyError:
        raise CliError(f"unknown operation {name!r}",
                       hint=f"one of {', '.join(o.name for o in Operation)}") from None


def _bindings(principal: str, host: str, operations: list[str], resource: tuple[int, str] | None,
              prefixed: bool, deny: bool) -> list[AclBinding]:
    if resource is None:
        raise CliError("name a resource: --topic, --group, --cluster or --transactional-id")
    if not operations:
        raise CliError("name an operation: --operation READ (repeatable)")
    pattern = PatternType.PREFIXED if prefixed else PatternType.LITERAL
    permission = Permission.DENY if deny else Permission.ALLOW
    try:
        return [acl_rows.binding(resource[0], resource[1], pattern, principal, host, _operation(op),
                                 permission) for op in operations]
    except InvalidArgumentError as e:
        raise CliError(str(e)) from None


@acls_app.command()
def add(ctx: typer.Context, principal: Principal, operation: Operations,
        data: DataOption = store_module.DEFAULT_PATH,
        host: Host = "*", topic: Topic = None, group: Group = None, cluster: Cluster = False,
        transactional_id: TransactionalId = None, prefixed: Prefixed = False, deny: Deny = False,
        bootstrap: BootstrapOption = None, command_config: CommandConfigOption = None,
        security_protocol: SecurityProtocolOption = None, sasl_mechanism: SaslMechanismOption = None,
        username: UsernameOption = None, password_env: PasswordEnvOption = None,
        timeout: TimeoutOption = DEFAULT_TIMEOUT_S) -> None:
    """Allow (or --deny) a principal operations on one resource."""
    resource = _resource(topic, group, cluster, transactional_id)
    made = _bindings(principal, host, operation, resource, prefixed, deny)
    server = connection(ctx, bootstrap, command_config, security_protocol, sasl_mechanism, username,
                        password_env, timeout)
    if server is not None:
        connect(server).create_acls(made)
    else:
        with open_store(data) as store:
            acl_rows.add(store.log.catalog, made)
    for acl in made:
        note(f"added: {acl.describe()}")


@acls_app.command()
def remove(ctx: typer.Context, principal: Principal, operation: Operations,
           data: DataOption = store_module.DEFAULT_PATH,
           host: Host = "*", topic: Topic = None, group: Group = None, cluster: Cluster = False,
           transactional_id: TransactionalId = None, prefixed: Prefixed = False, deny: Deny = False,
           bootstrap: BootstrapOption = None, command_config: CommandConfigOption = None,
           security_protocol: SecurityProtocolOption = None, sasl_mechanism: SaslMechanismOption = None,
           username: UsernameOption = None, password_env: PasswordEnvOption = None,
           timeout: TimeoutOption = DEFAULT_TIMEOUT_S) -> None:
    """Remove the ACLs given exactly as they were added (none unless all exist)."""
    resource = _resource(topic, group, cluster, transactional_id)
    doomed = _bindings(principal, host, operation, resource, prefixed, deny)
    server = connection(ctx, bootstrap, command_config, security_protocol, sasl_mechanism, username,
                        password_env, timeout)
    if server is not None:
        admin = connect(server)
        _check_exist(doomed, admin.describe_acls(None, principal))
        admin.delete_acls(doomed)
    else:
        with open_store(data) as store:
            _check_exist(doomed, acl_rows.load(store.log.catalog))
            acl_rows.remove(store.log.catalog, doomed)
    note(f"removed {plural(len(doomed), 'ACL')}")


def _check_exist(doomed: list[AclBinding], stored: list[AclBinding]) -> None:
    missing = [acl for acl in doomed if acl not in set(stored)]
    if missing:
        raise CliError(f"no such ACL: {missing[0].describe()}", hint="list them with: es acls list")


@acls_app.command("list")
def list_acls(ctx: typer.Context, data: DataOption = store_module.DEFAULT_PATH, json: Json = False,
              principal: Annotated[str | None, typer.Option(
                  "--principal", help="Only this principal's.")] = None,
              topic: Topic = None, group: Group = None, cluster: Cluster = False,
              transactional_id: TransactionalId = None,
              bootstrap: BootstrapOption = None, command_config: CommandConfigOption = None,
              security_protocol: SecurityProtocolOption = None, sasl_mechanism: SaslMechanismOption = None,
              username: UsernameOption = None, password_env: PasswordEnvOption = None,
              timeout: TimeoutOption = DEFAULT_TIMEOUT_S) -> None:
    """The ACLs (those matching a resource: literal, '*' and prefixes of its name)."""
    resource = _resource(topic, group, cluster, transactional_id)
    server = connection(ctx, bootstrap, command_config, security_protocol, sasl_mechanism, username,
                        password_env, timeout)
    if server is not None:
        matching = connect(server).describe_acls(resource, principal)
    else:
        chosen = AclFilter(principal=principal) if resource is None else AclFilter(
            resource_type=resource[0], resource_name=resource[1], pattern_type=PatternType.MATCH,
            principal=principal)
        with open_store(data) as store:
            matching = [a for a in acl_rows.load(store.log.catalog) if chosen.matches(a)]
    found = sorted(matching, key=lambda a: (a.resource_type, a.resource_name, a.pattern_type, a.principal,
                                            a.host, a.operation, a.permission))
    if json:
        print_json([_row(a) for a in found])
        return
    if not found:
        everything = resource is None and principal is None
        where = data if server is None else server.bootstrap
        note(f"no ACLs in {where} (every client may do everything)" if everything else "no ACL matches")
        return
    t = table("PERMISSION", "PRINCIPAL", "HOST", "OPERATION", "RESOURCE", "NAME", "PATTERN")
    for a in found:
        row = _row(a)
        add_row(t, *row.values())
    console().print(t)


def _row(acl: AclBinding) -> dict[str, str]:
    return {"permission": Permission(acl.permission).name, "principal": acl.principal, "host": acl.host,
            "operation": Operation(acl.operation).name, "resource_type": ResourceType(acl.resource_type).name,
            "resource_name": acl.resource_name, "pattern_type": PatternType(acl.pattern_type).name}
