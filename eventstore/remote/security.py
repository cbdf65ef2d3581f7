"""How a remote store reaches a secured server: TLS and SASL, checked once, used by both halves.

``eventstore.connect(..., security_protocol=..., sasl_mechanism=..., ...)`` takes the
settings under the names Kafka clients give them (docs/operations.md, section 1.4).
:func:`security` checks them up front, so a bad combination (SASL without a user, a
mechanism on a protocol without SASL, a CA file that cannot be read) is an
``InvalidArgumentError`` at ``connect``, not a failure on the first call. The result,
a :class:`Security`, gives

* the log half its librdkafka settings (:meth:`Security.kafka_settings`), the same
  for every producer, consumer and admin client the store makes;
* the connections of our own their TLS context (:meth:`Security.wrap`) and the SASL
  exchange after ApiVersions (:func:`authenticate`): SaslHandshake v1, then the
  mechanism's messages in SaslAuthenticate v1; PLAIN is one message
  ``\\0user\\0password`` (RFC 4616), SCRAM runs through ``scramp``'s client, which also
  checks that the server knows the user's key.

The password is kept out of every ``repr``, error message and log line.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import AuthenticationFailedError, InvalidArgumentError
from ..wire import extensions as codec
from ..wire.errors import ProtocolError
from ..wire.security import DEFAULT_SASL_MECHANISM, SASL_MECHANISMS, SECURITY_PROTOCOLS, SaslClient

__all__ = ["DEFAULT_SASL_MECHANISM", "SASL_MECHANISMS", "SECURITY_PROTOCOLS", "Security", "authenticate",
           "security"]



@dataclass(frozen=True)
class Security:
    """The checked settings; ``PLAINTEXT`` (the default) is no TLS and no SASL."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    """The TLS context of the connections of our own (built at ``connect``: its files are read then)."""

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def kafka_settings(self) -> dict[str, str]:
        """The librdkafka settings for these (every client of the log half gets them)."""
        settings = {"security.protocol": self.protocol.lower()}
        if self.sasl:
            assert self.mechanism is not None and self.username is not None and self.password is not None
            settings.update({"sasl.mechanism": self.mechanism, "sasl.username": self.username,
                             "sasl.password": self.password})
        if self.tls:
            settings["ssl.endpoint.identification.algorithm"] = "https" if self.check_hostname else "none"
            for key, value in (("ssl.ca.location", self.cafile), ("ssl.certificate.location", self.certfile),
                               ("ssl.key.location", self.keyfile)):
                if value is not None:
                    settings[key] = value
        return settings

    def wrap(self, sock: socket.socket, host: str, address: str) -> socket.socket:
        """``sock`` after the TLS handshake with ``host`` (itself when the protocol has no TLS).
        A server certificate the client does not trust raises ``AuthenticationFailedError``."""
        if self.context is None:
            return sock
        try:
            return self.context.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as e:
            sock.close()
            raise AuthenticationFailedError(address, "TLS", f"the server's certificate is not trusted: "
                                                            f"{e.verify_message or e.reason}") from None
        except OSError:
            sock.close()
            raise


def security(protocol: Any = "PLAINTEXT", mechanism: Any = None, username: Any = None, password: Any = None,
             cafile: Any = None, certfile: Any = None, keyfile: Any = None,
             check_hostname: Any = True) -> Security:
    """The settings ``connect`` was given, checked; ``InvalidArgumentError`` names what is wrong
    (never the password)."""
    if not isinstance(protocol, str) or protocol.upper() not in SECURITY_PROTOCOLS:
        raise InvalidArgumentError(f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                                   f"got {protocol!r}")
    protocol = protocol.upper()
    sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
    if mechanism is not None and (not isinstance(mechanism, str) or mechanism.upper() not in SASL_MECHANISMS):
        raise InvalidArgumentError(f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                                   f"got {mechanism!r}")
    for name, value in (("username", username), ("password", password)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"{name} must be a str, got {type(value).__name__}")
    if sasl:
        mechanism = DEFAULT_SASL_MECHANISM if mechanism is None else mechanism.upper()
        if not username or password is None:
            raise InvalidArgumentError(f"security_protocol {protocol} needs a username and a password")
    elif mechanism is not None or username is not None or password is not None:
        raise InvalidArgumentError(f"sasl_mechanism, username and password need a SASL security_protocol "
                                   f"(SASL_SSL or SASL_PLAINTEXT), got {protocol}")
    if type(check_hostname) is not bool:
        raise InvalidArgumentError(f"ssl_check_hostname must be a bool, got {check_hostname!r}")
    files = {"ssl_cafile": cafile, "ssl_certfile": certfile, "ssl_keyfile": keyfile}
    for name, value in files.items():
        if value is not None and not isinstance(value, str | os.PathLike):
            raise InvalidArgumentError(f"{name} must be a path, got {type(value).__name__}")
    cafile, certfile, keyfile = (None if v is None else os.fspath(v) for v in files.values())
    if not tls:
        given = [name for name, value in files.items() if value is not None]
        if given or not check_hostname:
            raise InvalidArgumentError(f"{', '.join(given) or 'ssl_check_hostname'} needs a TLS "
                                       f"security_protocol (SSL or SASL_SSL), got {protocol}")
        return Security(protocol, mechanism, username, password)
    if keyfile is not None and certfile is None:
        raise InvalidArgumentError("ssl_keyfile needs ssl_certfile (the client certificate it goes with)")
    return Security(protocol, mechanism, username, password, cafile, certfile, keyfile, check_hostname,
                    _context(cafile, certfile, keyfile, check_hostname))


def _context(cafile: str | None, certfile: str | None, keyfile: str | None,
             check_hostname: bool) -> ssl.SSLContext:
    """TLS 1.2 or later; the server's certificate checked against ``cafile`` (else the
    system's CAs), its host name too unless ``check_hostname`` is False."""
    try:
        context = ssl.create_default_context(cafile=cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = check_hostname
        if certfile is not None:
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise InvalidArgumentError(f"cannot load the TLS files (ssl_cafile {cafile!r}, ssl_certfile "
                                   f"{certfile!r}, ssl_keyfile {keyfile!r}): {e}") from None
    return context


# --- the SASL exchange on a connection of our own ----------------------------------------------

#: One round trip on the connection: a request frame out, the answer's frame (without its size) back
RoundTrip = Callable[[bytes], bytes]


def authenticate(settings: Security, round_trip: RoundTrip, ids: Callable[[], int], address: str,
                 client_id: str) -> None:
    """Authenticate a fresh connection to ``address`` as ``settings`` say (nothing without SASL).
    A refusal raises ``AuthenticationFailedError`` naming the server and the mechanism."""
    if not settings.sasl:
        return
    mechanism, username, password = settings.mechanism, settings.username, settings.password
    assert mechanism is not None and username is not None and password is not None
    sasl = SaslClient(mechanism, username, password, address)
    cid = ids()
    got, error, offered = codec.decode_sasl_handshake_response(
        round_trip(codec.encode_sasl_handshake_request(cid, mechanism, client_id)))
    _check_answer(got, cid)
    sasl.handshake(error, offered)
    message: bytes | None = sasl.first()
    while message is not None:  # bounded: PLAIN sends one message, SCRAM two
        cid = ids()
        got, code, text, answer = codec.decode_sasl_authenticate_response(
            round_trip(codec.encode_sasl_authenticate_request(cid, message, client_id)))
        _check_answer(got, cid)
        message = sasl.next(code, text, answer)


def _check_answer(got: int, expected: int) -> None:
    if got != expected:
        raise ProtocolError(f"answered request {got}, expected {expected}")
