"""A follower reaches its leader over TLS and SASL (docs/replication.md, section 4;
``es serve --replica-security-protocol``).

The leader is served in-process with a SASL_SSL listener only, SCRAM users and ACLs: the
follower's user may do CLUSTER_ACTION on the cluster (or, in one test, may not); the
producing client is a super user. Followers are ``es serve --replica-of`` processes
stopped by PID; their password comes from an environment variable. Every address is
127.0.0.1 with a port the system picked; every wait is bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clusterkit import ends, log_files, until
from serverkit import ServeProcess, es_serve, read_stderr_until
from tlskit import Pem, make_ca, make_cert

import eventstore
from eventstore.catalog import acls as acl_rows
from eventstore.catalog import users
from eventstore.catalog.acls import Operation, PatternType, Permission, ResourceType
from eventstore.errors import InvalidArgumentError
from eventstore.server.auth import credential
from eventstore.server.config import server_config

confluent_kafka = pytest.importorskip("confluent_kafka")

TIMEOUT_S = 20.0
ADMIN, ADMIN_PASSWORD = "admin", "admin secret"
REPLICATOR, REPLICATOR_PASSWORD = "replicator", "replication secret"
PASSWORD_VARIABLE = "ES_TEST_REPLICA_PASSWORD"
NOT_ENOUGH_REPLICAS = 19
LEADER = rb"following 127\.0\.0\.1:\d+: "
"""How the follower's warnings begin: the leader it could not follow."""
AUTH_FAILED = re.compile(LEADER + rb"authentication to 127\.0\.0\.1:\d+ with SCRAM-SHA-512 failed: "
                                  rb".*\(user 'replicator'\)")
CLUSTER_REFUSED = re.compile(LEADER + rb".*ReplicaCatalog answered error 31: "
                                      rb"not authorized for CLUSTER_ACTION")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    directory = tmp_path_factory.mktemp("certs")
    ca = make_ca(directory)
    return {"ca": ca, "server": make_cert(directory, "server", "localhost", ca)}


UNTRUSTED = re.compile(LEADER + rb".*certificate verify failed")


@contextmanager
def leader(tmp_path: Path, certs: dict[str, Pem], *, cluster_action: bool = True,
           listener: str = "SASL_SSL") -> Iterator[tuple[eventstore.Store, str]]:
    """A leader with one ``listener`` (min_insync_replicas 2), its users and ACLs; yields the
    store and the listener's address."""
    with eventstore.open(tmp_path / "leader") as store:
        for name, password in ((ADMIN, ADMIN_PASSWORD), (REPLICATOR, REPLICATOR_PASSWORD)):
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                users.put(store.log.catalog, name, mechanism, credential(mechanism, password))
        operation = Operation.CLUSTER_ACTION if cluster_action else Operation.DESCRIBE
        acl_rows.add(store.log.catalog, [acl_rows.binding(
            ResourceType.CLUSTER, acl_rows.CLUSTER_NAME, PatternType.LITERAL, f"User:{REPLICATOR}", "*",
            operation, Permission.ALLOW)])
        store.create_topic("t", 2)
        with store.serve(None, listeners=[f"{listener}://127.0.0.1:0"],
                         ssl_certfile=str(certs["server"].cert), ssl_keyfile=str(certs["server"].key),
                         super_users=[f"User:{ADMIN}"],
                         min_insync_replicas=2, replica_lag_ms=2000) as handle:
            host, port = handle.listeners[listener]
            yield store, f"{host}:{port}"


@contextmanager
def follower(tmp_path: Path, address: str, cafile: Path, password: str,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[ServeProcess]:
    monkeypatch.setenv(PASSWORD_VARIABLE, password)  # the child's environment: never a flag
    with es_serve(tmp_path / "follower", "--replica-of", address, "--replica-id", "1",
                  "--replica-security-protocol", "SASL_SSL", "--replica-username", REPLICATOR,
                  "--replica-password-env", PASSWORD_VARIABLE,
                  "--replica-ssl-cafile", str(cafile)) as process:
        yield process


def wait_logged(process: ServeProcess, pattern: re.Pattern[bytes], timeout_s: float = TIMEOUT_S) -> None:
    """Read the running process's stderr into ``process.stderr`` until ``pattern`` is in it."""
    process.stderr = read_stderr_until(process.proc, pattern, timeout_s, process.stderr)
    assert pattern.search(process.stderr), process.stderr.decode(errors="replace")


def produce(address: str, certs: dict[str, Pem], count: int, *, retries: int = 5) -> list[Any]:
    """``count`` records with acks=all as the super user; each delivery's error (None: written)."""
    producer = confluent_kafka.Producer({
        "bootstrap.servers": address, "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": ADMIN, "sasl.password": ADMIN_PASSWORD, "ssl.ca.location": str(certs["ca"].cert),
        "acks": "all", "retries": retries, "linger.ms": 5, "message.timeout.ms": 15_000})
    errors: list[Any] = []
    for i in range(count):  # bounded by count
        producer.produce("t", value=b"p%d" % i, partition=i % 2,
                         on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(TIMEOUT_S) == 0
    return errors


def caught_up(tmp_path: Path, store: eventstore.Store) -> bool:
    want = {("t", p): store.log.log_end("t", p) for p in range(2)}
    return ends(tmp_path / "follower") == want


def test_a_follower_replicates_over_sasl_ssl_and_counts_for_acks_all(
        tmp_path: Path, certs: dict[str, Pem], monkeypatch: pytest.MonkeyPatch) -> None:
    with leader(tmp_path, certs) as (store, address):
        for i in range(40):  # before the follower: it catches up
            store.append_batch("t", [b"e%d" % i, b"f%d" % i], partition=i % 2)
        with follower(tmp_path, address, certs["ca"].cert, REPLICATOR_PASSWORD, monkeypatch) as process:
            until(lambda: caught_up(tmp_path, store), "the follower caught up")
            assert produce(address, certs, 30) == [None] * 30  # acks=all: the follower is in sync
            until(lambda: caught_up(tmp_path, store), "the follower tails")
            assert process.stop() == 0
        assert store.log.log_end("t", 0) + store.log.log_end("t", 1) == 110
        leader_files = log_files(tmp_path / "leader")
    assert leader_files and log_files(tmp_path / "follower") == leader_files
    assert b"authentication" not in process.stderr


def test_a_wrong_password_is_logged_and_retried_with_backoff(
        tmp_path: Path, certs: dict[str, Pem], monkeypatch: pytest.MonkeyPatch) -> None:
    with leader(tmp_path, certs) as (store, address):
        store.append("t", b"one", partition=0)
        with follower(tmp_path, address, certs["ca"].cert, "not the password", monkeypatch) as process:
            started = time.monotonic()
            wait_logged(process, AUTH_FAILED)
            errors = produce(address, certs, 1, retries=0)
            assert [e.code() for e in errors] == [NOT_ENOUGH_REPLICAS]
            time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
            assert process.proc.poll() is None  # it stays up, and keeps trying
            assert process.stop() == 0
        assert ends(tmp_path / "follower") == {}
    failures = len(AUTH_FAILED.findall(process.stderr))
    assert 2 <= failures <= 15, process.stderr.decode(errors="replace")
    assert REPLICATOR_PASSWORD.encode() not in process.stderr and b"not the password" not in process.stderr


def test_a_follower_without_cluster_action_is_refused(
        tmp_path: Path, certs: dict[str, Pem], monkeypatch: pytest.MonkeyPatch) -> None:
    with leader(tmp_path, certs, cluster_action=False) as (store, address):
        store.append("t", b"one", partition=0)
        with follower(tmp_path, address, certs["ca"].cert, REPLICATOR_PASSWORD, monkeypatch) as process:
            wait_logged(process, CLUSTER_REFUSED)
            assert process.proc.poll() is None
            assert process.stop() == 0
        assert ends(tmp_path / "follower") == {}


def test_an_untrusted_leader_certificate_is_logged_and_nothing_is_sent(
        tmp_path: Path, certs: dict[str, Pem], monkeypatch: pytest.MonkeyPatch) -> None:
    other_ca = make_ca(tmp_path / "other", "other-ca")
    with leader(tmp_path, certs) as (store, address):
        store.append("t", b"one", partition=0)
        with follower(tmp_path, address, other_ca.cert, REPLICATOR_PASSWORD, monkeypatch) as process:
            wait_logged(process, UNTRUSTED)
            assert process.proc.poll() is None
            assert process.stop() == 0
        assert ends(tmp_path / "follower") == {}


def test_an_in_process_follower_authenticates_with_plain(tmp_path: Path, certs: dict[str, Pem]) -> None:
    with leader(tmp_path, certs, listener="SASL_PLAINTEXT") as (store, address), \
            eventstore.open(tmp_path / "follower") as copy, \
            copy.serve("127.0.0.1:0", replica_of=address, node_id=1,
                       replica_security_protocol="sasl_plaintext", replica_sasl_mechanism="PLAIN",
                       replica_username=REPLICATOR, replica_password=REPLICATOR_PASSWORD):
        store.append("t", b"one", partition=1)
        until(lambda: copy.log.find_topic("t") is not None and copy.log.log_end("t", 1) == 1,
              "the record on the in-process follower")


SASL = {"replica_security_protocol": "SASL_SSL", "replica_username": "r"}


@pytest.mark.parametrize(("options", "message"), [
    ({"replica_security_protocol": "TLS"}, "replica_security_protocol must be one of"),
    (SASL, "needs replica_username and a password"),
    ({"replica_security_protocol": "SASL_SSL", "replica_password": "hunter2"}, "needs replica_username"),
    ({"replica_username": "r", "replica_password": "hunter2"}, "need a SASL replica_security_protocol"),
    ({"replica_ssl_cafile": "ca.pem"}, "replica_ssl_cafile: only with a TLS replica_security_protocol"),
    ({"replica_security_protocol": "SSL", "replica_ssl_keyfile": "k.pem"}, "replica_ssl_keyfile needs"),
    ({**SASL, "replica_sasl_mechanism": "GSSAPI", "replica_password": "hunter2"},
     "replica_sasl_mechanism must be one of"),
    ({**SASL, "replica_password": ""}, "replica_password must be a non-empty str"),
])
def test_bad_combinations_of_the_follower_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(message)) as raised:
        server_config("127.0.0.1:0", replica_of="127.0.0.1:9", **options)
    assert "hunter2" not in str(raised.value)  # never the password


def test_es_serve_without_the_password_variable_is_one_line(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from eventstore.cli.app import app

    monkeypatch.delenv("ES_REPLICA_PASSWORD", raising=False)
    result = CliRunner().invoke(app, ["serve", "--data", str(tmp_path / "s"), "--listen", "127.0.0.1:0",
                                      "--replica-of", "127.0.0.1:9", "--replica-username", "r",
                                      "--replica-security-protocol", "SASL_SSL"])
    assert result.exit_code != 0
    assert "needs the follower's password in the environment variable ES_REPLICA_PASSWORD" in result.output
