"""The ``es`` command line, every command through typer's CliRunner on a temporary store.

Each test builds its store through the API (closed again before ``es`` runs: the store
has one owner at a time), runs commands with ``ES_DATA`` pointing at it, and checks
exit status, stdout (data, JSON) and stderr (one ``error:`` line, a ``hint:``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import eventstore
from eventstore import Message, TopicPartition
from eventstore.cli.app import app
from eventstore.cli.times import format_ms, parse_duration_ms, parse_time_ms
from eventstore.sourcing.events import NewEvent

GOLDEN = Path(__file__).parent / "data" / "format-v1"
TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z

Es = Callable[..., Result]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "es-data"


@pytest.fixture
def es(data: Path) -> Es:
    """Run ``es ARGS`` on the store at ``data``; ``input`` feeds stdin."""
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), input=input, prog_name="es",
                             env={"ES_DATA": str(data), "ES_DEBUG": "", **(env or {})})

    return run


@pytest.fixture
def orders(data: Path) -> Path:
    """A store with topic ``orders`` (3 partitions): 3 records in partition 0, 2 in partition 1."""
    with eventstore.open(data) as store:
        store.create_topic("orders", partitions=3)
        store.append_batch("orders", [
            Message(value=b"o1", key=b"a", timestamp_ms=TS, partition=0),
            Message(value=b"o2", key=b"b", timestamp_ms=TS + 60_000, partition=0),
            Message(value=b"o3", key=None, timestamp_ms=TS + 120_000, partition=0,
                    headers=[("source", b"web")]),
        ])
        store.append_batch("orders", [b"p1", b"p2"], partition=1)
    return data


def ok(result: Result, code: int = 0) -> Result:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def error_lines(result: Result) -> list[str]:
    """stderr of a failed command: ``error: ...`` and at most a ``hint: ...``, nothing else."""
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(x.startswith("hint: ") for x in lines[1:]), result.stderr
    assert "Traceback" not in result.stderr
    return lines


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def assert_fits_80(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide


# --- errors shared by every command ------------------------------------------------------


def test_unknown_topic_suggests_the_closest_and_exits_1(es: Es, orders: Path) -> None:
    result = ok(es("topics", "describe", "ordres"), 1)
    assert error_lines(result) == ["error: topic 'ordres' does not exist (did you mean 'orders'?)"]
    assert result.stdout == ""


def test_unknown_topic_without_a_close_name_hints_at_the_list(es: Es, orders: Path) -> None:
    lines = error_lines(ok(es("consume", "zzz"), 1))
    assert lines == ["error: topic 'zzz' does not exist", "hint: list topics with: es topics list"]


def test_missing_store_is_an_error_not_a_new_store(es: Es, data: Path) -> None:
    lines = error_lines(ok(es("topics", "list"), 1))
    assert lines[0] == f"error: no store at {str(data)!r}"
    assert not data.exists()


def test_data_option_beats_the_environment(es: Es, orders: Path, tmp_path: Path) -> None:
    ok(es("topics", "list", "--data", str(tmp_path / "elsewhere")), 1)
    assert [t["name"] for t in as_json(es("topics", "list", "--json", "--data", str(orders)))] == ["orders"]


def test_locked_store_names_the_pid(es: Es, orders: Path) -> None:
    with eventstore.open(orders):  # this process holds the lock
        lines = error_lines(ok(es("topics", "create", "more"), 1))
    assert f"is locked by process {os.getpid()}" in lines[0]
    assert lines[1].startswith("hint: another process has this store open; commands that only read")


def test_reading_commands_work_beside_the_owner(es: Es, orders: Path) -> None:
    """Nothing that only reads takes the lock, so an application can keep the store open."""
    free = {args: ok(es(*args, "--json")).stdout for args in (("topics", "list"),
                                                            ("topics", "describe", "orders"))}
    with eventstore.open(orders) as store:  # this process holds the lock
        for args, expected in free.items():
            assert ok(es(*args, "--json")).stdout == expected
        assert sorted(ok(es("consume", "orders")).stdout.split()) == ["o1", "o2", "o3", "p1", "p2"]
        store.append("orders", b"o4", partition=0)
        assert ok(es("consume", "orders", "--partition", "0", "--offset", "-1")).stdout == "o4\n"


@pytest.mark.parametrize("args", [
    ["topics", "create"],  # missing argument
    ["consume", "orders", "--bogus"],  # unknown option
    ["consume", "orders", "--format", "xml"],  # bad choice
    ["consume", "orders", "--from-beginning", "--offset", "1"],  # two start options
    ["consume", "orders", "--since", "yesterday"],  # not a time
    ["topics", "create", "x", "-p", "0"],  # below the minimum
    ["topics", "alter", "orders"],  # nothing to change
    ["topics", "alter", "orders", "--retention-ms", "soon"],
    ["produce", "orders", "--header", "novalue"],
    ["produce", "orders", "--key", "k", "--key-separator", ":"],
    ["groups", "reset-offsets", "g"],  # no --to-*
    ["groups", "reset-offsets", "g", "--to-earliest", "--to-latest"],
    ["dump", "/nonexistent/00000000000000000000.log"],
    ["nosuchcommand"],
])
def test_usage_errors_exit_2(es: Es, orders: Path, args: list[str]) -> None:
    result = ok(es(*args), 2)
    assert "Traceback" not in result.stderr


def test_debug_shows_the_exception(es: Es, orders: Path) -> None:
    result = es("--debug", "topics", "describe", "ordres")
    assert isinstance(result.exception, eventstore.TopicNotFoundError)
    result = es("topics", "describe", "ordres", env={"ES_DEBUG": "1"})
    assert isinstance(result.exception, eventstore.TopicNotFoundError)


@pytest.mark.parametrize("command", [
    [], ["topics"], ["topics", "create"], ["topics", "describe"], ["topics", "alter"], ["produce"],
    ["consume"], ["groups"], ["groups", "reset-offsets"], ["streams"], ["streams", "read"],
    ["dump"], ["verify"], ["stats"],
])
def test_help_fits_80_columns(es: Es, command: list[str]) -> None:
    assert_fits_80(ok(es(*command, "--help")).stdout)


# --- topics ---------------------------------------------------------------------------------


def test_topics_create_list_describe_alter_delete(es: Es, data: Path) -> None:
    created = as_json(es("topics", "create", "orders", "-p", "3", "--retention-ms", "86400000", "--json"))
    assert created["name"] == "orders" and created["partitions"] == 3
    assert created["retention_ms"] == 86_400_000 and created["retention_bytes"] is None
    assert ok(es("topics", "create", "audit")).stdout == "created topic 'audit' with 1 partition\n"

    listed = as_json(es("topics", "list", "--json"))
    assert [(t["name"], t["partitions"], t["records"]) for t in listed] == [("audit", 1, 0), ("orders", 3, 0)]
    assert set(listed[0]) == {"name", "partitions", "records", "size_bytes", "retention_ms",
                              "retention_bytes", "streams"}
    text = ok(es("topics", "list")).stdout
    assert "orders" in text and "86,400,000 ms" in text
    assert_fits_80(text)

    altered = as_json(es("topics", "alter", "orders", "-p", "4", "--retention-ms", "none",
                         "--retention-bytes", "1_000_000", "--json"))
    assert (altered["partitions"], altered["retention_ms"], altered["retention_bytes"]) == (4, None, 10**6)
    with eventstore.open(data) as store:
        assert store.topic("orders").partitions == 4

    described = as_json(es("topics", "describe", "orders", "--json"))
    assert described["config"]["partitions"] == 4
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2, 3]

    assert "deleted topic 'audit'" in ok(es("topics", "delete", "audit")).stdout
    assert [t["name"] for t in as_json(es("topics", "list", "--json"))] == ["orders"]


def test_topics_list_empty_store(es: Es, data: Path) -> None:
    eventstore.open(data).close()
    assert as_json(es("topics", "list", "--json")) == []
    result = ok(es("topics", "list"))
    assert result.stdout == "" and "no topics" in result.stderr


def test_topics_describe_shows_offsets_sizes_and_segments(es: Es, orders: Path) -> None:
    described = as_json(es("topics", "describe", "orders", "--json"))
    p0, p1, p2 = described["partitions"]
    assert (p0["log_start_offset"], p0["end_offset"], p0["records"]) == (0, 3, 3)
    assert (p1["end_offset"], p2["end_offset"]) == (2, 0)
    assert p0["max_timestamp_ms"] == TS + 120_000 and p2["max_timestamp_ms"] is None
    [segment] = p0["segments"]
    assert segment["base_offset"] == 0 and segment["size_bytes"] == p0["size_bytes"] > 0
    assert Path(segment["file"]).is_file()
    assert set(described["config"]) == {"name", "partitions", "retention_ms", "retention_bytes",
                                        "segment_bytes", "segment_ms", "max_record_bytes",
                                        "created_ms", "streams"}
    text = ok(es("topics", "describe", "orders", "--segments")).stdout
    assert "2023-11-14T22:15:20.000Z" in text and "0/00000000000000000000.log" in text
    assert f"segment files under {orders / 'topics' / 'orders'}/" in text


def test_topics_create_existing_and_if_not_exists(es: Es, orders: Path) -> None:
    lines = error_lines(ok(es("topics", "create", "orders"), 1))
    assert lines == ["error: topic 'orders' already exists", "hint: see it with: es topics describe orders"]
    assert ok(es("topics", "create", "orders", "--if-not-exists")).stdout == (
        "topic 'orders' exists with 3 partitions\n")
    assert ok(es("topics", "create", "orders", "-p", "3", "--if-not-exists")).stdout == (
        "topic 'orders' exists with 3 partitions\n")
    lines = error_lines(ok(es("topics", "create", "orders", "-p", "5", "--if-not-exists"), 1))
    assert lines[0] == ("error: topic 'orders' already exists with another configuration: "
                        "partitions is 3, not 5")
    ok(es("topics", "create", "fresh", "--if-not-exists", "--max-record-bytes", "2048"))
    with eventstore.open(orders) as store:
        assert (store.topic("fresh").partitions, store.topic("fresh").max_record_bytes) == (1, 2048)


def test_topics_create_invalid_name(es: Es, data: Path) -> None:
    lines = error_lines(ok(es("topics", "create", "bad/name"), 1))
    assert "invalid topic name 'bad/name'" in lines[0]


def test_topics_alter_cannot_shrink(es: Es, orders: Path) -> None:
    lines = error_lines(ok(es("topics", "alter", "orders", "-p", "2"), 1))
    assert lines[0] == "error: topic 'orders' has 3 partitions and partitions can only grow"


# --- produce ----------------------------------------------------------------------------------


def test_produce_lines_from_stdin(es: Es, orders: Path) -> None:
    written = as_json(es("produce", "orders", "--partition", "2", "-H", "source=cli", "-H", "n=1",
                         "--json", input="first\nsecond\r\n\nlast"))
    assert written == {"topic": "orders", "records": 4, "partitions": [
        {"partition": 2, "first_offset": 0, "last_offset": 3, "records": 4}]}
    with eventstore.open(orders) as store:
        records = store.read("orders", 2, 0)
    assert [r.value for r in records] == [b"first", b"second", b"", b"last"]
    assert all(r.headers == (("source", b"cli"), ("n", b"1")) and r.key is None for r in records)


def test_produce_values_with_a_key_go_to_the_key_partition(es: Es, orders: Path) -> None:
    result = ok(es("produce", "orders", "--key", "customer-7", "--value", "x", "--value", "y"))
    expected = eventstore.partition_for_key(b"customer-7", 3)
    assert f"wrote 2 records to 'orders'\n  partition {expected}: offsets" in result.stdout
    with eventstore.open(orders) as store:
        start = store.offsets("orders", expected)[1] - 2
        records = store.read("orders", expected, start)
    assert [(r.key, r.value) for r in records] == [(b"customer-7", b"x"), (b"customer-7", b"y")]


def test_produce_key_separator(es: Es, orders: Path) -> None:
    as_json(es("produce", "orders", "--key-separator", "::", "--json", input="k1::v::1\nk2::\n"))
    with eventstore.open(orders) as store:
        got = {(r.key, r.value) for p in range(3) for r in store.read("orders", p, 0)
               if r.key in (b"k1", b"k2")}
    assert got == {(b"k1", b"v::1"), (b"k2", b"")}


def test_produce_line_without_separator_names_the_line(es: Es, orders: Path) -> None:
    lines = error_lines(ok(es("produce", "orders", "--key-separator", ":", input="a:1\nb:2\nnokey\n"), 1))
    assert lines == ["error: line 3 has no key separator ':'",
                     "hint: nothing was written; fix the input and run again"]


def test_produce_record_too_large_names_the_line(es: Es, data: Path) -> None:
    with eventstore.open(data) as store:
        store.create_topic("small", max_record_bytes=10)
    lines = error_lines(ok(es("produce", "small", input="ok\nthis line is too long\n"), 1))
    assert lines[0].startswith("error: line 2: record of 21 bytes")
    assert lines[1] == ("hint: nothing was written; raise the limit with: "
                        "es topics alter small --max-record-bytes N")


def test_produce_error_after_a_written_batch_says_where_to_resume(es: Es, orders: Path) -> None:
    lines = "".join(f"k{i}:v{i}\n" for i in range(1000)) + "broken\n"
    result = ok(es("produce", "orders", "--key-separator", ":", input=lines), 1)
    assert error_lines(result) == [
        "error: line 1001 has no key separator ':'",
        "hint: the first 1,000 records were written; fix the input and resend from line 1,001"]
    with eventstore.open(orders) as store:
        assert sum(store.offsets("orders", p)[1] for p in range(3)) == 5 + 1000


def test_produce_bad_partition_and_empty_input(es: Es, orders: Path) -> None:
    lines = error_lines(ok(es("produce", "orders", "--partition", "7", "--value", "x"), 1))
    assert "partition 7 out of range for topic 'orders'" in lines[0]
    result = ok(es("produce", "orders", input=""))
    assert result.stdout == "" and "no records written" in result.stderr
    assert as_json(es("produce", "orders", "--json", input="")) == {
        "topic": "orders", "records": 0, "partitions": []}


# --- consume ----------------------------------------------------------------------------------


def test_consume_prints_values_and_stops_at_the_end(es: Es, orders: Path) -> None:
    assert ok(es("consume", "orders", "--partition", "0")).stdout == "o1\no2\no3\n"
    assert sorted(ok(es("consume", "orders")).stdout.split()) == ["o1", "o2", "o3", "p1", "p2"]


def test_consume_json_lines(es: Es, orders: Path) -> None:
    rows = [json.loads(line) for line in ok(es("consume", "orders", "--partition", "0",
                                               "--json")).stdout.splitlines()]
    assert rows[0] == {"topic": "orders", "partition": 0, "offset": 0, "timestamp_ms": TS, "key": "a",
                       "value": "o1", "headers": []}
    assert rows[2]["key"] is None and rows[2]["headers"] == [["source", "web"]]
    assert ok(es("consume", "orders", "--partition", "0", "--format", "json")).stdout == (
        ok(es("consume", "orders", "--partition", "0", "--json")).stdout)


def test_consume_json_binary_values_are_base64(es: Es, data: Path) -> None:
    with eventstore.open(data) as store:
        store.create_topic("bin")
        store.append("bin", b"\xff\x00", key=b"\x80")
    [row] = [json.loads(line) for line in ok(es("consume", "bin", "--json")).stdout.splitlines()]
    assert row["value"] == {"base64": "/wA="} and row["key"] == {"base64": "gA=="}


def test_consume_table_fits_80_columns(es: Es, orders: Path) -> None:
    with eventstore.open(orders) as store:
        store.append("orders", b"v" * 500, key=b"k" * 100, partition=0)
    text = ok(es("consume", "orders", "--partition", "0", "--format", "table")).stdout
    lines = text.splitlines()
    assert lines[0].split() == ["P", "OFFSET", "TIMESTAMP", "(UTC)", "KEY", "VALUE"]
    assert "2023-11-14T22:13:20.000Z" in lines[1] and lines[-1].endswith("…")
    assert_fits_80(text)


def test_consume_start_options(es: Es, orders: Path) -> None:
    def values(*args: str) -> list[str]:
        return ok(es("consume", "orders", "--partition", "0", *args)).stdout.split()

    assert values("--offset", "1") == ["o2", "o3"]
    assert values("--offset", "-1") == ["o3"]
    assert values("--offset", "-10") == ["o1", "o2", "o3"]
    assert values("--offset", "3") == []
    assert values("--from-beginning", "--max", "2") == ["o1", "o2"]
    assert values("--since", format_ms(TS + 60_000)) == ["o2", "o3"]
    assert values("--since", str(TS + 1)) == ["o2", "o3"]
    assert values("--since", "10m") == []  # the records are from 2023


def test_consume_max_counts_records_over_all_partitions(es: Es, orders: Path) -> None:
    # partition 0 has 3 records, partition 1 has 2: --max is a total, not a count per partition
    for n in (1, 2, 3, 4):
        assert len(ok(es("consume", "orders", "--max", str(n))).stdout.split()) == n
        assert len(ok(es("consume", "orders", "--max", str(n), "--format", "json")).stdout.splitlines()) == n
    assert len(ok(es("consume", "orders", "--max", "9")).stdout.split()) == 5
    assert len(ok(es("consume", "orders", "-g", "billing", "--max", "4")).stdout.split()) == 4


def test_consume_offset_out_of_range(es: Es, orders: Path) -> None:
    lines = error_lines(ok(es("consume", "orders", "--partition", "0", "--offset", "9"), 1))
    assert lines == ["error: offset 9 out of range for orders/0: valid offsets are 0..3 "
                     "(end is the next offset to be written)"]


def test_consume_bad_partition(es: Es, orders: Path) -> None:
    lines = error_lines(ok(es("consume", "orders", "--partition", "3"), 1))
    assert "partition 3 out of range for topic 'orders' (it has partitions 0..2)" in lines[0]


def test_consume_with_a_group_commits_what_it_printed(es: Es, orders: Path) -> None:
    assert ok(es("consume", "orders", "--group", "billing", "--partition", "0", "--max", "2")).stdout == (
        "o1\no2\n")
    assert ok(es("consume", "orders", "--group", "billing", "--partition", "0")).stdout == "o3\n"
    assert ok(es("consume", "orders", "--group", "billing", "--partition", "0")).stdout == ""
    with eventstore.open(orders) as store:
        assert store.group_offsets("billing") == {TopicPartition("orders", 0): 3}
        store.append("orders", b"o4", partition=0)
    assert ok(es("consume", "orders", "-g", "billing", "--partition", "0")).stdout == "o4\n"
    # an explicit start wins over the committed offset
    assert ok(es("consume", "orders", "-g", "billing", "--partition", "0", "--offset", "2")).stdout == (
        "o3\no4\n")


# --- groups -----------------------------------------------------------------------------------


@pytest.fixture
def billing(orders: Path) -> Path:
    """Group ``billing`` committed offset 1 on orders/0 and 2 on orders/1."""
    with eventstore.open(orders) as store:
        consumer = store.consumer(group_id="billing", enable_auto_commit=False)
        consumer.commit({TopicPartition("orders", 0): 1, TopicPartition("orders", 1): 2})
        consumer.close()
    return orders


def test_groups_list_and_describe(es: Es, billing: Path) -> None:
    assert as_json(es("groups", "list", "--json")) == [{"group": "billing", "topics": ["orders"], "lag": 2}]
    described = as_json(es("groups", "describe", "billing", "--json"))
    assert described["group"] == "billing" and described["members"] == []
    assert described["state"] == "Empty" and described["generation"] == 0
    assert described["partitions"] == [
        {"topic": "orders", "partition": 0, "committed": 1, "log_start_offset": 0, "end_offset": 3, "lag": 2},
        {"topic": "orders", "partition": 1, "committed": 2, "log_start_offset": 0, "end_offset": 2, "lag": 0},
        {"topic": "orders", "partition": 2, "committed": None, "log_start_offset": 0, "end_offset": 0,
         "lag": 0},
    ]
    text = ok(es("groups", "describe", "billing")).stdout
    assert "COMMITTED" in text and "LAG" in text
    assert_fits_80(text)
    assert "billing" in ok(es("groups", "list")).stdout


def test_groups_unknown_group_suggests(es: Es, billing: Path) -> None:
    for command in ("describe", "delete"):
        lines = error_lines(ok(es("groups", command, "biling"), 1))
        assert lines == ["error: group 'biling' does not exist (did you mean 'billing'?)",
                         "hint: list groups with: es groups list"]


def test_groups_reset_offsets(es: Es, billing: Path) -> None:
    planned = as_json(es("groups", "reset-offsets", "billing", "--to-earliest", "--dry-run", "--json"))
    assert planned == {"group": "billing", "dry_run": True, "partitions": [
        {"topic": "orders", "partition": 0, "previous": 1, "offset": 0},
        {"topic": "orders", "partition": 1, "previous": 2, "offset": 0},
        {"topic": "orders", "partition": 2, "previous": None, "offset": 0},
    ]}
    with eventstore.open(billing) as store:
        assert store.group_offsets("billing")[TopicPartition("orders", 0)] == 1  # dry run: unchanged
    result = ok(es("groups", "reset-offsets", "billing", "--to-latest"))
    assert "reset 3 partitions of group 'billing'" in result.stderr
    with eventstore.open(billing) as store:
        assert sum(store.lag("billing").values()) == 0
    moved = as_json(es("groups", "reset-offsets", "billing", "--to-datetime", format_ms(TS + 60_000),
                       "--json"))
    assert [p["offset"] for p in moved["partitions"]] == [1, 0, 0]  # orders/1 was written now
    moved = as_json(es("groups", "reset-offsets", "billing", "--to-offset", "0", "--json"))
    assert [p["offset"] for p in moved["partitions"]] == [0, 0, 0]
    lines = error_lines(ok(es("groups", "reset-offsets", "billing", "--to-offset", "3"), 1))
    assert lines[0].startswith("error: offset 3 out of range for orders/1")


def test_groups_reset_offsets_of_a_new_group_needs_topics(es: Es, orders: Path) -> None:
    error_lines(ok(es("groups", "reset-offsets", "fresh", "--to-earliest"), 1))
    moved = as_json(es("groups", "reset-offsets", "fresh", "--to-latest", "--topic", "orders", "--json"))
    assert [p["offset"] for p in moved["partitions"]] == [3, 2, 0]
    assert "fresh" in [g["group"] for g in as_json(es("groups", "list", "--json"))]


def test_groups_delete(es: Es, billing: Path) -> None:
    assert "deleted group 'billing' (2 committed offsets)" in ok(es("groups", "delete", "billing")).stdout
    assert as_json(es("groups", "list", "--json")) == []


# --- streams ----------------------------------------------------------------------------------


@pytest.fixture
def streams(data: Path) -> Path:
    with eventstore.open(data) as store:
        for i in range(3):
            store.append_to_stream("order-1", NewEvent(type="OrderPlaced", data=b'{"n": %d}' % i))
        store.append_to_stream("order-2", NewEvent(type="OrderPlaced", data=b"\xff"))
        store.append_to_stream("user-1", NewEvent(type="UserCreated"))
    return data


def test_streams_list(es: Es, streams: Path) -> None:
    assert as_json(es("streams", "list", "--json")) == [
        {"stream_id": "order-1", "version": 2}, {"stream_id": "order-2", "version": 0},
        {"stream_id": "user-1", "version": 0}]
    assert [s["stream_id"] for s in as_json(es("streams", "list", "user", "--json"))] == ["user-1"]
    assert "order-2" in ok(es("streams", "list")).stdout


def test_streams_read(es: Es, streams: Path) -> None:
    events = as_json(es("streams", "read", "order-1", "--json"))
    assert [(e["version"], e["type"], e["data"]) for e in events] == [
        (0, "OrderPlaced", '{"n": 0}'), (1, "OrderPlaced", '{"n": 1}'), (2, "OrderPlaced", '{"n": 2}')]
    assert set(events[0]) == {"stream_id", "version", "type", "data", "metadata", "id", "position",
                              "timestamp_ms", "topic", "partition", "offset"}
    later = as_json(es("streams", "read", "order-1", "--from", "1", "--json"))
    assert [e["version"] for e in later] == [1, 2]
    assert [e["version"] for e in as_json(es("streams", "read", "order-1", "--backwards", "--limit", "2",
                                             "--json"))] == [2, 1]
    assert as_json(es("streams", "read", "order-2", "--json"))[0]["data"] == {"base64": "/w=="}
    text = ok(es("streams", "read", "order-1")).stdout
    assert "OrderPlaced" in text and '{"n": 2}' in text


def test_streams_read_unknown_suggests(es: Es, streams: Path) -> None:
    lines = error_lines(ok(es("streams", "read", "ordr-1"), 1))
    assert lines == ["error: stream 'ordr-1' does not exist (did you mean 'order-1'?)",
                     "hint: list streams with: es streams list"]


def test_streams_truncate_and_delete(es: Es, streams: Path) -> None:
    ok(es("streams", "truncate", "order-1", "--before", "2"))
    assert [e["version"] for e in as_json(es("streams", "read", "order-1", "--json"))] == [2]
    error_lines(ok(es("streams", "truncate", "order-1", "--before", "9"), 1))
    assert "a new append gets version 3" in ok(es("streams", "delete", "order-1")).stdout
    lines = error_lines(ok(es("streams", "read", "order-1"), 1))
    assert lines[0] == "error: stream 'order-1' was deleted"
    # the hint says what the exit status does: a deleted stream is not read as an empty one
    assert lines[1] == ("hint: reading a deleted stream fails as above and es streams list leaves it "
                        "out; appending to it again continues its versions")
    with eventstore.open(streams) as store, pytest.raises(eventstore.StreamNotFoundError) as e:
        store.read_stream("order-1")  # as the API does
    assert e.value.deleted
    assert "order-1" not in [s["stream_id"] for s in as_json(es("streams", "list", "--json"))]
    ok(es("streams", "truncate", "order-9", "--before", "1"), 1)


# --- dump -------------------------------------------------------------------------------------


def test_dump_golden_segment(es: Es) -> None:
    path = GOLDEN / "two-segments" / "topics" / "golden" / "0" / "00000000000000000000.log"
    dumped = as_json(es("dump", str(path), "--json"))
    assert dumped["kind"] == "log" and dumped["base_offset"] == 0 and dumped["problems"] == []
    assert dumped["size_bytes"] == path.stat().st_size == sum(b["size_bytes"] for b in dumped["batches"])
    first = dumped["batches"][0]
    assert first == {"position": 0, "base_offset": 0, "last_offset": 0, "record_count": 1,
                     "size_bytes": first["size_bytes"], "magic": 0x45, "attributes": 0,
                     "base_timestamp_ms": 1_700_000_123_000, "max_timestamp_ms": 1_700_000_123_000,
                     "checksum": "ok", "valid": True}
    assert [b["base_offset"] for b in dumped["batches"]] == list(range(8))
    text = ok(es("dump", str(path))).stdout
    assert "position 0: offsets 0..0 (1 record)" in text and "checksum ok" in text
    assert text.splitlines()[-1] == "8 batches, 8 records; no problems"


def test_dump_records(es: Es) -> None:
    path = GOLDEN / "batch-with-headers" / "topics" / "golden" / "0" / "00000000000000000000.log"
    dumped = as_json(es("dump", str(path), "--records", "--json"))
    records = [r for b in dumped["batches"] for r in b["records"]]
    assert records and set(records[0]) == {"offset", "timestamp_ms", "key", "value", "headers"}
    assert [r["offset"] for r in records] == list(range(len(records)))
    assert any(r["headers"] for r in records)
    text = ok(es("dump", str(path), "--records")).stdout
    assert "  | 0  " in text
    assert_fits_80(text)


def test_dump_damaged_segment_names_the_position(es: Es, tmp_path: Path) -> None:
    path = tmp_path / "00000000000000000000.log"
    shutil.copy(GOLDEN / "two-segments" / "topics" / "golden" / "0" / path.name, path)
    raw = bytearray(path.read_bytes())
    raw[970 + 100] ^= 0xFF  # inside the second batch's records
    path.write_bytes(bytes(raw) + b"\x00" * 7)  # and a torn tail
    result = ok(es("dump", str(path), "--json"), 1)
    dumped = json.loads(result.stdout)
    assert dumped["batches"][1]["checksum"] == "mismatch" and not dumped["batches"][1]["valid"]
    assert dumped["batches"][2]["checksum"] == "ok"
    assert dumped["problems"] == [
        {"position": 970, "reason": "checksum mismatch"},
        {"position": 8040, "reason": "7 bytes at the end, less than a batch prefix"}]
    lines = error_lines(result)
    assert lines[0] == f"error: {path} at position 970: checksum mismatch (and 1 more)"


def test_dump_index_files(es: Es) -> None:
    folder = GOLDEN / "two-segments" / "topics" / "golden" / "0"
    index = as_json(es("dump", str(folder / "00000000000000000000.index"), "--json"))
    assert index["kind"] == "offset-index" and index["problems"] == []
    assert index["entries"] and all(e["offset"] == e["relative_offset"] for e in index["entries"])
    timeindex = as_json(es("dump", str(folder / "00000000000000000000.timeindex"), "--json"))
    assert timeindex["kind"] == "time-index"
    assert all(e["timestamp_ms"] >= 1_700_000_123_000 for e in timeindex["entries"])


def test_dump_needs_no_lock(es: Es, orders: Path) -> None:
    with eventstore.open(orders):  # held by this process: dump reads the file anyway
        path = orders / "topics" / "orders" / "0" / "00000000000000000000.log"
        assert as_json(es("dump", str(path), "--json"))["batches"][0]["record_count"] == 3


# --- verify and stats -------------------------------------------------------------------------


def test_verify_healthy_store(es: Es, orders: Path) -> None:
    report = as_json(es("verify", "--json"))
    with eventstore.open(orders) as store:
        expected = store.check()
    assert report == {"ok": True, "partitions": expected.partitions, "segments": expected.segments,
                      "batches": expected.batches, "records": expected.records, "bytes": expected.bytes,
                      "foreign_records": 0, "problems": [], "recovery": []}
    text = ok(es("verify")).stdout
    assert "checked 3 partitions" in text and "no problems found" in text


def test_verify_damaged_store_names_file_and_position(es: Es, data: Path) -> None:
    with eventstore.open(data) as store:
        store.create_topic("t", segment_bytes=1024)
        for i in range(40):
            store.append("t", b"%04d" % i + b"x" * 100)
        first = store.statistics().partition_stats[0]
        assert first.segments > 1
    segment = data / "topics" / "t" / "0" / "00000000000000000000.log"
    raw = bytearray(segment.read_bytes())
    raw[60] ^= 0xFF  # inside the first batch of a closed segment
    segment.write_bytes(bytes(raw))
    result = ok(es("verify", "--json"), 1)
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert report["problems"][0] == {"path": str(segment), "position": 0, "reason": "checksum mismatch"}
    lines = error_lines(result)
    assert lines[0].startswith(f"error: {segment} at position 0: checksum mismatch")
    text = ok(es("verify"), 1).stdout
    assert f"problem: {segment} at position 0: checksum mismatch" in text


def test_stats(es: Es, billing: Path) -> None:
    stats = as_json(es("stats", "--json"))
    assert stats["path"] == str(billing) and stats["durability"] == "fsync"
    assert (stats["topics"], stats["partitions"], stats["records"], stats["segments"]) == (1, 3, 5, 3)
    assert stats["size_bytes"] > 0
    assert stats["per_topic"] == [{"name": "orders", "partitions": 3, "records": 5,
                                   "size_bytes": stats["size_bytes"], "segments": 3}]
    assert stats["groups"] == [{"group": "billing", "lag": 2}]
    text = ok(es("stats")).stdout
    assert "durability" in text and "billing" in text
    assert_fits_80(text)


# --- retention --------------------------------------------------------------------------------


def test_retention_dry_run_then_apply(es: Es, data: Path) -> None:
    with eventstore.open(data) as store:
        store.create_topic("logs", segment_bytes=1024)
        store.create_topic("keep")
        store.append_batch("logs", [bytes(300) for _ in range(2)])
        store.append_batch("logs", [bytes(300) for _ in range(2)])
        store.append_batch("logs", [bytes(300) for _ in range(3)])  # three segments: 2 + 2 + 3 records
        sizes = [p.size_bytes for p in store.statistics().partition_stats if p.topic == "logs"]
    assert as_json(es("retention", "--json")) == {"dry_run": False, "partitions": []}
    assert ok(es("topics", "alter", "logs", "--retention-bytes", "1")).exit_code == 0
    preview = as_json(es("retention", "logs", "--dry-run", "--json"))
    [row] = preview["partitions"]
    assert preview["dry_run"] is True
    assert (row["topic"], row["partition"], row["segments"], row["records"], row["log_start_offset"]) == (
        "logs", 0, 2, 4, 4)
    assert row["size_bytes"] < sizes[0]
    assert as_json(es("topics", "describe", "logs", "--json"))["partitions"][0]["log_start_offset"] == 0
    text = ok(es("retention", "logs")).stdout
    assert text.splitlines()[-1].startswith("removed 2 segments: 4 records, ")
    assert_fits_80(text)
    assert as_json(es("topics", "describe", "logs", "--json"))["partitions"][0]["log_start_offset"] == 4
    assert ok(es("retention")).stdout == "nothing to remove in 2 partitions\n"
    lines = error_lines(ok(es("retention", "lgos"), 1))
    assert lines[0] == "error: topic 'lgos' does not exist (did you mean 'logs'?)"


# --- demo -----------------------------------------------------------------------------------------


def test_demo_prints_inclusive_offset_ranges_as_produce_does(es: Es, data: Path) -> None:
    text = ok(es("demo", "--records", "3000", "--orders", "30", env={"COLUMNS": "120"})).stdout
    rows = re.findall(r"partition (\d) │ offsets (\d+)\.\.(\d+) \(([\d,]+) records\)", text)
    assert len(rows) == 3, text
    with eventstore.open(data, create=False) as store:
        for p, first, last, count in rows:
            start, end = store.offsets("demo.orders", int(p))
            # as `es produce` prints it: first..last, both written, last = end offset - 1
            assert (int(first), int(last)) == (start, end - 1)
            assert int(count.replace(",", "")) == end - start
    assert sum(int(count.replace(",", "")) for *_, count in rows) == 3000


README = Path(__file__).parent.parent / "README.md"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _readme_block(first_command: str) -> list[str]:
    """The lines of the README's console block that starts with ``$ <first_command>``."""
    text = README.read_text()
    start = text.index(f"```console\n$ {first_command}\n") + len("```console\n")
    return text[start:text.index("```", start)].rstrip("\n").split("\n")


def test_readme_command_line_transcript_is_what_es_prints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    expected: list[str] = []
    printed: list[str] = []
    for line in _readme_block("es topics create orders -p 3"):
        if not line.startswith("$ "):
            expected.append(TIME.sub("<time>", line))
            continue
        stdin = None
        command = line[2:]
        if " | " in command:  # printf 'LINES' | es ...
            feed, command = command.split(" | ", 1)
            stdin = shlex.split(feed)[1].encode().decode("unicode_escape")
        args = shlex.split(command)
        assert args[0] == "es", line
        result = runner.invoke(app, args[1:], input=stdin, prog_name="es",
                               env={"ES_DATA": "es-data", "ES_DEBUG": "", "COLUMNS": "80"})
        printed += TIME.sub("<time>", result.stdout + result.stderr).rstrip("\n").split("\n")
    assert printed == expected


def test_readme_demo_transcript_has_the_rows_es_demo_prints(es: Es) -> None:
    def labels(lines: list[str]) -> list[str]:
        return [line.split("│")[1].strip() for line in lines if line.count("│") == 3]

    text = ok(es("demo", "--records", "2000", "--orders", "30", env={"COLUMNS": "120"})).stdout
    readme = _readme_block("es demo --records 20000")
    assert labels(text.splitlines()) == labels(readme)
    assert len(labels(readme)) == 19


# --- the time options -------------------------------------------------------------------------


def test_time_parsing() -> None:
    now = TS
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("10") is None
    assert parse_time_ms("10m", "--since", now) == now - 600_000
    assert parse_time_ms("2023-11-14T22:13:20Z", "--since") == TS
    assert parse_time_ms("2023-11-14T23:13:20+01:00", "--since") == TS
    assert parse_time_ms(str(TS), "--since") == TS
    local = datetime(2023, 11, 14, 12, 0).astimezone()
    assert parse_time_ms("2023-11-14 12:00", "--since") == int(local.timestamp() * 1000)
    assert format_ms(TS + 5) == "2023-11-14T22:13:20.005Z"
    assert datetime.fromtimestamp(TS / 1000, tz=UTC).year == 2023
