"""``store.check()`` compares the DCB tag index with the log (docs/format.md, section 18)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import eventstore
from eventstore import NewEvent, Query, QueryItem, TaggedEvent
from eventstore.sourcing.dcb import DB_EVENTS, DB_META, DB_TAGS, DB_TYPES

_u64 = struct.Struct(">Q")


def _filled(path: Path) -> None:
    """A store with DCB events (indexed at the reopen's catch-up), stream events among them,
    and appends still pending after the reopen."""
    with eventstore.open(path, durability="none") as store:
        for i in range(150):  # bounded: the events written
            store.append_events([TaggedEvent("Enrolled", b"%d" % i, [f"student-{i % 7}", f"course-{i % 3}"]),
                                 TaggedEvent("Noted", b"n", [f"student-{i % 7}"])])
            if i % 10 == 0:
                store.append_to_stream(f"order-{i}", [NewEvent(type="Placed", data=b"{}")])
    with eventstore.open(path, durability="none") as store:
        assert store.dcb.covered() == 300  # everything indexed by the catch-up
        store.append_events(TaggedEvent("Enrolled", b"late", ["student-1", "course-0"]))


def _edit(path: Path, change: Callable[[Any, dict[bytes, Any]], None]) -> None:
    with eventstore.open(path, durability="none") as store:
        dcb = store.dcb
        dcb.index.write(lambda txn: change(txn, dcb.dbs))


def _problems(path: Path) -> list[str]:
    with eventstore.open(path, durability="none") as store:
        return [str(p) for p in store.check().problems]


def test_a_healthy_store_checks_clean(tmp_path: Path) -> None:
    _filled(tmp_path)
    assert _problems(tmp_path) == []
    with eventstore.open(tmp_path, durability="none") as store:
        assert len(store.read_events(Query([QueryItem(tags=["student-1"])])).events) == 45


def _drop_tag_chunk(txn: Any, dbs: dict[bytes, Any]) -> None:
    cur = txn.cursor(db=dbs[DB_TAGS])
    assert cur.set_range(b"course-2\x00")
    assert cur.delete()


def _alter_record(txn: Any, dbs: dict[bytes, Any]) -> None:
    key = _u64.pack(4)
    value = bytes(txn.get(key, db=dbs[DB_EVENTS]))
    txn.put(key, value.replace(b"Enrolled", b"Enrollex"), db=dbs[DB_EVENTS])


def _drop_record(txn: Any, dbs: dict[bytes, Any]) -> None:
    assert txn.delete(_u64.pack(7), db=dbs[DB_EVENTS])


def _alter_count(txn: Any, dbs: dict[bytes, Any]) -> None:
    txn.put(b"gstudent-3", _u64.pack(1), db=dbs[DB_META])


def _add_type(txn: Any, dbs: dict[bytes, Any]) -> None:
    chunk = b"\xdc\x00\x01" + bytes(txn.get(_u64.pack(1), db=dbs[DB_EVENTS]))  # one record
    txn.put(b"Ghost\x00" + _u64.pack(1), chunk, db=dbs[DB_TYPES])


def _garble_chunk(txn: Any, dbs: dict[bytes, Any]) -> None:
    txn.put(b"student-4\x00" + _u64.pack(1000), b"\xdc\x00\x01\xc1", db=dbs[DB_TAGS])


@pytest.mark.parametrize(("change", "found"), [
    (_drop_tag_chunk, "tag 'course-2': the index lists 0 events, the log has 50"),
    (_alter_record, "position 4: the index's record differs from the log's event"),
    (_drop_record, "position 7 (in the log, below covered) is not indexed"),
    (_alter_count, "tag 'student-3': the index counts 1 events, the log has 42"),
    (_add_type, "type 'Ghost': the index lists 1 events, the log has 0"),
    (_garble_chunk, "tag 'student-4': the chunk keyed 1000 does not decode"),
])
def test_a_tag_index_that_differs_from_the_log_is_reported_and_rebuilt(
        tmp_path: Path, change: Callable[[Any, dict[bytes, Any]], None], found: str) -> None:
    _filled(tmp_path)
    _edit(tmp_path, change)
    problems = _problems(tmp_path)
    assert any("__dcb/0: tag index: " + found in p for p in problems), problems
    # the index marked itself damaged: the next open rebuilds it from the log
    assert _problems(tmp_path) == []
    with eventstore.open(tmp_path, durability="none") as store:
        assert len(store.read_events(Query([QueryItem(tags=["course-2"])])).events) == 50
