"""``es retention``: apply the topics' retention limits now, or preview what they remove."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import store as store_module
from ..records import RetentionResult
from .access import DataOption, open_store
from .output import JsonOption, add_row, console, human_size, plural, print_json, progress, table


def retention(
    topics: Annotated[list[str] | None, typer.Argument(
        metavar="[TOPIC]...", help="Topics to apply retention to (default: all).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be removed, remove nothing.")] = False,
    data: DataOption = store_module.DEFAULT_PATH,
    json: Annotated[bool, JsonOption] = False,
) -> None:
    """Remove closed segments past their topic's retention limits now.

    The store also does this at every segment roll; run it after lowering a
    limit, or for topics that no longer receive records.
    """
    with open_store(data) as store:
        chosen = [store.topic(t) for t in topics] if topics else store.topics()
        partitions = sum(cfg.partitions for cfg in chosen)
        with progress("retain", partitions) as bar:
            results = store.retention([cfg.name for cfg in chosen], dry_run=dry_run,
                                      on_progress=lambda _result: bar.advance(1))
    if json:
        print_json({"dry_run": dry_run, "partitions": [_result_json(r) for r in results]})
        return
    _print(results, dry_run, partitions)


def _result_json(r: RetentionResult) -> dict[str, object]:
    return {"topic": r.topic, "partition": r.partition, "segments": r.segments, "records": r.records,
            "size_bytes": r.bytes, "log_start_offset": r.log_start_offset}


def _print(results: list[RetentionResult], dry_run: bool, partitions: int) -> None:
    verb = "would remove" if dry_run else "removed"
    if not results:
        print(f"nothing to remove in {plural(partitions, 'partition')}")
        return
    t = table("TOPIC", "PARTITION>", "SEGMENTS>", "RECORDS>", "SIZE>", "NEW START>")
    for r in results:
        add_row(t, r.topic, r.partition, r.segments, f"{r.records:,}", human_size(r.bytes),
                r.log_start_offset)
    console().print(t)
    print(f"{verb} {plural(sum(r.segments for r in results), 'segment')}: "
          f"{plural(sum(r.records for r in results), 'record')}, "
          f"{human_size(sum(r.bytes for r in results))}")
