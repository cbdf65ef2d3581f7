"""Streams topics: only the stream API writes them; a foreign record never stops an open.

docs/format.md, section 12: every plain write path refuses a topic with
``streams: true``, and a record in such a topic that is not an event envelope
(written before the rule existed) is skipped by the index catch-up, reported
on open (case F1) and by ``check()`` / ``es verify``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import eventstore
from eventstore import Message, NewEvent, StreamsTopicError


def _streams_store(path: Path) -> eventstore.Store:
    store = eventstore.open(path)
    store.append_to_stream("order-1", NewEvent(type="Placed", data=b"{}"))
    return store


def _ends(store: eventstore.Store) -> list[tuple[int, int]]:
    cfg = store.topic("order")
    return [store.offsets("order", p) for p in range(cfg.partitions)]


def test_append_and_append_batch_refuse_a_streams_topic(store_path: Path) -> None:
    with _streams_store(store_path) as store:
        before = _ends(store)
        with pytest.raises(StreamsTopicError, match="'order' holds event streams") as info:
            store.append("order", b"not an envelope", key=b"order-1")
        assert info.value.topic == "order"
        assert isinstance(info.value, eventstore.InvalidArgumentError)
        with pytest.raises(StreamsTopicError):
            store.append_batch("order", [b"a", b"b"])
        with pytest.raises(StreamsTopicError):
            store.append_batch("order", [Message(value=b"a", key=b"order-1")])
        assert _ends(store) == before
        assert [e.version for e in store.read_stream("order-1")] == [0]
    with eventstore.open(store_path) as store:  # and the store still opens
        assert store.stream_version("order-1") == 0


def test_producer_and_transactions_refuse_a_streams_topic(store_path: Path) -> None:
    with _streams_store(store_path) as store:
        before = _ends(store)
        with store.producer() as producer, pytest.raises(StreamsTopicError):
            producer.send("order", b"x", key=b"order-1")
        with pytest.raises(StreamsTopicError), store.transaction() as txn:
            txn.append("order", b"x", key=b"order-1")
        store.create_topic("in")
        store.append("in", b"x")
        consumer = store.consumer("in", group_id="g", auto_offset_reset="earliest",
                                  enable_auto_commit=False)
        try:
            assert consumer.poll(timeout_ms=2000)
            with pytest.raises(StreamsTopicError), consumer.transaction() as txn:
                txn.append("order", b"x")
        finally:
            consumer.close()
        assert _ends(store) == before
        assert store.group_offsets("g") == {}


def test_plain_topics_are_not_affected(store: eventstore.Store) -> None:
    store.create_topic("plain")
    assert store.append("plain", b"x").offset == 0
    assert len(store.append_batch("plain", [b"a", b"b"])) == 2


def test_cli_produce_refuses_a_streams_topic(store_path: Path) -> None:
    _streams_store(store_path).close()
    from eventstore.cli.app import app

    result = CliRunner().invoke(app, ["produce", "order", "--value", "x"], prog_name="es",
                                env={"ES_DATA": str(store_path), "ES_DEBUG": ""})
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: topic 'order' holds event streams"), lines
    assert "Traceback" not in result.stderr
    with eventstore.open(store_path) as store:
        assert sum(end for _, end in _ends(store)) == 1


def _write_foreign(path: Path, value: bytes) -> None:
    """A record written into a streams topic the way an older version allowed it.

    The topic is made plain for one open (its topic.json is the source of
    truth), the record appended, and the topic made a streams topic again.
    """
    config = path / "topics" / "order" / "topic.json"
    original = json.loads(config.read_text())
    config.write_text(json.dumps({**original, "streams": False}))
    with eventstore.open(path) as store:
        store.append("order", value, key=b"order-1")
    config.write_text(json.dumps(original))


def test_a_foreign_record_does_not_stop_the_store_from_opening(store_path: Path) -> None:
    _streams_store(store_path).close()
    _write_foreign(store_path, b"not an envelope")
    with eventstore.open(store_path) as store:
        f1 = [e for e in store.recovery_events if e.case == "F1"]
        assert len(f1) == 1 and "order" in f1[0].path and "offset 1" in f1[0].detail
        assert [e.version for e in store.read_stream("order-1")] == [0]
        r = store.append_to_stream("order-1", NewEvent(type="Shipped"), 0)
        assert r.next_expected_version == 1
        assert [e.type for e in store.read_all()] == ["Placed", "Shipped"]
        report = store.check()
        assert report.foreign_records == 1
        assert len(report.problems) == 1
        assert "offset 1" in report.problems[0].reason
        assert "not a stream event envelope" in report.problems[0].reason
    with eventstore.open(store_path) as store:  # reported once: the index moved past it
        assert not [e for e in store.recovery_events if e.case == "F1"]
        assert [e.type for e in store.read_stream("order-1")] == ["Placed", "Shipped"]
        assert store.check().foreign_records == 1


def test_foreign_records_between_envelopes_in_one_catch_up(store_path: Path) -> None:
    """The catch-up decodes records in runs; a foreign one in the middle costs only itself."""
    with _streams_store(store_path) as store:
        p = store.read_stream("order-1")[0].partition
    _write_foreign(store_path, b"\x93\x01\x02\x03")  # MessagePack, but not an envelope
    with eventstore.open(store_path) as store:
        store.append_to_stream("order-1", NewEvent(type="Shipped"), 0)
        assert store.offsets("order", p)[1] == 3
    (store_path / "index").rename(store_path / "index.old")  # rebuilt from the whole log
    with eventstore.open(store_path) as store:
        assert [e.type for e in store.read_stream("order-1")] == ["Placed", "Shipped"]
        assert [e.position for e in store.read_all()] == [0, 1]
        assert len([e for e in store.recovery_events if e.case == "F1"]) == 1


def test_es_verify_reports_a_foreign_record(store_path: Path) -> None:
    _streams_store(store_path).close()
    _write_foreign(store_path, b"not an envelope")
    from eventstore.cli.app import app

    env = {"ES_DATA": str(store_path), "ES_DEBUG": ""}
    result = CliRunner().invoke(app, ["verify", "--json"], prog_name="es", env=env)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["foreign_records"] == 1
    assert "not a stream event envelope" in report["problems"][0]["reason"]
    text = CliRunner().invoke(app, ["verify"], prog_name="es", env=env).stdout
    assert "1 foreign record" in text
