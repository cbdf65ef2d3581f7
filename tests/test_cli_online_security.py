"""``es users`` and ``es acls`` with ``--bootstrap``: a running server's SCRAM users and ACLs
through its Kafka admin APIs (docs/operations.md, sections 1.3, 2.3 and 2.4).

A server of the test's own, on a SASL_PLAINTEXT listener on 127.0.0.1 (port 0), has a super
user ``admin`` and a user ``bob`` who is not one. Through the command line, as ``admin``, a
user is added and listed, given ACLs, and then authenticates with librdkafka and is allowed
and refused as the ACLs say; the ACL and the user are removed again. ``bob`` is refused
with one ``error:`` line; a port nobody listens on and a server that never answers fail
within the timeout.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import eventstore
from eventstore.catalog import acls as acl_rows
from eventstore.catalog import users
from eventstore.catalog.acls import Operation, PatternType, Permission, ResourceType
from eventstore.cli.app import app
from eventstore.server.auth import credential, plain_matches

ADMIN, ADMIN_PASSWORD = "admin", "admin secret"
BOB, BOB_PASSWORD = "bob", "bob secret"
CAROL, CAROL_PASSWORD = "carol", "carol secret"
DEADLINE_S = 10.0

Run = Callable[..., Result]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[eventstore.Store, str]]:
    """A store served on a SASL_PLAINTEXT listener with the super user admin; bob may only
    READ the topic ``audit`` (so ACLs are in force from the start). Yields (store, address)."""
    tmp = tmp_path_factory.mktemp("online-security")
    with eventstore.open(tmp / "store") as store:
        for name, password in ((ADMIN, ADMIN_PASSWORD), (BOB, BOB_PASSWORD)):
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                users.put(store.log.catalog, name, mechanism, credential(mechanism, password))
        acl_rows.add(store.log.catalog, [acl_rows.binding(
            ResourceType.TOPIC, "audit", PatternType.LITERAL, f"User:{BOB}", "*", Operation.READ,
            Permission.ALLOW)])
        for topic in ("orders", "audit"):
            store.create_topic(topic, 1)
        with store.serve("127.0.0.1:0", listeners=["SASL_PLAINTEXT://127.0.0.1:0"],
                         super_users=[f"User:{ADMIN}"]) as handle:
            host, port = handle.listeners["SASL_PLAINTEXT"]
            yield store, f"{host}:{port}"


@pytest.fixture
def run() -> Run:
    runner = CliRunner()

    def _run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), input=input, prog_name="es", env=env or {})

    return _run


def as_admin(address: str) -> list[str]:
    return ["--bootstrap", address, "--security-protocol", "SASL_PLAINTEXT", "--username", ADMIN]


ADMIN_ENV = {"ES_PASSWORD": ADMIN_PASSWORD}


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result.stdout


def one_error(result: Result) -> str:
    """The ``error:`` line of a failed command: exit 1, one error line and at most a hint."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(x.startswith("hint: ") for x in lines[1:]), result.stderr
    return lines[0]


def produce(address: str, user: str, password: str, topic: str) -> str | None:
    """Produce one record as ``user`` with librdkafka; None when written, else the error's name."""
    from confluent_kafka import Producer

    errors: list[Any] = []
    reports: list[Any] = []
    producer = Producer({"bootstrap.servers": address, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user,
                         "sasl.password": password, "message.timeout.ms": 5000,
                         "error_cb": errors.append, "logger": _QUIET})
    producer.produce(topic, b"v", on_delivery=lambda err, _msg: reports.append(err))
    deadline = time.monotonic() + DEADLINE_S
    while not reports and time.monotonic() < deadline:  # bounded by the deadline
        producer.poll(0.05)
        if any(e.name() == "_AUTHENTICATION" for e in errors):
            return "_AUTHENTICATION"
    assert reports, f"no delivery report within {DEADLINE_S} s ({errors})"
    return None if reports[0] is None else str(reports[0].name())


class _Quiet:
    """A logger for librdkafka's lines that keeps them out of the test's output."""

    def log(self, *args: Any) -> None:
        pass


_QUIET = _Quiet()


def test_users_and_acls_of_a_running_server(server: tuple[eventstore.Store, str], run: Run) -> None:
    store, address = server
    added = run("users", "add", CAROL, "--iterations", "8192", *as_admin(address),
                input=CAROL_PASSWORD + "\n", env=ADMIN_ENV)
    ok(added)
    assert f"added user '{CAROL}'" in added.stderr
    assert set(users.get(store.log.catalog, CAROL)) == {"SCRAM-SHA-256", "SCRAM-SHA-512"}
    assert {c.iterations for c in users.get(store.log.catalog, CAROL).values()} == {8192}
    assert plain_matches(users.get(store.log.catalog, CAROL), CAROL_PASSWORD)  # as the offline form makes it
    grant = ["--principal", f"User:{CAROL}", "--operation", "WRITE", "--topic", "orders"]
    ok(run("acls", "add", *grant, *as_admin(address), env=ADMIN_ENV))
    shown = json.loads(ok(run("acls", "list", "--principal", f"User:{CAROL}", "--json", *as_admin(address),
                              env=ADMIN_ENV)))
    assert shown == [{"permission": "ALLOW", "principal": f"User:{CAROL}", "host": "*", "operation": "WRITE",
                      "resource_type": "TOPIC", "resource_name": "orders", "pattern_type": "LITERAL"}]
    matching = json.loads(ok(run("acls", "list", "--topic", "audit", "--json", *as_admin(address),
                                 env=ADMIN_ENV)))
    assert [(a["principal"], a["operation"]) for a in matching] == [(f"User:{BOB}", "READ")]

    assert produce(address, CAROL, CAROL_PASSWORD, "orders") is None
    assert produce(address, CAROL, CAROL_PASSWORD, "audit") == "TOPIC_AUTHORIZATION_FAILED"

    removed = run("acls", "remove", *grant, *as_admin(address), env=ADMIN_ENV)
    ok(removed)
    assert "removed 1 ACL" in removed.stderr
    assert json.loads(ok(run("acls", "list", "--principal", f"User:{CAROL}", "--json", *as_admin(address),
                             env=ADMIN_ENV))) == []
    assert produce(address, CAROL, CAROL_PASSWORD, "orders") == "TOPIC_AUTHORIZATION_FAILED"
    again = one_error(run("acls", "remove", *grant, *as_admin(address), env=ADMIN_ENV))
    assert "no such ACL" in again

    ok(run("users", "delete", CAROL, *as_admin(address), env=ADMIN_ENV))
    assert users.get(store.log.catalog, CAROL) == {}
    assert produce(address, CAROL, CAROL_PASSWORD, "orders") == "_AUTHENTICATION"
    assert f"no user '{CAROL}'" in one_error(run("users", "delete", CAROL, *as_admin(address), env=ADMIN_ENV))


def test_users_list_names_every_user(server: tuple[eventstore.Store, str], run: Run) -> None:
    store, address = server
    listed = json.loads(ok(run("users", "list", "--json", *as_admin(address), env=ADMIN_ENV)))
    offline = {name: {m: {"iterations": c.iterations} for m, c in sorted(creds.items())}
               for name, creds in users.names(store.log.catalog).items()}
    assert {u["user"]: u["mechanisms"] for u in listed} == offline
    assert {ADMIN, BOB} <= set(offline)


def bob_properties(tmp_path: Path) -> Path:
    """bob's connection as a Java client's properties file (its JAAS line gives user and password)."""
    properties = tmp_path / "bob.properties"
    properties.write_text("# bob, in a Java client's form\nsecurity.protocol=SASL_PLAINTEXT\n"
                          "sasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram."
                          f'ScramLoginModule required username="{BOB}" password="{BOB_PASSWORD}";\n')
    return properties


def test_a_user_who_is_not_a_super_user_may_not_create_acls(server: tuple[eventstore.Store, str], run: Run,
                                                            tmp_path: Path) -> None:
    store, address = server
    before = acl_rows.load(store.log.catalog)
    refused = one_error(run("acls", "add", "--principal", f"User:{BOB}", "--operation", "ALL", "--cluster",
                            "--bootstrap", address, "--command-config", str(bob_properties(tmp_path))))
    assert refused == f"error: creating ACLs on {address}: not authorized (CLUSTER_AUTHORIZATION_FAILED)"
    assert acl_rows.load(store.log.catalog) == before


@pytest.mark.parametrize("command", [["users", "add", "mallory"], ["users", "delete", BOB], ["users", "list"],
                                     ["acls", "list"], ["acls", "remove", "--principal", f"User:{BOB}",
                                                        "--operation", "READ", "--topic", "audit"]])
def test_every_refusal_is_one_line(server: tuple[eventstore.Store, str], run: Run, tmp_path: Path,
                                   command: list[str]) -> None:
    """Including the commands that describe users, whose refusal aborts librdkafka's process
    (and whose ACL listing librdkafka would show empty rather than refused)."""
    store, address = server
    before = (acl_rows.load(store.log.catalog), users.names(store.log.catalog))
    as_bob = ["--bootstrap", address, "--command-config", str(bob_properties(tmp_path))]
    refused = one_error(run(*command, *as_bob, input="pw\n"))
    assert refused.endswith(f"on {address}: not authorized (CLUSTER_AUTHORIZATION_FAILED)"), refused
    assert (acl_rows.load(store.log.catalog), users.names(store.log.catalog)) == before


def test_a_wrong_password_is_one_line(server: tuple[eventstore.Store, str], run: Run) -> None:
    _, address = server
    failed = one_error(run("acls", "list", *as_admin(address), env={"ES_PASSWORD": "wrong"}))
    assert "authentication failed" in failed


SLACK_S = 6.0
"""Beyond the timeout: the command's start and, for ``es users``, the child process that asks
(a loaded machine takes seconds to start Python and librdkafka); well below a hang."""


def test_an_unreachable_server_fails_within_the_timeout(run: Run) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        started = time.monotonic()
        failed = one_error(run("acls", "list", "--bootstrap", address, "--timeout", "2"))
    assert time.monotonic() - started < 2 + SLACK_S
    assert f"cannot reach {address}" in failed or f"no answer from {address}" in failed
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections, never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        failed = one_error(run("users", "list", "--bootstrap", address, "--timeout", "1"))
        elapsed = time.monotonic() - started
    assert f"no answer from {address} within 1 s" in failed
    assert 1 <= elapsed < 1 + SLACK_S


def test_options_that_do_not_go_together(run: Run, tmp_path: Path) -> None:
    both = one_error(run("acls", "list", "--data", str(tmp_path), "--bootstrap", "127.0.0.1:9"))
    assert "--data or --bootstrap, not both" in both
    alone = one_error(run("users", "list", "--data", str(tmp_path), "--username", ADMIN))
    assert "--username needs --bootstrap" in alone
    no_password = one_error(run("users", "list", "--bootstrap", "127.0.0.1:9", "--security-protocol",
                                "SASL_SSL", "--username", ADMIN))
    assert f"no password for user '{ADMIN}'" in no_password
    unset = one_error(run("users", "list", "--bootstrap", "127.0.0.1:9", "--security-protocol", "SASL_SSL",
                          "--username", ADMIN, "--password-env", "ES_TEST_UNSET_PASSWORD"))
    assert "ES_TEST_UNSET_PASSWORD (--password-env) is not set" in unset
    plaintext = one_error(run("users", "list", "--bootstrap", "127.0.0.1:9", "--username", ADMIN))
    assert "needs a SASL protocol" in plaintext
    flag_wins = one_error(run("acls", "list", "--data", str(tmp_path), env={"ES_BOOTSTRAP": "127.0.0.1:9"}))
    assert f"no store at '{tmp_path}'" in flag_wins


def test_the_bootstrap_commands_are_secured_by_the_environment(server: tuple[eventstore.Store, str],
                                                               run: Run) -> None:
    """es produce, consume and topics with --bootstrap reach a SASL listener as es acls does:
    the protocol, user and password from ES_* variables; a wrong password is one error line."""
    store, address = server
    env = {"ES_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "ES_USERNAME": ADMIN, "ES_PASSWORD": ADMIN_PASSWORD}
    store.create_topic("via-cli", 1)
    produced = run("produce", "via-cli", "--bootstrap", address, "--value", "over-sasl", env=env)
    assert produced.exit_code == 0, produced.output
    assert [r.value for r in store.read("via-cli", 0, 0)] == [b"over-sasl"]
    listed = run("topics", "list", "--bootstrap", address, "--json", env=env)
    assert listed.exit_code == 0, listed.output
    assert {"via-cli", "orders", "audit"} <= {t["name"] for t in json.loads(listed.stdout)}
    started = time.monotonic()
    failed = one_error(run("topics", "list", "--bootstrap", address, env={**env, "ES_PASSWORD": "wrong"}))
    assert "authentication" in failed.lower() and "wrong" not in failed
    assert time.monotonic() - started < SLACK_S
    kerberos = _properties(store, "sasl.kerberos.service.name=kafka")
    unknown = one_error(run("topics", "list", "--bootstrap", address,
                            env={**env, "ES_COMMAND_CONFIG": kerberos}))
    assert "sasl.kerberos.service.name" in unknown


def _properties(store: eventstore.Store, *lines: str) -> str:
    path = store.path + ".properties"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
