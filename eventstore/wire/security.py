"""Kafka's names for how a connection is secured: the listeners' and clients' security
protocols and the SASL mechanisms (docs/operations.md, section 1). One table for the
server's listeners, a follower's connection to its leader, the remote store and the
command line's admin client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ..errors import AuthenticationFailedError

__all__ = ["DEFAULT_SASL_MECHANISM", "SASL_AUTHENTICATION_FAILED", "SASL_MECHANISMS", "SCRAM_MECHANISMS",
           "SECURITY_PROTOCOLS", "SaslClient", "UNSUPPORTED_SASL_MECHANISM"]

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SCRAM_MECHANISMS: Final = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_MECHANISMS: Final = ("PLAIN", *SCRAM_MECHANISMS)
DEFAULT_SASL_MECHANISM: Final = "SCRAM-SHA-512"
"""What a client uses on a SASL protocol when no mechanism is named: it never sends the password."""

SASL_AUTHENTICATION_FAILED: Final = 58
UNSUPPORTED_SASL_MECHANISM: Final = 33


class SaslClient:
    """The client's side of a SASL exchange after SaslHandshake, sans I/O: a caller sends
    SaslHandshake with ``mechanism``, hands its answer to ``handshake``, then sends
    ``first()`` in SaslAuthenticate and each answer to ``next``, sending what it returns,
    until it returns None. Any refusal raises ``AuthenticationFailedError`` naming the
    server and the mechanism (never the password). SCRAM (RFC 5802, the server's final
    message checked) needs ``scramp``."""

    def __init__(self, mechanism: str, username: str, password: str, address: str) -> None:
        self.mechanism = mechanism
        self._username = username
        self._password = password
        self._address = address
        self._scram: Any = None
        self._awaiting_final = False

    def _refuse(self, reason: str) -> AuthenticationFailedError:
        return AuthenticationFailedError(self._address, self.mechanism, reason)

    def handshake(self, error_code: int, offered: Sequence[str]) -> None:
        if error_code == UNSUPPORTED_SASL_MECHANISM:
            raise self._refuse(f"the server offers only {', '.join(offered)}")
        if error_code != 0:
            raise self._refuse(f"SaslHandshake answered error {error_code}")

    def first(self) -> bytes:
        """The first SaslAuthenticate message."""
        if self.mechanism == "PLAIN":
            return b"\0" + self._username.encode() + b"\0" + self._password.encode()
        try:
            from scramp import ScramClient
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise ImportError(f"{__name__}: {e.name} is missing; SCRAM needs the 'remote' or the "
                              "'server' extra: pip install 'embedded-eventstore[remote]'") from e
        self._scram = ScramClient([self.mechanism], self._username, self._password)
        return str(self._scram.get_client_first()).encode()

    def next(self, error_code: int, error_message: str | None, answer: bytes) -> bytes | None:
        """The next message after a SaslAuthenticate answer; None once authenticated."""
        if error_code == SASL_AUTHENTICATION_FAILED:
            raise self._refuse(f"{error_message or 'invalid credentials'} (user {self._username!r})")
        if error_code != 0:
            raise self._refuse(f"SaslAuthenticate answered error {error_code}"
                               f"{': ' + error_message if error_message else ''}")
        scram = self._scram
        if scram is None:  # PLAIN's one message
            return None
        from scramp import ScramException

        try:
            if self._awaiting_final:
                scram.set_server_final(answer.decode())
                return None
            scram.set_server_first(answer.decode())
            self._awaiting_final = True
            return str(scram.get_client_final()).encode()
        except (ScramException, UnicodeDecodeError) as e:
            raise self._refuse(f"the server's SCRAM answer is not valid: {e}") from None
