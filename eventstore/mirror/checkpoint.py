"""The mirror's durable progress: one JSON file, replaced atomically (docs/mirror.md).

Per partition it holds the source offset of the next record to copy and the destination
partition's end offset once every record before it was delivered; a restart skips the
records delivered after the checkpoint by comparing that end with the destination's.
"""

from __future__ import annotations

import os

import msgspec

from ..errors import MirrorError
from ..records import TopicPartition

VERSION = 1


class Entry(msgspec.Struct, frozen=True):
    """One partition's progress: ``source`` is the next source offset to copy,
    ``destination`` the destination's end offset when every record before it was delivered."""

    topic: str
    partition: int
    source: int
    destination: int


class Layout(msgspec.Struct):
    """The file's contents."""

    version: int
    source: str
    destination: str
    partitions: list[Entry]


class Checkpoint:
    """The checkpoint of one (source, destination) pair, kept at ``path``."""

    def __init__(self, path: str, source: str, destination: str) -> None:
        self.path = path
        self.source = source
        self.destination = destination
        self.entries: dict[TopicPartition, Entry] = {}

    def load(self) -> None:
        """Read the file if there is one; refuse a checkpoint of another pair or version."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        try:
            layout = msgspec.json.decode(data, type=Layout)
        except msgspec.DecodeError as e:
            raise MirrorError(f"checkpoint {self.path} is not a mirror checkpoint: {e}") from None
        if layout.version != VERSION:
            raise MirrorError(f"checkpoint {self.path} has version {layout.version}, "
                              f"this mirror reads {VERSION}")
        if (layout.source, layout.destination) != (self.source, self.destination):
            raise MirrorError(
                f"checkpoint {self.path} is of the mirror {layout.source} -> {layout.destination}, "
                f"not {self.source} -> {self.destination}; pass another --checkpoint")
        self.entries = {TopicPartition(e.topic, e.partition): e for e in layout.partitions}

    def save(self, progress: dict[TopicPartition, tuple[int, int]]) -> None:
        """Replace the file with ``progress`` ((source, destination) per partition):
        written beside it, fsynced, renamed over it, the directory fsynced."""
        self.entries = {tp: Entry(tp.topic, tp.partition, s, d) for tp, (s, d) in progress.items()}
        layout = Layout(VERSION, self.source, self.destination,
                        [self.entries[tp] for tp in sorted(self.entries)])
        directory = os.path.dirname(os.path.abspath(self.path))
        temporary = self.path + ".tmp"
        with open(temporary, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(layout), indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
