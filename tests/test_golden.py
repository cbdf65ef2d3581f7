"""Golden files of on-disk format version 1 (docs/format.md).

``tests/data/format-v1/<case>/`` holds small store directories built
deterministically by ``generate()`` below: segment files, index files and
``topic.json`` — no LMDB catalog and no LOCK, so each must reopen from its log
alone. The tests read them back with the current code, rebuild them and compare
every byte, re-encode every batch, and decode the first batch by hand, field by
field, as the spec describes it. A change to any byte of the format fails here.

If the format changes on purpose (a new format version, with the spec updated),
regenerate with::

    ES_REGENERATE_GOLDEN=1 python -m pytest tests/test_golden.py

and review the diff of the data files like code.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash

import eventstore
from eventstore import Message
from eventstore.storage import format as fmt

GOLDEN = Path(__file__).parent / "data" / "format-v1"
TOPIC = "golden"
CREATED_MS = 1_700_000_000_000
TS = 1_700_000_123_000
TOPIC_ID = uuid.UUID("6f1c0d2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f")


Row = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass
class Case:
    """A store to build: topic settings and a list of append calls, each one batch."""

    partitions: int = 1
    segment_bytes: int = 128 * 1024 * 1024
    appends: list[tuple[int, list[Message]]] = field(default_factory=list)  # (partition, one batch)

    def expected(self) -> dict[int, list[Row]]:
        """Per partition: (offset, timestamp_ms, key, value, headers) of every record."""
        out: dict[int, list[Any]] = {p: [] for p in range(self.partitions)}
        for p, batch in self.appends:
            for m in batch:
                assert m.timestamp_ms is not None
                out[p].append((len(out[p]), m.timestamp_ms, m.key, m.value, list(m.headers or [])))
        return out


def _value(i: int, size: int) -> bytes:
    """A deterministic value of ``size`` bytes (record ``i``)."""
    return (b"record-%04d|" % i + bytes(range(256)) * (size // 256 + 1))[:size]


CASES: dict[str, Case] = {
    "single-record": Case(appends=[
        (0, [Message(key=b"k", value=b"hello, format v1", timestamp_ms=TS)]),
    ]),
    "batch-with-headers": Case(partitions=2, appends=[
        (0, [
            Message(key=b"order-1", value=b'{"total": 42}', timestamp_ms=TS + 5,
                    headers=[("content-type", b"application/json"), ("trace", b"\x00\x01\xff")]),
            Message(key=b"order-2", value=None, timestamp_ms=TS + 2, headers=[("tombstone", b"")]),
            Message(key=None, value=b"", timestamp_ms=TS + 9),
            Message(key=b"", value=bytes(range(256)), timestamp_ms=TS + 9,
                    headers=[("\u00e9t\u00e9", b"unicode header name"), ("dup", b"1"), ("dup", b"2")]),
        ]),
        (1, [Message(key=b"only", value=b"partition one", timestamp_ms=TS - 1)]),
        (0, [Message(key=b"order-3", value=b"after the batch", timestamp_ms=TS + 7)]),
    ]),
    "two-segments": Case(segment_bytes=8 * 1024, appends=[
        (0, [Message(key=b"%d" % i, value=_value(i, 900 + 10 * i), timestamp_ms=TS + 1000 * i)])
        for i in range(9)
    ] + [
        (0, [Message(key=b"%d" % i, value=_value(i, 300), timestamp_ms=TS + 1000 * i + (i % 3))
             for i in range(9, 14)]),
    ]),
}


def generate(case: Case, directory: Path) -> None:
    """Build ``case`` in ``directory`` with the current code, then drop what is not format."""
    if directory.exists():
        shutil.rmtree(directory)
    mp = pytest.MonkeyPatch()
    mp.setattr("eventstore.log._now_ms", lambda: CREATED_MS)  # topic.json's created_ms
    mp.setattr("eventstore.log._new_topic_id", lambda: TOPIC_ID)  # and its topic_id
    try:
        with eventstore.open(directory, durability="none") as store:
            store.create_topic(TOPIC, case.partitions, segment_bytes=case.segment_bytes)
            for p, batch in case.appends:
                metas = store.append_batch(TOPIC, batch, partition=p)
                assert len({m.partition for m in metas}) == 1
    finally:
        mp.undo()
    shutil.rmtree(directory / "catalog")
    (directory / "LOCK").unlink()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _logs(root: Path, p: int = 0) -> list[Path]:
    return sorted((root / "topics" / TOPIC / str(p)).glob("*.log"))


@pytest.mark.skipif(not os.environ.get("ES_REGENERATE_GOLDEN"), reason="ES_REGENERATE_GOLDEN=1 rewrites them")
def test_regenerate_golden_files() -> None:
    for name, case in CASES.items():
        generate(case, GOLDEN / name)


# --- reading the golden stores back ---------------------------------------------------------------


@pytest.fixture(params=sorted(CASES))
def case_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    assert (GOLDEN / name / "topics").is_dir(), f"missing golden files for {name}; see the module docstring"
    return name


@pytest.fixture
def golden_copy(case_name: str, tmp_path: Path) -> Path:
    """A copy of the golden store (opening writes a catalog, a LOCK, checkpoints)."""
    copy = tmp_path / case_name
    shutil.copytree(GOLDEN / case_name, copy)
    return copy


def test_golden_store_reads_back(case_name: str, golden_copy: Path) -> None:
    case = CASES[case_name]
    assert not (golden_copy / "catalog").exists()
    with eventstore.open(golden_copy) as store:
        config = store.topic(TOPIC)
        assert (config.name, config.partitions, config.segment_bytes, config.created_ms, config.format) == (
            TOPIC, case.partitions, case.segment_bytes, CREATED_MS, 1,
        )
        for p, expected in case.expected().items():
            records = store.read(TOPIC, p, 0, max_records=1000)
            got = [(r.offset, r.timestamp_ms, r.key, r.value, [tuple(h) for h in r.headers]) for r in records]
            assert got == expected
            assert store.offsets(TOPIC, p) == (0, len(expected))
            for r in records:
                assert (r.topic, r.partition) == (TOPIC, p)
            for offset, ts, *_ in expected:
                found = store.offset_for_time(TOPIC, p, ts)
                assert found is not None and found <= offset
        report = store.check()
        assert report.ok, report.problems
        assert report.records == sum(len(v) for v in case.expected().values())


def test_golden_files_are_what_the_current_code_writes(case_name: str, tmp_path: Path) -> None:
    """Byte for byte: every .log, .index, .timeindex and topic.json."""
    fresh = tmp_path / "fresh"
    generate(CASES[case_name], fresh)
    golden = _files(GOLDEN / case_name)
    assert sorted(_files(fresh)) == sorted(golden)
    for name, data in _files(fresh).items():
        assert data == golden[name], f"{case_name}/{name} differs from the golden file"


def test_fresh_encoding_equals_golden_log_bytes(case_name: str) -> None:
    """Each golden batch is exactly what encode_batch makes of its records today."""
    case = CASES[case_name]
    for p, expected in case.expected().items():
        rows = iter(expected)
        for log in _logs(GOLDEN / case_name, p):
            data = log.read_bytes()
            position = 0
            while position < len(data):  # bounded: each batch is at least 52 bytes
                base, length = struct.unpack_from(">qi", data, position)
                (count,) = struct.unpack_from(">i", data, position + 39)
                records = [next(rows) for _ in range(count)]
                wire = [(o, ts, k, v, h) for o, ts, k, v, h in records]
                assert records[0][0] == base
                encoded = fmt.encode_batch(base, wire, records[0][1], max(r[1] for r in records))
                assert bytes(encoded) == data[position : position + 12 + length], f"{log.name} at {position}"
                position += 12 + length
        assert next(rows, None) is None, "records missing from the golden log"


_SPEC = Path(__file__).parents[1] / "docs" / "format.md"
_STRUCT_CODES = {"int8": "b", "int16": "h", "int32": "i", "int64": "q", "uint32": "I", "uint64": "Q"}


def _spec_batch_fields() -> dict[str, tuple[str, str, str]]:
    """The batch tables of docs/format.md sections 2 and 2.1: field -> (position, size, type)."""
    text = _SPEC.read_text()
    tables = text[text.index("## 2. Batch") : text.index("## 3.")]
    fields = {}
    for line in tables.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0][:1].isdigit() and cells[2].startswith("`"):
            name, _, kind = cells[2].partition(" ")
            fields[name.strip("`")] = (cells[0], cells[1], kind.strip())
    return fields


def test_first_batch_decoded_by_hand_per_the_spec() -> None:
    """docs/format.md section 2, field by field, on the first batch of batch-with-headers: the
    positions, sizes and types are read from the spec's tables, then checked against the bytes."""
    case = CASES["batch-with-headers"]
    data = _logs(GOLDEN / "batch-with-headers")[0].read_bytes()
    batch = case.appends[0][1]
    spec = _spec_batch_fields()
    assert list(spec) == [
        "base_offset", "batch_length", "partition_leader_epoch", "magic", "attributes",
        "last_offset_delta", "base_timestamp", "max_timestamp", "record_count", "records", "checksum",
    ]
    (batch_length,) = struct.unpack_from(">i", data, int(spec["batch_length"][0]))
    size = 12 + batch_length  # "batch size = 12 + this"
    n = size - 8 - int(spec["records"][0])  # the records array runs up to the 8-byte checksum trailer
    fields: dict[str, Any] = {}
    for name, (position, width, kind) in spec.items():
        fixed, _, plus = position.partition("+")  # "43 + n": the trailer follows the records
        start = int(fixed) + (n if plus.strip() == "n" else 0)
        if name == "records":
            fields[name] = msgspec.msgpack.decode(data[start : start + n])
            continue
        code = _STRUCT_CODES[kind]
        assert struct.calcsize(code) == int(width), f"{name}: the spec's size and type disagree"
        (fields[name],) = struct.unpack_from(">" + code, data, start)  # big-endian (section 2)
    assert fields["base_offset"] == 0
    assert fields["batch_length"] == batch_length == len(data[:size]) - 12
    assert fields["partition_leader_epoch"] == 0
    assert fields["magic"] == 0x45 and data[16:17] == b"E"
    assert fields["attributes"] == 0
    assert fields["record_count"] == len(batch) == 4
    assert fields["last_offset_delta"] == fields["record_count"] - 1
    assert fields["base_timestamp"] == batch[0].timestamp_ms == TS + 5
    assert fields["max_timestamp"] == max(m.timestamp_ms or 0 for m in batch) == TS + 9
    assert fields["checksum"] == xxhash.xxh3_64_intdigest(data[: size - 8])  # "every byte before it"
    assert fields["records"] == [
        [i, m.timestamp_ms, m.key, m.value, [list(h) for h in m.headers or []]] for i, m in enumerate(batch)
    ]
    # The batch that follows starts right after it (no gap, no padding) with the next offset.
    assert struct.unpack_from(">q", data, size)[0] == fields["record_count"]
    assert struct.unpack_from(">b", data, size + 16)[0] == 0x45
    assert len(data) == size + 12 + struct.unpack_from(">i", data, size + 8)[0]


def _spec_topic_json_example() -> dict[str, Any]:
    text = _SPEC.read_text()
    section = text[text.index("## 5.") : text.index("## 6.")]
    example: dict[str, Any] = json.loads(section.split("```json")[1].split("```")[0])
    return example


# Known doc drift: TopicConfig gained a ``streams`` field (event-sourcing streams), written to
# every topic.json, that docs/format.md section 5 does not list.
def test_topic_json_has_the_documented_fields() -> None:
    documented = set(_spec_topic_json_example())
    for name in CASES:
        written = json.loads((GOLDEN / name / "topics" / TOPIC / "topic.json").read_text())
        assert set(written) == documented, f"{name}: {sorted(set(written) ^ documented)}"


def test_two_segments_layout_names_and_indexes() -> None:
    """Section 1 (names), 3 (.index) and 4 (.timeindex) on the two-segments case."""
    root = GOLDEN / "two-segments"
    logs = _logs(root)
    assert [p.name for p in logs] == ["00000000000000000000.log", "00000000000000000008.log"]
    assert sorted(p.name for p in logs[0].parent.iterdir()) == sorted(
        f"{b:020d}{suffix}" for b in (0, 8) for suffix in (".log", ".index", ".timeindex")
    )
    config = json.loads((root / "topics" / TOPIC / "topic.json").read_text())
    assert {k: v for k, v in config.items() if k in _spec_topic_json_example()} == {
        "created_ms": CREATED_MS, "format": 1, "max_record_bytes": 1024 * 1024, "name": TOPIC,
        "partitions": 1, "retention_bytes": None, "retention_ms": None, "segment_bytes": 8192,
        "segment_ms": 7 * 24 * 3600 * 1000, "streams": False, "topic_id": str(TOPIC_ID),
    }
    first = logs[0].read_bytes()
    starts = {}
    position = 0
    while position < len(first):  # the batch starts of the first segment
        starts[position] = struct.unpack_from(">q", first, position)[0]
        position += 12 + struct.unpack_from(">i", first, position + 8)[0]
    index = list(struct.iter_unpack("<II", logs[0].with_suffix(".index").read_bytes()))
    assert index, "the first segment is over 4096 bytes: it has offset index entries"
    last = 0
    for relative_offset, pos in index:
        assert starts[pos] == relative_offset  # base offset 0: relative = absolute
        assert pos - last >= 4096  # index_interval_bytes since the previous entry (or the start)
        last = pos
    times = list(struct.iter_unpack("<qI", logs[0].with_suffix(".timeindex").read_bytes()))
    assert [t for t, _ in times] == sorted({t for t, _ in times})
    # Its last entry holds the segment's max timestamp and points at its last batch.
    assert times[-1] == (TS + 1000 * 7, 7)
    assert logs[1].with_suffix(".index").read_bytes() == b""
