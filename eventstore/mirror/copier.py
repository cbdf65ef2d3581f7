"""The copy loop: topics matched and made at the destination, partitions resumed from the
checkpoint, records sent in order, progress checkpointed (docs/mirror.md)."""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..errors import MirrorError
from ..records import Record, TopicPartition
from .checkpoint import Checkpoint

#: Records asked of the source per turn.
CHUNK = 5_000
#: How long a turn waits for new records when there are none.
IDLE_S = 0.1
#: At most one checkpoint write per this many seconds while copying.
CHECKPOINT_EVERY_S = 1.0
#: How often --follow looks for new topics and partitions.
DISCOVER_EVERY_S = 1.0
#: How long the last deliveries may take when the mirror stops.
FLUSH_S = 60.0


class Source(Protocol):
    name: str

    def topics(self) -> dict[str, int]: ...
    def bounds(self, tp: TopicPartition) -> tuple[int, int]: ...
    def assign(self, positions: dict[TopicPartition, int]) -> None: ...
    def position(self, tp: TopicPartition) -> int: ...
    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...
    def close(self) -> None: ...


class Destination(Protocol):
    name: str

    def topics(self) -> dict[str, int]: ...
    def create(self, topic: str, partitions: int) -> None: ...
    def grow(self, topic: str, partitions: int) -> None: ...
    def end(self, tp: TopicPartition) -> int: ...
    def send(self, records: list[Record]) -> None: ...
    def delivered(self) -> dict[TopicPartition, tuple[int, int]]: ...
    def poll(self) -> None: ...
    def flush(self, timeout_s: float) -> None: ...
    def close(self) -> None: ...


def topic_filter(patterns: str | None, include_internal: bool) -> Callable[[str], bool]:
    """Shell-style patterns, comma-separated (None: every topic); names starting with ``__``
    only with ``include_internal``."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()] if patterns else ["*"]

    def matches(name: str) -> bool:
        if name.startswith("__") and not include_internal:
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in wanted)

    return matches


class Mirror:
    """Copies the matching topics of ``source`` into ``destination``.

    What the destination reports delivered is what the checkpoint records. Call :meth:`run`;
    it returns the records copied.
    """

    def __init__(self, source: Source, checkpoint: Checkpoint, wanted: Callable[[str], bool],
                 follow: bool, stop: threading.Event) -> None:
        self.source = source
        self.checkpoint = checkpoint
        self.wanted = wanted
        self.follow = follow
        self.stop = stop
        #: (next source offset, destination end) per partition, as delivered
        self.progress: dict[TopicPartition, tuple[int, int]] = {}
        #: records of the previous run delivered after its checkpoint, still to skip
        self.skip: dict[TopicPartition, int] = {}
        #: without --follow: the source's end offsets at start, where copying may stop
        self.targets: dict[TopicPartition, int] = {}
        self.copied = 0

    def run(self, destination: Destination) -> int:
        """Copy until done (or, with ``follow``, until ``stop`` is set); checkpoint on the way out."""
        self.checkpoint.load()
        if not self._discover(destination) and not self.follow:
            raise MirrorError(f"no topic of {self.source.name} matches")
        try:
            self._copy(destination)
            destination.flush(FLUSH_S)
        finally:
            self._save(destination)
        return self.copied

    def _save(self, destination: Destination) -> None:
        """Checkpoint what the destination reported delivered (skipped records before it)."""
        self.progress.update(destination.delivered())
        self.checkpoint.save(self.progress)

    def _copy(self, destination: Destination) -> None:
        saved = discovered = time.monotonic()
        while not self.stop.is_set():  # bounded: without follow, by the targets; else by stop
            records = self.source.poll(CHUNK, IDLE_S)
            fresh = self._without_skipped(records)
            if fresh:
                destination.send(fresh)
                self.copied += len(fresh)
            destination.poll()
            now = time.monotonic()
            if now - saved >= CHECKPOINT_EVERY_S:
                self._save(destination)
                saved = now
            if self.follow and now - discovered >= DISCOVER_EVERY_S:
                self._discover(destination)
                discovered = now
            if not self.follow and not records and self._reached_targets():
                return

    def _without_skipped(self, records: list[Record]) -> list[Record]:
        """Drop the records a previous run delivered after its checkpoint, counting them
        as delivered again (they are at the destination already)."""
        if not self.skip:
            return records
        out = []
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            left = self.skip.get(tp)
            if left:
                self.skip[tp] = left - 1
                _, destination_end = self.progress[tp]
                self.progress[tp] = (r.offset + 1, destination_end + 1)
            else:
                out.append(r)
        self.skip = {tp: n for tp, n in self.skip.items() if n}
        return out

    def _reached_targets(self) -> bool:
        return all(self.source.position(tp) >= end for tp, end in self.targets.items())

    def _discover(self, destination: Destination) -> int:
        """Match the source's topics, make or grow them at the destination, and start copying
        their new partitions (checkpointed before their first record is sent)."""
        topics = {name: n for name, n in self.source.topics().items() if self.wanted(name)}
        existing = destination.topics()
        mirrored = {tp.topic for tp in [*self.progress, *self.checkpoint.entries]}
        for name, partitions in sorted(topics.items()):
            have = existing.get(name)
            if have is None:
                destination.create(name, partitions)
            elif have < partitions and name in mirrored:
                destination.grow(name, partitions)  # the source grew while mirrored
            elif have != partitions:
                raise MirrorError(f"topic {name!r} has {partitions} partitions at {self.source.name} "
                                  f"but {have} at {destination.name}: the same count is needed")
        positions = {}
        for name, partitions in topics.items():
            for p in range(partitions):
                tp = TopicPartition(name, p)
                if tp not in self.progress:
                    positions[tp] = self._resume(tp, destination)
        if positions:
            self._save(destination)
            self.source.assign(positions)
        return len(topics)

    def _resume(self, tp: TopicPartition, destination: Destination) -> int:
        """Where to read ``tp`` from; records to skip when the destination holds more than
        the checkpoint says (delivered after it was written)."""
        start, end = self.source.bounds(tp)
        dest_end = destination.end(tp)
        entry = self.checkpoint.entries.get(tp)
        if not self.follow and end > (start if entry is None else entry.source):
            self.targets[tp] = end
        if entry is None:
            self.progress[tp] = (start, dest_end)
            return start
        where = f"{tp.topic}[{tp.partition}]"
        if dest_end < entry.destination:
            raise MirrorError(f"destination {where} ends at {dest_end}, below the checkpoint's "
                              f"{entry.destination}: the topic was made again or lost records")
        if start > entry.source:
            raise MirrorError(f"source {where} starts at {start}, past the checkpoint's offset "
                              f"{entry.source}: retention deleted records not yet copied")
        extra = dest_end - entry.destination
        if extra > end - entry.source:
            raise MirrorError(f"destination {where} has {extra} records after the checkpoint, more "
                              f"records than the source has after it: another writer?")
        if extra:
            self.skip[tp] = extra
        self.progress[tp] = (entry.source, entry.destination)
        return entry.source
