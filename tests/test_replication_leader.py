"""The leader's bookkeeping (docs/replication.md, section 3) without a network: the in-sync
set of a new partition, positions that belong to another incarnation of a topic, and
positions past the log end. ``Leader`` runs on a real store; followers are what their
fetches report (``Leader.fetched``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventstore
from eventstore.records import TopicConfig, TopicPartition
from eventstore.server.replication.leader import Leader
from eventstore.server.replication.state import FollowerInfo, Replication, now_ms

LAG_MS = 10_000
"""Long enough that nothing leaves the ISR by time in a test that does not wait for it."""
SHORT_LAG_MS = 300
T0 = TopicPartition("t", 0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[eventstore.Store]:
    with eventstore.open(tmp_path / "s", durability="none") as s:
        yield s


def leader_with_one_live_follower(store: eventstore.Store,
                                  lag_ms: int = LAG_MS) -> tuple[Leader, Replication]:
    rep = Replication(node_id=0, min_insync_replicas=2, replica_lag_ms=lag_ms, enabled=True)
    rep.followers[1] = FollowerInfo(address=None, last_seen_ms=now_ms())
    store.log.enable_high_watermark()  # as a server that replicates does: readers stop at the HW
    return Leader(store.log, rep), rep


def test_a_new_topic_starts_with_the_live_followers_in_sync_and_the_hw_still_waits_for_them(
        store: eventstore.Store) -> None:
    leader, _rep = leader_with_one_live_follower(store)
    store.create_topic("t", 1)
    assert leader.isr_size(T0) == 2 and leader.enough_replicas(T0)  # acks=all may start at once
    store.append("t", b"x", partition=0)
    leader.update([T0])
    assert leader.high_watermark(T0) == 0  # the follower has not fetched it: position 0
    leader.fetched(1, {T0: 1})
    assert leader.high_watermark(T0) == 1


def test_an_old_topic_does_not_count_a_follower_that_never_fetched_it(store: eventstore.Store) -> None:
    leader, _rep = leader_with_one_live_follower(store)
    hour_ago = int(time.time() * 1000) - 3_600_000
    store.log.adopt_topic(TopicConfig(name="old", partitions=1, created_ms=hour_ago, topic_id=uuid.uuid4()))
    assert leader.isr_size(TopicPartition("old", 0)) == 1
    assert not leader.enough_replicas(TopicPartition("old", 0))


def test_the_grace_of_a_new_partition_ends_after_the_lag(store: eventstore.Store) -> None:
    store.create_topic("other", 1)
    store.create_topic("t", 1)
    leader, _rep = leader_with_one_live_follower(store, SHORT_LAG_MS)
    leader.fetched(1, {TopicPartition("other", 0): 0})
    time.sleep(SHORT_LAG_MS / 1000 + 0.1)
    leader.fetched(1, {TopicPartition("other", 0): 0})  # alive, fetching another topic only
    assert leader.isr_size(TopicPartition("other", 0)) == 2
    assert leader.isr_size(T0) == 1  # never fetched "t": out once its grace is over


def test_positions_in_a_deleted_topic_do_not_count_in_the_one_made_again(store: eventstore.Store) -> None:
    leader, _rep = leader_with_one_live_follower(store)
    store.create_topic("t", 1)
    store.append_batch("t", [b"a", b"b", b"c"], partition=0)
    leader.fetched(1, {T0: 3})
    assert leader.high_watermark(T0) == 3
    store.delete_topic("t")
    store.create_topic("t", 1)
    store.append_batch("t", [b"new-1", b"new-2"], partition=0)
    leader.update([T0])
    assert leader.high_watermark(T0) == 0  # not min(2, 3): the follower holds none of the new topic
    leader.fetched(1, {T0: 2})
    assert leader.high_watermark(T0) == 2


def test_a_fetch_past_the_log_end_is_not_a_position(store: eventstore.Store) -> None:
    leader, rep = leader_with_one_live_follower(store)
    store.create_topic("t", 1)
    store.append("t", b"x", partition=0)
    leader.fetched(1, {T0: 5})  # answered OFFSET_OUT_OF_RANGE: the follower must truncate first
    assert ("t", 0) not in rep.followers[1].positions
    assert leader.high_watermark(T0) == 0
