"""``es stats``: the store at a glance: size, topics, partitions, records, groups and their lag."""

from __future__ import annotations

from typing import Annotated, Any

from .. import store as store_module
from ..reader import StoreReader
from ..records import StoreStatistics
from .access import DataOption, store_or_reader
from .groups import group_lag
from .output import JsonOption, add_row, console, human_size, key_values, plural, print_json, table

DURABILITY_NOTE = "as this command opened the store; each open chooses its mode"


def stats(data: DataOption = store_module.DEFAULT_PATH,
          json: Annotated[bool, JsonOption] = False) -> None:
    """Size, topics, partitions, records, groups with their lag, durability mode."""
    with store_or_reader(data) as (store, owner):
        if isinstance(store, StoreReader):
            parts = store.partition_statistics()
            s = StoreStatistics(
                path=store.path, durability="none", topics=len({p.topic for p in parts}),
                partitions=len(parts), records=sum(p.end_offset - p.log_start_offset for p in parts),
                size_bytes=sum(p.size_bytes for p in parts), appended_batches=0, appended_records=0,
                fsyncs=0, partition_stats=parts)
        else:
            s = store.statistics()
        groups: list[dict[str, Any]] = [{"group": g, "lag": group_lag(store, g)} for g in store.list_groups()]
        partitions = {cfg.name: cfg.partitions for cfg in store.topics()}
    durability = s.durability if owner is None else None  # the owner chose it when it opened
    per_topic: dict[str, dict[str, Any]] = {}
    for p in s.partition_stats:
        t = per_topic.setdefault(p.topic, {"name": p.topic, "partitions": partitions.get(p.topic, 0),
                                           "records": 0, "size_bytes": 0, "segments": 0})
        t["records"] += p.end_offset - p.log_start_offset
        t["size_bytes"] += p.size_bytes
        t["segments"] += p.segments
    segments = sum(p.segments for p in s.partition_stats)
    if json:
        print_json({"path": s.path, "durability": durability, "size_bytes": s.size_bytes,
                    "topics": s.topics, "partitions": s.partitions, "segments": segments,
                    "records": s.records, "per_topic": list(per_topic.values()), "groups": groups})
        return
    out = console()
    print(key_values([
        ("store", s.path),
        ("size", f"{human_size(s.size_bytes)} in {plural(segments, 'segment')}"),
        ("topics", f"{s.topics} ({plural(s.partitions, 'partition')})"),
        ("records", f"{s.records:,}"),
        ("groups", f"{len(groups)} (total lag {sum(g['lag'] for g in groups):,})"),
        ("durability", f"{s.durability} ({DURABILITY_NOTE})" if owner is None
         else f"unknown: the store is open in process {owner}, which chose it"),
    ]))
    if per_topic:
        tt = table("TOPIC", "PARTITIONS>", "RECORDS>", "SIZE>", "SEGMENTS>")
        for t in per_topic.values():
            add_row(tt, t["name"], t["partitions"], f"{t['records']:,}", human_size(t["size_bytes"]),
                    t["segments"])
        out.print(tt)
    if groups:
        gt = table("GROUP", "LAG>")
        for g in groups:
            add_row(gt, g["group"], f"{g['lag']:,}")
        out.print(gt)
