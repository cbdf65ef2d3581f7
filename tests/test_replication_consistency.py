"""What readers may see around failovers (docs/replication.md, sections 3, 4 and 8): never a
record that a later truncation removes.

* the leader's high watermark moves only while the in-sync set has at least
  ``min_insync_replicas`` members: a record only the leader holds stays hidden;
* a node that starts as a follower (an old leader coming back) shows nothing of its
  own log until its leader's high watermark covers it, and a truncation never shows
  what the watermark hid;
* a node told to follow another leader refuses local writes at once.

Everything runs in this process; the follower's leader address is a closed port on
127.0.0.1, so the follower never reaches it; every server is closed by its handle.
"""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import pytest

import eventstore
from eventstore.records import TopicPartition

pytest.importorskip("kio")

from eventstore.server.replication.leader import Leader  # needs the server extra (kio)
from eventstore.server.replication.state import NodeAddress, Replication

TP = TopicPartition("t", 0)
KEY = ("t", 0)


def _leave_isr(rep: Replication, follower: int) -> None:
    """The follower's last catch-up is forever ago: it is out of the in-sync set."""
    rep.followers[follower].caught_up_ms[KEY] = -math.inf


@pytest.mark.parametrize("min_insync", [1, 2])
def test_the_high_watermark_moves_only_while_enough_replicas_are_in_sync(
        tmp_path: Path, min_insync: int) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t")
        store.log.enable_high_watermark()
        rep = Replication(node_id=0, enabled=True, min_insync_replicas=min_insync, replica_lag_ms=60_000)
        leader = Leader(store.log, rep)
        store.append_batch("t", [b"a", b"b"])
        leader.update([TP])
        alone = 2 if min_insync == 1 else 0  # the leader alone: visible only when it is enough
        assert leader.in_sync(TP) == [0]
        assert leader.high_watermark(TP) == alone and store.offsets("t", 0) == (0, alone)
        leader.fetched(1, {TP: 2})  # a follower holds both
        assert leader.in_sync(TP) == [0, 1]
        assert leader.high_watermark(TP) == 2 and store.offsets("t", 0) == (0, 2)
        store.append("t", b"c")
        _leave_isr(rep, 1)
        leader.update([TP])
        assert leader.in_sync(TP) == [0]
        expected = 3 if min_insync == 1 else 2  # c is on the leader only
        assert leader.high_watermark(TP) == expected and store.offsets("t", 0) == (0, expected)
        leader.fetched(1, {TP: 3})  # back in sync with c
        assert leader.high_watermark(TP) == 3 and store.offsets("t", 0) == (0, 3)


def test_a_gate_from_the_start_hides_the_log_until_the_watermark_covers_it(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t")
        store.append_batch("t", [b"a", b"b"])
        store.append_batch("t", [b"c", b"d"])
        store.log.delete_records("t", 0, 1)  # a log start inside the first batch
        store.log.enable_high_watermark(from_start=True)
        assert store.offsets("t", 0) == (1, 2)  # the rest of the batch holding it: it was visible
        store.log.set_high_watermark("t", 0, 3)  # inside c, d: not yet
        assert [r.value for r in store.read("t", 0, 1)] == [b"b"]
        store.log.set_high_watermark("t", 0, 4)
        assert [r.value for r in store.read("t", 0, 1)] == [b"b", b"c", b"d"]


def test_a_truncation_never_shows_what_the_watermark_hid(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t")
        store.log.enable_high_watermark()
        for pair in ([b"a", b"b"], [b"c", b"d"], [b"e", b"f"]):
            store.append_batch("t", pair)
        store.log.set_high_watermark("t", 0, 2)
        store.log.truncate("t", 0, 4)  # cuts e, f; c, d stay unconfirmed
        assert store.offsets("t", 0) == (0, 2)
        store.log.set_high_watermark("t", 0, 4)
        assert [r.value for r in store.read("t", 0, 0)] == [b"a", b"b", b"c", b"d"]
        store.log.truncate("t", 0, 0)
        assert store.offsets("t", 0) == (0, 0)


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def test_a_restarted_follower_shows_nothing_before_its_leader_says(tmp_path: Path) -> None:
    """An old leader restarted as a follower may hold a tail the new leader lacks: its
    readers see none of its log until the leader's high watermark covers it."""
    path = tmp_path / "s"
    with eventstore.open(path) as store:
        store.create_topic("t")
        store.append_batch("t", [b"a", b"b", b"c"])
    leader = f"127.0.0.1:{_closed_port()}"
    with eventstore.open(path) as store, store.serve("127.0.0.1:0", node_id=1, replica_of=leader):
        deadline = time.monotonic() + 10
        while store.log.writable and time.monotonic() < deadline:  # bounded: the server's start
            time.sleep(0.01)
        assert not store.log.writable  # serving as a follower now
        assert store.offsets("t", 0) == (0, 0)
        assert store.read("t", 0, 0) == []
        assert store.log.log_end("t", 0) == 3  # kept, only hidden


def test_following_another_leader_refuses_local_writes_at_once() -> None:
    rep = Replication(node_id=0, enabled=True)
    seen: list[bool] = []
    rep.on_change.append(lambda: seen.append(rep.accepts_writes))
    rep.follow(NodeAddress(1, "127.0.0.1", 1), 3)
    assert seen == [False] and rep.epoch == 3 and rep.role == "follower"

