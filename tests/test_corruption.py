"""Corruption sweeps: damage a closed store's files in every way, reopen, read everything.

The contract (docs/format.md, section 9): whatever happens to the bytes, a read
returns exactly the records that were written or raises ``CorruptionError`` —
never garbage, never a silently shorter or shifted answer, never another
exception type. Torn tails past the recovery checkpoint are cut (and kept in a
``.broken`` file); damage elsewhere is reported, not repaired; indexes and the
LMDB catalog are derived and rebuilt.
"""

from __future__ import annotations

import random
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from siblings import load

import eventstore
from eventstore import CorruptionError, Message

TOPIC = "t"
PARTITIONS = 2
SEGMENT_BYTES = 16 * 1024
TS0 = 1_750_000_000_000


cw = load("crash_writer")

Row = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]


def row(record: Any) -> Row:
    return (record.offset, record.timestamp_ms, record.key, record.value,
            tuple((k, v) for k, v in record.headers))


# --- the pristine store ------------------------------------------------------------------


@dataclass
class Pristine:
    path: Path
    expected: dict[int, list[Row]]
    logs: dict[int, list[Path]]  # segment .log files per partition
    spans: dict[Path, list[Any]]  # the batches of each segment

    def last_log(self, p: int = 0) -> Path:
        return self.logs[p][-1]

    def rel(self, path: Path, root: Path) -> Path:
        return root / path.relative_to(self.path)

    def records_before(self, p: int, log: Path, position: int) -> int:
        """How many records of partition ``p`` precede byte ``position`` of segment ``log``."""
        spans = self.spans[log]
        done = [s for s in spans if s.end <= position]
        return done[-1].next_offset if done else spans[0].base_offset

    def batch_start(self, log: Path, position: int) -> Any:
        return next(s for s in self.spans[log] if s.position <= position < s.end)


def _append_corpus(store: eventstore.Store, expected: dict[int, list[Row]], rng: random.Random) -> None:
    ts = TS0

    def message(p: int, size: int, with_extras: bool) -> Message:
        nonlocal ts
        ts += rng.choice([0, 1, 7, 30])
        n = len(expected[p]) + len(pending[p])
        value = bytes(rng.getrandbits(8) for _ in range(size)) if size < 64 else rng.randbytes(size)
        key = b"key-%d" % n if with_extras else None
        headers = [("n", b"%d" % n), ("kind", b"corpus")] if with_extras and n % 2 else None
        return Message(value=value, key=key, headers=headers, partition=p, timestamp_ms=ts)

    for step in range(140):
        pending: dict[int, list[Message]] = {0: [], 1: []}
        p = 0 if step % 4 else 1
        count = 1 if step % 5 else rng.randint(2, 6)
        for _ in range(count):
            pending[p].append(message(p, rng.choice([0, 10, 40, 120, 300, 700, 1500]), step % 3 == 0))
        _append(store, pending, expected)
    active = store.path + f"/topics/{TOPIC}/0"
    while True:  # until the active segment has two index entries (bounded: ~30 appends per segment)
        index = cw.segment_files(Path(active), ".index")[-1]
        if index.stat().st_size >= 16:
            break
        pending = {0: [message(0, 300, False)], 1: []}
        _append(store, pending, expected)
    # The last three batches of partition 0 are small, so that sweeps over every byte stay quick.
    for sizes in ([5, 9, 14], [3], [20, 0]):
        pending = {0: [message(0, size, True) for size in sizes], 1: []}
        _append(store, pending, expected)


def _append(
    store: eventstore.Store, pending: dict[int, list[Message]], expected: dict[int, list[Row]]
) -> None:
    for p, messages in pending.items():
        if not messages:
            continue
        metas = store.append_batch(TOPIC, messages)
        for m, meta in zip(messages, metas, strict=True):
            assert meta.offset == len(expected[p])
            headers = tuple((k, v) for k, v in (m.headers or ()))
            expected[p].append((meta.offset, m.timestamp_ms, m.key, m.value, headers))


def build_pristine(path: Path) -> Pristine:
    expected: dict[int, list[Row]] = {p: [] for p in range(PARTITIONS)}
    with eventstore.open(path, durability="none") as store:
        store.create_topic(TOPIC, PARTITIONS, segment_bytes=SEGMENT_BYTES)
        _append_corpus(store, expected, random.Random(20240611))
    logs = {p: cw.segment_files(path / "topics" / TOPIC / str(p)) for p in range(PARTITIONS)}
    spans = {log: cw.batch_layout(log.read_bytes()) for p in logs for log in logs[p]}
    assert len(logs[0]) >= 4 and len(logs[1]) >= 2, "the corpus needs closed segments in both partitions"
    assert all(log.with_suffix(".index").stat().st_size for log in logs[0][:-1]), "need index entries"
    return Pristine(path, expected, logs, spans)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return build_pristine(tmp_path_factory.mktemp("pristine") / "store")


def _contents(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


_pristine_files: dict[Path, dict[Path, bytes]] = {}


def copy_of(pristine: Pristine, dst: Path) -> Path:
    """``dst`` made identical to the pristine store; only the files that differ are rewritten
    (the sweeps reopen thousands of copies, and most files never change)."""
    want = _pristine_files.setdefault(pristine.path, _contents(pristine.path))
    if not dst.exists():
        shutil.copytree(pristine.path, dst)
        return dst
    for path in [p for p in dst.rglob("*") if p.is_file()]:
        if path.relative_to(dst) not in want:
            path.unlink()
    for rel, data in want.items():
        target = dst / rel
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
    return dst


def checkpoint_at(pristine: Pristine, root: Path, p: int, position: int) -> list[int]:
    """Rewrite partition ``p``'s checkpoint in ``root`` to byte ``position`` (a batch boundary) of
    its last segment, with the index entry counts that the never-rewound store had there."""
    log = pristine.last_log(p)
    base = pristine.spans[log][0].base_offset
    next_offset = pristine.records_before(p, log, position)
    max_ts = max((r[1] for r in pristine.expected[p][base:next_offset]), default=-1)
    index = [e for e in struct.iter_unpack("<II", log.with_suffix(".index").read_bytes()) if e[1] < position]
    times = [e for e in struct.iter_unpack("<qI", log.with_suffix(".timeindex").read_bytes())
             if base + e[1] < next_offset]
    cp = [base, position, next_offset, max_ts, len(index), len(times)]
    cw.write_checkpoint(root, TOPIC, p, cp)
    return cp


# --- opening and reading back --------------------------------------------------------------


@dataclass
class Outcome:
    error: CorruptionError | None
    records: dict[int, list[Row]]
    events: list[Any]
    problems: list[str]


def open_and_read(root: Path, *, check: bool = True) -> Outcome:
    """Open the store and read every partition in one sequential pass per partition."""
    try:
        store = eventstore.open(root)
    except CorruptionError as e:
        return Outcome(e, {}, [], [])
    try:
        records = {}
        for p in range(PARTITIONS):
            start, end = store.offsets(TOPIC, p)
            assert start == 0
            records[p] = [row(r) for r in store.read(TOPIC, p, 0, max_records=end + 1)] if end else []
            assert len(records[p]) == end
        problems = store.check().problems if check else []
        return Outcome(None, records, list(store.recovery_events), problems)
    finally:
        store.close()


def assert_prefix(pristine: Pristine, outcome: Outcome, p: int = 0) -> int:
    """The partition holds a prefix of what was written, ending at a batch boundary; its length."""
    got = outcome.records[p]
    assert got == pristine.expected[p][: len(got)], f"partition {p}: records differ from what was written"
    boundaries = {s.next_offset for log in pristine.logs[p] for s in pristine.spans[log]} | {0}
    assert len(got) in boundaries, f"partition {p}: end offset {len(got)} is not at a batch boundary"
    for other in range(PARTITIONS):
        if other != p:
            assert outcome.records[other] == pristine.expected[other]
    return len(got)


def assert_still_works(root: Path, pristine: Pristine) -> None:
    """Append to every partition, reopen, read it back, check."""
    with eventstore.open(root) as store:
        ends = [store.offsets(TOPIC, p)[1] for p in range(PARTITIONS)]
        for p in range(PARTITIONS):
            store.append(TOPIC, b"after-%d" % p, partition=p, timestamp_ms=TS0 + 10**6)
    with eventstore.open(root) as store:
        for p in range(PARTITIONS):
            assert [r.value for r in store.read(TOPIC, p, ends[p])] == [b"after-%d" % p]
        report = store.check()
        assert report.ok, report.problems


# --- (a) truncation sweeps ------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", ["before-tail", "at-end"])
def test_truncate_last_segment_at_every_length(pristine: Pristine, tmp_path: Path, checkpoint: str) -> None:
    """Cut the last segment at every length from the start of its last three batches to its end.

    ``before-tail``: the checkpoint sits at the start of those batches (as after a crash), so the
    cut is a torn tail (R3) or a clean end (R2). ``at-end``: the store was closed cleanly, so the
    checkpoint says the file is longer than it is (R6): rescan from 0, then the same.
    """
    log = pristine.last_log(0)
    spans = pristine.spans[log]
    tail_start = spans[-3].position
    size = spans[-1].end
    data = log.read_bytes()
    root = tmp_path / "s"
    for length in range(tail_start, size + 1):
        copy_of(pristine, root)
        if checkpoint == "before-tail":
            checkpoint_at(pristine, root, 0, tail_start)
        target = pristine.rel(log, root)
        with open(target, "r+b") as f:
            f.truncate(length)
        outcome = open_and_read(root)
        assert outcome.error is None, f"length {length}: {outcome.error}"
        kept = assert_prefix(pristine, outcome)
        boundary = max([s.end for s in spans if s.end <= length], default=0)
        assert kept == pristine.records_before(0, log, boundary)
        assert target.stat().st_size == boundary
        assert not outcome.problems, outcome.problems
        cases = [e.case for e in outcome.events if e.path == str(target)]
        broken = target.with_name(f"{target.name}.{boundary}.broken")
        if length > boundary:
            assert "R3" in cases, f"length {length}: {outcome.events}"
            assert broken.read_bytes() == data[boundary:length]
        else:
            assert not broken.exists() and "R3" not in cases and "R4" not in cases
        if length < size and checkpoint == "at-end":
            assert cases[0] == "R6", f"length {length}: {outcome.events}"
        if length in (tail_start + 1, size - 1):
            assert_still_works(root, pristine)


# --- (b) bit flips --------------------------------------------------------------------------

# Bytes of a batch that Segment.locate reads, unvalidated, to walk from an index entry to the
# batch that holds a target offset: base_offset, batch_length and record_count. A flip there
# must be caught as corruption by the walk, never serve the wrong records.
_WALKED_FIELDS = set(range(0, 12)) | set(range(cw.RECORD_COUNT_AT, cw.RECORD_COUNT_AT + 4))
# batch_length: a flip there past the checkpoint hides the valid batch after it; see below.
_LENGTH_FIELD = set(range(8, 12))


def _flip(path: Path, position: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ (1 << bit)]))


def _random_reads(store: eventstore.Store, pristine: Pristine, p: int) -> list[tuple[int, str]]:
    """Read each offset of partition ``p`` on its own; returns [(offset, what went wrong)]."""
    wrong = []
    for offset in range(len(pristine.expected[p])):
        try:
            got = [row(r) for r in store.read(TOPIC, p, offset, max_records=2)]
        except CorruptionError:
            continue
        if got != pristine.expected[p][offset : offset + 2]:
            wrong.append((offset, f"got offsets {[g[0] for g in got]}"))
    return wrong


def _flip_positions(pristine: Pristine, region: str) -> list[tuple[Path, int]]:
    rng = random.Random(region)
    if region.startswith("tail"):
        log = pristine.last_log(0)
        return [(log, i) for i in range(pristine.spans[log][-3].position, pristine.spans[log][-1].end)]
    if region == "closed":
        logs = pristine.logs[0][:-1] + pristine.logs[1][:-1]
        return [(log, rng.randrange(log.stat().st_size)) for log in logs for _ in range(25)]
    assert region == "active-checkpointed"
    out = []
    for p in range(PARTITIONS):
        log = pristine.last_log(p)
        end = pristine.spans[log][-3].position if p == 0 else pristine.spans[log][-1].end
        out += [(log, rng.randrange(end)) for _ in range(40)]
    return out


@pytest.mark.parametrize("region", ["tail-checkpointed", "tail-unscanned", "closed", "active-checkpointed"])
def test_single_bit_flips(pristine: Pristine, tmp_path: Path, region: str) -> None:
    """Flip one bit at a time: every byte of the last three batches, sampled bytes elsewhere.

    Before the checkpoint (``*-checkpointed``, ``closed``) nothing is scanned on open: the open
    succeeds, a sequential read raises CorruptionError at the damaged batch, random reads return
    the right records or raise, and ``check()`` reports the damage. Past the checkpoint
    (``tail-unscanned``) recovery validates the batch: a damaged last batch is a torn tail (R4,
    cut and kept); a damaged batch with a valid one after it is corruption (R5, nothing cut).
    """
    root = tmp_path / "s"
    tail_log = pristine.last_log(0)
    tail_start = pristine.spans[tail_log][-3].position
    flips = _flip_positions(pristine, region)
    for log, position in flips:
        copy_of(pristine, root)
        if region == "tail-unscanned":
            checkpoint_at(pristine, root, 0, tail_start)
        target = pristine.rel(log, root)
        _flip(target, position, position * 5 % 8)
        batch = pristine.batch_start(log, position)
        field = position - batch.position
        where = f"{log.name} byte {position} (batch at {batch.position}, its byte {field})"
        if region == "tail-unscanned":
            _expect_recovered_or_r5(pristine, root, target, batch, field, where)
        else:
            p = next(q for q in range(PARTITIONS) if log in pristine.logs[q])
            _expect_caught_on_read(pristine, root, target, p, field, where)
    assert len(flips) >= 50


def _expect_recovered_or_r5(
    pristine: Pristine, root: Path, target: Path, batch: Any, field: int, where: str
) -> None:
    original_size = target.stat().st_size
    is_last = batch.end == original_size
    outcome = open_and_read(root)
    if outcome.error is not None:  # R5
        assert not is_last, f"{where}: nothing follows the last batch, it is a torn tail: {outcome.error}"
        assert outcome.error.position == batch.position, f"{where}: {outcome.error}"
        assert target.stat().st_size == original_size, f"{where}: R5 must not truncate"
        assert not list(target.parent.glob("*.broken"))
        return
    kept = assert_prefix(pristine, outcome, 0)
    assert kept == batch.base_offset, f"{where}: cut at offset {kept}"
    assert target.stat().st_size == batch.position
    assert not outcome.problems, f"{where}: {outcome.problems}"
    (event,) = [e for e in outcome.events if e.case in ("R3", "R4")]
    assert event.position == batch.position
    broken = target.with_name(f"{target.name}.{batch.position}.broken")
    assert len(broken.read_bytes()) == original_size - batch.position
    if not is_last:  # a valid batch follows: R5 says corruption, not a torn tail
        assert field in _LENGTH_FIELD, f"{where}: the valid batch after a bad one was cut as a torn tail"


def _expect_caught_on_read(
    pristine: Pristine, root: Path, target: Path, p: int, field: int, where: str
) -> None:
    size = target.stat().st_size
    with eventstore.open(root) as store:
        assert not [e for e in store.recovery_events if e.case != "R1"], f"{where}: {store.recovery_events}"
        with pytest.raises(CorruptionError):
            store.read(TOPIC, p, 0, max_records=len(pristine.expected[p]))
        report = store.check()
        assert any(target.name in problem.path for problem in report.problems), f"{where}: {report.problems}"
        for other in range(PARTITIONS):
            if other != p:
                assert [row(r) for r in cw.read_all(store, TOPIC, other)] == pristine.expected[other]
        if field not in _WALKED_FIELDS:  # those are test_random_read_after_a_walked_field_flip
            wrong = _random_reads(store, pristine, p)
            assert not wrong, f"{where}: {wrong}"
    assert target.stat().st_size == size


# Regression: Segment.locate once walked batch prefixes without validating them, and
# Segment.read served whatever batch locate landed on. One flipped bit in a batch's base_offset,
# batch_length or record_count (checkpointed region, so never rescanned) makes a read at an
# offset in or after that batch returned later records, or nothing, instead of raising.
@pytest.mark.parametrize(
    ("field", "byte", "bit", "read_at"),
    [
        ("base_offset sign bit", 0, 7, 3),  # read(3) returns offsets 4, 5
        ("base_offset low bit", 7, 0, 3),  # base 3 -> 2: read(3) returns offsets 4, 5
        ("batch_length", 9, 0, 4),  # +64 KiB: the walk jumps past the end, read(4) returns []
        ("record_count", cw.RECORD_COUNT_AT + 3, 0, 3),  # count 1 -> 0: read(3) returns 4, 5
    ],
)
def test_random_read_after_a_walked_field_flip(
    tmp_path: Path, field: str, byte: int, bit: int, read_at: int
) -> None:
    root = tmp_path / "s"
    with eventstore.open(root, durability="none") as store:
        store.create_topic(TOPIC, 1)
        for i in range(10):
            store.append(TOPIC, b"value-%d" % i, timestamp_ms=TS0 + i)
    log = cw.segment_files(root / "topics" / TOPIC / "0")[0]
    batch = cw.batch_layout(log.read_bytes())[3]
    _flip(log, batch.position + byte, bit)
    with eventstore.open(root) as store:
        try:
            got = [r.offset for r in store.read(TOPIC, 0, read_at, max_records=2)]
        except CorruptionError:
            return
        assert got == [read_at, read_at + 1], f"{field} flipped: read({read_at}) returned offsets {got}"


# Regression: recovery once found "the batch after a bad one" by the bad batch's own
# batch_length. When that field is the damaged one, the valid batches after it were not found,
# and R5 (invalid batch followed by a valid one: CorruptionError, nothing cut) became R3/R4:
# valid, possibly acknowledged records after it were cut off into a .broken file.
@pytest.mark.parametrize(("byte", "bit"), [(11, 0), (9, 0)], ids=["length-1-or+1", "length+64KiB"])
def test_r5_when_the_damaged_field_is_batch_length(tmp_path: Path, byte: int, bit: int) -> None:
    root = tmp_path / "s"
    with eventstore.open(root, durability="none") as store:
        store.create_topic(TOPIC, 1)
        for i in range(10):
            store.append(TOPIC, b"value-%d" % i, timestamp_ms=TS0 + i)
    shutil.rmtree(root / "catalog")  # no checkpoint: recovery scans the whole (only) segment
    log = cw.segment_files(root / "topics" / TOPIC / "0")[0]
    size = log.stat().st_size
    batch = cw.batch_layout(log.read_bytes())[5]
    _flip(log, batch.position + byte, bit)
    with pytest.raises(CorruptionError) as raised:
        eventstore.open(root).close()
    assert raised.value.position == batch.position
    assert log.stat().st_size == size


# --- (c) index files --------------------------------------------------------------------------


def _damage_index(path: Path, damage: str, log_size: int) -> None:
    data = path.read_bytes()
    entry = 8 if path.suffix == ".index" else 12
    assert len(data) >= 2 * entry, f"{path.name} needs two entries for this test"
    if damage == "delete":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "torn-entry":
        path.write_bytes(data[:-3])
    elif damage == "last-entry-dropped":
        path.write_bytes(data[:-entry])
    elif damage == "random-bytes":
        path.write_bytes(random.Random(damage + path.name).randbytes(len(data)))
    elif damage == "swapped-entries":
        path.write_bytes(data[entry : 2 * entry] + data[:entry] + data[2 * entry :])
    elif damage == "past-the-end":
        if path.suffix == ".index":
            extra = struct.pack("<II", 0xFFFF, log_size + 100)
        else:
            last_ts = struct.unpack_from("<q", data, len(data) - entry)[0]
            extra = struct.pack("<qI", last_ts + 5, 0xFFFF)
        path.write_bytes(data + extra)
    else:
        raise AssertionError(damage)


def _expected_offset_for_time(rows: list[Row], t: int) -> int | None:
    return next((r[0] for r in rows if r[1] >= t), None)


def assert_everything_readable(root: Path, pristine: Pristine) -> None:
    """Every offset read on its own, every timestamp looked up, and check() clean."""
    with eventstore.open(root) as store:
        for p in range(PARTITIONS):
            rows = pristine.expected[p]
            for offset in range(len(rows)):
                got = [row(r) for r in store.read(TOPIC, p, offset, max_records=3)]
                assert got == rows[offset : offset + 3], f"partition {p}: read({offset})"
            times = sorted({r[1] for r in rows})
            for t in [times[0] - 1, *times, times[-1] + 1, *(t + 1 for t in times[::5])]:
                got = store.offset_for_time(TOPIC, p, t)
                assert got == _expected_offset_for_time(rows, t), f"partition {p}: offset_for_time({t})"
        report = store.check()
        assert report.ok, report.problems
    with eventstore.open(root) as store:
        report = store.check()
        assert report.ok, report.problems


INDEX_DAMAGE = [
    "delete", "empty", "torn-entry", "last-entry-dropped", "random-bytes", "swapped-entries", "past-the-end",
]

def _index_damage_cases() -> list[Any]:
    cases = []
    for segment in ("closed", "active"):
        for suffix in (".index", ".timeindex"):
            for damage in INDEX_DAMAGE:
                name = f"{segment}{suffix}-{damage}"
                cases.append(pytest.param(segment, suffix, damage, id=name))
    return cases


@pytest.mark.parametrize(("segment", "suffix", "damage"), _index_damage_cases())
def test_damaged_index_files_are_rebuilt(
    pristine: Pristine, tmp_path: Path, segment: str, suffix: str, damage: str
) -> None:
    """Indexes are derived (R8): whatever happens to them, reads and time lookups stay right."""
    root = copy_of(pristine, tmp_path / "s")
    log = pristine.logs[0][1] if segment == "closed" else pristine.last_log(0)
    _damage_index(pristine.rel(log, root).with_suffix(suffix), damage, log.stat().st_size)
    assert_everything_readable(root, pristine)


def test_all_index_files_deleted(pristine: Pristine, tmp_path: Path) -> None:
    root = copy_of(pristine, tmp_path / "s")
    for path in [*root.rglob("*.index"), *root.rglob("*.timeindex")]:
        path.unlink()
    assert_everything_readable(root, pristine)


# An index entry garbled to another in-range position (here into a zero-filled record value)
# is found by the first read that starts from it: the index is rebuilt (R8), the read is right.
@pytest.mark.parametrize("segment", ["closed", "active"])
def test_index_entry_pointing_inside_a_batch(tmp_path: Path, segment: str) -> None:
    root = tmp_path / "s"
    with eventstore.open(root, durability="none") as store:
        store.create_topic(TOPIC, 1, segment_bytes=24 * 1024)
        for i in range(60):
            store.append(TOPIC, bytes(500), timestamp_ms=TS0 + i)
    logs = cw.segment_files(root / "topics" / TOPIC / "0")
    assert len(logs) == 2
    index = (logs[0] if segment == "closed" else logs[1]).with_suffix(".index")
    entries = list(struct.iter_unpack("<II", index.read_bytes()))
    assert len(entries) >= 2
    rel, position = entries[1]
    entries[1] = (rel, position - 100)  # inside the previous batch's zero-filled value
    index.write_bytes(b"".join(struct.pack("<II", *e) for e in entries))
    base = int(index.name[:20])
    with eventstore.open(root) as store:
        assert [r.offset for r in store.read(TOPIC, 0, base + rel, max_records=1)] == [base + rel]
        assert store.check().ok


# --- (d) the LMDB catalog -------------------------------------------------------------------------


def test_catalog_deleted(pristine: Pristine, tmp_path: Path) -> None:
    """The catalog is a cache: without it, topics come back from topic.json and the data from the
    log (the last segment of each partition is rescanned: there is no checkpoint)."""
    root = copy_of(pristine, tmp_path / "s")
    with eventstore.open(root) as store:
        config = store.topic(TOPIC)
    shutil.rmtree(root / "catalog")
    (root / "LOCK").unlink()
    outcome = open_and_read(root)
    assert outcome.error is None
    assert outcome.records == pristine.expected
    assert not outcome.problems
    scanned = sorted((e.case, e.path, e.position) for e in outcome.events)
    last_logs = [str(pristine.rel(pristine.last_log(p), root)) for p in range(PARTITIONS)]
    assert scanned == sorted(("R2", path, 0) for path in last_logs)
    with eventstore.open(root) as store:
        assert store.topics() == [config]
        assert not store.recovery_events  # checkpoints were written again
    for p in range(PARTITIONS):
        assert cw.read_checkpoint(root, TOPIC, p) == cw.read_checkpoint(pristine.path, TOPIC, p)
    assert_everything_readable(root, pristine)
    assert_still_works(root, pristine)


def test_catalog_deleted_and_a_torn_tail(pristine: Pristine, tmp_path: Path) -> None:
    root = copy_of(pristine, tmp_path / "s")
    shutil.rmtree(root / "catalog")
    log = pristine.rel(pristine.last_log(0), root)
    last = pristine.spans[pristine.last_log(0)][-1]
    with open(log, "r+b") as f:
        f.truncate(last.position + 30)
    outcome = open_and_read(root)
    assert outcome.records[0] == pristine.expected[0][: last.base_offset]
    assert outcome.records[1] == pristine.expected[1]
    assert [e.case for e in outcome.events if e.path == str(log)] == ["R3"]
    assert not outcome.problems


def test_catalog_with_a_garbled_checkpoint(pristine: Pristine, tmp_path: Path) -> None:
    """A checkpoint that does not decode is ignored (recovery scans the last segment)."""
    root = copy_of(pristine, tmp_path / "s")
    import lmdb

    from eventstore.catalog import keys

    env = lmdb.open(str(root / "catalog"), max_dbs=len(keys.ALL_DBS) + 4, subdir=True)
    try:
        db = env.open_db(keys.DB_CHECKPOINTS)
        with env.begin(write=True) as txn:
            txn.put(keys.partition_key(TOPIC, 0), b"\xc1garbage", db=db)
    finally:
        env.close()
    outcome = open_and_read(root)
    assert outcome.records == pristine.expected
    assert not outcome.problems


# --- (e) torn tails leave a .broken copy ----------------------------------------------------------


@pytest.mark.parametrize("how", ["short-prefix", "short-batch", "bad-checksum", "zero-filled"])
def test_torn_tail_is_cut_and_kept(pristine: Pristine, tmp_path: Path, how: str) -> None:
    """R3/R4: the bytes cut off are kept, exactly, in <segment>.log.<position>.broken, and reported."""
    root = copy_of(pristine, tmp_path / "s")
    spans = pristine.spans[pristine.last_log(0)]
    tail_start = spans[-3].position
    checkpoint_at(pristine, root, 0, tail_start)
    log = pristine.rel(pristine.last_log(0), root)
    data = log.read_bytes()
    last = spans[-1]
    if how == "short-prefix":  # fewer bytes than a batch prefix
        cut_at, damaged = last.position, data[: last.position + 9]
    elif how == "short-batch":  # a prefix, but fewer bytes than the batch
        cut_at, damaged = last.position, data[: last.end - 1]
    elif how == "bad-checksum":  # whole, but its checksum fails (a write torn inside a page)
        cut_at, damaged = last.position, data[:-1] + bytes([data[-1] ^ 0x40])
    else:  # the file grew by zeros (power loss after the size was updated but not the data)
        cut_at, damaged = len(data), data + bytes(4096)
    log.write_bytes(damaged)
    outcome = open_and_read(root)
    assert outcome.error is None
    assert_prefix(pristine, outcome)
    assert log.stat().st_size == cut_at
    (event,) = [e for e in outcome.events if e.case in ("R3", "R4")]
    assert event.case == ("R3" if how.startswith("short") else "R4")
    assert (event.path, event.position) == (str(log), cut_at)
    broken = log.with_name(f"{log.name}.{cut_at}.broken")
    assert event.extra == {"broken": str(broken), "bytes": len(damaged) - cut_at}
    assert broken.read_bytes() == damaged[cut_at:]
    assert not outcome.problems
    assert_still_works(root, pristine)
    with eventstore.open(root) as store:  # the .broken file is left alone from then on
        assert not store.recovery_events
    assert broken.read_bytes() == damaged[cut_at:]


# --- (f) R5: damage followed by valid data is corruption, not a torn tail --------------------------


@pytest.mark.parametrize("damage", ["checksum", "magic", "base_offset", "record_count"])
def test_bad_batch_followed_by_a_valid_one_is_corruption(
    pristine: Pristine, tmp_path: Path, damage: str
) -> None:
    """R5: CorruptionError naming the file and position; nothing truncated, nothing written."""
    root = copy_of(pristine, tmp_path / "s")
    spans = pristine.spans[pristine.last_log(0)]
    checkpoint_at(pristine, root, 0, spans[-3].position)
    log = pristine.rel(pristine.last_log(0), root)
    bad = spans[-2]
    where = {"checksum": bad.end - 1, "magic": bad.position + 16, "base_offset": bad.position + 7,
             "record_count": bad.position + cw.RECORD_COUNT_AT + 3}[damage]
    _flip(log, where, 1)
    before = log.read_bytes()
    with pytest.raises(CorruptionError) as raised:
        eventstore.open(root)
    assert raised.value.path == str(log)
    assert raised.value.position == bad.position
    assert log.read_bytes() == before
    assert not list(log.parent.glob("*.broken"))
    # The store can be opened again once the damage is repaired (here: by restoring the bit).
    _flip(log, where, 1)
    outcome = open_and_read(root)
    assert outcome.records == pristine.expected and not outcome.problems


def test_bad_batch_in_a_closed_segment_past_the_checkpoint_is_corruption(
    pristine: Pristine, tmp_path: Path
) -> None:
    """A crash right after a roll leaves the checkpoint in the previous segment; damage found there
    while rescanning is corruption even if it is that segment's last batch (it is not the log's tail)."""
    root = copy_of(pristine, tmp_path / "s")
    closed = pristine.logs[0][-2]
    spans = pristine.spans[closed]
    base = spans[0].base_offset
    expected = pristine.expected[0]
    cw.write_checkpoint(root, TOPIC, 0, [base, spans[-2].position, spans[-2].base_offset,
                                         max(r[1] for r in expected[base : spans[-2].base_offset]), 0, 0])
    log = pristine.rel(closed, root)
    _flip(log, spans[-1].end - 1, 0)
    size = log.stat().st_size
    with pytest.raises(CorruptionError) as raised:
        eventstore.open(root)
    assert (raised.value.path, raised.value.position) == (str(log), spans[-1].position)
    assert log.stat().st_size == size
