"""``eventstore.connect`` against a secured server (docs/operations.md, section 1.4).

Over SASL_PLAINTEXT with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, SASL_SSL with
SCRAM-SHA-512, and SSL (with a client certificate where the server asks for one),
one store makes a topic, appends and reads records, consumes them in a group (the log
half, librdkafka) and appends, reads and subscribes to a stream and DCB events (the
stream half, our own connections). A wrong password raises ``AuthenticationFailedError`` on either
half's first call within seconds; a PLAINTEXT client on a SASL listener, or a server
certificate another CA signed, fails at once too; ACLs apply to the store's user; the
arguments are checked before anything connects. The async store does one SASL_SSL
round trip under asyncio and trio.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tlskit import Pem, make_ca, make_cert

import eventstore
import eventstore.aio
from eventstore import (
    InvalidArgumentError,
    NewEvent,
    Query,
    QueryItem,
    StreamState,
    TaggedEvent,
    TopicPartition,
)
from eventstore.catalog import acls as acl_rows
from eventstore.catalog import users
from eventstore.catalog.acls import Operation, PatternType, Permission
from eventstore.catalog.acls import ResourceType as RT
from eventstore.errors import AuthenticationFailedError, EventStoreError
from eventstore.remote.connection import ServerUnavailableError
from eventstore.server.auth import credential

USER, PASSWORD = "alice", "correct horse"
TIMEOUT_S = 20.0
QUICK_S = 5.0  # a refusal is raised within this, not after librdkafka's retries


@contextmanager
def serving(tmp: Path, **options: Any) -> Iterator[tuple[eventstore.Store, dict[str, str]]]:
    """A store served in-process with ``options``, alice a user of it; yields it and
    ``{listener name: "host:port"}``."""
    with eventstore.open(tmp / "store") as store, store.serve("127.0.0.1:0", **options) as handle:
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            users.put(store.log.catalog, USER, mechanism, credential(mechanism, PASSWORD))
        yield store, {name: f"{host}:{port}" for name, (host, port) in handle.listeners.items()}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    directory = tmp_path_factory.mktemp("certs")
    ca = make_ca(directory)
    other = make_ca(directory / "other", "other-ca")
    return {"ca": ca, "other-ca": other, "server": make_cert(directory, "server", "localhost", ca),
            "client": make_cert(directory, "client", USER, ca, server=False)}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Pem]
            ) -> Iterator[tuple[eventstore.Store, dict[str, str]]]:
    """SASL_PLAINTEXT, SASL_SSL and SSL listeners (no client certificate asked for)."""
    with serving(tmp_path_factory.mktemp("secured"),
                 listeners=["SASL_PLAINTEXT://127.0.0.1:0", "SASL_SSL://127.0.0.1:0", "SSL://127.0.0.1:0"],
                 ssl_certfile=str(certs["server"].cert), ssl_keyfile=str(certs["server"].key)) as served:
        yield served


@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Pem]) -> Iterator[str]:
    """An SSL listener that asks every client for a certificate the CA signed."""
    with serving(tmp_path_factory.mktemp("mutual"), listeners=["SSL://127.0.0.1:0"],
                 ssl_certfile=str(certs["server"].cert), ssl_keyfile=str(certs["server"].key),
                 ssl_cafile=str(certs["ca"].cert)) as (_, listeners):
        yield listeners["SSL"]


def sasl(mechanism: str = "SCRAM-SHA-512", password: str = PASSWORD, protocol: str = "SASL_PLAINTEXT",
         **tls: Any) -> dict[str, Any]:
    return {"security_protocol": protocol, "sasl_mechanism": mechanism, "username": USER,
            "password": password, **tls}


def round_trip(store: Any, embedded: eventstore.Store) -> None:
    """Both halves through ``store``: what it wrote, the server's store holds."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    store.create_topic(name, 1)
    assert store.append(name, b"v0", key=b"k").offset == 0
    store.append_batch(name, [b"v1"])
    assert [r.value for r in store.read(name, 0, 0)] == [b"v0", b"v1"]
    assert [r.value for r in embedded.read(name, 0, 0)] == [b"v0", b"v1"]
    consumer = store.consumer(name, group_id=f"g-{name}", auto_offset_reset="earliest",
                              enable_auto_commit=False)
    try:
        got: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 2 and time.monotonic() < deadline:  # bounded by the deadline
            for records in consumer.poll(500).values():
                got += [r.value for r in records]
        assert got == [b"v0", b"v1"]
        consumer.commit()
    finally:
        consumer.close()
    assert embedded.group_offsets(f"g-{name}") == {TopicPartition(name, 0): 2}
    stream = f"order-{name}"
    store.append_to_stream(stream, [NewEvent(type="Placed")], StreamState.NO_STREAM)
    assert [e.type for e in store.read_stream(stream)] == ["Placed"]
    assert [e.type for e in embedded.read_stream(stream)] == ["Placed"]
    position = store.append_events(TaggedEvent("Tagged", b"d", [name]))
    query = Query([QueryItem((), [name])])
    read = store.read_events(query)
    assert [(e.position, e.type, e.data) for e in read.events] == [(position, "Tagged", b"d")]
    # subscriptions poll on connections of their own: each authenticates as the pool's do
    with store.subscribe_to_stream(stream) as live:
        event = live.next(TIMEOUT_S)
        assert event is not None and event.type == "Placed"
    with store.subscribe_events(query) as tagged:
        found = tagged.next(TIMEOUT_S)
        assert found is not None and found.position == position


@pytest.mark.parametrize(("protocol", "mechanism"), [
    ("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_SSL", "SCRAM-SHA-512")])
def test_sasl_round_trip(secured: tuple[eventstore.Store, dict[str, str]], certs: dict[str, Pem],
                         protocol: str, mechanism: str) -> None:
    embedded, listeners = secured
    tls = {"ssl_cafile": str(certs["ca"].cert)} if protocol == "SASL_SSL" else {}
    with eventstore.connect(listeners[protocol], **sasl(mechanism, protocol=protocol, **tls)) as store:
        round_trip(store, embedded)
        assert "correct horse" not in repr(store) + repr(store.streams.connection.security)


def test_ssl_round_trip_checks_the_server_certificate(secured: tuple[eventstore.Store, dict[str, str]],
                                                      certs: dict[str, Pem]) -> None:
    embedded, listeners = secured
    cafile = str(certs["ca"].cert)
    with eventstore.connect(listeners["SSL"], security_protocol="SSL", ssl_cafile=cafile) as store:
        round_trip(store, embedded)
    started = time.monotonic()
    with eventstore.connect(listeners["SSL"], security_protocol="SSL",
                            ssl_cafile=str(certs["other-ca"].cert)) as store:
        with pytest.raises(AuthenticationFailedError, match=r"TLS.*not trusted"):
            store.read_stream("order-1")
        with pytest.raises(AuthenticationFailedError, match=r"TLS.*not trusted"):
            store.topics()
    assert time.monotonic() - started < QUICK_S
    port = listeners["SSL"].rsplit(":", 1)[1]  # the certificate names localhost too: checked, it matches
    with eventstore.connect(f"localhost:{port}", security_protocol="SSL",
                            ssl_cafile=str(certs["ca"].cert)) as store:
        assert store.stream_versions([]) == []


def test_ssl_with_a_client_certificate(mutual: str, certs: dict[str, Pem]) -> None:
    with eventstore.connect(mutual, security_protocol="SSL", ssl_cafile=str(certs["ca"].cert),
                            ssl_certfile=str(certs["client"].cert), ssl_keyfile=str(certs["client"].key)
                            ) as store:
        name = f"t-{uuid.uuid4().hex[:8]}"
        store.create_topic(name, 1)
        store.append(name, b"v")
        assert [r.value for r in store.read(name, 0, 0)] == [b"v"]
        store.append_to_stream(f"order-{name}", [NewEvent(type="Placed")])
        assert [e.type for e in store.read_stream(f"order-{name}")] == ["Placed"]
    started = time.monotonic()
    with eventstore.connect(mutual, security_protocol="SSL", ssl_cafile=str(certs["ca"].cert)) as store, \
            pytest.raises(ServerUnavailableError, match="client certificate"):  # the handshake ends
        store.read_stream("order-1")
    assert time.monotonic() - started < QUICK_S


@pytest.mark.parametrize("half", ["streams", "log"])
def test_a_wrong_password_fails_quickly_on_either_half(tmp_path: Path, half: str) -> None:
    with serving(tmp_path, listeners=["SASL_PLAINTEXT://127.0.0.1:0"]) as (_, listeners), \
            eventstore.connect(listeners["SASL_PLAINTEXT"], **sasl(password="wrong horse")) as store:
        started = time.monotonic()
        with pytest.raises(AuthenticationFailedError) as caught:
            if half == "streams":
                store.read_stream("order-1")
            else:
                store.create_topic("orders")
        assert time.monotonic() - started < QUICK_S
        error = caught.value
        assert (error.address, error.mechanism) == (listeners["SASL_PLAINTEXT"], "SCRAM-SHA-512")
        assert USER in str(error) and "wrong horse" not in str(error)
        with eventstore.connect(listeners["SASL_PLAINTEXT"], **sasl()) as right:
            assert "orders" not in [t.name for t in right.topics()]


def test_a_plaintext_client_on_a_sasl_listener_is_told_so(
        secured: tuple[eventstore.Store, dict[str, str]]) -> None:
    _, listeners = secured
    started = time.monotonic()
    with eventstore.connect(listeners["SASL_PLAINTEXT"]) as store:
        for call in (lambda: store.read_stream("order-1"), lambda: store.create_topic("nope")):
            with pytest.raises(ServerUnavailableError, match="SASL listener"):
                call()
    assert time.monotonic() - started < QUICK_S


def test_acls_apply_to_the_remote_user(tmp_path: Path) -> None:
    principal = f"User:{USER}"
    allowed = [acl_rows.binding(rt, name, PatternType.LITERAL, principal, "*", Operation.ALL,
                                Permission.ALLOW)
               for rt, name in ((RT.TOPIC, "*"), (RT.GROUP, "*"), (RT.CLUSTER, "kafka-cluster"))]
    denied = acl_rows.binding(RT.TOPIC, "audit", PatternType.LITERAL, principal, "*", Operation.WRITE,
                              Permission.DENY)
    with serving(tmp_path, listeners=["SASL_PLAINTEXT://127.0.0.1:0"]) as (embedded, listeners):
        embedded.create_topic("audit", 1)
        embedded.create_topic("orders", 1)
        acl_rows.add(embedded.log.catalog, [*allowed, denied])
        with eventstore.connect(listeners["SASL_PLAINTEXT"], **sasl()) as store:
            assert store.append("orders", b"ok").offset == 0
            with pytest.raises(EventStoreError, match="Topic authorization failed"):
                store.append("audit", b"refused")
            assert store.offsets("audit", 0) == (0, 0)
        assert embedded.offsets("audit", 0) == (0, 0)


@pytest.mark.parametrize("arguments, message", [
    ({"security_protocol": "TLS"}, "security_protocol must be one of"),
    ({"security_protocol": "SASL_SSL", "username": USER}, "needs a username and a password"),
    ({"security_protocol": "SASL_PLAINTEXT", "password": "secret-pw"}, "needs a username and a password"),
    ({"sasl_mechanism": "PLAIN"}, "need a SASL security_protocol"),
    ({"security_protocol": "SSL", "username": USER, "password": "secret-pw"},
     "need a SASL security_protocol"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI", "username": USER,
      "password": "secret-pw"}, "sasl_mechanism must be one of"),
    ({"ssl_cafile": "ca.pem"}, "ssl_cafile needs a TLS security_protocol"),
    ({"security_protocol": "SASL_PLAINTEXT", "username": USER, "password": "secret-pw",
      "ssl_check_hostname": False}, "ssl_check_hostname needs a TLS"),
    ({"security_protocol": "SSL", "ssl_keyfile": "client.key"}, "ssl_keyfile needs ssl_certfile"),
    ({"security_protocol": "SSL", "ssl_cafile": "no-such-ca.pem"}, "cannot load the TLS files"),
    ({"security_protocol": "SSL", "ssl_check_hostname": "no"}, "ssl_check_hostname must be a bool"),
])
def test_bad_combinations_are_refused_up_front(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        eventstore.connect("127.0.0.1:1", **arguments)
    assert "secret-pw" not in str(caught.value)


def test_the_librdkafka_settings(certs: dict[str, Pem]) -> None:
    store = eventstore.connect("127.0.0.1:1", **sasl(protocol="SASL_SSL", ssl_cafile=str(certs["ca"].cert),
                                                     ssl_check_hostname=False))
    try:
        settings = store.streams.connection.security.kafka_settings()
        assert settings == {"security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
                            "sasl.username": USER, "sasl.password": PASSWORD,
                            "ssl.endpoint.identification.algorithm": "none",
                            "ssl.ca.location": str(certs["ca"].cert)}
    finally:
        store.close()


def test_sasl_messages_are_kafkas_v1_layouts() -> None:
    """Our SaslHandshake and SaslAuthenticate v1 bytes read by kio's classes (Kafka's schemas),
    and kio's responses read by ours."""
    import io

    from kio.schema.errors import ErrorCode
    from kio.schema.sasl_authenticate.v1.request import SaslAuthenticateRequest
    from kio.schema.sasl_authenticate.v1.response import SaslAuthenticateResponse
    from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
    from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse
    from kio.serial import entity_reader, entity_writer

    from eventstore.wire import ProtocolError, parse_request_header
    from eventstore.wire import extensions as codec

    for frame, schema, expected in (
            (codec.encode_sasl_handshake_request(5, "SCRAM-SHA-256", "c"), SaslHandshakeRequest,
             SaslHandshakeRequest(mechanism="SCRAM-SHA-256")),
            (codec.encode_sasl_authenticate_request(6, b"\0u\0p", "c"), SaslAuthenticateRequest,
             SaslAuthenticateRequest(auth_bytes=b"\0u\0p"))):
        header = parse_request_header(frame[4:])
        assert (header.api_key, header.api_version, header.client_id) == (schema.__api_key__, 1, "c")
        value, size = entity_reader(schema)(frame[4:], header.body_position)
        assert value == expected and header.body_position + size == len(frame) - 4

    def response(entity: Any, correlation_id: int) -> bytes:
        out = io.BytesIO()
        entity_writer(type(entity))(out, entity)
        return correlation_id.to_bytes(4, "big") + out.getvalue()

    offered = SaslHandshakeResponse(error_code=ErrorCode(33), mechanisms=("PLAIN", "SCRAM-SHA-512"))
    assert codec.decode_sasl_handshake_response(response(offered, 5)) == (5, 33, ["PLAIN", "SCRAM-SHA-512"])
    answer = SaslAuthenticateResponse(error_code=ErrorCode(58), error_message="no", auth_bytes=b"s=1")
    assert codec.decode_sasl_authenticate_response(response(answer, 6)) == (6, 58, "no", b"s=1")
    with pytest.raises(ProtocolError):
        codec.decode_sasl_handshake_response(b"\0\0\0\5\0\0\x7f\xff\xff\xff")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_async_round_trip_over_sasl_ssl(secured: tuple[eventstore.Store, dict[str, str]],
                                              certs: dict[str, Pem]) -> None:
    embedded, listeners = secured
    with pytest.raises(InvalidArgumentError):
        await eventstore.aio.connect(listeners["SASL_SSL"], security_protocol="SASL_SSL")
    async with await eventstore.aio.connect(listeners["SASL_SSL"], **sasl(
            "SCRAM-SHA-256", protocol="SASL_SSL", ssl_cafile=str(certs["ca"].cert))) as store:
        name = f"t-{uuid.uuid4().hex[:8]}"
        await store.create_topic(name, 1)
        await store.append(name, b"v")
        assert [r.value for r in await store.read(name, 0, 0)] == [b"v"]
        await store.append_to_stream(f"order-{name}", [NewEvent(type="Placed")], StreamState.NO_STREAM)
        assert [e.type for e in await store.read_stream(f"order-{name}")] == ["Placed"]
    assert [e.type for e in embedded.read_stream(f"order-{name}")] == ["Placed"]
