"""``es groups``: list, describe, reset-offsets, delete consumer groups."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .. import store as store_module
from ..errors import OffsetOutOfRangeError
from ..reader import StoreReader
from ..records import TopicPartition
from .access import (
    AnyStore,
    BootstrapOption,
    CliError,
    DataOption,
    did_you_mean,
    open_any,
    store_or_reader,
)
from .output import JsonOption, add_row, console, key_values, note, plural, print_json, table
from .times import TIME_HELP, parse_time_ms

groups_app = typer.Typer(help="List, describe, reset and delete consumer groups.", no_args_is_help=True)

Json = Annotated[bool, JsonOption]


def require_group(store: AnyStore | StoreReader, group: str) -> None:
    """A ``CliError`` (with a "did you mean") if ``group`` has no offsets and no members."""
    groups = store.list_groups()
    if group not in groups:
        raise CliError(f"group {group!r} does not exist{did_you_mean(group, groups)}",
                       hint="list groups with: es groups list")


def group_lag(store: AnyStore | StoreReader, group: str) -> int:
    return sum(store.lag(group).values())


@groups_app.command("list")
def list_groups(data: DataOption = store_module.DEFAULT_PATH, json: Json = False,
                bootstrap: BootstrapOption = None) -> None:
    """Every group with the topics it has offsets for and its total lag."""
    with store_or_reader(data, bootstrap) as (store, _owner):
        rows = [(g, sorted({tp.topic for tp in store.group_offsets(g)}), group_lag(store, g))
                for g in store.list_groups()]
    if json:
        print_json([{"group": g, "topics": topics, "lag": lag} for g, topics, lag in rows])
        return
    if not rows:
        note(f"no consumer groups in {bootstrap or data}")
        return
    t = table("GROUP", "TOPICS", "LAG>")
    for g, topics, lag in rows:
        add_row(t, g, ", ".join(topics), f"{lag:,}")
    console().print(t)


def _partitions(store: AnyStore | StoreReader, group: str) -> list[dict[str, Any]]:
    committed = store.group_offsets(group)
    lag = store.lag(group)
    out = []
    for tp in sorted(set(committed) | set(lag)):
        try:
            start, end = store.offsets(tp.topic, tp.partition)
        except KeyError:  # offsets for a topic deleted since: nothing to measure against
            continue
        out.append({"topic": tp.topic, "partition": tp.partition, "committed": committed.get(tp),
                    "log_start_offset": start, "end_offset": end, "lag": lag.get(tp, 0)})
    return out


@groups_app.command()
def describe(group: str, data: DataOption = store_module.DEFAULT_PATH, json: Json = False,
             bootstrap: BootstrapOption = None) -> None:
    """A group's state, members and assignment, and per partition: committed, end and lag."""
    with store_or_reader(data, bootstrap) as (store, owner):
        require_group(store, group)
        parts = _partitions(store, group)
        members: list[dict[str, Any]] = []
        state, generation = "Unknown", None  # membership lives in the owning process only
        if not isinstance(store, StoreReader):
            desc = store.describe_group(group)
            state, generation, members = desc.state, desc.generation, [
                {"member_id": m.member_id, "client_id": m.client_id, "topics": sorted(m.topics),
                 "assignment": [{"topic": tp.topic, "partition": tp.partition} for tp in m.assignment]}
                for m in desc.members]
    if json:
        print_json({"group": group, "state": state, "generation": generation,
                    "members": members, "partitions": parts})
        return
    out = console()
    print(key_values([
        ("group", group),
        ("state", f"{state}, generation {generation}" if owner is None
         else f"unknown: the store is open in process {owner}, which alone knows the members"),
        ("members", len(members) or ("none" if owner is None else "unknown")),
        ("lag", plural(sum(p["lag"] for p in parts), "record")),
    ]))
    if members:
        mt = table("MEMBER", "CLIENT", "ASSIGNMENT")
        for m in members:
            assigned = ", ".join(f"{a['topic']}/{a['partition']}" for a in m["assignment"])
            add_row(mt, m["member_id"], m["client_id"], assigned or "-")
        out.print(mt)
    t = table("TOPIC", "PARTITION>", "COMMITTED>", "END>", "LAG>")
    for p in parts:
        committed = "-" if p["committed"] is None else p["committed"]
        add_row(t, p["topic"], p["partition"], committed, p["end_offset"], f"{p['lag']:,}")
    out.print(t)


@groups_app.command("reset-offsets")
def reset_offsets(
    group: str,
    to_earliest: Annotated[bool, typer.Option(help="To the log start.")] = False,
    to_latest: Annotated[bool, typer.Option(help="To the end (skip everything).")] = False,
    to_datetime: Annotated[str | None, typer.Option(
        metavar="TIME", help=f"To the first record at or after TIME: {TIME_HELP}.")] = None,
    to_offset: Annotated[int | None, typer.Option(min=0, help="To this offset.")] = None,
    topic: Annotated[list[str] | None, typer.Option(
        "--topic", "-t", help="Reset this topic (repeatable; default: the group's topics).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show the new offsets, change nothing.")] = False,
    data: DataOption = store_module.DEFAULT_PATH,
    json: Json = False,
    bootstrap: BootstrapOption = None,
) -> None:
    """Move a group's committed offsets, for every partition of its topics."""
    chosen = sum((to_earliest, to_latest, to_datetime is not None, to_offset is not None))
    if chosen != 1:
        raise typer.BadParameter(
            "give exactly one of --to-earliest, --to-latest, --to-datetime, --to-offset",
            param_hint="--to-*")
    at_ms = parse_time_ms(to_datetime, "--to-datetime") if to_datetime is not None else None
    with open_any(data, bootstrap) as store:
        before = store.group_offsets(group)
        if topic is None:
            require_group(store, group)
        names = topic or sorted({tp.topic for tp in before})
        plan: dict[TopicPartition, int] = {}
        for name in names:
            for p in range(store.topic(name).partitions):
                tp = TopicPartition(name, p)
                plan[tp] = _target(store, tp, to_earliest, to_latest, at_ms, to_offset)
        if not plan:
            raise CliError(f"group {group!r} has no topics to reset",
                           hint="name them with --topic")
        if not dry_run:
            store.reset_group_offsets(group, plan)
    rows = [{"topic": tp.topic, "partition": tp.partition, "previous": before.get(tp), "offset": off}
            for tp, off in sorted(plan.items())]
    if json:
        print_json({"group": group, "dry_run": dry_run, "partitions": rows})
        return
    t = table("TOPIC", "PARTITION>", "PREVIOUS>", "NEW>")
    for r in rows:
        add_row(t, r["topic"], r["partition"], "-" if r["previous"] is None else r["previous"],
                r["offset"])
    console().print(t)
    note(f"dry run: group {group!r} unchanged" if dry_run
         else f"reset {plural(len(rows), 'partition')} of group {group!r}")


def _target(store: AnyStore, tp: TopicPartition, earliest: bool, latest: bool,
            at_ms: int | None, offset: int | None) -> int:
    start, end = store.offsets(tp.topic, tp.partition)
    if earliest:
        return start
    if latest:
        return end
    if at_ms is not None:
        found = store.offset_for_time(tp.topic, tp.partition, at_ms)
        return end if found is None else found
    assert offset is not None
    if not start <= offset <= end:
        raise OffsetOutOfRangeError(tp.topic, tp.partition, offset, start, end)
    return offset


@groups_app.command()
def delete(group: str, data: DataOption = store_module.DEFAULT_PATH,
           bootstrap: BootstrapOption = None) -> None:
    """Forget a group's committed offsets."""
    with open_any(data, bootstrap) as store:
        require_group(store, group)
        removed = store.delete_group(group)
    print(f"deleted group {group!r} ({plural(removed, 'committed offset')})")
