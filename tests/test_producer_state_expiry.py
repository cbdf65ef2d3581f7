"""Idempotent producers' entries expire (docs/format.md, section 19): an entry whose last
batch's max timestamp is a day or more old is dropped at the next checkpoint and at open."""

from __future__ import annotations

import time
from pathlib import Path

import eventstore
from eventstore.catalog import checkpoints
from eventstore.storage.producers import EXPIRATION_MS, ProducerState
from eventstore.wire import batch as kb

DAY_MS = 24 * 60 * 60 * 1000


def batch(pid: int, sequence: int, timestamp_ms: int) -> bytes:
    return kb.encode_batch([(0, timestamp_ms, None, b"v%d" % sequence, ())],
                           producer_id=pid, producer_epoch=0, base_sequence=sequence)


def test_entries_idle_for_the_expiration_go_and_the_others_stay() -> None:
    state = ProducerState()
    now = 10 * DAY_MS
    state.update(1, 0, 0, 1, 0, now - EXPIRATION_MS)  # exactly the expiration: goes, as in Kafka
    state.update(2, 0, 0, 1, 1, now - EXPIRATION_MS + 1)
    state.update(3, 0, 0, 1, 2, now)
    assert EXPIRATION_MS == DAY_MS  # Kafka's producer.id.expiration.ms default
    assert state.expire(now) == 1
    assert sorted(state.entries) == [2, 3]
    assert state.expire(now + 1) == 1 and sorted(state.entries) == [3]


def test_an_old_producer_is_dropped_at_the_checkpoint_and_after_a_reopen(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    path = tmp_path / "s"
    with eventstore.open(path, durability="none") as store:
        store.create_topic("t", 1)
        store.log.append_kafka("t", 0, batch(1, 0, now - 2 * DAY_MS))
        store.log.append_kafka("t", 0, batch(2, 0, now))
        assert [p[0] for p in store.log.describe_producers("t", 0)] == [1, 2]  # not before a checkpoint
        assert store.log.append_kafka("t", 0, batch(1, 0, now - 2 * DAY_MS)).duplicate
        store.log.flush()
        fields = checkpoints.get(store.log.catalog, "t", 0)
        assert fields is not None and [entry[0] for entry in fields[6]] == [2]
        assert [p[0] for p in store.log.describe_producers("t", 0)] == [2]
        # producer 1 is unknown now (P2): its old batch is written again, at any sequence
        result = store.log.append_kafka("t", 0, batch(1, 0, now - 2 * DAY_MS))
        assert not result.duplicate and result.base_offset == 2
        assert store.log.append_kafka("t", 0, batch(2, 0, now)).duplicate
    with eventstore.open(path) as store:  # rebuilt from the checkpoint and the tail, expired again
        assert [p[0] for p in store.log.describe_producers("t", 0)] == [2]
        assert store.log.append_kafka("t", 0, batch(2, 0, now)).duplicate
