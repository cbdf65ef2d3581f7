"""Open stores and read everything back, in a child process (so that a signal is seen).

As a script: ``python store_prober.py DIR...`` opens each store in turn, reads
every record, stream and group offset, closes it, and prints one JSON line per
store; before each it prints ``BEGIN <dir>``, so that a child killed by a signal
names the store that killed it. With ``--twice`` each store is opened a second
time after the first close (what was found damaged the first time is rebuilt).

As a module: ``probe(path)`` is what one line holds, and ``run(dirs)`` runs the
child and returns the lines, or raises naming the store a signal killed it on.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

_PROBE_TIMEOUT_S = 600


def _digest(value: bytes | None) -> str:
    import xxhash

    return xxhash.xxh64_hexdigest(value or b"")


def probe(path: str) -> dict[str, Any]:
    """What the store at ``path`` returns: per read, its result's digest or the error type.

    A read that fails is recorded as ``"!<ErrorType>"``; ``"!!<ErrorType>"`` marks an
    exception that is not an ``EventStoreError`` (a wrong error).
    """
    import eventstore

    out: dict[str, Any] = {}
    try:
        store = eventstore.open(path)
    except Exception as e:  # recorded, not raised: the parent judges
        return {"open": _error(e), "message": str(e)}
    try:
        out["open"] = "ok"
        out["recovery"] = sorted({e.case for e in store.recovery_events})
        for cfg in store.topics():
            for p in range(cfg.partitions):
                out[f"records {cfg.name}/{p}"] = _read(lambda c=cfg, p=p: [
                    (r.offset, _digest(r.value), _digest(r.key)) for r in _all_records(store, c.name, p)])
        streams = _read(lambda: store.list_streams())
        out["streams"] = streams
        for sid in streams if isinstance(streams, list) else []:
            out[f"stream {sid}"] = _read(lambda s=sid: [
                (e.version, e.position, e.type, _digest(e.data)) for e in store.read_stream(s)])
        out["all"] = _read(lambda: [(e.stream_id, e.version, e.position, _digest(e.data))
                                    for e in store.read_all(0, None)])
        for group in _read(lambda: store.list_groups()) or []:
            out[f"group {group}"] = _read(lambda g=group: sorted(
                (tp.topic, tp.partition, o) for tp, o in store.group_offsets(g).items()))
        out["check"] = _read(lambda: store.check().ok)
    finally:
        try:
            store.close()
        except Exception as e:  # a close that fails is a result too
            out["close"] = _error(e)
    return out


def _all_records(store: Any, topic: str, partition: int) -> list[Any]:
    start, end = store.offsets(topic, partition)
    out: list[Any] = []
    offset = start
    while offset < end:  # bounded: each read returns ≥ 1 record
        batch = store.read(topic, partition, offset, max_records=5000)
        out.extend(batch)
        offset = batch[-1].offset + 1
    return out


def _read(fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # recorded, not raised: the parent judges
        return _error(e)


def _error(e: BaseException) -> str:
    import eventstore

    return ("!" if isinstance(e, eventstore.EventStoreError) else "!!") + type(e).__name__


def run(dirs: list[Path], *, twice: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Probe each store in a child process; {dir: [first open's result(, second's)]}."""
    args = [sys.executable, str(Path(__file__)), *(["--twice"] if twice else []), *map(str, dirs)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False)
    results: dict[str, list[dict[str, Any]]] = {}
    current = None
    for line in done.stdout.splitlines():
        if line.startswith("BEGIN "):
            current = line[len("BEGIN "):]
        elif line.startswith("{") and current is not None:
            results.setdefault(current, []).append(json.loads(line))
    if done.returncode != 0:
        raise AssertionError(
            f"the prober died (status {done.returncode}) on {current}:\n{done.stderr[-3000:]}")
    return results


def main(argv: list[str]) -> None:
    logging.disable(logging.WARNING)
    twice = "--twice" in argv
    for path in (a for a in argv if a != "--twice"):
        print(f"BEGIN {path}", flush=True)
        for _ in range(2 if twice else 1):
            print(json.dumps(probe(path)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
