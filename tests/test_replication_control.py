"""The replication control plane (docs/replication.md, sections 1, 4.5, 5, 6): the catalog
copied to followers (full and delta), its long poll, the follower's refusals of every
write, Metadata on both nodes, promotion online and offline, the remote client finding
the leader. Loopback only; every server is stopped by the test that started it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from serverkit import RawClient

import eventstore
from eventstore.records import OffsetAndMetadata, TopicPartition
from eventstore.server.entities import entity, item_class
from eventstore.server.replication.catalog import CatalogState, apply_changes, apply_full, diff, snapshot
from eventstore.server.replication.durable import DurableRole, read_role, write_role
from eventstore.wire import extensions as codec
from eventstore.wire.messages import request_type

TIMEOUT_S = 20.0
CATALOG, PROMOTE = 20015, 20016
EMPTY = {"i8": 0, "i16": 0, "i32": 0, "i64": -1, "bool": False, "uuid": bytes(16), "str": "x", "nstr": None,
         "bytes": b""}


def _copy_log(src: eventstore.Store, dst: eventstore.Store) -> None:
    """What the fetcher does, for the partitions the catalog test needs: the batches byte for byte."""
    for cfg in src.log.topics():
        for p in range(cfg.partitions):
            start, end = src.log.offsets(cfg.name, p)
            have = dst.log.offsets(cfg.name, p)[1]
            if have < end:
                data, _ = src.log.read_replica(cfg.name, p, max(have, start), 1 << 20)
                if data:
                    written = dst.log.append_replica(cfg.name, p, data)
                    assert not dst.log.wait_durable_each({TopicPartition(cfg.name, p): written})


def _same(a: CatalogState, b: CatalogState) -> None:
    assert a.topics == b.topics
    assert a.cursors == b.cursors
    assert a.log_starts == b.log_starts
    assert a.producer_id_seq == b.producer_id_seq


def test_the_catalog_is_copied_full_then_by_changes(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "a") as a, eventstore.open(tmp_path / "b") as b:
        a.create_topic("orders", 2, retention_ms=60_000)
        a.create_topic("gone")
        a.create_topic("again")
        b.create_topic("only-here")  # a follower's own topic goes
        b.create_topic("again")  # same name, another id: made again with the leader's
        apply_full(b.log, b.groups, snapshot(a.log, a.groups))
        for i in range(6):
            a.append("orders", b"v%d" % i, partition=0)
        _copy_log(a, b)  # the fetcher's part
        a.groups.commit_offsets("g", None, 0, {TopicPartition("orders", 0): OffsetAndMetadata(3, "m")})
        a.groups.commit_offsets("h", None, 0, {TopicPartition("gone", 0): OffsetAndMetadata(0, "")})
        a.log.allocate_producer_id()
        a.log.allocate_producer_id()
        a.log.delete_records("orders", 0, 1)

        first = snapshot(a.log, a.groups)
        apply_full(b.log, b.groups, CatalogState.decode(first.encode()))
        _same(snapshot(b.log, b.groups), first)
        assert b.log.topic("again").topic_id == a.log.topic("again").topic_id
        assert b.log.find_topic("only-here") is None

        a.alter_topic("orders", partitions=3, retention_ms=120_000)
        a.delete_topic("gone")
        a.delete_topic("again")
        a.create_topic("again", 2)  # a new id
        a.create_topic("new", streams=True)
        a.groups.commit_offsets("g", None, 0, {TopicPartition("orders", 0): OffsetAndMetadata(5, "n"),
                                               TopicPartition("orders", 2): OffsetAndMetadata(0, "")})
        a.log.allocate_producer_id()
        a.log.delete_records("orders", 0, 4)
        second = snapshot(a.log, a.groups)
        changes = diff(first, second)
        kinds = {c[0] for c in changes}
        assert kinds == {"topic", "topic_deleted", "cursor", "cursor_deleted", "log_start", "producer_id_seq"}
        apply_changes(b.log, b.groups, msgspec.msgpack.decode(msgspec.msgpack.encode(changes)))
        _same(snapshot(b.log, b.groups), second)
        assert b.log.topic("again").partitions == 2
        assert b.log.offsets("orders", 0)[0] == 4
        assert b.groups.committed("g", TopicPartition("orders", 0)) == OffsetAndMetadata(5, "n")
        assert b.log.allocate_producer_id() == a.log.allocate_producer_id()
        assert diff(second, second) == []


# --- over the wire ------------------------------------------------------------------------


def _extension(client: RawClient, key: int, fields: dict[str, Any], cid: int = 1) -> dict[str, Any]:
    client.send(codec.encode_request(key, cid, fields, "test"))
    contents = client.response()
    assert contents is not None
    got, response = codec.decode_response(key, contents)
    assert got == cid
    return response


def _catalog_request(node_id: int, instance: bytes, applied: int, wait_ms: int,
                     port: int = 1) -> dict[str, Any]:
    return {"node_id": node_id, "host": "127.0.0.1", "port": port, "leader_epoch": 0,
            "instance": instance, "applied_version": applied, "max_wait_ms": wait_ms}


def test_the_catalog_long_poll_wakes_on_a_change_and_lists_the_follower(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "leader") as store, store.serve("127.0.0.1:0") as handle:
        bootstrap = f"127.0.0.1:{handle.address[1]}"
        store.create_topic("t")
        with RawClient(bootstrap, timeout_s=TIMEOUT_S) as client:
            full = _extension(client, CATALOG, _catalog_request(7, bytes(16), -1, 0, port=7777))
            assert full["error_code"] == 0 and full["full"]
            assert [t["name"] for t in msgspec.msgpack.decode(full["state"])["topics"]] == ["t"]
            assert (7, "127.0.0.1", 7777, True) in full["replicas"]

            answers: list[tuple[float, dict[str, Any]]] = []

            def poll() -> None:
                with RawClient(bootstrap, timeout_s=TIMEOUT_S) as other:
                    began = time.monotonic()
                    answer = _extension(other, CATALOG, _catalog_request(
                        7, full["instance"], full["version"], 10_000, port=7777), cid=2)
                    answers.append((time.monotonic() - began, answer))

            poller = threading.Thread(target=poll)
            poller.start()
            time.sleep(0.3)
            store.create_topic("u", 2)
            poller.join(TIMEOUT_S)
            took, delta = answers[0]
            assert took < 5.0, took  # woken by the change, not by the 10 s timeout
            assert not delta["full"] and delta["version"] == full["version"] + 1
            changes = msgspec.msgpack.decode(delta["state"])
            assert [c[0] for c in changes] == ["topic"] and changes[0][1]["name"] == "u"

            # nothing new: the poll answers after its wait with the same version
            began = time.monotonic()
            idle = _extension(client, CATALOG, _catalog_request(7, delta["instance"], delta["version"], 300))
            assert 0.25 < time.monotonic() - began < 5.0 and idle["version"] == delta["version"]

            metadata = client.call(entity(request_type(3, 12), topics=None, allow_auto_topic_creation=False,
                                          include_topic_authorized_operations=False))
            assert sorted(b.node_id for b in metadata.brokers) == [0, 7]


def _write_requests() -> dict[str, tuple[Any, int]]:
    """One request of each write API, and the error a follower answers it with."""

    def req(key: int, version: int, **fields: Any) -> Any:
        return entity(request_type(key, version), **fields)

    def item(key: int, version: int, *path: str, **fields: Any) -> Any:
        cls = request_type(key, version)
        for name in path:
            cls = item_class(cls, name)
        return entity(cls, **fields)

    produce = req(0, 9, acks=1, timeout=5000, topic_data=(item(0, 9, "topic_data", name="t", partition_data=(
        item(0, 9, "topic_data", "partition_data", index=0, records=None),)),))
    commit = req(8, 8, group_id="g", generation_id_or_member_epoch=-1, member_id="", topics=(
        item(8, 8, "topics", name="t", partitions=(
            item(8, 8, "topics", "partitions", partition_index=0, committed_offset=1,
                 committed_leader_epoch=-1, committed_metadata=""),)),))
    join = req(11, 9, group_id="g", session_timeout=10_000, rebalance_timeout=10_000, member_id="",
               protocol_type="consumer", protocols=())
    return {
        "Produce": (produce, 6),
        "OffsetCommit": (commit, 16),
        "JoinGroup": (join, 16),
        "Heartbeat": (req(12, 4, group_id="g", generation_id=1, member_id="m"), 16),
        "LeaveGroup": (req(13, 5, group_id="g", members=()), 16),
        "SyncGroup": (req(14, 5, group_id="g", generation_id=1, member_id="m", assignments=()), 16),
        "InitProducerId": (req(22, 4, transactional_id="tx", transaction_timeout=60_000, producer_id=-1,
                               producer_epoch=-1), 16),
        "CreateTopics": (req(19, 7, topics=(item(19, 7, "topics", name="x", num_partitions=1,
                                                 replication_factor=1, assignments=(), configs=()),),
                             timeout=5000), 41),
        "DeleteTopics": (req(20, 6, topics=(item(20, 6, "topics", name="t", topic_id=uuid.UUID(int=0)),),
                             timeout=5000), 41),
        "CreatePartitions": (req(37, 3, topics=(item(37, 3, "topics", name="t", count=3, assignments=None),),
                                 timeout=5000), 41),
        "AlterConfigs": (req(33, 2, resources=(item(33, 2, "resources", resource_type=2, resource_name="t",
                                                    configs=()),)), 41),
        "IncrementalAlterConfigs": (req(44, 1, resources=(item(44, 1, "resources", resource_type=2,
                                                               resource_name="t", configs=()),)), 41),
        "DeleteRecords": (req(21, 2, topics=(item(21, 2, "topics", name="t", partitions=(
            item(21, 2, "topics", "partitions", partition_index=0, offset=0),)),), timeout=5000), 41),
        "DeleteGroups": (req(42, 2, groups_names=("g",)), 41),
        "OffsetDelete": (req(47, 0, group_id="g", topics=()), 41),
    }


def _errors_of(response: Any) -> list[int]:
    """Every error code in a response entity, wherever it is."""
    found: list[int] = []

    def walk(value: Any) -> None:
        if isinstance(value, tuple):
            for v in value:
                walk(v)
        elif hasattr(value, "__dataclass_fields__"):
            for name in value.__dataclass_fields__:
                v = getattr(value, name)
                if name == "error_code":
                    found.append(int(v.value) if hasattr(v, "value") else int(v))
                else:
                    walk(v)

    walk(response)
    return found


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():  # bounded by the deadline
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_follower_refuses_every_write_and_names_the_leader(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "leader") as leader, leader.serve("127.0.0.1:0") as lh:
        leader.create_topic("t")
        leader_address = f"127.0.0.1:{lh.address[1]}"
        with eventstore.open(tmp_path / "follower") as follower, \
                follower.serve("127.0.0.1:0", replica_of=leader_address, node_id=1) as fh:
            follower_address = f"127.0.0.1:{fh.address[1]}"
            _wait_for(lambda: follower.log.find_topic("t") is not None, "the catalog on the follower")
            with RawClient(follower_address, timeout_s=TIMEOUT_S) as client:
                for name, (request, code) in _write_requests().items():
                    errors = _errors_of(client.call(request))
                    assert errors and set(errors) == {code}, (name, errors)
                # an idempotent producer's id (no transactional id): the leader's, forwarded
                pid = client.call(entity(request_type(22, 4), transactional_id=None,
                                         transaction_timeout=60_000, producer_id=-1, producer_epoch=-1))
                assert _errors_of(pid) == [0] and pid.producer_id == leader.log.allocate_producer_id() - 1
                for key in (20000, 20004, 20005, 20006, 20011, 20012):
                    fields = {n: EMPTY.get(k, []) for n, k in codec.REQUESTS[key]}
                    assert _extension(client, key, fields)["error_code"] == 6, key
                for version in (0, 4, 9, 12):
                    metadata = client.call(entity(request_type(3, version), topics=None,
                                                  allow_auto_topic_creation=False))
                    assert getattr(metadata, "controller_id", 0) == 0  # v1+
                    assert sorted(b.node_id for b in metadata.brokers) == [0, 1]
                    (topic,) = metadata.topics
                    assert topic.partitions[0].leader_id == 0
                    assert 1 in topic.partitions[0].replica_nodes
                found = client.call(entity(request_type(10, 3), key="g", key_type=0))
                assert (found.node_id, found.port) == (0, lh.address[1])
            with RawClient(leader_address, timeout_s=TIMEOUT_S) as client:
                _wait_for(lambda: 1 in [b.node_id for b in client.call(entity(
                    request_type(3, 12), topics=None, allow_auto_topic_creation=False,
                    include_topic_authorized_operations=False)).brokers],
                    "the follower in the leader's Metadata")
                cluster = client.call(entity(request_type(60, 0),
                                             include_cluster_authorized_operations=False))
                assert sorted(b.broker_id for b in cluster.brokers) == [0, 1]


def _es(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventstore.cli", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S * 3, check=False)


def test_promote_online_makes_the_follower_lead_in_a_new_epoch(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "leader") as leader, leader.serve("127.0.0.1:0") as lh:
        leader.create_topic("t")
        with eventstore.open(tmp_path / "follower") as follower, \
                follower.serve("127.0.0.1:0", replica_of=f"127.0.0.1:{lh.address[1]}", node_id=1) as fh:
            _wait_for(lambda: follower.log.find_topic("t") is not None, "the catalog on the follower")
            serving = (tmp_path / "follower" / "serving").read_text().strip()
            assert serving == f"127.0.0.1:{fh.address[1]}"
            expected = DurableRole("follower", 0, f"127.0.0.1:{lh.address[1]}")
            assert read_role(str(tmp_path / "follower")) == expected
            result = _es("promote", "--data", str(tmp_path / "follower"))
            assert result.returncode == 0, result.stderr
            assert "epoch 1" in result.stdout
            assert "log end 0 (the sum over 1 partition(s)), last written epoch none" in result.stdout
            assert read_role(str(tmp_path / "follower")) == DurableRole("leader", 1, None)
            assert follower.log.leader_epoch == 1
            with RawClient(serving, timeout_s=TIMEOUT_S) as client:
                created = client.call(_write_requests()["CreateTopics"][0])
                assert _errors_of(created) == [0]
                again = _extension(client, PROMOTE, {"epoch": -1})
                assert (again["error_code"], again["epoch"]) == (0, 1)
                metadata = client.call(entity(request_type(3, 9), topics=None,
                                              allow_auto_topic_creation=False))
                assert metadata.controller_id == 1
                assert {p.leader_epoch for t in metadata.topics for p in t.partitions} == {1}
        assert not (tmp_path / "follower" / "serving").exists()


def test_promote_offline_rewrites_the_role_file(tmp_path: Path) -> None:
    data = tmp_path / "store"
    with eventstore.open(data) as store:
        store.create_topic("t")
    write_role(str(data), DurableRole("follower", 3, "127.0.0.1:1"))
    with socket.socket() as dead:  # a server killed before it removed its serving file
        dead.bind(("127.0.0.1", 0))
        (data / "serving").write_text(f"127.0.0.1:{dead.getsockname()[1]}\n")
    with pytest.raises(eventstore.errors.ServerError, match="follower"), eventstore.open(data) as store:
        store.serve("127.0.0.1:0")
    result = _es("promote", "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert json.loads((data / "replication.json").read_text()) == {
        "version": 1, "role": "leader", "epoch": 4, "leader": None}
    with eventstore.open(data) as store, store.serve("127.0.0.1:0") as handle:
        assert store.log.leader_epoch == 4
        with RawClient(f"127.0.0.1:{handle.address[1]}", timeout_s=TIMEOUT_S) as client:
            metadata = client.call(entity(request_type(3, 9), topics=None, allow_auto_topic_creation=False))
            assert {p.leader_epoch for t in metadata.topics for p in t.partitions} == {4}
    missing = _es("promote", "--data", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and missing.stderr.startswith("error:")


def test_the_remote_client_finds_the_leader_from_a_follower_address(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "leader") as leader, leader.serve("127.0.0.1:0") as lh:
        leader.create_topic("t")
        leader_address = f"127.0.0.1:{lh.address[1]}"
        with eventstore.open(tmp_path / "follower") as follower, \
                follower.serve("127.0.0.1:0", replica_of=leader_address, node_id=1) as fh:
            _wait_for(lambda: follower.log.find_topic("t") is not None, "the catalog on the follower")
            with eventstore.connect(f"127.0.0.1:{fh.address[1]},{leader_address}") as remote:
                result = remote.append_to_stream("order-1", eventstore.NewEvent(type="Placed"))
                remote.append_to_stream("order-1", eventstore.NewEvent(type="Paid"),
                                        result.next_expected_version)
                events = leader.read_stream("order-1")
                assert [e.type for e in events] == ["Placed", "Paid"]


def _metadata(client: RawClient) -> Any:
    return client.call(entity(request_type(3, 12), topics=None, allow_auto_topic_creation=False,
                              include_topic_authorized_operations=False))


def test_with_min_insync_replicas_a_commit_is_answered_once_the_followers_applied_it(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "leader") as leader, \
            leader.serve("127.0.0.1:0", min_insync_replicas=2) as lh:
        leader.create_topic("t")
        leader_address = f"127.0.0.1:{lh.address[1]}"
        with eventstore.open(tmp_path / "follower") as follower, \
                follower.serve("127.0.0.1:0", replica_of=leader_address, node_id=1), \
                RawClient(leader_address, timeout_s=TIMEOUT_S) as client:
            _wait_for(lambda: _metadata(client).topics[0].partitions[0].isr_nodes == (0, 1),
                      "the follower in the ISR")
            tp = TopicPartition("t", 0)
            for offset in range(1, 4):  # each answer comes after the follower has the commit
                request = _write_requests()["OffsetCommit"][0]
                request = entity(type(request), group_id="g", generation_id_or_member_epoch=-1, member_id="",
                                 topics=(entity(type(request.topics[0]), name="t", partitions=(
                                     entity(type(request.topics[0].partitions[0]), partition_index=0,
                                            committed_offset=offset, committed_leader_epoch=-1,
                                            committed_metadata=""),)),))
                assert _errors_of(client.call(request)) == [0]
                assert follower.groups.committed("g", tp) == OffsetAndMetadata(offset, "")


def test_a_kafka_producer_given_only_the_follower_writes_to_the_leader(tmp_path: Path) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    with eventstore.open(tmp_path / "leader") as leader, leader.serve("127.0.0.1:0") as lh:
        leader.create_topic("t")
        with eventstore.open(tmp_path / "follower") as follower, \
                follower.serve("127.0.0.1:0", replica_of=f"127.0.0.1:{lh.address[1]}", node_id=1) as fh:
            _wait_for(lambda: follower.log.find_topic("t") is not None, "the catalog on the follower")
            producer = confluent_kafka.Producer({"bootstrap.servers": f"127.0.0.1:{fh.address[1]}",
                                                 "enable.idempotence": True, "acks": "all"})
            delivered: list[Any] = []
            for i in range(5):
                producer.produce("t", b"v%d" % i, partition=0, on_delivery=lambda e, m: delivered.append(e))
            assert producer.flush(TIMEOUT_S) == 0
            assert delivered == [None] * 5
            assert leader.log.offsets("t", 0)[1] == 5
            _wait_for(lambda: follower.log.offsets("t", 0)[1] == 5, "the records on the follower")


def test_the_role_file_is_checked_and_absent_means_leader_of_epoch_0(tmp_path: Path) -> None:
    assert read_role(str(tmp_path)) == DurableRole()
    (tmp_path / "replication.json").write_text('{"version": 1, "role": "boss", "epoch": 1}')
    with pytest.raises(eventstore.errors.CorruptionError, match="replication role"):
        read_role(str(tmp_path))
    (tmp_path / "replication.json").write_text("{")
    with pytest.raises(eventstore.errors.CorruptionError):
        read_role(str(tmp_path))
    write_role(str(tmp_path), DurableRole("follower", 7, "h:1"))
    assert read_role(str(tmp_path)) == DurableRole("follower", 7, "h:1")
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(eventstore.errors.InvalidArgumentError):
        write_role(str(tmp_path), DurableRole("leader", -1, None))
