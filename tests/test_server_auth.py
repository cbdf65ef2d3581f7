"""Listeners, TLS and SASL (docs/operations.md, section 1), through real clients.

kafka-python, aiokafka and confluent-kafka each produce with PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512, over SASL_PLAINTEXT and SASL_SSL, and read back what they wrote; a
client certificate names the principal on a mutual TLS listener; a wrong password is
answered SASL_AUTHENTICATION_FAILED, later and later, and the connection closes; a
client that has not authenticated gets nothing but ApiVersions and the SASL APIs; SIGHUP
serves a new certificate to new connections while an old one keeps working.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from serverkit import RawClient, es_serve
from tlskit import Pem, make_ca, make_cert

import eventstore
from eventstore.catalog import users
from eventstore.errors import InvalidArgumentError
from eventstore.server.auth import FailureDelays, credential, credential_from_salted, plain_matches
from eventstore.server.config import server_config

USER, PASSWORD = "alice", "correct horse"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TIMEOUT_S = 20.0


@contextmanager
def serving(tmp: Path, **options: Any) -> Iterator[tuple[eventstore.Store, dict[str, str]]]:
    """A store served in-process with ``options``; yields it and ``{listener name: "host:port"}``."""
    with eventstore.open(tmp / "store") as store, store.serve("127.0.0.1:0", **options) as handle:
        yield store, {name: f"{host}:{port}" for name, (host, port) in handle.listeners.items()}


def add_user(store: eventstore.Store, name: str = USER, password: str = PASSWORD) -> None:
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        users.put(store.log.catalog, name, mechanism, credential(mechanism, password))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    directory = tmp_path_factory.mktemp("certs")
    ca = make_ca(directory)
    return {"ca": ca, "server": make_cert(directory, "server", "localhost", ca),
            "client": make_cert(directory, "client", "alice-client", ca, server=False)}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Pem]
            ) -> Iterator[tuple[eventstore.Store, dict[str, str]]]:
    """A server with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners; alice is a user."""
    tmp = tmp_path_factory.mktemp("secured")
    with serving(tmp, listeners=["SASL_PLAINTEXT://127.0.0.1:0", "SASL_SSL://127.0.0.1:0"],
                 ssl_certfile=str(certs["server"].cert), ssl_keyfile=str(certs["server"].key),
                 auto_create_topics=True) as (store, listeners):
        add_user(store)
        yield store, listeners


def _kafka_python(bootstrap: str, protocol: str, mechanism: str, cafile: str, topic: str,
                  value: bytes) -> bytes:
    from kafka import KafkaConsumer, KafkaProducer

    common: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": protocol,
                              "sasl_mechanism": mechanism, "sasl_plain_username": USER,
                              "sasl_plain_password": PASSWORD, "ssl_cafile": cafile,
                              "request_timeout_ms": 10_000}
    producer = KafkaProducer(**common)
    try:
        producer.send(topic, value).get(timeout=TIMEOUT_S)
    finally:
        producer.close()
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10_000, **common)
    try:
        return next(iter(consumer)).value
    finally:
        consumer.close()


def _aiokafka(bootstrap: str, protocol: str, mechanism: str, cafile: str, topic: str,
              value: bytes) -> bytes:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    async def run() -> bytes:
        common: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": protocol,
                                  "sasl_mechanism": mechanism, "sasl_plain_username": USER,
                                  "sasl_plain_password": PASSWORD}
        if protocol == "SASL_SSL":
            common["ssl_context"] = create_ssl_context(cafile=cafile)
        producer = AIOKafkaProducer(**common)
        await producer.start()
        try:
            await asyncio.wait_for(producer.send_and_wait(topic, value), TIMEOUT_S)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **common)
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), TIMEOUT_S)
        finally:
            await consumer.stop()
        return bytes(message.value or b"")

    return asyncio.run(run())


def _confluent(bootstrap: str, protocol: str, mechanism: str, cafile: str, topic: str,
               value: bytes) -> bytes:
    from confluent_kafka import Consumer, Producer

    common = {"bootstrap.servers": bootstrap, "security.protocol": protocol, "sasl.mechanism": mechanism,
              "sasl.username": USER, "sasl.password": PASSWORD, "ssl.ca.location": cafile}
    producer = Producer(common)
    delivered: list[Any] = []
    producer.produce(topic, value, on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(TIMEOUT_S)
    assert delivered == [None]
    consumer = Consumer({**common, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:  # bounded by the deadline
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return bytes(message.value() or b"")
        raise AssertionError("nothing consumed")
    finally:
        consumer.close()


CLIENTS = {"kafka-python": _kafka_python, "aiokafka": _aiokafka, "confluent-kafka": _confluent}


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_clients_authenticate(secured: tuple[eventstore.Store, dict[str, str]], certs: dict[str, Pem],
                              client: str, mechanism: str, protocol: str) -> None:
    store, listeners = secured
    topic = f"{client}-{mechanism}-{protocol}".replace("_", "-").lower()
    value = topic.encode()
    got = CLIENTS[client](listeners[protocol], protocol, mechanism, str(certs["ca"].cert), topic, value)
    assert got == value
    assert [r.value for r in store.read(topic, 0, 0)] == [value]


def _handshake(client: RawClient, mechanism: str) -> Any:
    from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

    return client.call(SaslHandshakeRequest(mechanism=mechanism))


def _authenticate(client: RawClient, message: bytes, correlation_id: int = 2) -> Any:
    from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest

    return client.call(SaslAuthenticateRequest(auth_bytes=message), correlation_id)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[str]:
    """A SASL_PLAINTEXT listener of a server of its own (no failures remembered yet)."""
    with serving(tmp_path, listeners=["SASL_PLAINTEXT://127.0.0.1:0"]) as (store, listeners):
        add_user(store)
        yield listeners["SASL_PLAINTEXT"]


def test_wrong_password_is_refused_later_each_time(fresh: str, caplog: pytest.LogCaptureFixture) -> None:
    took = []
    with caplog.at_level(logging.WARNING, logger="eventstore.server"):
        for _ in range(3):  # the delay doubles: 0.1 s, 0.2 s, 0.4 s (one address: 127.0.0.1)
            with RawClient(fresh) as client:
                assert int(_handshake(client, "PLAIN").error_code) == 0
                started = time.monotonic()
                answer = _authenticate(client, f"\x00{USER}\x00wrong".encode())
                took.append(time.monotonic() - started)
                assert int(answer.error_code) == 58  # SASL_AUTHENTICATION_FAILED
                assert client.closed_by_server()
    assert took[0] >= 0.09 and took[1] >= 0.19 and took[2] >= 0.39, took
    assert sum("authentication failed for 127.0.0.1:" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.parametrize(("mechanism", "user", "password", "accepted"), [
    ("SCRAM-SHA-256", USER, PASSWORD, True),
    ("SCRAM-SHA-512", USER, PASSWORD, True),
    ("SCRAM-SHA-256", USER, "wrong", False),
    ("SCRAM-SHA-512", "nobody", PASSWORD, False),
])
def test_scram_exchange(fresh: str, mechanism: str, user: str, password: str, accepted: bool) -> None:
    from scramp import ScramClient

    scram = ScramClient([mechanism], user, password)
    with RawClient(fresh) as client:
        assert int(_handshake(client, mechanism).error_code) == 0
        first = _authenticate(client, scram.get_client_first().encode())
        assert int(first.error_code) == 0
        scram.set_server_first(first.auth_bytes.decode())
        final = _authenticate(client, scram.get_client_final().encode(), 3)
        if not accepted:
            assert int(final.error_code) == 58 and client.closed_by_server()
            return
        assert int(final.error_code) == 0
        scram.set_server_final(final.auth_bytes.decode())  # the server proved it knows the key too
        client.request(3, 1, 4, struct.pack(">i", -1))
        assert client.response() is not None


def test_only_sasl_apis_before_authentication(secured: tuple[eventstore.Store, dict[str, str]]) -> None:
    from kio.schema.api_versions.v3.request import ApiVersionsRequest

    _store, listeners = secured
    with RawClient(listeners["SASL_PLAINTEXT"]) as client:
        versions = client.call(ApiVersionsRequest(client_software_name="t", client_software_version="1"))
        served = {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in versions.api_keys}
        assert served[17] == (0, 1) and served[36] == (0, 2) and 50 in served and 51 in served
        client.request(3, 1, 7, struct.pack(">i", -1))  # Metadata before authenticating
        assert client.response() is None
    with RawClient(listeners["SASL_PLAINTEXT"]) as client:  # a mechanism not offered: refused, closed
        answer = _handshake(client, "GSSAPI")
        assert int(answer.error_code) == 33 and "SCRAM-SHA-512" in answer.mechanisms
        assert client.closed_by_server()
    with RawClient(listeners["PLAINTEXT"]) as client:  # the PLAINTEXT listener needs no authentication
        client.request(3, 1, 7, struct.pack(">i", -1))
        assert client.response() is not None


def test_garbage_before_authentication_closes_only_that_connection(
        secured: tuple[eventstore.Store, dict[str, str]]) -> None:
    _store, listeners = secured
    with RawClient(listeners["SASL_PLAINTEXT"]) as good, RawClient(listeners["SASL_PLAINTEXT"]) as bad:
        assert int(_handshake(good, "PLAIN").error_code) == 0
        bad.send(b"\x7f\xff\xff\xff" + b"garbage" * 100)  # a 2 GiB frame: over the pre-authentication bound
        assert bad.closed_by_server()
        assert int(_authenticate(good, f"\x00{USER}\x00{PASSWORD}".encode()).error_code) == 0
        good.request(3, 1, 9, struct.pack(">i", -1))
        assert good.response() is not None
    with RawClient(listeners["SASL_SSL"]) as plain_on_tls:  # not TLS at all on a TLS listener
        plain_on_tls.send(b"\x00\x00\x00\x10" + b"x" * 16)
        assert plain_on_tls.closed_by_server()


def test_metadata_answers_the_listener_the_client_came_in_on(
        secured: tuple[eventstore.Store, dict[str, str]]) -> None:
    from kafka import KafkaAdminClient

    _store, listeners = secured
    for protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        bootstrap = listeners[protocol]
        options: dict[str, Any] = {"security_protocol": protocol}
        if protocol != "PLAINTEXT":
            options.update(sasl_mechanism="PLAIN", sasl_plain_username=USER, sasl_plain_password=PASSWORD)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)
        try:
            brokers = admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        assert [f"{b['host']}:{b['port']}" for b in brokers] == [bootstrap]


def _tls_socket(address: str, cafile: Path, cert: Pem | None = None) -> ssl.SSLSocket:
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    raw = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
    return context.wrap_socket(raw, server_hostname=host)


def _api_versions(sock: ssl.SSLSocket, correlation_id: int) -> bool:
    """One ApiVersions v0 round trip over ``sock``; whether it was answered."""
    header = struct.pack(">hhih", 18, 0, correlation_id, 1) + b"t"
    sock.sendall(struct.pack(">i", len(header)) + header)
    size = sock.recv(4)
    if len(size) < 4:
        return False
    (n,) = struct.unpack(">i", size)
    got = b""
    while len(got) < n:  # bounded by n and the socket's timeout
        chunk = sock.recv(n - len(got))
        if not chunk:
            return False
        got += chunk
    return struct.unpack_from(">i", got)[0] == correlation_id


def _answered(address: str, cafile: Path) -> bool:
    """Whether a TLS client without a certificate gets an answer (TLS 1.3 tells it only on its first read)."""
    try:
        with _tls_socket(address, cafile) as sock:
            return _api_versions(sock, 6)
    except OSError:
        return False


def test_mutual_tls_names_the_principal(tmp_path: Path, certs: dict[str, Pem],
                                        caplog: pytest.LogCaptureFixture) -> None:
    options = {"listeners": ["SSL://127.0.0.1:0"], "ssl_certfile": str(certs["server"].cert),
               "ssl_keyfile": str(certs["server"].key), "ssl_cafile": str(certs["ca"].cert)}
    with caplog.at_level(logging.INFO, logger="eventstore.server"), \
            serving(tmp_path, **options) as (_, listeners):
        address = listeners["SSL"]
        with _tls_socket(address, certs["ca"].cert, certs["client"]) as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            assert _api_versions(sock, 5)
        assert not _answered(address, certs["ca"].cert)  # no client certificate: no answer
    assert any("as User:alice-client by its TLS certificate on SSL" in r.getMessage() for r in caplog.records)


def test_tls_refuses_old_protocols(secured: tuple[eventstore.Store, dict[str, str]],
                                   certs: dict[str, Pem]) -> None:
    _store, listeners = secured
    host, port = listeners["SASL_SSL"].rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(certs["ca"].cert))
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as raw:
        context.wrap_socket(raw, server_hostname=host)


def test_sighup_reloads_the_certificate_for_new_connections(tmp_path: Path, certs: dict[str, Pem]) -> None:
    served_cert, served_key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(certs["server"].cert, served_cert)
    shutil.copy(certs["server"].key, served_key)
    with socket.socket() as probe:  # a port the system picks, for an SSL listener beside the PLAINTEXT one
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    with es_serve(tmp_path / "s", "--listener", f"SSL://{address}", "--ssl-certfile", str(served_cert),
                  "--ssl-keyfile", str(served_key)) as server:
        old = _tls_socket(address, certs["ca"].cert)
        try:
            first = old.getpeercert()
            renewed = make_cert(tmp_path, "renewed", "localhost", certs["ca"])
            shutil.copy(renewed.cert, served_cert)
            shutil.copy(renewed.key, served_key)
            server.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + TIMEOUT_S
            second = first
            while second == first and time.monotonic() < deadline:  # bounded: until the reload shows
                time.sleep(0.05)
                with _tls_socket(address, certs["ca"].cert) as new:
                    second = new.getpeercert()
                    assert _api_versions(new, 2)
            assert second is not None and first is not None
            assert second["serialNumber"] != first["serialNumber"]
            assert _api_versions(old, 3)  # the connection made before the reload goes on
        finally:
            old.close()
        assert server.stop() == 0


def test_credentials_are_salted_and_plain_checks_against_them() -> None:
    made = credential("SCRAM-SHA-512", "pw", 4096, b"salt" * 8)
    assert b"pw" not in made.stored_key + made.server_key and made.salt == b"salt" * 8
    assert plain_matches({"SCRAM-SHA-512": made}, "pw") and not plain_matches({"SCRAM-SHA-512": made}, "pw2")
    assert not plain_matches({}, "pw")
    import hashlib

    salted = hashlib.pbkdf2_hmac("sha512", b"pw", b"salt" * 8, 4096)
    assert credential_from_salted("SCRAM-SHA-512", b"salt" * 8, 4096, salted) == made
    with pytest.raises(InvalidArgumentError):
        credential("SCRAM-SHA-1", "pw")
    with pytest.raises(InvalidArgumentError):
        credential("SCRAM-SHA-256", "pw", 100)


def test_failure_delays_double_bounded_and_forgotten() -> None:
    now = [0.0]
    delays = FailureDelays(first_s=0.1, max_s=0.5, forget_s=60.0, addresses=2, clock=lambda: now[0])
    assert [delays.failed("a") for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert delays.failed("b") == 0.1
    now[0] = 100.0
    assert delays.failed("a") == 0.1  # quiet for longer than forget_s: starts again
    delays.failed("c")
    delays.failed("d")  # only two addresses are kept: the oldest ("a") went first
    assert delays.failed("a") == 0.1


@pytest.mark.parametrize(("options", "message"), [
    ({"listeners": ["SSL://127.0.0.1:0"]}, "needs a certificate"),
    ({"listeners": ["TLS://127.0.0.1:0"]}, "NAME one of"),
    ({"listeners": "SASL_SSL://127.0.0.1:0"}, "must be a list"),
    ({"sasl_mechanisms": ["GSSAPI"]}, "sasl_mechanisms"),
    ({"listeners": ["SASL_PLAINTEXT://127.0.0.1:9000", "SASL_SSL://127.0.0.1:9000"],
      "ssl_certfile": "x.pem"}, "two listeners on one address"),
])
def test_listener_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        server_config("127.0.0.1:0", **options)
    only = server_config(None, listeners=["SASL_SSL://0.0.0.0:9093"], ssl_certfile="c.pem")
    assert [str(m) for m in only.all_listeners] == ["SASL_SSL://0.0.0.0:9093"] and only.all_listeners[0].sasl


def test_es_users_add_list_delete(tmp_path: Path) -> None:
    import json
    import subprocess

    from entry_points import environment, es_command

    data = tmp_path / "s"
    eventstore.open(data).close()
    password_file = tmp_path / "pw"
    password_file.write_text("s3cret\n")

    def es(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*es_command(), "users", *args, "--data", str(data)], input=stdin, text=True,
                              capture_output=True, env=environment(data), timeout=60)

    assert es("add", "bob", "--password-file", str(password_file)).returncode == 0
    assert es("add", "carol", "--mechanism", "SCRAM-SHA-256", stdin="from stdin\n").returncode == 0
    listed = json.loads(es("list", "--json").stdout)
    assert [u["user"] for u in listed] == ["bob", "carol"]
    assert listed[1]["mechanisms"] == {"SCRAM-SHA-256": {"iterations": 4096}}
    with eventstore.open(data) as store:
        stored = users.get(store.log.catalog, "bob")
        assert plain_matches(stored, "s3cret") and not plain_matches(stored, "s3cret\n")
        assert plain_matches(users.get(store.log.catalog, "carol"), "from stdin")
        raw = b"".join(v for _k, v in store.log.catalog.items(b"meta", b"user\x00"))
        assert b"s3cret" not in raw and b"from stdin" not in raw  # never in clear
    assert es("delete", "bob").returncode == 0
    missing = es("delete", "bob")
    assert missing.returncode == 1 and "no user 'bob'" in missing.stderr
    assert es("add", "dave", "--iterations", "10", stdin="x\n").returncode == 1


def test_scram_credentials_through_an_admin_client(fresh: str) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": fresh, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER, "sasl.password": PASSWORD})
    upsert = UserScramCredentialUpsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192),
                                          b"erin's password", b"some salt")
    for future in admin.alter_user_scram_credentials([upsert]).values():  # one per user
        future.result(TIMEOUT_S)
    described = {user: future.result(TIMEOUT_S)
                 for user, future in admin.describe_user_scram_credentials(["erin", USER]).items()}
    assert [(i.mechanism, i.iterations) for i in described["erin"].scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_256, 8192)]
    assert len(described[USER].scram_credential_infos) == 2
    with RawClient(fresh) as client:  # erin can log in with the password the admin client salted
        assert int(_handshake(client, "PLAIN").error_code) == 0
        assert int(_authenticate(client, b"\x00erin\x00erin's password").error_code) == 0
    deletion = UserScramCredentialDeletion("erin", ScramMechanism.SCRAM_SHA_256)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        future.result(TIMEOUT_S)
    with pytest.raises(Exception, match=r"RESOURCE_NOT_FOUND|not found|No SCRAM"):
        admin.describe_user_scram_credentials(["erin"])["erin"].result(TIMEOUT_S)


@pytest.mark.parametrize("password", [PASSWORD, "wrong"])
def test_sasl_handshake_v0_then_bare_frames(fresh: str, password: str) -> None:
    from kio.schema.sasl_handshake.v0.request import SaslHandshakeRequest
    from scramp import ScramClient

    scram = ScramClient(["SCRAM-SHA-256"], USER, password)
    with RawClient(fresh) as client:
        assert int(client.call(SaslHandshakeRequest(mechanism="SCRAM-SHA-256")).error_code) == 0
        client.send(struct.pack(">i", len(first := scram.get_client_first().encode())) + first)
        server_first = client.response()
        assert server_first is not None
        scram.set_server_first(server_first.decode())
        client.send(struct.pack(">i", len(final := scram.get_client_final().encode())) + final)
        server_final = client.response()
        if password != PASSWORD:
            assert server_final is None  # v0 has no error to send: the connection just closes
            return
        assert server_final is not None
        scram.set_server_final(server_final.decode())
        client.request(3, 1, 4, struct.pack(">i", -1))  # now a request with a header again
        assert client.response() is not None
    with RawClient(fresh) as client:  # PLAIN: one message, an empty answer
        assert int(client.call(SaslHandshakeRequest(mechanism="PLAIN")).error_code) == 0
        message = f"\x00{USER}\x00{PASSWORD}".encode()
        client.send(struct.pack(">i", len(message)) + message)
        assert client.response() == b""


def test_frames_above_the_pre_authentication_bound_once_authenticated(
        secured: tuple[eventstore.Store, dict[str, str]]) -> None:
    """A produce of 900 KB right after authenticating: the 512 KiB bound no longer applies."""
    from kafka import KafkaProducer

    _store, listeners = secured
    producer = KafkaProducer(bootstrap_servers=listeners["SASL_PLAINTEXT"],
                             security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                             sasl_plain_username=USER, sasl_plain_password=PASSWORD,
                             max_request_size=2_000_000, batch_size=2_000_000, linger_ms=50,
                             request_timeout_ms=5000,
                             delivery_timeout_ms=10_000)
    try:
        futures = [producer.send("big-after-auth", b"x" * 100_000) for _ in range(9)]
        producer.flush(TIMEOUT_S)
        assert all(f.is_done and f.succeeded() for f in futures)
    finally:
        producer.close()


def test_a_client_that_does_not_authenticate_in_time_is_disconnected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eventstore.server import connection

    monkeypatch.setattr(connection, "AUTH_TIMEOUT_S", 0.3)
    with serving(tmp_path, listeners=["SASL_PLAINTEXT://127.0.0.1:0"]) as (store, listeners):
        add_user(store)
        with RawClient(listeners["SASL_PLAINTEXT"]) as idle, RawClient(listeners["SASL_PLAINTEXT"]) as good, \
                RawClient(listeners["PLAINTEXT"]) as plain:
            assert int(_handshake(good, "PLAIN").error_code) == 0
            assert int(_authenticate(good, f"\x00{USER}\x00{PASSWORD}".encode()).error_code) == 0
            started = time.monotonic()
            assert idle.closed_by_server()
            assert 0.25 <= time.monotonic() - started < 5.0
            time.sleep(0.2)
            for client in (good, plain):  # authenticated, or on a listener without it: still served
                client.request(3, 1, 4, struct.pack(">i", -1))
                assert client.response() is not None
