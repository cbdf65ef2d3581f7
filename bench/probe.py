"""W8 measurements taken in a fresh interpreter, run as a script (not through ``bench``):

    python probe.py open PATH   time eventstore.open(PATH) and close
    python probe.py scan PATH   open, read every record of topic "bench", report peak RSS

Prints one JSON object on its last line of output.
"""

from __future__ import annotations

import json
import resource
import sys
import time

TOPIC = "bench"
SCAN_CHUNK = 10_000


def _max_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("open", "scan"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, path = argv[1], argv[2]

    started = time.perf_counter()
    import eventstore

    figures: dict[str, float | int] = {
        "import_seconds": time.perf_counter() - started,
        "rss_before_open_mb": _max_rss_mb(),
    }
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
    finally:
        store.close()
    figures["max_rss_mb"] = _max_rss_mb()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
