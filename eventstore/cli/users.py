"""``es users``: the SASL users of a stopped store (``--data``) or of a running server
(``--bootstrap``, through its Kafka admin APIs; ``admin_client.py``), with the same options
and output either way (docs/operations.md, section 1.3)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import store as store_module
from ..catalog import users as user_rows
from ..errors import InvalidArgumentError, StoreLockedError
from ..wire.security import SCRAM_MECHANISMS
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
from .output import JsonOption, add_row, console, note, print_json, table

users_app = typer.Typer(help="Add, list and delete the SASL users (PLAIN, SCRAM).", no_args_is_help=True)

IN_USE_HINT = "stop 'es serve' first, or change users through the server: --bootstrap HOST:PORT"


def _catalog_of(data: str) -> store_module.Store:
    """The store at ``data`` (its catalog holds the users); an error naming what holds it."""
    try:
        return open_store(data)
    except StoreLockedError as e:
        holder = f"process {e.pid}" if e.pid is not None else "another process"
        raise CliError(f"store {data!r} is in use by {holder}", hint=IN_USE_HINT) from None


def read_password(password_file: str | None) -> str:
    """The password: the first line of ``password_file`` ("-": standard input), of standard input
    when it is not a terminal, else asked twice at a prompt (never a command-line argument,
    which other users of the machine could see)."""
    if password_file is not None:
        try:
            with (sys.stdin if password_file == "-" else open(password_file, encoding="utf-8")) as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise CliError(f"cannot read the password file {password_file!r}: {e.strerror}") from None
    elif not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise CliError("the password is empty")
    return password


@users_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user name (the principal is User:NAME).")],
    data: DataOption = store_module.DEFAULT_PATH,
    password_file: Annotated[str | None, typer.Option(
        "--password-file", metavar="FILE",
        help="Read the password from FILE's first line ('-': stdin).")] = None,
    mechanism: Annotated[list[str] | None, typer.Option(
        "--mechanism", metavar="SCRAM-SHA-256|SCRAM-SHA-512",
        help="Credentials to store (repeatable; default both). PLAIN checks against them.")] = None,
    iterations: Annotated[int, typer.Option(
        "--iterations", metavar="N", help="SCRAM iterations (4096..16384).")] = 4096,
    bootstrap: BootstrapOption = None, command_config: CommandConfigOption = None,
    security_protocol: SecurityProtocolOption = None, sasl_mechanism: SaslMechanismOption = None,
    username: UsernameOption = None, password_env: PasswordEnvOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
) -> None:
    """Add a user, or set a user's password: salted SCRAM credentials, never the password."""
    from ..server.auth import credential  # the server extra: imported only by this command

    mechanisms = tuple(mechanism or SCRAM_MECHANISMS)
    unknown = [m for m in mechanisms if m not in SCRAM_MECHANISMS]
    if unknown:
        raise CliError(f"--mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512, got {', '.join(unknown)}")
    if not name:
        raise CliError("the user name is empty")
    server = connection(ctx, bootstrap, command_config, security_protocol, sasl_mechanism, username,
                        password_env, timeout)
    password = read_password(password_file)
    try:  # checks the iterations and the password for either form; the offline one stores these
        made = {m: credential(m, password, iterations) for m in mechanisms}
    except InvalidArgumentError as e:
        raise CliError(str(e)) from None
    if server is not None:
        admin = connect(server)
        existed = admin.user(name) is not None
        admin.upsert_user(name, prepared(password), mechanisms, iterations)
    else:
        with _catalog_of(data) as store:
            existed = bool(user_rows.get(store.log.catalog, name))
            for m, c in made.items():  # bounded: two mechanisms
                user_rows.put(store.log.catalog, name, m, c)
    done = "updated" if existed else "added"
    note(f"{done} user {name!r} ({', '.join(mechanisms)}, {iterations} iterations)")


def prepared(password: str) -> str:
    """The password as SCRAM salts it (SASLprep, RFC 4013), which the server does to a
    password it salts itself; an admin client salts what it is given, as it is."""
    from scramp.utils import saslprep  # the server extra, as for the offline command

    return str(saslprep(password))


@users_app.command("list")
def list_users(ctx: typer.Context, data: DataOption = store_module.DEFAULT_PATH,
               as_json: Annotated[bool, JsonOption] = False,
               bootstrap: BootstrapOption = None, command_config: CommandConfigOption = None,
               security_protocol: SecurityProtocolOption = None, sasl_mechanism: SaslMechanismOption = None,
               username: UsernameOption = None, password_env: PasswordEnvOption = None,
               timeout: TimeoutOption = DEFAULT_TIMEOUT_S) -> None:
    """The users, their mechanisms and iterations (never a key)."""
    server = connection(ctx, bootstrap, command_config, security_protocol, sasl_mechanism, username,
                        password_env, timeout)
    if server is not None:
        found = connect(server).users()
    else:
        with _catalog_of(data) as store:
            found = {name: {m: c.iterations for m, c in sorted(creds.items())}
                     for name, creds in sorted(user_rows.names(store.log.catalog).items())}
    if as_json:
        print_json([{"user": name, "mechanisms": {m: {"iterations": n} for m, n in creds.items()}}
                    for name, creds in found.items()])
        return
    t = table("user", "mechanisms", "iterations")
    for name, creds in found.items():  # bounded by the users
        add_row(t, name, ", ".join(creds), ", ".join(str(n) for n in creds.values()))
    console().print(t)


@users_app.command("delete")
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The user to delete.")],
           data: DataOption = store_module.DEFAULT_PATH,
           bootstrap: BootstrapOption = None, command_config: CommandConfigOption = None,
           security_protocol: SecurityProtocolOption = None, sasl_mechanism: SaslMechanismOption = None,
           username: UsernameOption = None, password_env: PasswordEnvOption = None,
           timeout: TimeoutOption = DEFAULT_TIMEOUT_S) -> None:
    """Delete a user and all its credentials (its open connections stay; new ones fail)."""
    server = connection(ctx, bootstrap, command_config, security_protocol, sasl_mechanism, username,
                        password_env, timeout)
    if server is not None:
        admin = connect(server)
        mechanisms = admin.user(name)
        if mechanisms is None:
            raise CliError(f"no user {name!r}")
        admin.delete_user(name, mechanisms)
    else:
        with _catalog_of(data) as store:
            if not user_rows.delete(store.log.catalog, name):
                raise CliError(f"no user {name!r}")
    note(f"deleted user {name!r}")
