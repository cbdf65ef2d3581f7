"""``es dump``: every batch of a segment file (or every entry of an index), read directly.

The counterpart of Kafka's ``kafka-dump-log``. It opens the file read-only and never
takes the store's lock, so it works beside a running writer (a batch being written
shows as a short tail). The byte layout is docs/format.md, sections 2-4.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from ..records import Record
from ..storage import format as fmt
from ..storage.index import OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES
from ..storage.names import INDEX_SUFFIX, TIMEINDEX_SUFFIX
from ..wire import batch as kafka
from ..wire.compression import CODEC_NAMES
from .access import CliError
from .output import (
    JsonOption,
    bytes_json,
    clip,
    headers_json,
    plural,
    print_json,
    progress,
    show_bytes,
    stdout_is_terminal,
    terminal_width,
)
from .times import format_ms

_BASE_OFFSET_NAME = re.compile(r"^(\d{20})\.")
_OFFSET_ENTRY = struct.Struct("<II")
_TIME_ENTRY = struct.Struct("<qI")
_STORED_CHECKSUM = struct.Struct(">Q")
assert _OFFSET_ENTRY.size == OFFSET_ENTRY_BYTES and _TIME_ENTRY.size == TIME_ENTRY_BYTES

Problem = dict[str, Any]  # {"position": int, "reason": str}


def dump(
    segment_file: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, readable=True, metavar="FILE",
        help="A segment .log (or .broken copy), .index or .timeindex file.")],
    records: Annotated[bool, typer.Option("--records", help="Also print every record.")] = False,
    json: Annotated[bool, JsonOption] = False,
) -> None:
    """Print every batch of a segment file: offsets, times, magic, checksum status.

    Exit status 1 if any batch (or index entry) is damaged; the report names its position.
    """
    path = str(segment_file)
    match = _BASE_OFFSET_NAME.match(segment_file.name)
    base = int(match.group(1)) if match else None
    size, buf = _map(path)
    try:
        if path.endswith((INDEX_SUFFIX, TIMEINDEX_SUFFIX)):
            problems = _dump_index(path, buf, size, base, json)
        else:
            problems = _dump_log(path, buf, size, base, records, json)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CliError(f"{path} at position {first['position']}: {first['reason']}{more}",
                       hint="opening the store cuts off a torn tail; 'es verify' checks everything")


def _map(path: str) -> tuple[int, Any]:
    """(size, a read-only map of the file, or b"" when it is empty)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return size, (mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b"")
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}") from e


def record_json(r: Record) -> dict[str, Any]:
    """A record as stored in a segment (the file does not say its topic and partition)."""
    return {"offset": r.offset, "timestamp_ms": r.timestamp_ms, "key": bytes_json(r.key),
            "value": bytes_json(r.value), "headers": headers_json(r.headers)}


# --- segment files ----------------------------------------------------------------


def _scan_log(buf: Any, size: int, base: int | None, records: bool
              ) -> Iterator[tuple[dict[str, Any] | None, Problem | None]]:
    """(batch, problem) pairs in file order; a problem without a batch ends the scan."""
    position = 0
    expected = base
    while position < size:  # bounded: each step advances by a batch (≥ 52 bytes) or stops
        available = size - position
        if available < fmt.PREFIX_SIZE:
            yield None, _problem(position, f"{available} bytes at the end, less than a batch prefix")
            return
        base_offset, batch_size, magic = fmt.read_prefix(buf, position)
        length = batch_size - fmt.LENGTH_OFFSET
        if not fmt.MIN_BATCH_LENGTH <= length <= fmt.MAX_BATCH_LENGTH:
            yield None, _problem(position, f"invalid batch length {length}; cannot find the next batch")
            return
        if batch_size > available:
            yield None, _problem(position, f"batch of {batch_size} bytes but only {available} left "
                                           "(a torn write?)")
            return
        batch, problem = _batch(buf, position, batch_size, base_offset, magic, expected, records)
        yield batch, problem
        expected = batch["last_offset"] + 1 if batch["last_offset"] is not None else None
        position += batch_size


def _batch(buf: Any, position: int, size: int, base_offset: int, magic: int, expected: int | None,
           records: bool) -> tuple[dict[str, Any], Problem | None]:
    batch: dict[str, Any] = {
        "position": position, "base_offset": base_offset, "last_offset": None, "record_count": None,
        "size_bytes": size, "magic": magic, "attributes": None, "base_timestamp_ms": None,
        "max_timestamp_ms": None, "checksum": "unchecked", "valid": False,
    }
    if magic == fmt.MAGIC_KAFKA_V2:
        return _kafka_batch(batch, buf, position, size, base_offset, expected, records)
    if magic != fmt.MAGIC_NATIVE:
        reason = fmt.validate_batch(buf, position, size, expected)
        return batch, _problem(position, str(reason))
    header = fmt.NATIVE_HEADER.unpack_from(buf, position)
    attributes, last_delta, base_ts, max_ts, count = header[4:]
    stored = _STORED_CHECKSUM.unpack_from(buf, position + size - fmt.CHECKSUM_SIZE)[0]
    batch.update(last_offset=base_offset + last_delta, record_count=count, attributes=attributes,
                 base_timestamp_ms=base_ts, max_timestamp_ms=max_ts,
                 checksum="ok" if fmt.checksum(memoryview(buf)[position:position + size]) == stored
                 else "mismatch")
    info = fmt.validate_batch(buf, position, size, expected)
    problem = _problem(position, info) if isinstance(info, str) else None
    if records:
        try:
            decoded = fmt.decode_records(buf, position, size)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return batch, problem or _problem(position, f"records do not decode: {e}")
        batch["records"] = decoded  # Record values; JSON output converts them
        if [r.offset for r in decoded] != list(range(base_offset, base_offset + count)):
            problem = problem or _problem(position, "record offsets disagree with the header")
    batch["valid"] = problem is None
    return batch, problem


def _kafka_batch(batch: dict[str, Any], buf: Any, position: int, size: int, base_offset: int,
                 expected: int | None, records: bool) -> tuple[dict[str, Any], Problem | None]:
    """A Kafka RecordBatch v2 (docs/format.md, 17.1): its header, CRC-32C, producer fields and,
    with ``records``, its records decoded (rule K5)."""
    if size < fmt.KAFKA_HEADER_SIZE:
        return batch, _problem(position, str(fmt.validate_batch(buf, position, size, expected)))
    header = kafka.parse_header(memoryview(buf)[position:position + size])
    batch.update(last_offset=base_offset + header.last_offset_delta, record_count=header.record_count,
                 attributes=header.attributes, base_timestamp_ms=header.base_timestamp,
                 max_timestamp_ms=header.max_timestamp,
                 checksum="ok" if kafka.crc_of(buf, position, size) == header.crc else "mismatch",
                 compression=CODEC_NAMES.get(header.compression, str(header.compression)),
                 producer_id=header.producer_id, producer_epoch=header.producer_epoch,
                 base_sequence=header.base_sequence)
    info = fmt.validate_batch(buf, position, size, expected)
    problem = _problem(position, info) if isinstance(info, str) else None
    if records:
        try:
            batch["records"] = fmt.decode_records(buf, position, size)
        except fmt.UNDECODABLE as e:
            return batch, problem or _problem(position, f"records do not decode: {e}")
    batch["valid"] = problem is None
    return batch, problem


def _problem(position: int, reason: str) -> Problem:
    return {"position": position, "reason": reason}


def _dump_log(path: str, buf: Any, size: int, base: int | None, records: bool,
              json: bool) -> list[Problem]:
    batches: list[dict[str, Any]] = []
    problems: list[Problem] = []
    counts = [0, 0]  # batches, records
    width = terminal_width()
    if not json:
        print(f"{os.path.basename(path)}: {size:,} bytes"
              + (f", base offset {base}" if base is not None else ""))
    with progress("dump", size, unit="bytes", enabled=json or not stdout_is_terminal()) as bar:
        for batch, problem in _scan_log(buf, size, base, records):
            if batch is not None:
                bar.advance(batch["size_bytes"])
                counts[0] += 1
                counts[1] += batch["record_count"] or 0
                if json:
                    if "records" in batch:
                        batch["records"] = [record_json(r) for r in batch["records"]]
                    batches.append(batch)
                else:
                    _print_batch(batch, width)
            if problem is not None:
                problems.append(problem)
                if not json:
                    print(f"  problem at position {problem['position']}: {problem['reason']}")
    if json:
        print_json({"file": path, "kind": "log", "size_bytes": size, "base_offset": base,
                    "batches": batches, "problems": problems})
    else:
        print(f"{plural(counts[0], 'batch')}, {plural(counts[1], 'record')}; "
              + (plural(len(problems), "problem") if problems else "no problems"))
    return problems


def _print_batch(b: dict[str, Any], width: int) -> None:
    if b["record_count"] is None:
        print(f"position {b['position']}: base offset {b['base_offset']}, {b['size_bytes']:,} bytes, "
              f"magic {b['magic']:#x}")
        return
    print(f"position {b['position']}: offsets {b['base_offset']}..{b['last_offset']} "
          f"({plural(b['record_count'], 'record')}), {b['size_bytes']:,} bytes, magic {b['magic']:#x}, "
          f"checksum {b['checksum']}")
    if b["magic"] == fmt.MAGIC_KAFKA_V2:
        print(f"  Kafka v2: compression {b['compression']}, producer id {b['producer_id']}, "
              f"epoch {b['producer_epoch']}, base sequence {b['base_sequence']}")
    first, last = b["base_timestamp_ms"], b["max_timestamp_ms"]
    times = format_ms(first) if first == last else f"{format_ms(first)} .. max {format_ms(last)}"
    print(f"  time {times}")
    for r in b.get("records", []):
        line = f"  | {r.offset}  {format_ms(r.timestamp_ms)}  key {show_bytes(r.key)}  " \
               f"value {show_bytes(r.value)}"
        if r.headers:
            line += "  headers " + " ".join(f"{k}={show_bytes(v)}" for k, v in r.headers)
        print(clip(line, width))


# --- index files --------------------------------------------------------------------


def _dump_index(path: str, buf: Any, size: int, base: int | None, json: bool) -> list[Problem]:
    timed = path.endswith(TIMEINDEX_SUFFIX)
    entry = _TIME_ENTRY if timed else _OFFSET_ENTRY
    whole = size - size % entry.size
    start = base or 0
    entries: list[dict[str, Any]] = []
    problems: list[Problem] = []
    previous: tuple[int, int] | None = None
    for i, (a, b) in enumerate(entry.iter_unpack(buf[:whole])):
        if timed:
            entries.append({"timestamp_ms": a, "relative_offset": b, "offset": start + b})
        else:
            entries.append({"offset": start + a, "relative_offset": a, "position": b})
        if previous is not None and not (a > previous[0] and b >= previous[1]):
            problems.append(_problem(i * entry.size, "entry does not increase on the previous one"))
        previous = (a, b)
    if whole != size:
        problems.append(_problem(whole, f"{size - whole} bytes of a partial entry at the end"))
    kind = "time-index" if timed else "offset-index"
    if json:
        print_json({"file": path, "kind": kind, "size_bytes": size, "base_offset": base,
                    "entries": entries, "problems": problems})
        return problems
    print(f"{os.path.basename(path)}: {kind}, {plural(len(entries), 'entry')}"
          + (f", base offset {base}" if base is not None else ""))
    for e in entries:
        if timed:
            print(f"  {format_ms(e['timestamp_ms'])} -> offset {e['offset']}")
        else:
            print(f"  offset {e['offset']} -> position {e['position']}")
    for p in problems:
        print(f"  problem at position {p['position']}: {p['reason']}")
    return problems
