"""Replication's data path (docs/replication.md, sections 2-4): replica Fetch, the follower's
copy byte for byte, the high watermark gate, acks=all, OffsetForLeaderEpoch, truncation of a
divergent tail, embedded "replicated" appends.

Leaders run in-process (``Store.serve``) where the test appends embedded or needs the
store's calls; followers run as ``es serve --replica-of`` processes, stopped by PID.
Every wait is bounded; every address is 127.0.0.1 with a port the system picked.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clusterkit import ends, log_files, until
from serverkit import RawClient, es_serve

import eventstore
from eventstore.errors import NotEnoughReplicasError, StreamNotFoundError
from eventstore.wire.batch import encode_batch

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka_admin = pytest.importorskip("confluent_kafka.admin")

TIMEOUT_S = 30.0





def produce(bootstrap: str, topic: str, count: int, *, partitions: int = 2, acks: str = "all") -> None:
    """``count`` keyed records through librdkafka's idempotent producer; every one acknowledged."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": acks == "all",
                                         "acks": acks, "linger.ms": 5, "message.timeout.ms": 20_000})
    failures: list[Any] = []
    for i in range(count):  # bounded by count
        producer.produce(topic, value=b"v%d" % i, key=b"k%d" % i, partition=i % partitions,
                         on_delivery=lambda err, _msg: failures.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(TIMEOUT_S) == 0
    assert failures == []


@contextmanager
def leader(tmp_path: Path, **serve: Any) -> Iterator[tuple[eventstore.Store, str]]:
    store = eventstore.open(tmp_path / "leader", durability=serve.pop("durability", "fsync"))
    try:
        handle = store.serve("127.0.0.1:0", **serve)
        try:
            yield store, f"127.0.0.1:{handle.address[1]}"
        finally:
            handle.close()
    finally:
        store.close()


def follower(tmp_path: Path, bootstrap: str, *args: str) -> Any:
    return es_serve(tmp_path / "follower", "--replica-of", bootstrap, "--replica-id", "1", *args)


def caught_up(tmp_path: Path, store: eventstore.Store) -> bool:
    want = {(cfg.name, p): store.offsets(cfg.name, p)[1]
            for cfg in store.topics() for p in range(cfg.partitions)}
    return (tmp_path / "follower" / "topics").exists() and ends(tmp_path / "follower") == want


def isr(bootstrap: str, topic: str = "t", partition: int = 0) -> list[int]:
    """The in-sync replicas Metadata names for one partition."""
    admin = kafka_admin.AdminClient({"bootstrap.servers": bootstrap})
    return list(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].isrs)


def test_follower_copies_both_batch_kinds_byte_for_byte_from_fresh_and_after_restart(tmp_path: Path) -> None:
    with leader(tmp_path, min_insync_replicas=1) as (store, bootstrap):
        store.create_topic("t", 2)
        produce(bootstrap, "t", 200)
        for i in range(50):  # native batches, embedded
            store.append_batch("t", [b"e%d" % i, b"f%d" % i], partition=i % 2)
        with follower(tmp_path, bootstrap) as f:
            until(lambda: caught_up(tmp_path, store))
            store.append("t", b"tail", partition=0)  # tailing: a new record arrives quickly
            started = time.monotonic()
            until(lambda: caught_up(tmp_path, store), timeout_s=5.0, every_s=0.005)
            assert time.monotonic() - started < 2.0
            end = store.log.log_end("t", 0)  # and the follower's readers see it soon after,
            until(lambda: watermarks(f.bootstrap)[1] == end, timeout_s=5.0, every_s=0.005)
            assert time.monotonic() - started < 0.45  # not after the next long poll's 500 ms
            f.stop()
        produce(bootstrap, "t", 100)  # behind: written while the follower is down
        with follower(tmp_path, bootstrap) as f:
            until(lambda: caught_up(tmp_path, store))
            f.stop()
        leader_files = log_files(tmp_path / "leader")
    assert leader_files and log_files(tmp_path / "follower") == leader_files


def test_acks_all_waits_for_the_follower_and_fails_when_it_is_gone(tmp_path: Path) -> None:
    with leader(tmp_path, min_insync_replicas=2, replica_lag_ms=1000) as (store, bootstrap):
        store.create_topic("t", 1)
        with RawClient(bootstrap) as raw:
            assert produce_raw(raw, "t") == 19  # no follower in sync: NOT_ENOUGH_REPLICAS, nothing written
            assert store.offsets("t", 0) == (0, 0)
            with follower(tmp_path, bootstrap) as f:
                until(lambda: produce_raw(raw, "t") == 0, timeout_s=TIMEOUT_S, every_s=0.2)
                written = store.log.log_end("t", 0)
                # the follower had the record before the answer came
                assert ends(tmp_path / "follower")[("t", 0)] >= written - 1
                f.stop()
            time.sleep(1.5)  # past replica_lag_ms: the follower leaves the in-sync set
            before = store.log.log_end("t", 0)
            assert produce_raw(raw, "t") == 19
            assert store.log.log_end("t", 0) == before


def test_acks_all_to_a_topic_made_after_the_follower_joined_is_accepted_at_once(tmp_path: Path) -> None:
    """A new partition starts with the live followers in its ISR (section 3): the first acks=all
    write is taken, not refused with NOT_ENOUGH_REPLICAS until the follower fetched it, and the
    follower (with no topic until then) fetches it promptly."""
    with leader(tmp_path, min_insync_replicas=2) as (store, bootstrap), \
            follower(tmp_path, bootstrap) as f, RawClient(bootstrap) as raw:
        admin = kafka_admin.AdminClient({"bootstrap.servers": bootstrap})
        until(lambda: len(admin.list_topics(timeout=10).brokers) == 2)  # the follower is known
        store.create_topic("t", 1)
        started = time.monotonic()
        assert produce_raw(raw, "t") == 0
        assert time.monotonic() - started < 2.0  # not after the follower's idle polls
        assert ends(tmp_path / "follower")[("t", 0)] == 1  # it had the record before the answer
        f.stop()


def test_acks_all_answers_error_20_when_the_follower_drops_out_during_the_wait(tmp_path: Path) -> None:
    with leader(tmp_path, min_insync_replicas=2, replica_lag_ms=1000) as (store, bootstrap):
        store.create_topic("t", 1)
        with follower(tmp_path, bootstrap) as f, RawClient(bootstrap) as raw:
            until(lambda: isr(bootstrap) == [0, 1])
            os.kill(f.proc.pid, signal.SIGSTOP)  # in sync for one more second, then out
            try:
                started = time.monotonic()
                assert produce_raw(raw, "t") == 20  # written, not known replicated
                assert 0.5 < time.monotonic() - started < 4.0  # answered when it left, not at the timeout
                assert store.log.log_end("t", 0) == 1
            finally:
                os.kill(f.proc.pid, signal.SIGCONT)


def produce_raw(raw: RawClient, topic: str) -> int:
    """One Produce v9 with acks -1 and one record; the partition's error code."""
    from kio.schema.produce.v9 import request as pr

    batch = encode_batch([(0, int(time.time() * 1000), None, b"x", ())])
    data = pr.TopicProduceData(name=pr.TopicName(topic),
                               partition_data=(pr.PartitionProduceData(index=pr.i32(0), records=batch),))
    timeout = pr.i32Timedelta.parse(datetime.timedelta(seconds=5))
    request = pr.ProduceRequest(transactional_id=None, acks=pr.i16(-1), timeout=timeout, topic_data=(data,))
    response = raw.call(request)
    return int(response.responses[0].partition_responses[0].error_code)


def test_readers_on_the_leader_stop_at_the_high_watermark_while_a_follower_lags(tmp_path: Path) -> None:
    with leader(tmp_path, min_insync_replicas=1, replica_lag_ms=60_000) as (store, bootstrap):
        store.create_topic("t", 1)
        store.append("t", b"a", partition=0)
        with follower(tmp_path, bootstrap) as f:
            until(lambda: caught_up(tmp_path, store) and isr(bootstrap) == [0, 1])
            os.kill(f.proc.pid, signal.SIGSTOP)  # in sync, but paused
            try:
                store.append("t", b"b", partition=0)
                assert store.log.log_end("t", 0) == 2
                time.sleep(0.5)
                assert store.offsets("t", 0) == (0, 1)  # not above the HW
                assert [r.value for r in store.read("t", 0, 0)] == [b"a"]
            finally:
                os.kill(f.proc.pid, signal.SIGCONT)
            until(lambda: store.offsets("t", 0) == (0, 2))


def test_offset_for_leader_epoch_answers_from_the_epoch_files(tmp_path: Path) -> None:
    from kio.schema.offset_for_leader_epoch.v4 import request as er

    with leader(tmp_path) as (store, bootstrap):
        store.create_topic("t", 1)
        store.append_batch("t", [b"a", b"b"], partition=0)
        store.log.set_leader_epoch(3)
        store.append("t", b"c", partition=0)

        def ask(topic: str, epoch: int, current: int = -1) -> tuple[int, int, int]:
            part = er.OffsetForLeaderPartition(partition=er.i32(0), current_leader_epoch=er.i32(current),
                                               leader_epoch=er.i32(epoch))
            request = er.OffsetForLeaderEpochRequest(replica_id=er.BrokerId(1), topics=(
                er.OffsetForLeaderTopic(topic=er.TopicName(topic), partitions=(part,)),))
            with RawClient(bootstrap) as raw:
                p = raw.call(request).topics[0].partitions[0]
            return int(p.error_code), int(p.leader_epoch), int(p.end_offset)

        assert ask("t", 0) == (0, 0, 2)
        assert ask("t", 2) == (0, 0, 2)
        assert ask("t", 3) == (0, 3, 3)
        assert ask("nope", 0)[0] == 3


def test_a_divergent_follower_tail_is_truncated_to_the_new_leaders_epoch(tmp_path: Path) -> None:
    with leader(tmp_path) as (store, bootstrap):
        store.create_topic("t", 1)
        store.append_batch("t", [b"a", b"b"], partition=0)
        with follower(tmp_path, bootstrap) as f:
            until(lambda: caught_up(tmp_path, store))
            f.stop()
        store.log.set_leader_epoch(1)  # the leader moves on in a new epoch...
        store.append("t", b"new", partition=0)
        with eventstore.open(tmp_path / "follower") as old:  # ...while the other wrote a tail in epoch 0
            old.append_batch("t", [b"lost1", b"lost2", b"lost3"], partition=0)
        with follower(tmp_path, bootstrap) as f:
            until(lambda: caught_up(tmp_path, store))
            f.stop()
            assert b"truncated" in f.stderr
        leader_files = log_files(tmp_path / "leader")
    assert log_files(tmp_path / "follower") == leader_files
    with eventstore.open_reader(tmp_path / "follower") as reader:
        assert [r.value for r in reader.read("t", 0, 0)] == [b"a", b"b", b"new"]


def test_embedded_replicated_appends_wait_for_the_follower(tmp_path: Path) -> None:
    options = {"durability": "replicated", "min_insync_replicas": 2, "replica_lag_ms": 1000}
    with leader(tmp_path, **options) as (store, bootstrap):
        store.create_topic("t", 1)
        with pytest.raises(NotEnoughReplicasError):
            store.append("t", b"alone", partition=0)
        assert store.log.log_end("t", 0) == 0
        with follower(tmp_path, bootstrap) as f:
            until(lambda: _appended(store))
            end = store.log.log_end("t", 0)
            assert ends(tmp_path / "follower")[("t", 0)] == end
            f.stop()
        time.sleep(1.5)
        with pytest.raises(NotEnoughReplicasError):
            store.append("t", b"after", partition=0)


def _appended(store: eventstore.Store) -> bool:
    try:
        store.append("t", b"replicated", partition=0)
    except NotEnoughReplicasError:
        time.sleep(0.1)
        return False
    return True


def test_a_follower_restarts_a_partition_whose_missing_records_the_leader_deleted(tmp_path: Path) -> None:
    with leader(tmp_path) as (store, bootstrap):
        store.create_topic("t", 1)
        store.append_batch("t", [b"a", b"b"], partition=0)
        with follower(tmp_path, bootstrap) as f:
            until(lambda: caught_up(tmp_path, store))
            store.append_batch("t", [b"c", b"d"], partition=0)
            store.log.delete_records("t", 0, 1)  # below the follower's end: its log start follows
            until(lambda: watermarks(f.bootstrap) == (1, 4))
            f.stop()
        store.append_batch("t", [b"e", b"f", b"g"], partition=0)
        store.log.delete_records("t", 0, 6)  # past the follower's end (4): what it lacked is gone
        store.append("t", b"h", partition=0)
        with follower(tmp_path, bootstrap) as f:
            until(lambda: watermarks(f.bootstrap) == (6, 8))
            f.stop()
    with eventstore.open_reader(tmp_path / "follower") as reader:
        assert [r.value for r in reader.read("t", 0, 6)] == [b"g", b"h"]


def watermarks(bootstrap: str) -> tuple[int, int]:
    """The log start and the end a server itself answers for t/0 (ListOffsets v1, sent to it)."""
    from kio.schema.list_offsets.v1 import request as lo

    def offset(timestamp: int) -> int:
        part = lo.ListOffsetsPartition(partition_index=lo.i32(0), timestamp=lo.i64(timestamp))
        request = lo.ListOffsetsRequest(replica_id=lo.BrokerId(-1), topics=(
            lo.ListOffsetsTopic(name=lo.TopicName("t"), partitions=(part,)),))
        with RawClient(bootstrap) as raw:
            return int(raw.call(request).topics[0].partitions[0].offset)

    return offset(-2), offset(-1)


def test_streams_appended_on_the_leader_are_read_by_stream_on_the_follower(tmp_path: Path) -> None:
    with leader(tmp_path) as (store, bootstrap):
        placed, paid = eventstore.NewEvent(type="Placed"), eventstore.NewEvent(type="Paid")
        store.append_to_stream("order-1", [placed, paid])
        copy = eventstore.open(tmp_path / "follower")
        try:
            with copy.serve("127.0.0.1:0", replica_of=bootstrap, node_id=1):
                until(lambda: len(stream_events(copy, "order-1")) == 2)
                store.append_to_stream("order-1", eventstore.NewEvent(type="Shipped"), expected_version=1)
                until(lambda: len(stream_events(copy, "order-1")) == 3)  # tailing: the index follows
                assert [e.type for e in copy.read_all()] == ["Placed", "Paid", "Shipped"]
                assert copy.stream_version("order-1") == 2
        finally:
            copy.close()


def stream_events(store: eventstore.Store, stream_id: str) -> list[Any]:
    try:
        return store.read_stream(stream_id)
    except StreamNotFoundError:
        return []


def test_serve_options_are_checked() -> None:
    from eventstore.errors import InvalidArgumentError
    from eventstore.server.config import server_config

    assert server_config("127.0.0.1:0", replica_of="127.0.0.1:1,127.0.0.1:2").replica_of == (
        "127.0.0.1:1", "127.0.0.1:2")
    for bad in ({"replica_of": "nohost"}, {"replica_of": "127.0.0.1:0"}, {"min_insync_replicas": 0},
                {"replica_lag_ms": 0}):
        with pytest.raises(InvalidArgumentError):
            server_config("127.0.0.1:0", **bad)
