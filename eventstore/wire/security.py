"""Kafka's names for how a connection is secured: the listeners' and clients' security
protocols and the SASL mechanisms (docs/operations.md, section 1). One table for the
server's listeners, a follower's connection to its leader, the remote store and the
command line's admin client."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_SASL_MECHANISM", "SASL_MECHANISMS", "SCRAM_MECHANISMS", "SECURITY_PROTOCOLS"]

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SCRAM_MECHANISMS: Final = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_MECHANISMS: Final = ("PLAIN", *SCRAM_MECHANISMS)
DEFAULT_SASL_MECHANISM: Final = "SCRAM-SHA-512"
"""What a client uses on a SASL protocol when no mechanism is named."""
