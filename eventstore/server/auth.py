"""SASL authentication: PLAIN and SCRAM-SHA-256/512 over the users in the catalog.

SCRAM (RFC 5802, RFC 7677) runs through ``scramp``; the server keeps per user and
mechanism only the salt, the iteration count, the stored key and the server key
(``catalog/users.py``). PLAIN is checked against one of those records: the password
offered, salted and iterated as the record says, must give its stored key; so no
password is ever kept, not even hashed apart (docs/operations.md, section 1.3).

A failed authentication is answered after a delay that doubles with each failure
from the same address (``FailureDelays``), so guessing passwords from one address
is slow; the delay is bounded, and forgotten after a quiet while.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from ..catalog import Catalog, users
from ..errors import InvalidArgumentError
from ..wire.security import SCRAM_MECHANISMS

try:
    from scramp import ScramException, ScramMechanism
    from scramp.utils import saslprep
except ImportError as e:  # pragma: no cover - depends on the installation
    from ..wire.errors import SERVER_EXTRA

    raise ImportError(f"{__name__}: {e.name} is missing; {SERVER_EXTRA}") from e

__all__ = [
    "AuthenticationFailed", "DEFAULT_ITERATIONS", "FailureDelays", "ITERATIONS_MAX", "ITERATIONS_MIN",
    "PlainExchange", "SCRAM_MECHANISMS", "ScramExchange", "credential", "credential_from_salted", "exchange",
    "plain_matches",
]

DEFAULT_ITERATIONS: Final = 4096
ITERATIONS_MIN: Final = 4096
"""Kafka's bounds on a SCRAM credential's iterations."""
ITERATIONS_MAX: Final = 16384
_HASHES: Final = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


class AuthenticationFailed(Exception):
    """The client's credentials are not those of a user (or its messages are malformed)."""


def credential(mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS,
               salt: bytes | None = None) -> users.Credential:
    """The stored form of ``password`` for a SCRAM ``mechanism`` (a new random salt unless given):
    SaltedPassword = PBKDF2(SASLprep(password), salt, iterations) (RFC 5802, section 3)."""
    _check(mechanism, iterations)
    try:
        prepared = saslprep(password)
    except ScramException as e:  # SASLprep refuses it (control characters, ...)
        raise InvalidArgumentError(f"the password cannot be used with SCRAM: {e}") from None
    salt = salt if salt is not None else os.urandom(32)
    salted = hashlib.pbkdf2_hmac(_HASHES[mechanism]().name, prepared.encode("utf-8"), salt, iterations)
    return credential_from_salted(mechanism, salt, iterations, salted)


def credential_from_salted(mechanism: str, salt: bytes, iterations: int,
                           salted_password: bytes) -> users.Credential:
    """The stored form from a salted password (AlterUserScramCredentials sends that, never the
    password): ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey = H(ClientKey),
    ServerKey = HMAC(SaltedPassword, "Server Key") (RFC 5802, section 3)."""
    _check(mechanism, iterations)
    digest = _HASHES[mechanism]
    client_key = hmac.new(salted_password, b"Client Key", digest).digest()
    server_key = hmac.new(salted_password, b"Server Key", digest).digest()
    return users.Credential(salt, iterations, digest(client_key).digest(), server_key)


def _check(mechanism: str, iterations: int) -> None:
    if mechanism not in SCRAM_MECHANISMS:
        known = ", ".join(SCRAM_MECHANISMS)
        raise InvalidArgumentError(f"SCRAM mechanism must be one of {known}, got {mechanism!r}")
    if not ITERATIONS_MIN <= iterations <= ITERATIONS_MAX:
        bounds = f"{ITERATIONS_MIN}..{ITERATIONS_MAX}"
        raise InvalidArgumentError(f"iterations must be in {bounds}, got {iterations}")


def plain_matches(credentials: dict[str, users.Credential], password: str) -> bool:
    """Whether ``password`` is the one a user's SCRAM record was made from (SHA-512's first)."""
    for mechanism in reversed(SCRAM_MECHANISMS):  # bounded: two mechanisms
        found = credentials.get(mechanism)
        if found is not None:
            try:
                derived = credential(mechanism, password, found.iterations, found.salt)
            except InvalidArgumentError:  # not a password SCRAM takes: not the user's
                return False
            return hmac.compare_digest(derived.stored_key, found.stored_key)
    return False


class PlainExchange:
    """PLAIN (RFC 4616): one message, ``authzid NUL authcid NUL password``."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def step(self, message: bytes) -> tuple[bytes, str | None]:
        """``(answer, user)``; ``user`` is set once authenticated. Blocking (catalog, key derivation)."""
        try:
            authzid, user, password = message.decode("utf-8").split("\x00")
        except ValueError:
            raise AuthenticationFailed("malformed PLAIN message") from None
        if not user or (authzid and authzid != user):
            raise AuthenticationFailed("PLAIN: empty user, or an authorization id that is not the user")
        if not plain_matches(users.get(self._catalog, user), password):
            raise AuthenticationFailed(f"invalid credentials for user {user!r}")
        return b"", user


class ScramExchange:
    """SCRAM: client-first, server-first, client-final, server-final."""

    def __init__(self, catalog: Catalog, mechanism: str) -> None:
        self._catalog = catalog
        self._mechanism = mechanism
        self._server = ScramMechanism(mechanism).make_server(self._auth_info)
        self._user: str | None = None
        self._known = False

    def _auth_info(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        """The user's record; an unknown user gets a random one, so the exchange goes on to
        fail at its end like a wrong password, and says nothing of which users exist."""
        self._user = user
        found = users.get(self._catalog, user).get(self._mechanism)
        self._known = found is not None
        if found is None:
            found = users.Credential(os.urandom(32), DEFAULT_ITERATIONS, os.urandom(64), os.urandom(64))
        return found.salt, found.stored_key, found.server_key, found.iterations

    def step(self, message: bytes) -> tuple[bytes, str | None]:
        """``(answer, user)``; ``user`` is set once authenticated. Blocking (catalog)."""
        try:
            text = message.decode("utf-8")
            if self._server.stage is None:
                self._server.set_client_first(text)
                return self._server.get_server_first().encode("utf-8"), None
            self._server.set_client_final(text)
            final = self._server.get_server_final().encode("utf-8")
        except (ScramException, UnicodeDecodeError, ValueError) as e:
            raise AuthenticationFailed(f"{self._mechanism} for user {self._user!r}: {e}") from None
        if not self._known or self._user is None:
            raise AuthenticationFailed(f"{self._mechanism}: no such user {self._user!r}")
        return final, self._user


def exchange(catalog: Catalog, mechanism: str) -> PlainExchange | ScramExchange:
    """A new exchange for ``mechanism`` (one of the configured SASL mechanisms)."""
    return PlainExchange(catalog) if mechanism == "PLAIN" else ScramExchange(catalog, mechanism)


class FailureDelays:
    """How long to wait before answering a failed authentication, per client address:
    ``first_s`` doubled for each failure in a row, at most ``max_s``; an address quiet for
    ``forget_s`` starts again; at most ``addresses`` are remembered (the oldest go first)."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0, forget_s: float = 300.0,
                 addresses: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._forget_s = forget_s
        self._addresses = addresses
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def failed(self, address: str) -> float:
        """Record a failure from ``address``; the delay to wait before answering it."""
        now = self._clock()
        count, last = self._failures.pop(address, (0, now))
        count = 1 if now - last > self._forget_s else count + 1
        self._failures[address] = (count, now)
        while len(self._failures) > self._addresses:  # bounded: one over at most
            self._failures.popitem(last=False)
        return float(min(self._max_s, self._first_s * 2.0 ** min(count - 1, 32)))
