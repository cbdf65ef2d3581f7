"""What a catalog holds, read from a catalog that may be damaged: for ``es verify --repair``.

``inventory(directory)`` opens the environment read-only, without its lock
file, and walks every database with a cursor, each on its own, so that a
damaged page costs only the database it belongs to. It never writes. LMDB
follows page numbers without bounds checks, so callers run it in a child
process (``python -m eventstore.catalog.inventory DIR`` prints it as JSON) and
only after ``datafile.check`` passed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import lmdb

from . import keys

PROJECTION_PREFIX = b"proj\x00"  # sourcing/projections.py: proj 0x00 <name> 0x00 "c"
_ENTRIES_MAX = 10_000_000


def inventory(directory: str) -> dict[str, Any]:
    """Per database: ``{"entries": n}`` or ``{"error": reason}``; plus the groups with
    committed offsets, the projections with a checkpoint and the pending transactions."""
    out: dict[str, Any] = {"databases": {}, "groups": {}, "projections": [], "transactions": 0}
    env = lmdb.open(directory, readonly=True, lock=False, max_dbs=len(keys.ALL_DBS) + 4, subdir=True)
    try:
        for name in keys.ALL_DBS:
            out["databases"][name.decode()] = _walk(env, name, out)
    finally:
        env.close()
    return out


def _walk(env: Any, name: bytes, out: dict[str, Any]) -> dict[str, Any]:
    entries = 0
    try:
        db = env.open_db(name, create=False)
        with env.begin() as txn:
            for key, _value in txn.cursor(db=db):  # bounded by _ENTRIES_MAX
                entries += 1
                _note(name, bytes(key), out)
                if entries >= _ENTRIES_MAX:
                    break
    except (lmdb.Error, UnicodeDecodeError, ValueError) as e:
        return {"entries": entries, "error": f"{type(e).__name__}: {e}"}
    return {"entries": entries}


def _note(db: bytes, key: bytes, out: dict[str, Any]) -> None:
    if db == keys.DB_CURSORS:
        group = keys.parse_cursor_key(key)[0]
        out["groups"][group] = out["groups"].get(group, 0) + 1
    elif db == keys.DB_STREAMS and key.startswith(PROJECTION_PREFIX) and key.endswith(b"\x00c"):
        out["projections"].append(key[len(PROJECTION_PREFIX):-2].decode())
    elif db == keys.DB_OUTBOX:
        out["transactions"] += 1


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(inventory(args[0])))


if __name__ == "__main__":
    main()
