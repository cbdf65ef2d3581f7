"""``es backup`` and ``es restore`` (docs/format.md, section 20) through typer's CliRunner:
a snapshot, restores of the latest state and of points in time that ``es verify`` passes,
and one ``error:`` line for a damaged backup or a target in use."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

import eventstore
from eventstore.cli.app import app
from eventstore.cli.times import format_ms

T0 = 1_700_000_000_000


def es(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), prog_name="es", env={"ES_DEBUG": ""})


def test_backup_once_then_restore_latest_and_points_in_time(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    with eventstore.open(src) as store:
        store.create_topic("orders", partitions=2, segment_bytes=1024)
        for i in range(50):
            store.append("orders", b"order-%d" % i, partition=i % 2, timestamp_ms=T0 + 1000 * i)
        store.reset_group_offsets("billing", {("orders", 0): 25, ("orders", 1): 25})
    done = es("backup", "--data", str(src), "--to", str(dest), "--once")
    assert done.exit_code == 0, done.output
    assert done.output.startswith("pass 1: copied ") and "50 batches" in done.output

    latest = es("restore", "--from", str(dest), "--to", str(tmp_path / "latest"))
    assert latest.exit_code == 0, latest.output
    assert "restored 2 partitions (50 records) and 1 group" in latest.output
    assert es("verify", "--data", str(tmp_path / "latest")).exit_code == 0

    at = es("restore", "--from", str(dest), "--to", str(tmp_path / "at"), "--at", format_ms(T0 + 9_500))
    assert at.exit_code == 0, at.output
    with eventstore.open(tmp_path / "at") as store:
        assert store.offsets("orders", 0) == (0, 5) and store.offsets("orders", 1) == (0, 5)
        assert set(store.group_offsets("billing").values()) == {5}

    cut = es("restore", "--from", str(dest), "--to", str(tmp_path / "cut"), "--offsets", "orders:1=3")
    assert cut.exit_code == 0, cut.output
    assert es("verify", "--data", str(tmp_path / "cut")).exit_code == 0
    with eventstore.open(tmp_path / "cut") as store:
        assert store.offsets("orders", 0) == (0, 25) and store.offsets("orders", 1) == (0, 3)


def test_errors_are_one_line(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    with eventstore.open(src) as store:
        store.create_topic("orders", partitions=1)
        store.append("orders", b"x")
    assert es("backup", "--data", str(src), "--to", str(dest), "--passes", "1").exit_code == 0
    taken = es("restore", "--from", str(dest), "--to", str(src))
    assert taken.exit_code == 1 and taken.output.count("error:") == 1
    assert "not an empty directory" in taken.output
    segment = next((dest / "topics").glob("*/0/*.log"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(data)
    damaged = es("restore", "--from", str(dest), "--to", str(tmp_path / "out"))
    assert damaged.exit_code == 1 and damaged.output.count("error:") == 1
    assert "damaged backup" in damaged.output and not (tmp_path / "out").exists()
    bad = es("restore", "--from", str(dest), "--to", str(tmp_path / "out"), "--offsets", "orders=1")
    assert bad.exit_code == 2 and "TOPIC:PARTITION=OFFSET" in bad.output
