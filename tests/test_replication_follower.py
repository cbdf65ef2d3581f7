"""A follower served in-process (``store.serve(replica_of=...)``, docs/replication.md section 4):
what its application may do with the store, and what its readers see.

* its readers see the leader's high watermark as soon as it covers what is durable here,
  not after the durability barrier of the bytes that came with it;
* a replica long poll answers as soon as another follower moves the high watermark;
* every local write is refused with ``NotLeaderError`` (while the leader's catalog and
  records still arrive), until the node is promoted;
* it answers with the leader's cluster id, kept in its ``cluster.id``;
* the DCB tag index follows the replica appends, as the stream index does;
* a catalog write made while the leader takes its first catalog snapshot is not lost.

Both nodes run in this process on 127.0.0.1 with ports the system picked; every wait
is bounded and every server is closed by its handle.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clusterkit import until
from serverkit import RawClient
from typer.testing import CliRunner

import eventstore
from eventstore import Query, QueryItem, TaggedEvent
from eventstore.cli.app import app
from eventstore.errors import NotLeaderError
from eventstore.records import TopicPartition
from eventstore.server.cluster import read_cluster_id

kio_fetch = pytest.importorskip("kio.schema.fetch.v12.request")

TIMEOUT_S = 30.0



@contextmanager
def pair(tmp_path: Path, *, leader_options: Mapping[str, Any] | None = None,
         before_follow: Callable[[eventstore.Store], object] | None = None,
         ) -> Iterator[tuple[eventstore.Store, str, eventstore.Store, str]]:
    """A leader and an in-process follower of it (node 1), both fsync: (leader store, its
    address, follower store, its address). ``before_follow`` gets the follower's store
    before its server starts."""
    with eventstore.open(tmp_path / "leader") as leader, \
            leader.serve("127.0.0.1:0", **(leader_options or {})) as lh:
        leader_address = f"127.0.0.1:{lh.address[1]}"
        with eventstore.open(tmp_path / "follower") as follower:
            if before_follow is not None:
                before_follow(follower)
            with follower.serve("127.0.0.1:0", replica_of=leader_address, node_id=1) as fh:
                yield leader, leader_address, follower, f"127.0.0.1:{fh.address[1]}"


class HeldBarriers:
    """Wraps a log's ``wait_durable_each``: every call with partitions to wait for is noted
    and held until the test releases it (bounded by a timeout)."""

    def __init__(self, store: eventstore.Store) -> None:
        self._original = store.log.wait_durable_each
        self.calls: list[tuple[dict[TopicPartition, int], threading.Event]] = []
        self._lock = threading.Lock()
        self.holding = True
        store.log.wait_durable_each = self  # type: ignore[method-assign]

    def __call__(self, ends: Mapping[TopicPartition, int]) -> Any:
        if ends and self.holding:
            release = threading.Event()
            with self._lock:
                self.calls.append((dict(ends), release))
            release.wait(TIMEOUT_S)
        return self._original(ends)

    def release_all(self) -> None:
        self.holding = False
        with self._lock:
            for _ends, release in self.calls:  # bounded by the calls made
                release.set()


def test_follower_readers_see_the_high_watermark_before_the_barrier_of_newer_bytes(tmp_path: Path) -> None:
    barriers: list[HeldBarriers] = []
    with pair(tmp_path, leader_options={"min_insync_replicas": 1},
              before_follow=lambda f: barriers.append(HeldBarriers(f))) as (leader, _la, follower, _fa):
        held = barriers[0]
        try:
            leader.create_topic("t")
            until(lambda: follower.log.find_topic("t") is not None, "the topic on the follower")
            leader.append("t", b"first")
            until(lambda: any(e.get(TopicPartition("t", 0)) == 1 for e, _r in held.calls),
                  "the follower's barrier of the first record")
            leader.append("t", b"second")  # durable on the leader before the follower fetches again
            held.calls[0][1].set()  # the first record durable here: the next fetch says so
            until(lambda: len(held.calls) >= 2, "the follower's barrier of the second record")
            assert held.calls[1][0] == {TopicPartition("t", 0): 2}
            # the answer that brought the second record carried the high watermark 1: readers see
            # the first record while the second one's barrier is still held
            assert follower.offsets("t", 0) == (0, 1)
            assert [r.value for r in follower.read("t", 0, 0)] == [b"first"]
        finally:
            held.release_all()
        until(lambda: follower.offsets("t", 0) == (0, 2), "the second record visible on the follower")


def _replica_fetch(node_id: int, offset: int, max_wait_ms: int) -> Any:
    f = kio_fetch
    part = f.FetchPartition(partition=f.i32(0), current_leader_epoch=f.i32(0), fetch_offset=f.i64(offset),
                            partition_max_bytes=f.i32(1 << 20))
    return f.FetchRequest(
        replica_id=f.BrokerId(node_id),
        max_wait=f.i32Timedelta.parse(datetime.timedelta(milliseconds=max_wait_ms)),
        min_bytes=f.i32(1), max_bytes=f.i32(1 << 20), isolation_level=f.i8(0), session_id=f.i32(0),
        session_epoch=f.i32(-1), topics=(f.FetchTopic(topic=f.TopicName("t"), partitions=(part,)),),
        forgotten_topics_data=(), rack_id="")


def test_a_replica_long_poll_answers_when_another_follower_moves_the_high_watermark(tmp_path: Path) -> None:
    # no --min-insync-replicas: the leader's readers are not gated, so nothing in its log moves
    # when the high watermark does; the waiting follower must still hear of it at once
    with eventstore.open(tmp_path / "leader") as store, store.serve("127.0.0.1:0") as handle:
        address = f"127.0.0.1:{handle.address[1]}"
        store.create_topic("t")
        store.append("t", b"a")
        with RawClient(address, timeout_s=TIMEOUT_S) as one, RawClient(address, timeout_s=TIMEOUT_S) as two:
            for client, node in ((one, 1), (two, 2)):  # both copy the record, then both are caught up
                client.call(_replica_fetch(node, 0, 0))
                client.call(_replica_fetch(node, 1, 0))
            store.append("t", b"b")
            for client, node in ((one, 1), (two, 2)):  # each copies the new record: HW is still 1
                answer = client.call(_replica_fetch(node, 1, 0))
                assert answer.responses[0].partitions[0].high_watermark == 1
            answered: list[tuple[int, float]] = []

            def long_poll() -> None:
                answer = one.call(_replica_fetch(1, 2, 10_000))
                answered.append((int(answer.responses[0].partitions[0].high_watermark), time.monotonic()))

            waiter = threading.Thread(target=long_poll, daemon=True)
            waiter.start()
            time.sleep(0.3)  # follower 1 waits in its long poll (it has everything)
            assert not answered
            moved = time.monotonic()
            assert two.call(_replica_fetch(2, 2, 0)).responses[0].partitions[0].high_watermark == 2
            waiter.join(TIMEOUT_S)
            assert answered and answered[0][0] == 2
            assert answered[0][1] - moved < 2.0  # not after its 10 s wait


def test_a_follower_store_refuses_every_local_write_until_promoted(tmp_path: Path) -> None:
    with pair(tmp_path) as (leader, _la, follower, _fa):
        leader.create_topic("t")
        leader.create_topic("s", streams=True)
        leader.append("t", b"a")
        until(lambda: None not in (follower.log.find_topic("s"), follower.log.find_topic("t"))
              and follower.offsets("t", 0)[1] == 1,
              "the catalog and the record on the follower")
        attempts: dict[str, Callable[[], object]] = {
            "append": lambda: follower.append("t", b"x"),
            "append_batch": lambda: follower.append_batch("t", [b"x", b"y"]),
            "append_kafka": lambda: follower.log.append_kafka("t", 0, b"\0" * 61),
            "append_encoded": lambda: follower.log.append_encoded("t", 0, b"\0" * 61),
            "append_to_stream": lambda: follower.append_to_stream(
                "order-1", [eventstore.NewEvent(type="Placed", data=b"{}")], topic="s"),
            "append_events": lambda: follower.append_events(TaggedEvent("Placed", b"", ["order:1"])),
            "create_topic": lambda: follower.create_topic("u"),
            "alter_topic": lambda: follower.log.alter_topic("t", retention_ms=60_000),
            "delete_topic": lambda: follower.log.delete_topic("t"),
            "delete_records": lambda: follower.log.delete_records("t", 0, 1),
        }
        for name, attempt in attempts.items():  # bounded by the write paths
            with pytest.raises(NotLeaderError, match="follower"):
                attempt()
            assert follower.offsets("t", 0) == (0, 1), name
            assert {cfg.name for cfg in follower.topics()} == {"t", "s"}, name
        assert not writable(follower)
        # what the leader does still arrives: a new topic, an alteration, records, a log start
        leader.create_topic("v", 2)
        leader.log.alter_topic("t", retention_ms=120_000)
        leader.append("t", b"b")
        leader.log.delete_records("t", 0, 1)
        until(lambda: follower.log.find_topic("v") is not None
              and follower.log.topic("t").retention_ms == 120_000
              and follower.offsets("t", 0) == (1, 2), "the leader's changes on the follower")
        promote(tmp_path / "follower")
        assert writable(follower)
        assert follower.append("t", b"mine").offset == 2


def writable(store: eventstore.Store) -> bool:
    return store.log.writable


def promote(data: Path) -> None:
    """``es promote --data DATA``: online when a server holds it, else offline."""
    result = subprocess.run([sys.executable, "-m", "eventstore.cli", "promote", "--data", str(data)],
                            capture_output=True, text=True, timeout=TIMEOUT_S * 3, check=False)
    assert result.returncode == 0, result.stderr


def _cluster_id(address: str) -> str:
    from kio.schema.metadata.v12 import request as metadata

    with RawClient(address, timeout_s=TIMEOUT_S) as client:
        answer = client.call(metadata.MetadataRequest(topics=(), allow_auto_topic_creation=False,
                                                      include_topic_authorized_operations=False))
    return str(answer.cluster_id)


def test_a_follower_answers_with_its_leaders_cluster_id_and_keeps_it(tmp_path: Path) -> None:
    with pair(tmp_path) as (leader, leader_address, _follower, follower_address):
        leader.create_topic("t")
        leader_id = _cluster_id(leader_address)
        until(lambda: _cluster_id(follower_address) == leader_id, "the leader's cluster id on the follower")
        assert read_cluster_id(str(tmp_path / "follower")) == leader_id
    promote(tmp_path / "follower")
    with eventstore.open(tmp_path / "follower") as promoted, promoted.serve("127.0.0.1:0") as handle:
        assert _cluster_id(f"127.0.0.1:{handle.address[1]}") == leader_id


def test_the_dcb_tag_index_follows_the_replica_appends(tmp_path: Path) -> None:
    query = Query([QueryItem(tags=["order:1"])])
    with pair(tmp_path) as (leader, _la, follower, _fa):
        assert follower.read_events(query).events == []  # its tag index exists before the events come
        for i in range(5):  # bounded: five appends
            leader.append_events([TaggedEvent("Placed", b"%d" % i, ["order:1"]),
                                  TaggedEvent("Placed", b"x%d" % i, ["order:2"])])
        want = leader.read_events(query).events
        assert len(want) == 5
        until(lambda: follower.read_events(query).events == want, "the tagged events on the follower")
        assert follower.read_events().events == leader.read_events().events
    with eventstore.open(tmp_path / "follower") as reopened:
        assert reopened.read_events(query).events == want


def test_serve_help_names_the_replicated_durability() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], prog_name="es", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stdout
    line = next(line for line in result.stdout.splitlines() if "--durability" in line)
    assert "fsync|interval|none|replicated" in line


def test_a_catalog_write_during_the_trackers_first_snapshot_reaches_the_followers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    from eventstore.server.replication import catalog

    taken = catalog.snapshot

    def snapshot_then_write(store_log: Any, groups: Any) -> Any:
        state = taken(store_log, groups)
        store_log.create_topic("late")  # before the tracker's write hook exists
        return state

    with eventstore.open(tmp_path / "leader") as store:
        async def first_versions() -> Any:
            monkeypatch.setattr(catalog, "snapshot", snapshot_then_write)
            tracker = await catalog.tracker_of({}, store.log, store.groups)
            monkeypatch.setattr(catalog, "snapshot", taken)
            await tracker.wait_newer(tracker.instance, 0, 0, lambda: False)
            tracker.close()
            return tracker

        tracker = anyio.run(first_versions)
        assert "late" in tracker.state.topics
        assert tracker.version == 1
