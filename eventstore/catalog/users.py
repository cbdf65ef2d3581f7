"""SASL users: salted SCRAM credentials under ``meta/user`` keys (docs/format.md, section 6).

Key: ``b"user" 0x00`` then the user name (UTF-8). Value: MessagePack map of mechanism
name (``"SCRAM-SHA-256"``, ``"SCRAM-SHA-512"``) to ``[salt, iterations, stored_key,
server_key]``, sealed (``sealed.py``). No password is kept, in clear or otherwise:
a SCRAM server needs only the stored and server keys, and PLAIN is checked by deriving
the stored key from the password offered (``eventstore.server.auth``).

Primary data: a value that fails its checksum is a ``CorruptionError``, never a user
silently gone (or let in).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec

from ..errors import CorruptionError
from . import datafile, keys, sealed
from .env import Catalog

__all__ = ["Credential", "delete", "get", "names", "put", "remove_mechanism", "replace"]

PREFIX = b"user\x00"
_encode = msgspec.msgpack.encode
_decoder = msgspec.msgpack.Decoder(dict[str, tuple[bytes, int, bytes, bytes]])


@dataclass(frozen=True, slots=True)
class Credential:
    """One user's SCRAM credential for one mechanism (RFC 5802, section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _key(user: str) -> bytes:
    return PREFIX + user.encode("utf-8")


def get(catalog: Catalog, user: str) -> dict[str, Credential]:
    """``user``'s credentials by mechanism; empty when there is no such user."""
    key = _key(user)
    raw = catalog.get(keys.DB_META, key)
    return {} if raw is None else _decode(catalog, key, raw)


def names(catalog: Catalog) -> dict[str, dict[str, Credential]]:
    """Every user's credentials by mechanism, by user name (sorted)."""
    return {bytes(k[len(PREFIX):]).decode("utf-8"): _decode(catalog, bytes(k), raw)
            for k, raw in catalog.items(keys.DB_META, PREFIX)}


def put(catalog: Catalog, user: str, mechanism: str, credential: Credential) -> None:
    """Set ``user``'s credential for ``mechanism`` (the others are kept), in one write transaction."""
    key = _key(user)

    def write(txn: object) -> None:
        raw = txn.get(key, db=catalog.dbs[keys.DB_META])  # type: ignore[attr-defined]
        found = {} if raw is None else _decode(catalog, key, raw)
        found[mechanism] = credential
        txn.put(key, _encoded(key, found), db=catalog.dbs[keys.DB_META])  # type: ignore[attr-defined]

    catalog.write(write)


def replace(catalog: Catalog, user: str, credentials: dict[str, Credential]) -> None:
    """Set ``user``'s credentials to exactly ``credentials`` (a follower copying its leader's
    row), in one write transaction; none deletes the user."""
    key = _key(user)

    def write(txn: object) -> None:
        db = catalog.dbs[keys.DB_META]
        if credentials:
            txn.put(key, _encoded(key, credentials), db=db)  # type: ignore[attr-defined]
        else:
            txn.delete(key, db=db)  # type: ignore[attr-defined]

    catalog.write(write)


def remove_mechanism(catalog: Catalog, user: str, mechanism: str) -> bool:
    """Drop ``user``'s credential for ``mechanism`` (the user goes with its last one);
    False when there was none."""
    key = _key(user)

    def write(txn: object) -> bool:
        db = catalog.dbs[keys.DB_META]
        raw = txn.get(key, db=db)  # type: ignore[attr-defined]
        found = {} if raw is None else _decode(catalog, key, raw)
        if found.pop(mechanism, None) is None:
            return False
        if found:
            txn.put(key, _encoded(key, found), db=db)  # type: ignore[attr-defined]
        else:
            txn.delete(key, db=db)  # type: ignore[attr-defined]
        return True

    return catalog.write(write)


def delete(catalog: Catalog, user: str) -> bool:
    """Forget ``user`` and all its credentials; False when there was no such user."""
    key = _key(user)
    return catalog.write(lambda txn: bool(txn.delete(key, db=catalog.dbs[keys.DB_META])))


def _encoded(key: bytes, credentials: dict[str, Credential]) -> bytes:
    payload = {m: (c.salt, c.iterations, c.stored_key, c.server_key) for m, c in sorted(credentials.items())}
    return sealed.seal(key, _encode(payload))


def _decode(catalog: Catalog, key: bytes, raw: bytes | memoryview) -> dict[str, Credential]:
    user = bytes(key[len(PREFIX):]).decode("utf-8", "replace")
    payload = sealed.primary(catalog.path, f"the credentials of user {user!r}", key, raw, catalog.legacy)
    try:
        found = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise CorruptionError(os.path.join(catalog.path, datafile.DATA_FILE), 0,
                              f"the credentials of user {user!r} cannot be read: {e}") from None
    return {m: Credential(*fields) for m, fields in found.items()}
