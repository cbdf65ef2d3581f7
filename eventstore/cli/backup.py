"""``es backup`` and ``es restore``: copies of a store beside its owner, and stores made of
them again (``eventstore.backup``; docs/format.md, section 20)."""

from __future__ import annotations

import re
import threading
from typing import Annotated

import typer

from .. import backups as backup_module
from .. import store as store_module
from ..records import TopicPartition
from .access import DataOption
from .output import human_size, plural
from .times import TIME_HELP, parse_time_ms

_OFFSET_ITEM = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+):(?P<partition>\d+)=(?P<offset>\d+)$")


def backup(
    to: Annotated[str, typer.Option("--to", metavar="DEST", help="The backup directory (another disk, "
                                    "a mounted volume); empty or a backup made before.")],
    data: DataOption = store_module.DEFAULT_PATH,
    once: Annotated[bool, typer.Option("--once", help="One pass (a snapshot), then exit.")] = False,
    interval_ms: Annotated[int, typer.Option("--interval-ms", help="Pause between passes.")] =
        backup_module.DEFAULT_INTERVAL_MS,
    passes: Annotated[int | None, typer.Option("--passes", help="Stop after this many passes.")] = None,
) -> None:
    """Copy the store into DEST continuously, beside the process that owns it.

    No lock is taken and nothing is written to --data: closed segments are copied once,
    the active segments' new batches as they land, and the catalog's group offsets, log
    starts and producer ids. Runs until interrupted unless --once or --passes; a backup
    started again continues where the last one ended.
    """
    stop = threading.Event()

    def report(result: backup_module.PassResult) -> None:
        print(f"pass {result.passes}: copied {human_size(result.bytes_copied)} "
              f"({plural(result.batches_copied, 'batch')}) of "
              f"{plural(result.partitions, 'partition')} in {plural(result.topics, 'topic')}", flush=True)

    try:
        backup_module.backup(data, to, once=once, interval_ms=interval_ms, max_passes=passes, stop=stop,
                             on_pass=report)
    except KeyboardInterrupt:
        stop.set()  # the last published pass stands: the next run continues from it


def restore(
    source: Annotated[str, typer.Option("--from", metavar="DEST", help="The backup directory.")],
    to: Annotated[str, typer.Option("--to", metavar="DIR", help="The new store's directory (must not "
                                    "exist, or be empty).")],
    at: Annotated[str | None, typer.Option("--at", help=f"Restore the log as it was then: {TIME_HELP}. "
                                           "Each partition ends before its first batch whose max "
                                           "timestamp is later.")] = None,
    offsets: Annotated[str | None, typer.Option(
        "--offsets", metavar="TOPIC:PARTITION=OFFSET,...",
        help="End these partitions before the batch holding each offset; the others are whole.")] = None,
) -> None:
    """Make a store from a backup: the latest state, or a point in time.

    Group offsets are clamped to where each partition ends; the store is checked before
    it appears at --to.
    """
    if at is not None and offsets is not None:
        raise typer.BadParameter("give --at or --offsets, not both", param_hint="--at")
    at_ms = parse_time_ms(at, "--at") if at is not None else None
    result = backup_module.restore(source, to, at_ms=at_ms,
                                   offsets=_parse_offsets(offsets) if offsets is not None else None)
    records = sum(end - start for start, end in result.offsets.values())
    print(f"restored {plural(len(result.offsets), 'partition')} ({plural(records, 'record')}) and "
          f"{plural(result.groups, 'group')}' offsets into {result.path}")


def _parse_offsets(text: str) -> dict[TopicPartition, int]:
    out = {}
    for item in text.split(","):
        found = _OFFSET_ITEM.match(item.strip())
        if found is None:
            raise typer.BadParameter(f"{item!r} is not TOPIC:PARTITION=OFFSET", param_hint="--offsets")
        out[TopicPartition(found["topic"], int(found["partition"]))] = int(found["offset"])
    return out
