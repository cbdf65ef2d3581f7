"""Failover through etcd end to end (docs/replication.md, section 7): three ``es serve
--coordinator`` processes elect a leader, the followers copy it, the leader is killed
with SIGKILL, another is elected in the next epoch, and a producer with acks=all
resumes on it with nothing acknowledged lost.

etcd and every ``es serve`` are started by the test on loopback ports the OS chose and
stopped by their PIDs.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import etcd3gw
import pytest
from etcdkit import etcd_server
from serverkit import ServeProcess, es_serve

from eventstore.server.replication.coordinator import parse_endpoint

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka_admin = pytest.importorskip("confluent_kafka.admin")

TIMEOUT_S = 30.0
TOPIC = "t"


def _leader(endpoint: str, cluster: str) -> dict[str, Any] | None:
    host, port = parse_endpoint(endpoint)
    found = etcd3gw.client(host=host, port=port, timeout=5).get(f"/eventstore/{cluster}/leader")
    return json.loads(found[0]) if found else None


def _until(condition: Any, timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # bounded by the deadline
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def _produce(bootstrap: str, values: list[bytes]) -> None:
    """acks=all, idempotent: every value acknowledged, or the test fails."""
    failed: list[Any] = []
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                         "acks": "all", "message.timeout.ms": 20_000})
    for value in values:  # bounded by the values
        producer.produce(TOPIC, value=value, partition=0,
                         on_delivery=lambda err, _msg: failed.append(err) if err else None)
    assert producer.flush(TIMEOUT_S) == 0
    assert failed == []


def _read_all(bootstrap: str, expected: int) -> list[bytes]:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "check",
                                         "enable.auto.commit": False})
    consumer.assign([confluent_kafka.TopicPartition(TOPIC, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < expected and time.monotonic() < deadline:  # bounded by the deadline
        for msg in consumer.consume(100, timeout=0.5):
            if msg.error() is None:
                got.append(msg.value())
    consumer.close()
    return got


@pytest.mark.slow
def test_leader_killed_another_is_elected_and_producing_resumes(tmp_path: Path) -> None:
    cluster = "e2e"
    with ExitStack() as stack:
        endpoint = stack.enter_context(etcd_server(tmp_path / "etcd"))
        nodes: dict[int, ServeProcess] = {}
        for node in range(3):
            nodes[node] = stack.enter_context(es_serve(
                tmp_path / f"n{node}", "--replica-id", str(node), "--coordinator", endpoint,
                "--cluster", cluster, "--min-insync-replicas", "2", "--replica-lag-ms", "1500"))
        first = _until(lambda: _leader(endpoint, cluster))
        old = first["node_id"]
        assert first["epoch"] == 1
        leader = nodes[old]
        admin = kafka_admin.AdminClient({"bootstrap.servers": leader.bootstrap})
        admin.create_topics([kafka_admin.NewTopic(TOPIC, 1, 1)])[TOPIC].result(timeout=TIMEOUT_S)
        before = [f"a{i}".encode() for i in range(200)]
        _produce(leader.bootstrap, before)

        killed_at = time.monotonic()
        leader.stop(signal.SIGKILL)
        second = _until(lambda: (found := _leader(endpoint, cluster)) and found["node_id"] != old and found)
        elected_s = time.monotonic() - killed_at
        assert second["epoch"] == 2
        new = nodes[second["node_id"]]
        after = [f"b{i}".encode() for i in range(200)]
        _produce(new.bootstrap, after[:1])
        first_write_s = time.monotonic() - killed_at
        _produce(new.bootstrap, after[1:])
        assert sorted(_read_all(new.bootstrap, 400)) == sorted(before + after), (elected_s, first_write_s)
        print(f"leader killed -> elected {elected_s:.2f} s, first acknowledged write {first_write_s:.2f} s")
        for node, proc in nodes.items():
            if node != old:
                assert proc.stop() == 0, proc.stderr.decode(errors="replace")[-2000:]
