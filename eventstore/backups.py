"""Backups beside the owner of a store, and restores of them (docs/format.md, section 20).

A backup reads the store through the read-only view (no lock, nothing written
to the store) and copies each segment's batches byte for byte into a directory
DEST, validating each batch as it goes, so that a torn read of the segment
being written is never kept. One file, the manifest ``backup.json``, says what
DEST holds; it is replaced by rename after everything it names is durable, so
a backup process killed at any point leaves the previous state restorable.
A restore builds the store beside its target and renames it into place last.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec
import xxhash

from . import store as store_module
from .catalog import Catalog, cursors, log_starts, producer_ids
from .errors import BackupCorruptionError, BackupError, InvalidArgumentError, TopicNotFoundError
from .reader import StoreReader, open_reader
from .records import OffsetAndMetadata, TopicConfig, TopicPartition
from .storage import disk, topicdir
from .storage import format as fmt
from .storage.index import write_all, write_synced
from .storage.names import format_segment_name
from .storage.view import SegmentExtent

__all__ = ["PassResult", "RestoreResult", "backup", "restore"]

MANIFEST = "backup.json"
FORMAT = 1
DEFAULT_INTERVAL_MS = 1000
_CHUNK_BYTES = 4 * 1024 * 1024


# --- the manifest ----------------------------------------------------------------------------


class SegmentEntry(msgspec.Struct, kw_only=True):
    base: int
    size: int  # bytes of the DEST file that belong to the backup
    end_offset: int  # the offset after the last batch in them
    closed: bool  # copied whole after the source closed it: never read again
    xxh3: str  # xxh3-64 (hex) of the first ``size`` bytes


class PartitionEntry(msgspec.Struct, kw_only=True):
    partition: int
    log_start: int
    end_offset: int
    segments: list[SegmentEntry]


class TopicEntry(msgspec.Struct, kw_only=True):
    dir: str
    config: TopicConfig
    partitions: list[PartitionEntry]


class Manifest(msgspec.Struct, kw_only=True):
    format: int = FORMAT
    passes: int = msgspec.field(default=0, name="pass")
    taken_ms: int = 0
    topics: list[TopicEntry] = msgspec.field(default_factory=list)
    #: group -> [topic, partition, offset, metadata]
    groups: dict[str, list[tuple[str, int, int, str]]] = msgspec.field(default_factory=dict)
    producer_id_seq: int | None = None


def _load_manifest(dest: str) -> Manifest | None:
    path = os.path.join(dest, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BackupError(path, f"cannot read the manifest: {e.strerror}") from e
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BackupCorruptionError(path, 0, f"the manifest does not decode: {e}") from e
    if manifest.format != FORMAT:
        raise BackupError(path, f"unknown backup format {manifest.format} (this version reads {FORMAT})")
    return manifest


def _publish_manifest(dest: str, manifest: Manifest) -> None:
    """The commit of a pass: temp file, fsync, rename, directory fsync."""
    path = os.path.join(dest, MANIFEST)
    write_synced(path + ".tmp", msgspec.json.encode(manifest))
    disk.replace(path + ".tmp", path)
    disk.fsync_dir(dest)


def _topic_dir(config: TopicConfig) -> str:
    """DEST's directory of one topic incarnation: a topic made again gets another."""
    return f"{config.created_ms}-{config.topic_id}"


# --- backup ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PassResult:
    """What one pass copied and published."""

    passes: int  # the manifest's pass number
    topics: int
    partitions: int
    bytes_copied: int
    batches_copied: int
    files_written: int  # segment files appended to


class _Hashes:
    """The running xxh3 of each DEST segment file up to the manifest's size, so a pass hashes
    only the bytes it appends; rebuilt (and checked) from the file after a restart."""

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[int, xxhash.xxh3_64]] = {}

    def get(self, path: str, entry: SegmentEntry | None) -> xxhash.xxh3_64:
        size = entry.size if entry else 0
        known = self._by_path.get(path)
        if known is not None and known[0] == size:
            return known[1].copy()
        hasher = xxhash.xxh3_64()
        if entry is not None:
            hasher.update(_read_dest(path, size))
            if hasher.hexdigest() != entry.xxh3:
                raise BackupCorruptionError(path, 0, "the segment's xxh3 differs from the manifest's")
        return hasher

    def keep(self, path: str, size: int, hasher: xxhash.xxh3_64) -> None:
        self._by_path[path] = (size, hasher)


def _read_dest(path: str, size: int) -> bytes:
    """The first ``size`` bytes of a DEST file; fewer is damage."""
    try:
        with open(path, "rb") as f:
            data = f.read(size)
    except FileNotFoundError:
        raise BackupCorruptionError(path, 0, "a segment the manifest names is missing") from None
    except OSError as e:
        raise BackupError(path, f"cannot read: {e.strerror}") from e
    if len(data) != size:
        raise BackupCorruptionError(path, len(data), f"the file holds {len(data)} bytes, the manifest {size}")
    return data


class Backup:
    """Passes of one backup of the store at ``data`` into ``dest``."""

    def __init__(self, data: str, dest: str) -> None:
        self.data = data
        self.dest = dest
        if os.path.abspath(data) == os.path.abspath(dest):
            raise BackupError(dest, "the backup directory is the store itself")
        os.makedirs(dest, exist_ok=True)
        self.manifest = _load_manifest(dest)
        if self.manifest is None and set(os.listdir(dest)) - {"topics", MANIFEST + ".tmp"}:
            raise BackupError(dest, "not empty and not a backup (no backup.json): refusing to write there")
        self._reader: StoreReader = open_reader(data)
        self._catalog: Catalog | None = None
        self._hashes = _Hashes()

    def close(self) -> None:
        self._reader.close()
        if self._catalog is not None:
            self._catalog.close()

    def run_pass(self) -> PassResult:
        """Copy what is new, publish the manifest, remove what it no longer names."""
        configs = {cfg.name: cfg for cfg in self._reader.topics()}
        groups, starts, seq = self._read_catalog(configs)
        old = {t.dir: t for t in self.manifest.topics} if self.manifest else {}
        topics: list[TopicEntry] = []
        totals = [0, 0, 0]  # bytes, batches, files
        for name in sorted(configs):  # bounded by the topics
            cfg = configs[name]
            entry = self._copy_topic(cfg, old.get(_topic_dir(cfg)), starts, totals)
            if entry is not None:
                topics.append(entry)
        passes = (self.manifest.passes if self.manifest else 0) + 1
        manifest = Manifest(passes=passes, taken_ms=int(time.time() * 1000), topics=topics,
                            groups=groups, producer_id_seq=seq)
        _publish_manifest(self.dest, manifest)
        self.manifest = manifest
        self._prune(manifest)
        return PassResult(passes, len(topics), sum(len(t.partitions) for t in topics), *totals)

    def _read_catalog(self, configs: Mapping[str, TopicConfig]) -> tuple[
            dict[str, list[tuple[str, int, int, str]]], dict[TopicPartition, int], int | None]:
        """Committed offsets, recorded log starts and the producer id sequence, read before
        any segment (section 20, step 1)."""
        if self._catalog is None:
            self._catalog = Catalog(os.path.join(self.data, "catalog"), readonly=True)
        catalog = self._catalog
        groups = {}
        for group in cursors.groups(catalog):  # bounded by the groups
            offsets = cursors.read_group(catalog, group, configs)
            if offsets:
                groups[group] = [(tp.topic, tp.partition, om.offset, om.metadata)
                                 for tp, om in sorted(offsets.items())]
        starts = {}
        for cfg in configs.values():  # bounded by the topics' partitions
            for p in range(cfg.partitions):
                start = log_starts.get(catalog, cfg.name, p)
                if start is not None:
                    starts[TopicPartition(cfg.name, p)] = start
        return groups, starts, producer_ids.last_allocated(catalog)

    def _copy_topic(self, cfg: TopicConfig, old: TopicEntry | None, starts: Mapping[TopicPartition, int],
                    totals: list[int]) -> TopicEntry | None:
        tdir = _topic_dir(cfg)
        known = {p.partition: p for p in old.partitions} if old else {}
        partitions = []
        try:
            for p in range(cfg.partitions):  # bounded by the partitions
                extents = self._reader.segments(cfg.name, p)
                pdir = os.path.join(self.dest, "topics", tdir, str(p))
                segments = self._copy_partition(pdir, extents, known.get(p), totals)
                recorded = starts.get(TopicPartition(cfg.name, p), 0)
                first = segments[0].base if segments else recorded
                end = segments[-1].end_offset if segments else max(recorded, first)
                partitions.append(PartitionEntry(partition=p, log_start=min(max(recorded, first), end),
                                                 end_offset=end, segments=segments))
            if self._reader.topic(cfg.name).created_ms != cfg.created_ms:
                return None  # made again while this pass copied it: the next pass takes the new one
        except TopicNotFoundError:
            return None  # deleted while this pass copied it
        return TopicEntry(dir=tdir, config=cfg, partitions=partitions)

    def _copy_partition(self, pdir: str, extents: list[SegmentExtent], old: PartitionEntry | None,
                        totals: list[int]) -> list[SegmentEntry]:
        known = {s.base: s for s in old.segments} if old else {}
        made_dirs = not os.path.isdir(pdir)
        os.makedirs(pdir, exist_ok=True)
        made_file = False
        out: list[SegmentEntry] = []
        for ext in extents:  # bounded by the segments
            entry = known.get(ext.base_offset)
            if entry is not None and entry.closed:
                out.append(entry)
                continue
            path = os.path.join(pdir, format_segment_name(ext.base_offset, ".log"))
            made_file |= entry is None
            copied = self._copy_segment(path, ext, entry, totals)
            if copied is None:
                out = []  # removed at the source (retention): it and every older one are gone
                continue
            out.append(copied)
        if made_file:
            disk.fsync_dir(pdir)
        if made_dirs:  # the partition's, its topic's and the topics directory's names
            for directory in (os.path.dirname(pdir), os.path.dirname(os.path.dirname(pdir)), self.dest):
                disk.fsync_dir(directory)
        return out

    def _copy_segment(self, path: str, ext: SegmentExtent, entry: SegmentEntry | None,
                      totals: list[int]) -> SegmentEntry | None:
        """Append the source's new valid batches to DEST's file; None if the source is gone."""
        size = entry.size if entry else 0
        offset = entry.end_offset if entry else ext.base_offset
        if ext.size < size:
            raise BackupError(ext.path, f"the source holds {ext.size} bytes of this segment, the backup "
                              f"{size}: the store lost data the backup has; start a new backup")
        hasher = self._hashes.get(path, entry)
        try:
            src = os.open(ext.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fd = disk.open_file(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                disk.ftruncate(fd, size)  # bytes of a pass cut short are not the backup's
                position = size
                while position < ext.size:  # bounded: each step copies at least one batch
                    data, offset, batches = _valid_chunk(src, ext, position, offset)
                    os.lseek(fd, position, os.SEEK_SET)
                    write_all(fd, data)
                    hasher.update(data)
                    position += len(data)
                    totals[0] += len(data)
                    totals[1] += batches
                if position > size or entry is None:
                    disk.fdatasync(fd)
                    totals[2] += 1
            finally:
                os.close(fd)
        finally:
            os.close(src)
        if offset != ext.end_offset:
            raise BackupError(ext.path, f"the batches end at offset {offset}, the segment at "
                              f"{ext.end_offset}")
        self._hashes.keep(path, ext.size, hasher.copy())
        return SegmentEntry(base=ext.base_offset, size=ext.size, end_offset=offset, closed=ext.closed,
                            xxh3=hasher.hexdigest())

    def _prune(self, manifest: Manifest) -> None:
        """Remove from DEST what the published manifest does not name (section 20, step 4)."""
        root = os.path.join(self.dest, "topics")
        named = {t.dir: {str(p.partition): {format_segment_name(s.base, ".log") for s in p.segments}
                         for p in t.partitions} for t in manifest.topics}
        for tdir in os.listdir(root) if os.path.isdir(root) else []:  # bounded by DEST's topics
            if tdir not in named:
                shutil.rmtree(os.path.join(root, tdir), ignore_errors=True)
                continue
            for part in os.listdir(os.path.join(root, tdir)):  # bounded by the partitions
                pdir = os.path.join(root, tdir, part)
                if part in named[tdir]:
                    for name in set(os.listdir(pdir)) - named[tdir][part]:
                        os.unlink(os.path.join(pdir, name))
                elif os.path.isdir(pdir):
                    shutil.rmtree(pdir, ignore_errors=True)


def _valid_chunk(src: int, ext: SegmentExtent, position: int, offset: int) -> tuple[bytes, int, int]:
    """Whole, valid batches of the source from ``position`` (at most a chunk, at least one
    batch): (bytes, the offset after them, how many)."""
    want = min(_CHUNK_BYTES, ext.size - position)
    while True:  # bounded: widened once for a batch larger than a chunk
        data = os.pread(src, want, position)
        used, batches = 0, 0
        while used < len(data):  # bounded: each step accepts a batch or stops
            info = fmt.validate_batch(data, used, len(data) - used, offset)
            if isinstance(info, str):
                break
            used += info.size
            offset = info.next_offset
            batches += 1
        if batches:
            return data[:used], offset, batches
        if len(data) >= fmt.PREFIX_SIZE and want < ext.size - position:
            need = fmt.read_prefix(data, 0)[1]
            if want < need <= ext.size - position:
                want = need
                continue
        reason = info if batches == 0 and data else "short read"
        raise BackupError(ext.path, f"invalid batch at position {position}: {reason}")


def backup(data: str | os.PathLike[str], dest: str | os.PathLike[str], *, once: bool = True,
           interval_ms: int = DEFAULT_INTERVAL_MS, max_passes: int | None = None,
           stop: threading.Event | None = None,
           on_pass: Callable[[PassResult], object] | None = None) -> PassResult:
    """Back the store at ``data`` up into ``dest``, beside whichever process owns it.

    ``once``: one pass (a snapshot). Otherwise passes repeat every ``interval_ms``
    until ``stop`` is set or ``max_passes`` have run. Returns the last pass's result;
    ``on_pass`` is called after each. A backup that was stopped or killed resumes
    where its last published pass ended (docs/format.md, section 20).
    """
    if type(interval_ms) is not int or interval_ms <= 0:
        raise InvalidArgumentError(f"interval_ms must be a positive int, got {interval_ms!r}")
    if max_passes is not None and (type(max_passes) is not int or max_passes < 1):
        raise InvalidArgumentError(f"max_passes must be an int ≥ 1 or None, got {max_passes!r}")
    job = Backup(os.fspath(data), os.fspath(dest))
    try:
        done = 0
        while True:  # bounded by once, max_passes or stop
            result = job.run_pass()
            done += 1
            if on_pass is not None:
                on_pass(result)
            if once or (max_passes is not None and done >= max_passes):
                return result
            if stop is not None:
                if stop.wait(interval_ms / 1000):
                    return result
            else:
                time.sleep(interval_ms / 1000)
    finally:
        job.close()


# --- restore ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    """What a restore made: each partition's (log start, end offset) and the groups restored."""

    path: str
    offsets: dict[TopicPartition, tuple[int, int]]
    groups: int


Cut = Callable[[fmt.BatchInfo], bool]  # whether the restored log ends before this batch


def restore(source: str | os.PathLike[str], target: str | os.PathLike[str], *, at_ms: int | None = None,
            offsets: Mapping[TopicPartition, int] | Mapping[tuple[str, int], int] | None = None,
            ) -> RestoreResult:
    """Make a store at ``target`` from the backup in ``source``: the latest state, or the log
    cut at ``at_ms`` (before each partition's first batch whose max timestamp is greater) or
    at ``offsets`` (before the batch holding each offset). ``target`` must not exist or be an
    empty directory; nothing is left there unless the whole restore succeeds."""
    source, target = os.fspath(source), os.fspath(target).rstrip(os.sep) or os.sep
    if at_ms is not None and offsets is not None:
        raise InvalidArgumentError("give at_ms or offsets, not both")
    if at_ms is not None and (type(at_ms) is not int or at_ms < 0):
        raise InvalidArgumentError(f"at_ms must be an int ≥ 0, got {at_ms!r}")
    manifest = _load_manifest(source)
    if manifest is None:
        raise BackupError(source, "no backup here (no backup.json)")
    cuts = _offset_cuts(manifest, offsets or {})
    if os.path.exists(target) and not (os.path.isdir(target) and not os.listdir(target)):
        raise BackupError(target, "exists and is not an empty directory: restore into a new one")
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = f"{target}.restoring-{uuid.uuid4().hex[:12]}"
    try:
        ends = _write_log(source, staging, manifest, at_ms, cuts)
        groups = _write_catalog(staging, manifest, ends)
        with store_module.open(staging, create=False) as store:
            report = store.check()
            if not report.ok:
                raise BackupError(target, f"the restored store fails its check: {report.problems[0]}")
            result = {tp: store.offsets(tp.topic, tp.partition) for tp in ends}
        if os.path.isdir(target):
            os.rmdir(target)  # empty, checked above
        disk.rename(staging, target)
        disk.fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RestoreResult(target, result, groups)


def _offset_cuts(manifest: Manifest, offsets: Mapping[TopicPartition, int] | Mapping[tuple[str, int], int],
                 ) -> dict[TopicPartition, int]:
    """The cuts asked for, checked against the backup's partitions."""
    parts = {TopicPartition(t.config.name, p.partition): p for t in manifest.topics for p in t.partitions}
    cuts = {}
    for key, offset in offsets.items():  # bounded by the caller's partitions
        tp = key if isinstance(key, TopicPartition) else TopicPartition(*key)
        entry = parts.get(tp)
        if entry is None:
            raise InvalidArgumentError(f"{tp.topic}:{tp.partition} is not in the backup")
        if type(offset) is not int or not entry.log_start <= offset <= entry.end_offset:
            raise InvalidArgumentError(f"offset {offset!r} of {tp.topic}:{tp.partition} is outside the "
                                       f"backup's {entry.log_start}..{entry.end_offset}")
        cuts[tp] = offset
    return cuts


def _write_log(source: str, staging: str, manifest: Manifest, at_ms: int | None,
               cuts: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Topic directories and the kept segments in ``staging``; returns each partition's end."""
    disk.mkdir(staging)
    root = topicdir.topics_root(staging)
    disk.mkdir(root)
    ends = {}
    for topic in manifest.topics:  # bounded by the topics
        tdir = os.path.join(root, topic.config.name)
        disk.mkdir(tdir)
        for entry in topic.partitions:  # bounded by the partitions
            tp = TopicPartition(topic.config.name, entry.partition)
            pdir = os.path.join(tdir, str(entry.partition))
            disk.mkdir(pdir)
            src = os.path.join(source, "topics", topic.dir, str(entry.partition))
            ends[tp] = _restore_partition(src, pdir, entry, _cut(cuts.get(tp), at_ms))
            disk.fsync_dir(pdir)
        topicdir.write_config(tdir, topic.config)
    disk.fsync_dir(root)
    return ends


def _cut(offset: int | None, at_ms: int | None) -> Cut:
    """The rule of section 20: before the batch holding ``offset``, else before the first
    batch whose max timestamp is after ``at_ms``, else nowhere (the latest)."""
    if offset is not None:
        return lambda info: info.next_offset > offset
    if at_ms is not None:
        return lambda info: info.max_timestamp > at_ms
    return lambda info: False


def _restore_partition(src: str, pdir: str, entry: PartitionEntry, cut: Cut) -> int:
    """Copy the partition's segments up to the cut, each checked; returns the end offset."""
    end = entry.log_start if not entry.segments else entry.segments[0].base
    for i, seg in enumerate(entry.segments):  # bounded by the segments
        path = os.path.join(src, format_segment_name(seg.base, ".log"))
        data = _read_dest(path, seg.size)
        if xxhash.xxh3_64_hexdigest(data) != seg.xxh3:
            raise BackupCorruptionError(path, 0, "the segment's xxh3 differs from the manifest's")
        position, offset, stopped = 0, seg.base, False
        while position < len(data):  # bounded: each step keeps a batch or stops
            info = fmt.validate_batch(data, position, len(data) - position, offset)
            if isinstance(info, str):
                raise BackupCorruptionError(path, position, info)
            if cut(info):
                stopped = True
                break
            position += info.size
            offset = info.next_offset
        if not stopped and offset != seg.end_offset:
            raise BackupCorruptionError(path, position, f"ends at offset {offset}, the manifest says "
                                        f"{seg.end_offset}")
        if position or i == 0:  # a segment that would start at the cut is left out, unless first
            write_synced(os.path.join(pdir, format_segment_name(seg.base, ".log")), data[:position])
            end = offset
        if stopped:
            break
    return end


def _write_catalog(staging: str, manifest: Manifest, ends: Mapping[TopicPartition, int]) -> int:
    """Log starts, committed offsets (clamped to the cut) and the producer id sequence in a
    new catalog, before the store first opens; returns how many groups have offsets."""
    topics = {t.config.name: t.config for t in manifest.topics}
    catalog = Catalog(os.path.join(staging, "catalog"))
    try:
        for topic in manifest.topics:  # bounded by the topics
            for entry in topic.partitions:
                tp = TopicPartition(topic.config.name, entry.partition)
                first = entry.segments[0].base if entry.segments else 0
                if entry.log_start > first:  # moved by DeleteRecords: recorded, as in the source
                    log_starts.put(catalog, tp.topic, tp.partition, min(entry.log_start, ends[tp]))
        restored = 0
        for group, rows in sorted(manifest.groups.items()):  # bounded by the groups
            offsets = {TopicPartition(t, p): OffsetAndMetadata(min(o, ends[TopicPartition(t, p)]), m)
                       for t, p, o, m in rows if TopicPartition(t, p) in ends}
            if offsets:
                _put_group(catalog, group, offsets, topics)
                restored += 1
        if manifest.producer_id_seq is not None:
            producer_ids.allocate(catalog, manifest.producer_id_seq + 1)
    finally:
        catalog.close()
    return restored


def _put_group(catalog: Catalog, group: str, offsets: Mapping[TopicPartition, OffsetAndMetadata],
               topics: Mapping[str, TopicConfig]) -> None:
    now = int(time.time() * 1000)
    catalog.write(lambda txn: cursors.put_cursors(txn, catalog, group, offsets, now, topics))
