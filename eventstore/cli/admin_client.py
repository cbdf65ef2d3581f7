"""``--bootstrap`` for ``es acls`` and ``es users``: a running server's ACLs and SCRAM users
through confluent-kafka's admin client (docs/operations.md, sections 1.3, 2.3 and 2.4).

Without ``--bootstrap`` these commands open the store, which a running server holds; with
it they send CreateAcls, DescribeAcls, DeleteAcls, DescribeUserScramCredentials and
AlterUserScramCredentials, so a change applies at once. The connection is configured as
Kafka's tools configure theirs: a client properties file (``--command-config``) and flags
named after Kafka's settings, a flag winning over the file; a password comes from the
environment or the file, never from the command line (other users of the machine can read
it there). librdkafka is imported only when a command connects.

Every failure is a :class:`CliError`: the server's refusal with its error code, a failed
authentication, a connection refused, or no answer within the timeout.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Final

import typer

from ..catalog import acls as acl_rows
from ..catalog.acls import AclBinding
from ..errors import InvalidArgumentError
from ..wire.security import DEFAULT_SASL_MECHANISM, SASL_MECHANISMS, SECURITY_PROTOCOLS
from .access import CliError

__all__ = [
    "BootstrapOption",
    "CommandConfigOption",
    "Connection",
    "PasswordEnvOption",
    "SaslMechanismOption",
    "SecurityAdmin",
    "SecurityProtocolOption",
    "TimeoutOption",
    "UsernameOption",
    "connect",
    "connection",
    "read_properties",
]

DEFAULT_TIMEOUT_S: Final = 10.0
PASSWORD_VARIABLE: Final = "ES_PASSWORD"
CHILD_START_S: Final = 5.0
"""What a child process may take beyond the timeout to start (and import librdkafka)."""
POLL_S: Final = 0.05
"""How often a wait serves librdkafka's callbacks (its errors) while the answer is due."""
CLUSTER_AUTHORIZATION_FAILED: Final = 31
RESOURCE_NOT_FOUND: Final = 91
#: Kafka's ScramMechanism numbers, as AlterUserScramCredentials carries them
SCRAM_CODES: Final = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
LOGGER = logging.getLogger(__name__)
"""librdkafka's log lines: kept off stderr, where a failure is one ``error:`` line."""
LOGGER.addHandler(logging.NullHandler())
LOGGER.propagate = False

BootstrapOption = Annotated[str | None, typer.Option(
    "--bootstrap", envvar="ES_BOOTSTRAP", metavar="HOST:PORT",
    help="A running server to change through its Kafka admin APIs, instead of --data "
         "(env ES_BOOTSTRAP; docs/operations.md, 2.4).")]
CommandConfigOption = Annotated[str | None, typer.Option(
    "--command-config", envvar="ES_COMMAND_CONFIG", metavar="FILE",
    help="With --bootstrap: Kafka client properties (security.protocol, sasl.mechanism, "
         "sasl.username, sasl.password, ssl.ca.location, ...).")]
SecurityProtocolOption = Annotated[str | None, typer.Option(
    "--security-protocol", envvar="ES_SECURITY_PROTOCOL", metavar="|".join(SECURITY_PROTOCOLS),
    help="With --bootstrap: how to connect (default PLAINTEXT).")]
SaslMechanismOption = Annotated[str | None, typer.Option(
    "--sasl-mechanism", envvar="ES_SASL_MECHANISM", metavar="|".join(SASL_MECHANISMS),
    help=f"With --bootstrap: the SASL mechanism (default {DEFAULT_SASL_MECHANISM}).")]
UsernameOption = Annotated[str | None, typer.Option(
    "--username", envvar="ES_USERNAME", metavar="NAME", help="With --bootstrap: the SASL user.")]
PasswordEnvOption = Annotated[str | None, typer.Option(
    "--password-env", envvar="ES_PASSWORD_ENV", metavar="VAR",
    help=f"With --bootstrap: the environment variable holding the SASL password "
         f"(default {PASSWORD_VARIABLE}, else the file's sasl.password).")]
TimeoutOption = Annotated[float, typer.Option(
    "--timeout", metavar="SECONDS", min=0.1, help="With --bootstrap: how long to wait for the server.")]


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the server is and how to reach it: the options of the command line."""

    bootstrap: str
    command_config: str | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password_env: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def connection(ctx: typer.Context, bootstrap: str | None, command_config: str | None = None,
               security_protocol: str | None = None, sasl_mechanism: str | None = None,
               username: str | None = None, password_env: str | None = None,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> Connection | None:
    """The server to talk to, or None to open the store at ``--data``.

    ``--data`` and ``--bootstrap`` both on the command line are an error; when one of them
    comes from its environment variable, the one on the command line wins.
    """
    options = {"--command-config": command_config, "--security-protocol": security_protocol,
               "--sasl-mechanism": sasl_mechanism, "--username": username, "--password-env": password_env}
    if bootstrap and _from_command_line(ctx, "data"):
        if _from_command_line(ctx, "bootstrap"):
            raise CliError("give --data or --bootstrap, not both",
                           hint="--data opens a stopped store; --bootstrap asks a running server")
        bootstrap = None
    if not bootstrap:
        given = [flag for flag, value in options.items() if value is not None]
        if given and _from_command_line(ctx, given[0].lstrip("-").replace("-", "_")):
            raise CliError(f"{given[0]} needs --bootstrap HOST:PORT")
        return None
    return Connection(bootstrap, command_config, security_protocol, sasl_mechanism, username,
                      password_env, timeout_s)


def _from_command_line(ctx: typer.Context, parameter: str) -> bool:
    source = ctx.get_parameter_source(parameter)
    return source is not None and source.name == "COMMANDLINE"


# --- the client's settings ---------------------------------------------------------------------


def read_properties(path: str) -> dict[str, str]:
    """A Java properties file as Kafka's tools read it: ``key=value`` or ``key: value`` lines,
    ``#`` and ``!`` comments, a trailing backslash continuing a line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CliError(f"cannot read the client properties {path!r}: {e.strerror}") from None
    out: dict[str, str] = {}
    for line in _logical_lines(text):  # bounded by the file
        found = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)", line)
        if found is None:
            raise CliError(f"{path}: not a 'key=value' line: {line!r}")
        out[found.group(1)] = found.group(2)
    return out


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():  # bounded by the text
        line = raw.strip() if not pending else raw.lstrip()
        if not pending and (not line or line.startswith(("#", "!"))):
            continue
        if (len(line) - len(line.rstrip("\\"))) % 2 == 1:
            pending += line[:-1]
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _jaas_credentials(properties: dict[str, str]) -> dict[str, str]:
    """``sasl.jaas.config`` (Java clients' form) turned into librdkafka's user and password."""
    jaas = properties.pop("sasl.jaas.config", None)
    if jaas is None:
        return properties
    for key, name in (("sasl.username", "username"), ("sasl.password", "password")):
        found = re.search(rf'\b{name}\s*=\s*"((?:[^"\\]|\\.)*)"', jaas)
        if found is not None:
            properties.setdefault(key, found.group(1))
    return properties


def _choice(value: str | None, choices: tuple[str, ...], flag: str) -> str | None:
    if value is None:
        return None
    if value.upper() not in choices:
        raise CliError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    return value.upper()


def client_settings(conn: Connection) -> dict[str, str]:
    """librdkafka's settings for ``conn``: the file's, then the flags'; checked for what a
    SASL connection needs, so a missing user or password is named here, not timed out."""
    settings = _jaas_credentials(read_properties(conn.command_config)) if conn.command_config else {}
    flags = {"security.protocol": _choice(conn.security_protocol, SECURITY_PROTOCOLS, "--security-protocol"),
             "sasl.mechanism": _choice(conn.sasl_mechanism, SASL_MECHANISMS, "--sasl-mechanism"),
             "sasl.username": conn.username, "sasl.password": _password(conn)}
    settings.update({k: v for k, v in flags.items() if v is not None})
    protocol = settings.get("security.protocol", "PLAINTEXT").upper()
    if protocol.startswith("SASL_"):
        settings.setdefault("sasl.mechanism", DEFAULT_SASL_MECHANISM)
        if not settings.get("sasl.username"):
            raise CliError(f"{protocol} needs a user: --username NAME (or sasl.username in --command-config)")
        if not settings.get("sasl.password"):
            raise CliError(f"no password for user {settings['sasl.username']!r}",
                           hint=f"set {PASSWORD_VARIABLE} (or the variable --password-env names), "
                                "or sasl.password in the --command-config file")
    elif settings.get("sasl.username"):
        raise CliError(f"a SASL user needs a SASL protocol, but the security protocol is {protocol}",
                       hint="add --security-protocol SASL_SSL (or SASL_PLAINTEXT)")
    settings["bootstrap.servers"] = conn.bootstrap
    return settings


def _password(conn: Connection) -> str | None:
    if conn.password_env is not None:
        if conn.password_env not in os.environ:
            raise CliError(f"the environment variable {conn.password_env} (--password-env) is not set")
        return os.environ[conn.password_env]
    return os.environ.get(PASSWORD_VARIABLE)


# --- the admin client ---------------------------------------------------------------------------


class SecurityAdmin:
    """The server's ACLs and SCRAM users, through librdkafka's admin client.

    Each call waits at most the connection's timeout for its answer, serving librdkafka's
    callbacks meanwhile: a failed authentication or every broker down ends the wait at
    once, and the last connection error names the cause of a timeout.
    """

    def __init__(self, where: str, settings: dict[str, str], timeout_s: float, source: str = "") -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka import admin as ck_admin  # the remote extra: only with --bootstrap

        self.where = where
        self._settings = settings
        self._timeout_s = timeout_s
        self._admin_module: Any = ck_admin
        self._kafka_exception = KafkaException
        self._local = {name: int(getattr(KafkaError, "_" + name))  # librdkafka's own codes
                       for name in ("AUTHENTICATION", "ALL_BROKERS_DOWN", "TIMED_OUT")}
        self._errors: list[Any] = []
        try:
            callbacks: dict[str, Any] = {"logger": LOGGER, "error_cb": self._errors.append}
            self._client = ck_admin.AdminClient({**settings, **callbacks})
        except (KafkaException, ValueError, TypeError) as e:
            raise CliError(f"cannot configure the client{source}: {_text(e)}") from None

    # ACLs

    def create_acls(self, bindings: list[AclBinding]) -> None:
        futures = self._call("creating ACLs", lambda t: self._client.create_acls(
            [self._binding(a) for a in bindings], request_timeout=t))
        self._results("creating ACLs", futures.values())

    def describe_acls(self, resource: tuple[int, str] | None, principal: str | None) -> list[AclBinding]:
        """The ACLs matching ``resource`` (literal, ``*`` and prefixes) of ``principal``."""
        m = self._admin_module
        chosen = m.AclBindingFilter(
            m.ResourceType.ANY if resource is None else m.ResourceType(resource[0]),
            None if resource is None else resource[1],
            m.ResourcePatternType.ANY if resource is None else m.ResourcePatternType.MATCH,
            principal, None, m.AclOperation.ANY, m.AclPermissionType.ANY)
        future = self._call("listing ACLs", lambda t: self._client.describe_acls(chosen, request_timeout=t))
        found = [self._ours(b) for b in self._results("listing ACLs", [future])[0]]
        if not found:
            self._check_may_describe_cluster("listing ACLs")
        return found

    def delete_acls(self, bindings: list[AclBinding]) -> int:
        """Delete exactly ``bindings``; how many ACLs the server deleted."""
        m = self._admin_module
        filters = [m.AclBindingFilter(m.ResourceType(a.resource_type), a.resource_name,
                                      m.ResourcePatternType(a.pattern_type), a.principal, a.host,
                                      m.AclOperation(a.operation), m.AclPermissionType(a.permission))
                   for a in bindings]
        futures = self._call("removing ACLs", lambda t: self._client.delete_acls(filters, request_timeout=t))
        return sum(len(deleted) for deleted in self._results("removing ACLs", futures.values()))

    def _binding(self, acl: AclBinding) -> Any:
        m = self._admin_module
        return m.AclBinding(m.ResourceType(acl.resource_type), acl.resource_name,
                            m.ResourcePatternType(acl.pattern_type), acl.principal, acl.host,
                            m.AclOperation(acl.operation), m.AclPermissionType(acl.permission))

    def _ours(self, found: Any) -> AclBinding:
        try:
            return acl_rows.binding(found.restype.value, found.name, found.resource_pattern_type.value,
                                    found.principal, found.host, found.operation.value,
                                    found.permission_type.value)
        except InvalidArgumentError as e:
            raise CliError(f"listing ACLs on {self.where}: the server answered an ACL this client "
                           f"does not know: {e}") from None

    def _check_may_describe_cluster(self, what: str) -> None:
        """Raise the refusal if the principal may not DESCRIBE the cluster.

        librdkafka answers a refused DescribeAcls as an empty listing (it drops the
        response's error code); DescribeUserScramCredentials needs the same permission
        and reports its refusal, so it tells an empty listing from a refused one.
        """
        self._described(what, None)

    # SCRAM users

    def users(self) -> dict[str, dict[str, int]]:
        """Every user: its mechanisms and their iterations."""
        described = self._described("listing users", None)
        return {name: mechanisms for name, mechanisms in sorted(described.items()) if mechanisms is not None}

    def user(self, name: str) -> dict[str, int] | None:
        """``name``'s mechanisms and iterations; None when the server knows no such user."""
        return self._described("describing the user", [name]).get(name)

    def _described(self, what: str, names: list[str] | None) -> dict[str, dict[str, int] | None]:
        """DescribeUserScramCredentials, asked by a process of its own.

        librdkafka (as of 2.16) frees memory it does not own when this request is
        answered as a whole with an error, which is how a server refuses it (Kafka too):
        the process aborts. Asked from a child process, such a refusal is the child's
        death, reported here as the refusal it is; any other answer comes back as JSON.
        """
        request = {"where": self.where, "settings": self._settings, "timeout_s": self._timeout_s,
                   "what": what, "users": names}
        try:
            done = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(request).encode(),
                                  capture_output=True, timeout=self._timeout_s + CHILD_START_S, check=False)
        except subprocess.TimeoutExpired:  # run() has killed the child
            raise self._unanswered(what) from None
        if done.returncode < 0:
            raise CliError(f"{what} on {self.where}: not authorized (CLUSTER_AUTHORIZATION_FAILED)",
                           hint=_hint(CLUSTER_AUTHORIZATION_FAILED))
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise CliError(f"{what} on {self.where}: the describing process failed: {last}") from None
        if "error" in answer:
            raise CliError(answer["error"], hint=answer["hint"])
        return dict(answer["users"])

    def described_here(self, what: str, names: list[str] | None) -> dict[str, dict[str, int] | None]:
        """DescribeUserScramCredentials in this process: what :meth:`_described`'s child runs."""
        if names is None:
            future = self._call(what, lambda t: self._client.describe_user_scram_credentials(
                request_timeout=t))
            return {name: self._mechanisms(d) for name, d in self._results(what, [future])[0].items()}
        futures = self._call(what, lambda t: self._client.describe_user_scram_credentials(
            names, request_timeout=t))
        out: dict[str, dict[str, int] | None] = {}
        for name, future in futures.items():  # bounded by the names
            try:
                out[name] = self._mechanisms(self._results(what, [future])[0])
            except _Refused as e:
                if e.code != RESOURCE_NOT_FOUND:
                    raise
                out[name] = None
        return out

    def upsert_user(self, name: str, password: str, mechanisms: Iterable[str], iterations: int) -> None:
        """Set ``name``'s credential for each mechanism; the client salts the password."""
        m = self._admin_module
        changes = [m.UserScramCredentialUpsertion(
            name, m.ScramCredentialInfo(m.ScramMechanism(SCRAM_CODES[mech]), iterations),
            password.encode("utf-8")) for mech in mechanisms]
        self._alter("setting the user's credentials", changes)

    def delete_user(self, name: str, mechanisms: Iterable[str]) -> None:
        m = self._admin_module
        self._alter("deleting the user", [m.UserScramCredentialDeletion(
            name, m.ScramMechanism(SCRAM_CODES[mech])) for mech in mechanisms])

    def _alter(self, what: str, changes: list[Any]) -> None:
        futures = self._call(what, lambda t: self._client.alter_user_scram_credentials(
            changes, request_timeout=t))
        self._results(what, futures.values())

    @staticmethod
    def _mechanisms(description: Any) -> dict[str, int]:
        names = {code: name for name, code in SCRAM_CODES.items()}
        return {names[info.mechanism.value]: info.iterations
                for info in sorted(description.scram_credential_infos, key=lambda i: i.mechanism.value)
                if info.mechanism.value in names}

    # waiting for answers

    def _call(self, what: str, start: Callable[[float], Any]) -> Any:
        """Start a request (given the timeout it may take); a request librdkafka refuses
        to send (bad arguments) is an error naming ``what``."""
        try:
            return start(self._timeout_s)
        except (self._kafka_exception, ValueError, TypeError) as e:
            raise CliError(f"{what} on {self.where}: {_text(e)}") from None

    def _results(self, what: str, futures: Iterable[Any]) -> list[Any]:
        """Each future's result, waiting at most the timeout for all of them; the first
        error is raised as a :class:`CliError` naming ``what`` (a :class:`_Refused` for one
        a caller may expect)."""
        pending = list(futures)
        deadline = time.monotonic() + self._timeout_s + 1.0  # librdkafka times out first
        while not all(f.done() for f in pending):  # bounded by the deadline
            self._client.poll(POLL_S)
            self._fail_fast(what)
            if time.monotonic() > deadline:
                raise self._unanswered(what)
        out = []
        for future in pending:  # bounded by the request
            try:
                out.append(future.result(0))
            except self._kafka_exception as e:
                error = e.args[0] if e.args else None
                self._fail_fast(what)
                if error is not None and error.code() == self._local["TIMED_OUT"]:
                    raise self._unanswered(what) from None
                raise _Refused(what, self.where, error) from None
        return out

    def _fail_fast(self, what: str) -> None:
        """Raise at once for what no wait can mend: a failed authentication, every broker down."""
        for error in self._errors:  # bounded by librdkafka's reports
            if error.code() == self._local["AUTHENTICATION"]:
                raise CliError(f"{what} on {self.where}: authentication failed: {error.str()}",
                               hint="check the user, the password and --sasl-mechanism")
            if error.code() == self._local["ALL_BROKERS_DOWN"]:
                raise CliError(f"{what}: cannot reach {self.where}: {self._last_cause(error)}",
                               hint="is es serve running there, and is it the listener's protocol?")

    def _unanswered(self, what: str) -> CliError:
        cause = f": {self._last_cause(None)}" if self._errors else ""
        return CliError(f"{what}: no answer from {self.where} within {self._timeout_s:g} s{cause}",
                        hint="is es serve running there, and is it the listener's protocol?")

    def _last_cause(self, fallback: Any) -> str:
        """The last error that says more than "all brokers are down"."""
        telling = [e for e in self._errors if e.code() != self._local["ALL_BROKERS_DOWN"]]
        return str((telling[-1] if telling else fallback).str())


class _Refused(CliError):
    """The server's error for a request: its code, name and message, as one line."""

    def __init__(self, what: str, where: str, error: Any) -> None:
        self.code = error.code() if error is not None else None
        name = error.name() if error is not None else "UNKNOWN"
        message = str(error.str()) if error is not None else ""
        if self.code == CLUSTER_AUTHORIZATION_FAILED or not message or message == "(null)":
            message = "not authorized" if self.code == CLUSTER_AUTHORIZATION_FAILED else "refused"
        super().__init__(f"{what} on {where}: {message} ({name})", hint=_hint(self.code))


def _hint(code: int | None) -> str | None:
    if code == CLUSTER_AUTHORIZATION_FAILED:
        return ("the connection's principal needs DESCRIBE (to list) or ALTER (to change) on the cluster, "
                "or to be a super user (docs/operations.md, 2.2)")
    return None


def connect(conn: Connection) -> SecurityAdmin:
    """The admin client ``conn`` configures."""
    source = f" (from {conn.command_config})" if conn.command_config else ""
    return SecurityAdmin(conn.bootstrap, client_settings(conn), conn.timeout_s, source)


def _describe_for_parent() -> None:
    """The child of :meth:`SecurityAdmin._described`: a request as JSON on stdin, the users
    (or the error, as one line and a hint) as JSON on stdout."""
    request = json.load(sys.stdin)
    try:
        admin = SecurityAdmin(request["where"], request["settings"], request["timeout_s"])
        answer: dict[str, Any] = {"users": admin.described_here(request["what"], request["users"])}
    except CliError as e:
        answer = {"error": str(e), "hint": e.hint}
    json.dump(answer, sys.stdout)


def _text(error: BaseException) -> str:
    first = error.args[0] if error.args else error
    return str(first.str()) if hasattr(first, "str") else str(first)


if __name__ == "__main__":
    _describe_for_parent()
