"""W8 measurements taken in a fresh interpreter, run as a script (not through ``bench``):

    python probe.py open PATH   time eventstore.open(PATH)
    python probe.py scan PATH   open, read every record of topic "bench", report memory

Prints one JSON object on its last line of output.

Peak RSS is the kernel's high-water mark for this process's own memory (``VmHWM``). On Linux
``getrusage(RUSAGE_SELF).ru_maxrss`` also carries over the peak of the process that spawned
this one (it survives ``exec``), so it is reported too, as ``ru_maxrss_mb``, but not relied
on; where ``/proc`` is missing it is the only figure.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

TOPIC = "bench"
SCAN_CHUNK = 10_000


def _status_mb() -> dict[str, float]:
    """Memory figures of this process from /proc/self/status, in MiB (empty if unavailable)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    figures: dict[str, float] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile") and rest.strip().endswith("kB"):
            figures[name] = int(rest.split()[0]) / 1024
    return figures


def _ru_maxrss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("open", "scan"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, path = argv[1], argv[2]

    started = time.perf_counter()
    import eventstore

    figures: dict[str, float | int] = {"import_seconds": time.perf_counter() - started}
    figures["rss_before_open_mb"] = _status_mb().get("VmRSS", _ru_maxrss_mb())
    started = time.perf_counter()
    store = eventstore.open(path)
    figures["open_seconds"] = time.perf_counter() - started
    try:
        if mode == "scan":
            count = nbytes = 0
            started = time.perf_counter()
            offset, end = store.offsets(TOPIC, 0)
            while offset < end:
                records = store.read(TOPIC, 0, offset, max_records=SCAN_CHUNK)
                if not records:
                    break
                for record in records:
                    nbytes += len(record.value or b"")
                count += len(records)
                offset = records[-1].offset + 1
            figures["scan_seconds"] = time.perf_counter() - started
            figures["records"] = count
            status = _status_mb()
            figures["max_rss_mb"] = status.get("VmHWM", _ru_maxrss_mb())
            if "RssAnon" in status:
                figures["rss_anon_mb"] = status["RssAnon"]
                figures["rss_file_mb"] = status["RssFile"]
            figures["ru_maxrss_mb"] = _ru_maxrss_mb()
    finally:
        store.close()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
