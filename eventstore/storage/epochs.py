"""A partition's leader-epoch file: which epoch wrote which offsets (docs/replication.md, 1.1).

``<partition>/leader-epoch`` is ASCII: a first line ``1`` (the version), then
one line ``<epoch> <start_offset>`` per epoch that wrote into the partition,
both strictly increasing. It is rewritten whole (temp file, fsync, rename,
directory fsync) whenever it changes.

A partition without the file was never written in an epoch above 0 (the file
is written before the first batch of any epoch > 0), so its entries are
``(0, first offset)`` when it holds records and none when it is empty; that
entry is kept in memory only, so stores that were never promoted have no such
file. A file that does not parse is rebuilt from the batch prefixes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from ..errors import StorageError
from . import disk
from .index import write_synced

FILE_NAME = "leader-epoch"
VERSION = "1"

Entry = tuple[int, int]  # (epoch, start offset)


class EpochFile:
    """The entries of one partition; callers hold the partition's write lock to change them."""

    def __init__(self, directory: str, entries: list[Entry], on_disk: bool) -> None:
        self.path = os.path.join(directory, FILE_NAME)
        self.directory = directory
        self.entries = entries
        self._on_disk = on_disk

    @classmethod
    def load(cls, directory: str, first_offset: int, end_offset: int,
             batch_epochs: Iterable[tuple[int, int]]) -> EpochFile:
        """Read the file of ``directory``. Without one: the implicit epoch-0 entry (module
        docstring). One that does not parse is rebuilt from ``batch_epochs`` (each
        batch's ``(epoch, base offset)``, read only then) and written back."""
        path = os.path.join(directory, FILE_NAME)
        try:
            with open(path, encoding="ascii") as f:
                text = f.read()
        except FileNotFoundError:
            implicit = [(0, first_offset)] if end_offset > first_offset else []
            return cls(directory, implicit, on_disk=False)
        except (OSError, UnicodeDecodeError):
            text = ""
        entries = parse(text)
        if entries is None:
            rebuilt = cls(directory, from_batches(batch_epochs), on_disk=True)
            rebuilt.write()
            return rebuilt
        return cls(directory, entries, on_disk=True)

    @property
    def last_epoch(self) -> int:
        """The last entry's epoch; -1 when there is none."""
        return self.entries[-1][0] if self.entries else -1

    def add(self, epoch: int, start: int) -> None:
        """Note that ``epoch`` writes from ``start`` on (before its first batch is written).
        An epoch-0 entry of a partition without the file stays in memory."""
        self.entries = [*self.entries, (epoch, start)]
        if epoch > 0 or self._on_disk:
            self.write()

    def drop_from(self, end: int, *, keep_at_end: bool = False) -> None:
        """Remove the entries whose start is at or beyond ``end`` (truncation), or with
        ``keep_at_end`` only those beyond it (recovery: an entry at the end is harmless)."""
        kept = [e for e in self.entries if e[1] < end or (keep_at_end and e[1] == end)]
        if kept != self.entries:
            self.entries = kept
            if self._on_disk:
                self.write()

    def end_offset(self, epoch: int, log_end: int) -> Entry:
        """(the largest epoch ≤ ``epoch``, the start of the entry after it or ``log_end``);
        (-1, -1) when there is no epoch ≤ ``epoch`` (Kafka's OffsetForLeaderEpoch)."""
        found = -1
        for i, (e, _start) in enumerate(self.entries):  # bounded by the epochs
            if e <= epoch:
                found = i
        if found < 0:
            return -1, -1
        nxt = found + 1
        return self.entries[found][0], self.entries[nxt][1] if nxt < len(self.entries) else log_end

    def write(self) -> None:
        """Write the entries whole: temp file, fsync, rename, directory fsync."""
        text = VERSION + "\n" + "".join(f"{e} {s}\n" for e, s in self.entries)
        tmp = self.path + ".tmp"
        try:
            write_synced(tmp, text.encode("ascii"))
            disk.replace(tmp, self.path)
            disk.fsync_dir(self.directory)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageError(self.path, f"cannot write the leader-epoch file: {e.strerror}") from e
        self._on_disk = True


def parse(text: str) -> list[Entry] | None:
    """The entries of a file's text, or None if it is not a valid epoch file."""
    lines = text.split("\n")
    if not lines or lines[0] != VERSION or lines[-1] != "":
        return None
    entries: list[Entry] = []
    for line in lines[1:-1]:  # bounded by the file
        fields = line.split(" ")
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            return None
        epoch, start = int(fields[0]), int(fields[1])
        if entries and (epoch <= entries[-1][0] or start < entries[-1][1]):
            return None
        entries.append((epoch, start))
    return entries


def from_batches(batch_epochs: Iterable[tuple[int, int]]) -> list[Entry]:
    """The entries that ``(epoch, base offset)`` of every batch in order say."""
    entries: list[Entry] = []
    for epoch, base in batch_epochs:  # bounded by the batches
        if not entries or epoch > entries[-1][0]:
            entries.append((epoch, base))
    return entries
