"""Damaged LMDB files (issue 10, defects 6 and 7; docs/format.md, section 15).

A truncated ``data.mdb`` used to kill the process with SIGBUS on open, and a
zeroed page of the stream index stopped the store from opening. The contract:
the stream index is derived, so a damaged one is kept aside (``index.broken``)
and rebuilt from the log (case L1); a damaged catalog is a ``CorruptionError``
naming its data file (case L3), repaired by ``es verify --repair``, which says
what could not be rebuilt. Every open here runs in a child process
(``store_prober.py``), so that a signal is a failure, not a dead test run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from siblings import load

import eventstore
from eventstore import CorruptionError, TopicPartition
from eventstore.catalog import datafile, keys
from eventstore.sourcing.events import NewEvent
from eventstore.sourcing.projections import Projection, ProjectionRunner

prober = load("store_prober")
PAGE = 4096


class _Counter(Projection):
    def handle(self, event: Any, state: Any) -> None:
        state.add(b"events", 1)


def make_store(path: Path) -> None:
    """Records in two topics, 40 streams with 300 events, two groups' offsets, a projection."""
    with eventstore.open(path) as store:
        store.create_topic("t", 2, segment_bytes=4096)
        for i in range(200):
            store.append("t", b"record-%d" % i + bytes(i % 50), partition=i % 2)
        for i in range(300):
            store.append_to_stream(f"acct-{i % 40}", [NewEvent(type="deposit", data=b"%d" % i * 7)])
        store.reset_group_offsets("billing", {TopicPartition("t", 0): 40, TopicPartition("t", 1): 12})
        store.reset_group_offsets("audit", {TopicPartition("t", 1): 77})
        ProjectionRunner(store, _Counter(), name="counter").catch_up()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("lmdb") / "s"
    make_store(path)
    expected = prober.run([path])[str(path)][0]
    assert expected["open"] == "ok" and expected["check"] is True and len(expected["all"]) == 300
    return path, expected


def copy_of(pristine: Path, root: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(pristine, target)
    return target


def cut(path: Path, length: int) -> None:
    os.truncate(path, length)


def data_file(store: Path, env: str) -> Path:
    return store / env / datafile.DATA_FILE


def same_except_recovery(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    return {k: v for k, v in got.items() if k != "recovery"} == \
        {k: v for k, v in expected.items() if k != "recovery"}


# --- the stream index (derived: kept aside and rebuilt, L1) -----------------------------------


def lengths(size: int) -> list[int]:
    return sorted({0, 1, 100, PAGE - 1, PAGE, PAGE + 152, 2 * PAGE, 2 * PAGE + 1, size // 2,
                   size - PAGE, size - 1})


def test_a_truncated_stream_index_is_kept_aside_and_rebuilt(
    pristine: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, expected = pristine
    size = data_file(source, "index").stat().st_size
    copies = {n: copy_of(source, tmp_path, f"cut-{n}") for n in lengths(size)}
    for n, store in copies.items():
        cut(data_file(store, "index"), n)
    results = prober.run(list(copies.values()))
    for n, store in copies.items():
        got = results[str(store)][0]
        assert same_except_recovery(got, expected), f"index cut at {n}: {got}"
        assert got["recovery"] == ["L1"], f"index cut at {n}: not reported"
        kept = data_file(store, "index.broken")
        assert kept.stat().st_size == n, "the damaged index is kept as it was"


def test_a_stream_index_marked_damaged_by_a_read_is_rebuilt_at_the_next_open(
    pristine: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A zeroed page that only a read meets: the read fails with CorruptionError naming the
    stream (never a dependency's exception, never wrong events), the next open rebuilds."""
    source, expected = pristine
    size = data_file(source, "index").stat().st_size
    copies = {page: copy_of(source, tmp_path, f"zero-{page}") for page in range(2, size // PAGE)}
    for page, store in copies.items():
        with open(data_file(store, "index"), "r+b") as f:
            f.seek(page * PAGE)
            f.write(bytes(PAGE))
    results = prober.run(list(copies.values()), twice=True)
    failed_reads = 0
    for page, store in copies.items():
        first, second = results[str(store)]
        for key, value in first.items():
            if key in ("recovery", "check"):
                continue
            if isinstance(value, str) and value.startswith("!"):
                assert value == "!CorruptionError", f"page {page}, {key}: {value}"
                failed_reads += 1
            else:
                assert value == expected[key], f"page {page}, {key}: wrong data returned"
        assert same_except_recovery(second, expected), f"page {page}: not rebuilt: {second}"
    assert failed_reads, "no zeroed page was ever read: the test damaged nothing in use"


def test_a_stream_index_whose_meta_pages_are_zeroed(
    pristine: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, expected = pristine
    copies = {page: copy_of(source, tmp_path, f"meta-{page}") for page in (0, 1)}
    for page, store in copies.items():
        with open(data_file(store, "index"), "r+b") as f:
            f.seek(page * PAGE)
            f.write(bytes(PAGE))
    results = prober.run(list(copies.values()))
    for page, store in copies.items():
        got = results[str(store)][0]
        assert same_except_recovery(got, expected) and got["recovery"] == ["L1"], f"meta {page}: {got}"


def test_damaged_copies_are_never_overwritten(pristine: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    source, _ = pristine
    store = copy_of(source, tmp_path, "s")
    for n in (100, 200):
        cut(data_file(store, "index"), n)
        eventstore.open(store).close()
    assert data_file(store, "index.broken").stat().st_size == 100
    assert data_file(store, "index.1.broken").stat().st_size == 200


# --- the catalog (primary data: CorruptionError, then es verify --repair, L3) -------------------


def test_a_truncated_catalog_is_a_corruption_error_that_says_how_to_repair(
    pristine: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, _ = pristine
    size = data_file(source, "catalog").stat().st_size
    copies = {n: copy_of(source, tmp_path, f"cut-{n}") for n in lengths(size)}
    for n, store in copies.items():
        cut(data_file(store, "catalog"), n)
    results = prober.run(list(copies.values()))
    for n, store in copies.items():
        got = results[str(store)][0]
        assert got["open"] == "!CorruptionError", f"catalog cut at {n}: {got}"
        assert str(data_file(store, "catalog")) in got["message"] and "es verify --repair" in got["message"]
    with pytest.raises(CorruptionError) as info:
        eventstore.open(copies[size // 2])
    assert info.value.path == str(data_file(copies[size // 2], "catalog"))
    assert info.value.position == size // 2


def run_es(*args: str) -> Any:
    from typer.testing import CliRunner

    from eventstore.cli.app import app

    return CliRunner().invoke(app, list(args))


def test_es_verify_repair_rebuilds_the_catalog_and_says_what_was_lost(
    pristine: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, expected = pristine
    store = copy_of(source, tmp_path, "s")
    catalog = data_file(store, "catalog")
    damaged = _zero_pages_holding(catalog, b"billing", spare=b"proj\x00counter")  # the cursors' page
    refused = run_es("verify", "--data", str(store))
    assert refused.exit_code == 1 and "es verify --repair" in refused.output
    result = run_es("verify", "--data", str(store), "--repair")
    assert result.exit_code == 0, result.output
    assert "kept it in" in result.output and "catalog.broken" in result.output
    assert "database 'cursors'" in result.output, result.output  # its page is unreadable
    assert "projection 'counter' starts over" in result.output
    assert "no problems found" in result.output
    got = prober.run([store])[str(store)][0]
    assert {k: v for k, v in got.items() if not k.startswith("group ")} == \
        {k: v for k, v in expected.items() if not k.startswith("group ")}
    assert not [k for k in got if k.startswith("group ")], "group offsets do not come back"
    assert data_file(store, "catalog.broken").read_bytes()[damaged[0] * PAGE:][:PAGE] == bytes(PAGE)
    again = run_es("verify", "--data", str(store), "--repair", "--json")
    assert again.exit_code == 0 and json.loads(again.output)["repair"] is None


def test_es_verify_repair_of_a_truncated_catalog_names_each_group_when_it_can(
    pristine: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, _ = pristine
    unreadable = copy_of(source, tmp_path, "cut")
    cut(data_file(unreadable, "catalog"), PAGE + 10)
    result = run_es("verify", "--data", str(unreadable), "--repair", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["repair"]["readable"] is False and report["repair"]["topics"] == 2
    zeroed = copy_of(source, tmp_path, "zeroed")
    catalog = data_file(zeroed, "catalog")
    _zero_pages_holding(catalog, b"acct\x00\x00\x00\x00\x00")  # the checkpoint of acct/0: derived
    result = run_es("verify", "--data", str(zeroed), "--repair", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["repair"]
    assert report["readable"] and set(report["unreadable"]) == {"checkpoints"}
    assert report["lost_groups"] == {"billing": 2, "audit": 1}
    assert report["restarted_projections"] == ["counter"] and report["lost_transactions"] == 0


def _zero_pages_holding(path: Path, needle: bytes, spare: bytes | None = None) -> list[int]:
    """Zero every page (past the meta pages) where ``needle`` occurs: the live one and the
    stale copies copy-on-write left behind, but those that also hold ``spare`` (a page LMDB
    reused for another database keeps stale bytes in its free space); returns their numbers."""
    data = path.read_bytes()
    pages = sorted({at // PAGE for at in _find_all(data, needle) if at >= 2 * PAGE
                    and (spare is None or spare not in data[at // PAGE * PAGE:][:PAGE])})
    assert pages, f"{needle!r} not in {path}"
    with open(path, "r+b") as f:
        for page in pages:
            f.seek(page * PAGE)
            f.write(bytes(PAGE))
    return pages


def _find_all(data: bytes, needle: bytes) -> list[int]:
    out, at = [], data.find(needle)
    while at >= 0:  # bounded by the file
        out.append(at)
        at = data.find(needle, at + 1)
    return out


# --- damaged values: only EventStoreErrors leave the library (defect 6) -----------------------


def _replace_in(path: Path, old: bytes, new: bytes) -> int:
    data = path.read_bytes()
    count = data.count(old)
    path.write_bytes(data.replace(old, new))
    return count


@pytest.mark.parametrize("damage", ["event-data", "position-entry", "head", "event-id"])
def test_a_value_of_the_stream_index_that_does_not_decode_is_a_corruption_error(
    pristine: tuple[Path, dict[str, Any]], tmp_path: Path, damage: str
) -> None:
    """It used to escape as msgspec.ValidationError (or a TypeError further on)."""
    source, expected = pristine
    store = copy_of(source, tmp_path, "s")
    index = data_file(store, "index")
    if damage == "event-data":  # event 123's data, b"123" * 7 (21 bytes): bin 8 -> str
        assert _replace_in(index, b"\xc4\x15" + b"123" * 7, b"\xb5" + b"123" * 7 + b"\x00")
    elif damage == "position-entry":  # every [topic, partition, offset] of $all: 3 items -> 2
        assert _replace_in(index, b"\x93\xa4acct", b"\x92\xa4acct")
    elif damage == "head":  # every head [topic, partition, last_version, meta]: 4 items -> 5
        assert _replace_in(index, b"\x94\xa4acct", b"\x95\xa4acct")
    else:  # every [stream id, version, position] of an event id: the stream id a number
        assert _replace_in(index, b"\x93\xa6acct-", b"\x93\x07acct-")
    if damage == "position-entry":  # the last position's value is checked at open: rebuilt there
        got = prober.run([store])[str(store)][0]
        assert same_except_recovery(got, expected) and got["recovery"] == ["L1"], got
        return
    with eventstore.open(store) as opened:
        with pytest.raises(CorruptionError) as info:
            if damage == "event-data":
                opened.read_stream("acct-3")
            elif damage == "position-entry":
                opened.read_all(0, None)
            elif damage == "head":
                opened.read_stream("acct-3")
            else:
                opened.append_to_stream("acct-1", [NewEvent(type="deposit", data=b"x", id=_id_of(opened))],
                                        expected_version=eventstore.StreamState.ANY)
        assert info.value.path == str(index)
        what = {"event-data": "events of stream 'acct-3'", "position-entry": "position 0",
                "head": "head of stream 'acct-3'", "event-id": "event id"}[damage]
        assert what in info.value.reason and "rebuilt" in info.value.reason
    got = prober.run([store])[str(store)][0]
    assert same_except_recovery(got, expected) and got["recovery"] == ["L1"], got


def _id_of(store: eventstore.Store) -> Any:
    """The id of an event of acct-1 (read from the log): appending it again looks it up."""
    from eventstore.sourcing.events import events_from_records

    for p in range(store.topic("acct").partitions):
        for event in events_from_records(store.read("acct", p, 0, max_records=1000)):
            if event.stream_id == "acct-1":
                return event.id
    raise AssertionError("acct-1 has no events")


# --- sweeps: every page zeroed, random bit flips (the suite) -------------------------------------


def judge(expected: dict[str, Any], got: dict[str, Any], where: str) -> dict[str, int]:
    """Tally one probe against the pristine result: reads that were right, that were refused
    with ``CorruptionError``, and that were wrong (other data, or another EventStoreError that
    tells something untrue, such as TopicNotFoundError for a flipped topic name). An exception
    that is not an EventStoreError (``"!!"``) fails at once: only they may leave the library."""
    tally = {"right": 0, "refused": 0, "wrong": 0}
    for key, value in got.items():
        if key in ("recovery", "check", "message") or (key == "open" and value == "ok"):
            continue
        if isinstance(value, str) and value.startswith("!"):
            assert not value.startswith("!!"), f"{where}: {key} raised {value[2:]}, not an EventStoreError"
            tally["refused" if value == "!CorruptionError" else "wrong"] += 1
        elif value == expected.get(key):
            tally["right"] += 1
        else:
            tally["wrong"] += 1
    return tally


@pytest.mark.slow
def test_every_page_of_the_catalog_zeroed(pristine: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Refused with CorruptionError (at open or at the read that meets the page) or right;
    never a signal, never another error, never wrong data."""
    source, expected = pristine
    size = data_file(source, "catalog").stat().st_size
    copies = {page: copy_of(source, tmp_path, f"zero-{page}") for page in range(size // PAGE)}
    for page, store in copies.items():
        with open(data_file(store, "catalog"), "r+b") as f:
            f.seek(page * PAGE)
            f.write(bytes(PAGE))
    results = prober.run(list(copies.values()))
    refused = 0
    for page, store in copies.items():
        tally = judge(expected, results[str(store)][0], f"catalog page {page} zeroed")
        assert tally["wrong"] == 0, f"catalog page {page} zeroed: wrong data returned"
        refused += tally["refused"]
    assert refused, "no zeroed page was ever met"


def flip_bits(path: Path, seed: int, count: int) -> list[int]:
    """Flip one bit in each of ``count`` random bytes past the meta pages; returns positions."""
    import random

    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    positions = [rng.randrange(2 * PAGE, len(data)) for _ in range(count)]
    for at in positions:
        data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return positions


FLIP_TRIALS = 24


@pytest.fixture(scope="module")
def flipped(pristine: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Per environment, per trial: the two probes (open, then open again) of a copy of the
    store with one bit flipped at random past the meta pages of that environment's data file."""
    source, _ = pristine
    root = tmp_path_factory.mktemp("flips")
    out: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for env in ("index", "catalog"):
        copies = {seed: copy_of(source, root, f"{env}-{seed}") for seed in range(FLIP_TRIALS)}
        for seed, store in copies.items():
            flip_bits(data_file(store, env), seed, 1)
        results = prober.run(list(copies.values()), twice=True)
        out[env] = {seed: results[str(store)] for seed, store in copies.items()}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("env", ["index", "catalog"])
def test_bit_flips_in_lmdb_files_never_kill_and_raise_only_event_store_errors(
    pristine: tuple[Path, dict[str, Any]], flipped: dict[str, dict[int, list[dict[str, Any]]]], env: str
) -> None:
    """One flipped bit per trial: no signal (the prober would have died), no exception that is
    not an EventStoreError; an index a read found damaged is whole again at the next open."""
    _, expected = pristine
    for seed, (first, second) in flipped[env].items():
        tally = judge(expected, first, f"{env} flip {seed}")
        judge(expected, second, f"{env} flip {seed}, reopened")
        if env == "index" and tally["refused"]:  # found damaged: rebuilt at the next open
            assert same_except_recovery(second, expected) and second["recovery"] == ["L1"], \
                f"index flip {seed}: not rebuilt"


@pytest.mark.slow
def test_a_flipped_bit_in_the_stream_index_is_never_served(
    pristine: tuple[Path, dict[str, Any]], flipped: dict[str, dict[int, list[dict[str, Any]]]]
) -> None:
    _, expected = pristine
    wrong = [seed for seed, (first, _) in flipped["index"].items()
             if judge(expected, first, f"index flip {seed}")["wrong"]]
    assert not wrong, f"wrong data returned in trials {wrong}"


@pytest.mark.slow
def test_every_bit_of_a_committed_offset_flipped_is_refused(
    pristine: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Group offsets are primary data: a flip in one (the issue's 300 -> 296) is a
    ``CorruptionError`` naming it, never an offset served; the rest of the store reads."""
    source, expected = pristine
    key = keys.cursor_key("billing", "t", 0)
    data = data_file(source, "catalog").read_bytes()
    live = [at + len(key) for at in _find_all(data, key) if data[at + len(key)] == 0x94]  # [offset, ...]
    assert live, "the cursor of billing on t/0 not found"
    copies = {}
    for byte in range(8):  # the array header, the offset, the metadata, the time's first bytes
        for bit in range(8):
            store = copy_of(source, tmp_path, f"cursor-{byte}-{bit}")
            flipped = bytearray(data)
            for at in live:  # every copy of the value, stale ones too
                flipped[at + byte] ^= 1 << bit
            data_file(store, "catalog").write_bytes(bytes(flipped))
            copies[(byte, bit)] = store
    results = prober.run(list(copies.values()))
    for (byte, bit), store in copies.items():
        got = results[str(store)][0]
        assert got.get("group billing") == "!CorruptionError", (byte, bit, got.get("group billing"))
        tally = judge(expected, got, f"cursor byte {byte} bit {bit}")
        assert tally["wrong"] == 0 and tally["refused"] == 1, (byte, bit, tally)
