"""How commands reach a store, and the errors the command line finds by itself."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from .. import reader as reader_module
from .. import store as store_module
from ..errors import StoreLockedError
from ..reader import StoreReader
from ..remote import store as remote_store
from ..remote.store import RemoteStore

DATA_HELP = "Store directory (env ES_DATA)."
DataOption = Annotated[str, typer.Option("--data", envvar="ES_DATA", help=DATA_HELP)]
BOOTSTRAP_HELP = ("The store a server serves, at HOST:PORT[,HOST:PORT...], instead of --data "
                  "(env ES_BOOTSTRAP); any Kafka-protocol server for topics, records and groups. "
                  "A secured one: ES_SECURITY_PROTOCOL, ES_USERNAME, ES_PASSWORD, ES_COMMAND_CONFIG.")
BootstrapOption = Annotated[str | None, typer.Option(
    "--bootstrap", envvar="ES_BOOTSTRAP", metavar="HOST:PORT", help=BOOTSTRAP_HELP)]
AnyStore = store_module.Store | RemoteStore
"""What a command works on: the store at ``--data``, or the one served at ``--bootstrap``."""


class CliError(Exception):
    """A failure the command line detects itself; printed as ``error:`` and ``hint:``, exit 1."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def is_store(path: str) -> bool:
    """Whether ``path`` holds a store (``eventstore.open`` made its ``catalog`` and ``topics``)."""
    return os.path.isdir(os.path.join(path, "catalog")) and os.path.isdir(os.path.join(path, "topics"))


def open_store(data: str, *, create: bool = False) -> store_module.Store:
    """Open the store at ``data``; unless ``create``, a missing store is an error, not a new one.

    A typo in ``--data`` should not leave an empty store behind.
    """
    if not create and not is_store(data):
        raise CliError(
            f"no store at {data!r}",
            hint="pass --data DIR (or set ES_DATA); 'es topics create' makes a new store",
        )
    return store_module.open(data)


def open_any(data: str, bootstrap: str | None, *, create: bool = False) -> AnyStore:
    """The store served at ``bootstrap`` if given (``eventstore.connect``), else the one at ``data``."""
    if bootstrap:
        return connect(bootstrap)
    return open_store(data, create=create)


#: librdkafka's security settings and ``eventstore.connect``'s names for them
_CONNECT_OPTIONS = {
    "security.protocol": "security_protocol", "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "username", "sasl.password": "password", "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile", "ssl.key.location": "ssl_keyfile",
}


def connect(bootstrap: str) -> RemoteStore:
    """``eventstore.connect(bootstrap)`` secured as the environment says, as ``es acls`` and
    ``es users`` read it (docs/operations.md, 2.4): ``ES_COMMAND_CONFIG`` (Kafka client
    properties), ``ES_SECURITY_PROTOCOL``, ``ES_SASL_MECHANISM``, ``ES_USERNAME`` and the
    password from ``ES_PASSWORD`` (or the variable ``ES_PASSWORD_ENV`` names)."""
    from .admin_client import Connection, client_settings  # it imports this module

    env = os.environ.get
    settings = client_settings(Connection(
        bootstrap, command_config=env("ES_COMMAND_CONFIG"), security_protocol=env("ES_SECURITY_PROTOCOL"),
        sasl_mechanism=env("ES_SASL_MECHANISM"), username=env("ES_USERNAME"),
        password_env=env("ES_PASSWORD_ENV")))
    options: dict[str, Any] = {}
    for key, value in settings.items():  # bounded by the properties
        if key in _CONNECT_OPTIONS:
            options[_CONNECT_OPTIONS[key]] = value
        elif key == "ssl.endpoint.identification.algorithm":
            options["ssl_check_hostname"] = value.lower() != "none"
        elif key.startswith(("ssl.", "sasl.")):
            supported = [*_CONNECT_OPTIONS, "ssl.endpoint.identification.algorithm"]
            raise CliError(f"the client setting {key!r} is not supported with --bootstrap",
                           hint="supported: " + ", ".join(supported))
    return remote_store.connect(bootstrap, **options)


def open_reader(data: str) -> StoreReader:
    """Open the store at ``data`` read-only: no lock, so an application may hold it meanwhile."""
    if not is_store(data):
        raise CliError(f"no store at {data!r}", hint="pass --data DIR (or set ES_DATA)")
    return reader_module.open_reader(data)


@contextmanager
def store_or_reader(data: str, bootstrap: str | None = None
                    ) -> Iterator[tuple[AnyStore | StoreReader, int | None]]:
    """The store, or, while another process holds it, a read-only view and that process's pid.

    Commands that only look (``groups``, ``stats``) work beside a running
    application this way; what only the owner knows (group members, its
    durability mode) they report as unknown.
    """
    if bootstrap:
        with connect(bootstrap) as remote:
            yield remote, None
        return
    try:
        store = open_store(data)
    except StoreLockedError as e:
        with open_reader(data) as reader:
            yield reader, e.pid
        return
    with store:
        yield store, None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
