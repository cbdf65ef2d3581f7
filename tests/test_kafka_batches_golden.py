"""Golden files of Kafka RecordBatch v2 in a segment (docs/format.md, sections 2.2 and 17).

``tests/data/kafka-v2/`` holds the batches as a producer sent them (``produced/*.bin``: an
uncompressed idempotent batch with null keys, values and header values; a zstd-compressed
one) and the store they make (``store/``: segment, indexes, ``topic.json``; no catalog, no
LOCK), with a native batch between them. The tests read the store back, rebuild it from the
produced batches and compare every byte, and decode the first stored batch by hand, field
by field, from the positions of the spec's table (section 17.1).

Regenerate (after a deliberate format change, with the spec updated) with::

    ES_REGENERATE_GOLDEN=1 python -m pytest tests/test_kafka_batches_golden.py
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from crc32c import crc32c
from siblings import load

import eventstore
from eventstore import Message
from eventstore.storage.partition import load_producers

kit = load("test_kafka_batches")

GOLDEN = Path(__file__).parent / "data" / "kafka-v2"
TOPIC = "golden"
CREATED_MS = 1_700_000_000_000
TOPIC_ID = uuid.UUID("0f3c2b1a-4d5e-4f60-8a7b-9c8d7e6f5a4b")
TS = 1_700_000_123_000
PRODUCED = ["0-idempotent-none.bin", "1-zstd.bin"]
ROWS_0: list[Any] = [
    (b"order-1", b'{"total": 42}', [("content-type", b"application/json"), ("trace", None)]),
    (None, b"no key", [("dup", b"1"), ("dup", b"2")]),
    (b"gone", None, []),
]
ROWS_1: list[Any] = [(b"z%d" % i, b"compressed value %d " % i * 20, [("i", b"%d" % i)]) for i in range(2)]
NATIVE = Message(key=b"native", value=b"between the two", timestamp_ms=TS + 50)


def _produced_batches() -> list[bytes]:
    return [
        kit.kafka_batch(ROWS_0, 0, ts=TS, producer=(7, 0, 0)),
        kit.kafka_batch(ROWS_1, 4, ts=TS + 100),
    ]


def _expected() -> list[tuple[Any, ...]]:
    return [*kit.expected(ROWS_0, 0, TS), (3, TS + 50, b"native", b"between the two", []),
            *kit.expected(ROWS_1, 4, TS + 100)]


def _build(directory: Path, produced: list[bytes]) -> None:
    """The store of the produced batches (and the native one between), catalog and LOCK dropped."""
    if directory.exists():
        shutil.rmtree(directory)
    mp = pytest.MonkeyPatch()
    mp.setattr("eventstore.log._now_ms", lambda: CREATED_MS)
    mp.setattr("eventstore.log._new_topic_id", lambda: TOPIC_ID)
    try:
        with eventstore.open(directory, durability="none") as store:
            store.create_topic(TOPIC, 1)
            store.log.append_kafka(TOPIC, 0, produced[0])
            store.append_batch(TOPIC, [NATIVE], partition=0)
            store.log.append_kafka(TOPIC, 0, produced[1])
    finally:
        mp.undo()
    shutil.rmtree(directory / "catalog")
    (directory / "LOCK").unlink()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _produced() -> list[bytes]:
    return [(GOLDEN / "produced" / name).read_bytes() for name in PRODUCED]


@pytest.mark.skipif(not os.environ.get("ES_REGENERATE_GOLDEN"), reason="ES_REGENERATE_GOLDEN=1 rewrites them")
def test_regenerate_golden_files() -> None:
    (GOLDEN / "produced").mkdir(parents=True, exist_ok=True)
    for name, data in zip(PRODUCED, _produced_batches(), strict=True):
        (GOLDEN / "produced" / name).write_bytes(data)
    _build(GOLDEN / "store", _produced())


def test_the_golden_store_reads_back(tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(GOLDEN / "store", copy)
    with eventstore.open(copy) as store:
        assert store.topic(TOPIC).topic_id == TOPIC_ID
        assert kit.rows_of(store.read(TOPIC, 0, 0, max_records=100)) == _expected()
        assert store.offset_for_time(TOPIC, 0, TS + 100) == 4
        report = store.check()
        assert report.ok and report.records == 6, report.problems
        # the producer's batches are from long ago: open expired its entry (format.md section 19);
        # what the log holds of it still rebuilds it
        assert store.log.describe_producers(TOPIC, 0) == []
        rebuilt = load_producers(store.log.partition(TOPIC, 0).segments(), None)
        assert rebuilt.describe() == [(7, 0, 2, TS + 2)]


def test_the_golden_files_are_what_the_current_code_writes(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    _build(fresh, _produced())
    golden = _files(GOLDEN / "store")
    assert sorted(_files(fresh)) == sorted(golden)
    for name, data in _files(fresh).items():
        assert data == golden[name], f"{name} differs from the golden file"


def test_the_produced_bytes_are_in_the_segment_but_the_base_offset_and_leader_epoch() -> None:
    log = (GOLDEN / "store" / "topics" / TOPIC / "0" / ("0" * 20 + ".log")).read_bytes()
    first, second = _produced()
    assert log[16:len(first)] == first[16:]
    at = len(first) + struct.unpack_from(">i", log, len(first) + 8)[0] + 12  # past the native batch
    assert log[at + 16:] == second[16:]
    assert struct.unpack_from(">q", log, at) == (4,)
    assert struct.unpack_from(">i", log, at + 12) == struct.unpack_from(">i", log, 12) == (0,)
    assert struct.unpack_from(">i", first, 12) == (-1,)  # what the producer sent


def _spec_fields() -> dict[str, tuple[int, int, str]]:
    """Section 17.1's table: field -> (position, size, type), up to the records."""
    text = (Path(__file__).parents[1] / "docs" / "format.md").read_text()
    table = text[text.index("### 17.1 Layout") : text.index("A record (varints")]
    fields = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit() and cells[2].startswith("`") and " " in cells[2]:
            name, _, kind = cells[2].partition(" ")
            fields[name.strip("`")] = (int(cells[0]), int(cells[1]), kind.strip())
    return fields


def test_the_first_stored_batch_decoded_by_hand_per_the_spec() -> None:
    codes = {"int8": "b", "int16": "h", "int32": "i", "int64": "q", "uint32": "I"}
    spec = _spec_fields()
    assert list(spec) == ["base_offset", "batch_length", "partition_leader_epoch", "magic", "crc",
                          "attributes", "last_offset_delta", "base_timestamp", "max_timestamp",
                          "producer_id", "producer_epoch", "base_sequence", "record_count"]
    log = (GOLDEN / "store" / "topics" / TOPIC / "0" / ("0" * 20 + ".log")).read_bytes()
    got = {}
    for name, (position, size, kind) in spec.items():
        assert struct.calcsize(codes[kind]) == size, name
        (got[name],) = struct.unpack_from(">" + codes[kind], log, position)
    end = 12 + got["batch_length"]
    assert got == {
        "base_offset": 0, "batch_length": end - 12, "partition_leader_epoch": 0, "magic": 2,
        "crc": crc32c(log[21:end]), "attributes": 0, "last_offset_delta": 2, "base_timestamp": TS,
        "max_timestamp": TS + 2, "producer_id": 7, "producer_epoch": 0, "base_sequence": 0, "record_count": 3,
    }
    # the first record, by section 17.1's record table: length, attributes, deltas, key, value, headers
    record = log[61:]
    # length: attributes, two deltas, key (1 + 7), value (1 + 13), header count, two headers
    # (1 + 12 + 1 + 16 and 1 + 5 + a null value's 1): 63, a zigzag varint of one byte
    assert record[:4] == bytes([63 * 2, 0, 0, 0])  # attributes 0, timestamp and offset deltas 0
    assert record[4] == 7 * 2 and record[5:12] == b"order-1"
    assert record[12] == 13 * 2 and record[13:26] == b'{"total": 42}'
    assert record[26] == 2 * 2  # two headers
    assert record[27] == 12 * 2 and record[28:40] == b"content-type" and record[40] == 16 * 2
    assert record[41 + 16] == 5 * 2 and record[58:63] == b"trace" and record[63] == 1  # zigzag -1: null
