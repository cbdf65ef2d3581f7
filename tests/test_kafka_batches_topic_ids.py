"""Topic ids (docs/format.md, section 5): made with the topic, kept across restarts and
alterations, new for a topic made again, and given on open to topics written without one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import eventstore
from eventstore.records import NO_TOPIC_ID


def test_a_new_topic_has_a_random_id_found_by_topic_by_id(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s", durability="none") as store:
        a = store.create_topic("a")
        b = store.create_topic("b", 3)
        assert isinstance(a.topic_id, uuid.UUID) and a.topic_id.version == 4
        assert a.topic_id != b.topic_id and NO_TOPIC_ID not in (a.topic_id, b.topic_id)
        assert store.log.topic_by_id(a.topic_id) == a
        assert store.log.topic_by_id(b.topic_id) == b
        assert store.log.topic_by_id(uuid.uuid4()) is None
        assert store.log.topic_by_id(NO_TOPIC_ID) is None


def test_the_id_survives_restart_and_alter_and_is_new_after_delete(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with eventstore.open(path, durability="none") as store:
        first = store.create_topic("t").topic_id
    stored = json.loads((path / "topics" / "t" / "topic.json").read_text())
    assert stored["topic_id"] == str(first)
    with eventstore.open(path, durability="none") as store:
        assert store.topic("t").topic_id == first
        altered = store.alter_topic("t", partitions=2, retention_ms=60_000)
        assert altered.topic_id == first and store.log.topic_by_id(first) == altered
        store.delete_topic("t")
        assert store.log.topic_by_id(first) is None
        again = store.create_topic("t").topic_id
        assert again != first
    with eventstore.open(path, durability="none") as store:
        assert store.topic("t").topic_id == again
        assert store.log.topic_by_id(again) is not None and store.log.topic_by_id(first) is None


def test_a_topic_written_without_an_id_gets_one_on_open_durably(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with eventstore.open(path, durability="none") as store:
        store.create_topic("old")
        store.append("old", b"v")
    config = path / "topics" / "old" / "topic.json"
    data = json.loads(config.read_text())
    del data["topic_id"]  # as written before topics had ids
    config.write_text(json.dumps(data))
    with eventstore.open(path, durability="none") as reader_view:
        given = reader_view.topic("old").topic_id
        assert given not in (NO_TOPIC_ID, None)
        assert [r.value for r in reader_view.read("old", 0, 0)] == [b"v"]
    assert json.loads(config.read_text())["topic_id"] == str(given)  # written back
    with eventstore.open(path, durability="none") as store:
        assert store.topic("old").topic_id == given
        assert store.log.topic_by_id(given) == store.topic("old")
