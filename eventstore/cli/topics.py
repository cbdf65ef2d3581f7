"""``es topics``: list, create, describe, alter, delete."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Annotated, Any

import typer

from .. import store as store_module
from ..errors import TopicNotFoundError
from ..records import DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_BYTES, DEFAULT_SEGMENT_MS, TopicConfig
from ..storage import topicdir
from ..storage.names import LOG_SUFFIX, is_segment_name, parse_segment_name
from .access import AnyStore, BootstrapOption, CliError, DataOption, open_any, open_reader
from .output import (
    JsonOption,
    add_row,
    console,
    human_size,
    key_values,
    note,
    optional_bytes,
    optional_ms,
    plural,
    print_json,
    table,
    timestamp,
)

topics_app = typer.Typer(help="List, create, describe, alter and delete topics.", no_args_is_help=True)

NONE_WORDS = ("none", "-1")
Json = Annotated[bool, JsonOption]
Limit = Annotated[str | None, typer.Option(
    metavar="N|none", help="A positive number, or none (or -1) for no limit.")]


def parse_limit(text: str | None, option: str) -> int | None:
    """A retention limit: a positive int, or None for ``none`` / ``-1``; usage error otherwise."""
    if text is None or text.strip().lower() in NONE_WORDS:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise typer.BadParameter(f"{text!r} is not a positive number or none", param_hint=option)
    return value


def config_json(cfg: TopicConfig) -> dict[str, Any]:
    return {
        "name": cfg.name, "partitions": cfg.partitions, "retention_ms": cfg.retention_ms,
        "retention_bytes": cfg.retention_bytes, "segment_bytes": cfg.segment_bytes,
        "segment_ms": cfg.segment_ms, "max_record_bytes": cfg.max_record_bytes,
        "created_ms": cfg.created_ms, "streams": cfg.streams,
    }


def segment_files(data: str, topic: str, partition: int) -> list[dict[str, Any]]:
    """The partition's ``.log`` files on disk: base offset, path (usable by ``es dump``), size."""
    directory = topicdir.partition_dir(data, topic, partition)
    out = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise TopicNotFoundError(topic) from None  # deleted by the owner meanwhile
    for name in names:
        if is_segment_name(name) and name.endswith(LOG_SUFFIX):
            path = os.path.join(directory, name)
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:
                continue  # removed by retention since the listing (the owner may be running)
            out.append({"base_offset": parse_segment_name(name)[0], "file": path, "size_bytes": size})
    return out


@topics_app.command("list")
def list_topics(data: DataOption = store_module.DEFAULT_PATH, json: Json = False,
                bootstrap: BootstrapOption = None) -> None:
    """Every topic with its partitions, records, size and retention."""
    rows: list[tuple[TopicConfig, int, int | None]]
    if bootstrap:
        with open_any(data, bootstrap) as remote:  # sizes are the server's disk: not known here
            rows = [(cfg, _records(remote, cfg), None) for cfg in remote.topics()]
    else:
        with open_reader(data) as reader:  # no lock: works beside a running application
            counts: dict[str, int] = defaultdict(int)
            sizes: dict[str, int] = defaultdict(int)
            configs = reader.topics()
            for p in reader.partition_statistics():
                counts[p.topic] += p.end_offset - p.log_start_offset
                sizes[p.topic] += p.size_bytes
            rows = [(cfg, counts[cfg.name], sizes[cfg.name]) for cfg in configs]
    if json:
        print_json([{"name": cfg.name, "partitions": cfg.partitions, "records": records,
                     "size_bytes": size, "retention_ms": cfg.retention_ms,
                     "retention_bytes": cfg.retention_bytes, "streams": cfg.streams}
                    for cfg, records, size in rows])
        return
    if not rows:
        note(f"no topics in {bootstrap or data}")
        return
    t = table("TOPIC", "PARTITIONS>", "RECORDS>", "SIZE>", "RETENTION")
    for cfg, records, size in rows:
        add_row(t, cfg.name, cfg.partitions, f"{records:,}", _size(size), _retention(cfg))
    console().print(t)


def _records(store: AnyStore, cfg: TopicConfig) -> int:
    """Records a topic holds, from its partitions' offsets."""
    total = 0
    for p in range(cfg.partitions):
        start, end = store.offsets(cfg.name, p)
        total += end - start
    return total


def _size(size: int | None) -> str:
    return "-" if size is None else human_size(size)


def _retention(cfg: TopicConfig) -> str:
    limits = []
    if cfg.retention_ms is not None:
        limits.append(f"{cfg.retention_ms:,} ms")
    if cfg.retention_bytes is not None:
        limits.append(human_size(cfg.retention_bytes))
    return ", ".join(limits) or "forever"


@topics_app.command()
def create(
    name: Annotated[str, typer.Argument(help="Topic name: 1-249 of [A-Za-z0-9._-].")],
    partitions: Annotated[int | None, typer.Option(
        "--partitions", "-p", min=1, show_default="1", help="Partition count.")] = None,
    retention_ms: Limit = None,
    retention_bytes: Limit = None,
    segment_bytes: Annotated[int | None, typer.Option(
        min=1024, show_default=str(DEFAULT_SEGMENT_BYTES), help="Roll segments at this size.")] = None,
    segment_ms: Annotated[int | None, typer.Option(
        min=1, show_default=str(DEFAULT_SEGMENT_MS), help="Roll segments at this age.")] = None,
    max_record_bytes: Annotated[int | None, typer.Option(
        min=1, show_default=str(DEFAULT_MAX_RECORD_BYTES), help="Largest record accepted.")] = None,
    if_not_exists: Annotated[bool, typer.Option(
        help="Succeed if the topic exists with the settings given.")] = False,
    data: DataOption = store_module.DEFAULT_PATH,
    json: Json = False,
    bootstrap: BootstrapOption = None,
) -> None:
    """Create a topic (and the store, if --data names none yet)."""
    settings: dict[str, Any] = {
        "partitions": partitions, "segment_bytes": segment_bytes, "segment_ms": segment_ms,
        "max_record_bytes": max_record_bytes,
    }
    if retention_ms is not None:
        settings["retention_ms"] = parse_limit(retention_ms, "--retention-ms")
    if retention_bytes is not None:
        settings["retention_bytes"] = parse_limit(retention_bytes, "--retention-bytes")
    given = {k: v for k, v in settings.items() if k.startswith("retention_") or v is not None}
    with open_any(data, bootstrap, create=True) as store:
        existed = any(cfg.name == name for cfg in store.topics())
        cfg = store.create_topic(name, **given, exist_ok=if_not_exists)
    if json:
        print_json(config_json(cfg))
    elif existed:
        print(f"topic {cfg.name!r} exists with {plural(cfg.partitions, 'partition')}")
    else:
        print(f"created topic {cfg.name!r} with {plural(cfg.partitions, 'partition')}")


@topics_app.command()
def describe(
    name: str,
    segments: Annotated[bool, typer.Option("--segments", help="List every segment file.")] = False,
    data: DataOption = store_module.DEFAULT_PATH,
    json: Json = False,
    bootstrap: BootstrapOption = None,
) -> None:
    """A topic's configuration and, per partition, offsets, records, size and segments."""
    if bootstrap and segments:
        raise typer.BadParameter("segment files are the server's own: --segments needs --data",
                                 param_hint="--segments")
    if bootstrap:
        cfg, parts = _describe_remote(data, bootstrap, name)
    else:
        cfg, parts = _describe_local(data, name)
    if json:
        print_json({"config": config_json(cfg), "partitions": parts})
        return
    out = console()
    print(key_values(_config_rows(cfg, parts)))
    t = table("PART>", "START>", "END>", "RECORDS>", "SIZE>", "SEGS>", "LAST RECORD (UTC)")
    for p in parts:
        add_row(t, p["partition"], p["log_start_offset"], p["end_offset"], f"{p['records']:,}",
                _size(p["size_bytes"]), len(p["segments"]), timestamp(p["max_timestamp_ms"]))
    out.print(t)
    if segments:
        root = os.path.join(topicdir.topics_root(data), name)
        print(f"segment files under {root}{os.sep}")
        s = table("PART>", "BASE OFFSET>", "SIZE>", "FILE")
        for p in parts:
            for seg in p["segments"]:
                add_row(s, p["partition"], seg["base_offset"], human_size(seg["size_bytes"]),
                        os.path.relpath(seg["file"], root))
        out.print(s)


def _describe_local(data: str, name: str) -> tuple[TopicConfig, list[dict[str, Any]]]:
    with open_reader(data) as reader:  # no lock: works beside a running application
        cfg = reader.topic(name)
        stats = reader.partition_statistics(name)
        files = {p.partition: segment_files(data, name, p.partition) for p in stats}
    return cfg, [{
        "partition": p.partition, "log_start_offset": p.log_start_offset, "end_offset": p.end_offset,
        "records": p.end_offset - p.log_start_offset, "size_bytes": p.size_bytes,
        "max_timestamp_ms": p.max_timestamp_ms, "segments": files[p.partition],
    } for p in stats]


def _describe_remote(data: str, bootstrap: str, name: str) -> tuple[TopicConfig, list[dict[str, Any]]]:
    """What a server tells of a topic: its configuration and offsets (its files stay its own)."""
    with open_any(data, bootstrap) as store:
        cfg = store.topic(name)
        parts: list[dict[str, Any]] = []
        for p in range(cfg.partitions):
            start, end = store.offsets(name, p)
            parts.append({"partition": p, "log_start_offset": start, "end_offset": end,
                          "records": end - start, "size_bytes": None, "max_timestamp_ms": None,
                          "segments": []})
    return cfg, parts


def _config_rows(cfg: TopicConfig, parts: list[dict[str, Any]]) -> list[tuple[str, object]]:
    records = sum(p["records"] for p in parts)
    known = [p["size_bytes"] for p in parts if p["size_bytes"] is not None]
    size: int | None = sum(known) if len(known) == len(parts) else None
    return [
        ("topic", cfg.name + ("  (event streams)" if cfg.streams else "")),
        ("partitions", cfg.partitions),
        ("records", f"{records:,} in {_size(size)}"),
        ("retention", f"{optional_ms(cfg.retention_ms)}, {optional_bytes(cfg.retention_bytes)}"),
        ("segments", f"roll at {cfg.segment_bytes:,} bytes or {cfg.segment_ms:,} ms"),
        ("max record", f"{cfg.max_record_bytes:,} bytes"),
        ("created", timestamp(cfg.created_ms or None)),
    ]


@topics_app.command()
def alter(
    name: str,
    partitions: Annotated[int | None, typer.Option("--partitions", "-p", min=1,
                                                   help="New partition count (can only grow).")] = None,
    retention_ms: Limit = None,
    retention_bytes: Limit = None,
    segment_bytes: Annotated[int | None, typer.Option(min=1024)] = None,
    segment_ms: Annotated[int | None, typer.Option(min=1)] = None,
    max_record_bytes: Annotated[int | None, typer.Option(min=1)] = None,
    data: DataOption = store_module.DEFAULT_PATH,
    json: Json = False,
    bootstrap: BootstrapOption = None,
) -> None:
    """Change a topic's configuration; give only the settings to change."""
    changes: dict[str, Any] = {}
    if retention_ms is not None:
        changes["retention_ms"] = parse_limit(retention_ms, "--retention-ms")
    if retention_bytes is not None:
        changes["retention_bytes"] = parse_limit(retention_bytes, "--retention-bytes")
    for key, value in (("partitions", partitions), ("segment_bytes", segment_bytes),
                       ("segment_ms", segment_ms), ("max_record_bytes", max_record_bytes)):
        if value is not None:
            changes[key] = value
    if not changes:
        raise typer.BadParameter("give at least one setting to change (see es topics alter --help)")
    with open_any(data, bootstrap) as store:
        old = store.topic(name)
        if partitions is not None and partitions < old.partitions:
            raise CliError(
                f"topic {name!r} has {old.partitions} partitions and partitions can only grow",
                hint="create a new topic and copy the records if you need fewer",
            )
        cfg = store.alter_topic(name, **changes)
    if json:
        print_json(config_json(cfg))
    else:
        print(f"altered topic {cfg.name!r}: " + ", ".join(
            f"{k}={'none' if v is None else v}" for k, v in changes.items()))


@topics_app.command()
def delete(name: str, data: DataOption = store_module.DEFAULT_PATH,
           bootstrap: BootstrapOption = None) -> None:
    """Delete a topic, its records and the groups' offsets for it."""
    with open_any(data, bootstrap) as store:
        store.delete_topic(name)
    print(f"deleted topic {name!r}")
