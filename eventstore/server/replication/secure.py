"""How a follower reaches its leader: the security protocol, SASL credentials and TLS files of
``--replica-security-protocol`` and its companions (docs/replication.md, section 4).

The options are checked by ``server_config`` (a bad combination fails before anything
listens); :func:`replica_security` turns them into a :class:`ReplicaSecurity` once, at the
server's start, reading the TLS files then, so a CA file that cannot be read stops the
server instead of every connection to the leader failing later. ``client.connect_leader``
opens every connection a follower makes to its leader with it.

The password is kept out of every ``repr``, error message and log line.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from ...errors import InvalidArgumentError
from ...wire.security import DEFAULT_SASL_MECHANISM
from ..config import ServerConfig

__all__ = ["ReplicaSecurity", "replica_security"]


@dataclass(frozen=True)
class ReplicaSecurity:
    """The checked settings of a follower's connections; the default is PLAINTEXT (no TLS, no SASL)."""

    protocol: str = "PLAINTEXT"
    mechanism: str = DEFAULT_SASL_MECHANISM
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    """The TLS context (on SSL and SASL_SSL): TLS 1.2 or later, the leader's certificate and
    host name checked against the CA file (else the system's CAs)."""

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")


def replica_security(config: ServerConfig) -> ReplicaSecurity:
    """The follower's settings from the server's (checked there already); ``InvalidArgumentError``
    when a TLS file cannot be read."""
    protocol = config.replica_security_protocol
    context = _context(config) if protocol in ("SSL", "SASL_SSL") else None
    return ReplicaSecurity(protocol, config.replica_sasl_mechanism, config.replica_username,
                           config.replica_password, context)


def _context(config: ServerConfig) -> ssl.SSLContext:
    cafile, certfile = config.replica_ssl_cafile, config.replica_ssl_certfile
    keyfile = config.replica_ssl_keyfile
    try:
        context = ssl.create_default_context(cafile=cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if certfile is not None:
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise InvalidArgumentError(f"cannot load the follower's TLS files (replica_ssl_cafile {cafile!r}, "
                                   f"replica_ssl_certfile {certfile!r}, replica_ssl_keyfile {keyfile!r}): "
                                   f"{e}") from None
    return context
