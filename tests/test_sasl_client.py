"""The client's SASL exchange (``wire.security.SaslClient``), driven against the server's own
exchange (``server.auth``) without a network: the remote store and a follower both run it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import eventstore
from eventstore.catalog import users
from eventstore.errors import AuthenticationFailedError
from eventstore.server.auth import AuthenticationFailed, credential, exchange
from eventstore.wire.security import SASL_AUTHENTICATION_FAILED, SASL_MECHANISMS, SaslClient


@pytest.fixture
def store(tmp_path: Path) -> Iterator[eventstore.Store]:
    with eventstore.open(tmp_path / "s", durability="none") as s:
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            users.put(s.log.catalog, "alice", mechanism, credential(mechanism, "secret"))
        yield s


def run(store: eventstore.Store, mechanism: str, password: str) -> tuple[int, str | None]:
    """The whole exchange; the server's last step's (error code, user)."""
    server = exchange(store.log.catalog, mechanism)
    client = SaslClient(mechanism, "alice", password, "127.0.0.1:9092")
    client.handshake(0, SASL_MECHANISMS)
    message: bytes | None = client.first()
    user: str | None = None
    for _ in range(3):  # bounded: PLAIN takes one message, SCRAM two
        if message is None:
            return 0, user
        try:
            answer, user = server.step(message)
            code, text = 0, None
        except AuthenticationFailed as e:
            answer, code, text = b"", SASL_AUTHENTICATION_FAILED, str(e)
        message = client.next(code, text, answer)
    raise AssertionError("the exchange did not end")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_authenticates_and_a_wrong_password_is_refused(store: eventstore.Store, mechanism: str) -> None:
    assert run(store, mechanism, "secret") == (0, "alice")
    with pytest.raises(AuthenticationFailedError, match=f"127.0.0.1:9092 with {mechanism}") as refused:
        run(store, mechanism, "wrong")
    assert "wrong" not in str(refused.value)


def test_a_forged_server_final_is_refused(store: eventstore.Store) -> None:
    """SCRAM checks the server too: a server-final without the right signature fails."""
    server = exchange(store.log.catalog, "SCRAM-SHA-256")
    client = SaslClient("SCRAM-SHA-256", "alice", "secret", "127.0.0.1:9092")
    final = client.next(0, None, server.step(client.first())[0])
    assert final is not None
    server.step(final)
    with pytest.raises(AuthenticationFailedError, match="SCRAM answer is not valid"):
        client.next(0, None, b"v=" + b"A" * 44)


def test_handshake_refusals_name_the_offered_mechanisms() -> None:
    client = SaslClient("SCRAM-SHA-512", "alice", "secret", "h:1")
    with pytest.raises(AuthenticationFailedError, match="offers only PLAIN"):
        client.handshake(33, ["PLAIN"])
    with pytest.raises(AuthenticationFailedError, match="SaslHandshake answered error 34"):
        client.handshake(34, [])
    plain = SaslClient("PLAIN", "alice", "secret", "h:1")
    assert plain.first() == b"\0alice\0secret"
    assert plain.next(0, None, b"") is None
