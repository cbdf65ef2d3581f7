"""The log's replica operations (docs/replication.md, docs/format.md "Truncation and reset"):
leader epochs in batches and in the epoch file, append_replica byte for byte, truncate and
reset_partition, the high-watermark gate, and durability "replicated"."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from siblings import load

import eventstore
from eventstore import Message, TopicPartition
from eventstore.errors import CorruptionError, InvalidArgumentError, NotEnoughReplicasError
from eventstore.storage import format as fmt
from eventstore.wire import batch as kb
from eventstore.wire.errors import CorruptRecordError

TS = time.time_ns() // 1_000_000  # recent: producers idle for days are expired


def kafka_batch(values: list[bytes], *, producer: tuple[int, int, int] | None = None) -> bytes:
    pid, epoch, seq = producer if producer is not None else (-1, -1, -1)
    rows = [(i, TS + i, b"k%d" % i, v, [("h", b"1")]) for i, v in enumerate(values)]
    return kb.encode_batch(rows, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def segment_files(store: eventstore.Store, topic: str, partition: int) -> dict[str, bytes]:
    """The bytes of a partition's segment logs and epoch file, by file name."""
    directory = Path(store.log.partition_path(topic, partition))
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if p.name.endswith(".log") or p.name == "leader-epoch"}


def batch_epochs(store: eventstore.Store, topic: str, partition: int) -> list[tuple[int, int]]:
    """(epoch, base offset) of every stored batch, from the segment files."""
    out = []
    for name, data in segment_files(store, topic, partition).items():
        if not name.endswith(".log"):
            continue
        position = 0
        while position < len(data):
            base, size, _magic = fmt.read_prefix(data, position)
            out.append((fmt.read_epoch(data, position), base))
            position += size
    return out


def copy_partition(leader: eventstore.Store, follower: eventstore.Store, topic: str, partition: int,
                   chunk: int = 700) -> None:
    """Copy what the follower lacks, as a follower's fetches would (small chunks), then
    make it durable."""
    offset = follower.log.log_end(topic, partition)
    while offset < leader.log.log_end(topic, partition):
        data, _next = leader.log.read_replica(topic, partition, offset, chunk)
        offset = follower.log.append_replica(topic, partition, data)
    follower.log.barrier({TopicPartition(topic, partition): offset})


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[eventstore.Store, eventstore.Store]]:
    leader = eventstore.open(tmp_path / "leader")
    follower = eventstore.open(tmp_path / "follower")
    try:
        yield leader, follower
    finally:
        leader.close()
        follower.close()


# --- leader epochs -------------------------------------------------------------------------


def test_a_store_never_promoted_stamps_epoch_0_and_writes_no_epoch_file(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", b"a")
    store.log.append_kafka("t", 0, kafka_batch([b"b", b"c"]))
    assert store.log.leader_epoch == 0
    assert batch_epochs(store, "t", 0) == [(0, 0), (0, 1)]
    assert "leader-epoch" not in segment_files(store, "t", 0)
    assert store.log.last_epoch("t", 0) == 0
    assert store.log.epoch_end_offset("t", 0, 0) == (0, 3)


def test_every_kind_of_append_stamps_the_leader_epoch(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append("t", b"old")
    store.log.set_leader_epoch(3)
    store.append("t", b"a")
    store.append_batch("t", [b"b", b"c"])
    store.log.append_kafka("t", 0, kafka_batch([b"d"]))
    native = fmt.encode_batch(0, [(0, TS, None, b"e", [])], TS, TS)  # written by a client: epoch 0
    store.log.append_encoded("t", 0, native)
    assert batch_epochs(store, "t", 0) == [(0, 0), (3, 1), (3, 2), (3, 4), (3, 5)]
    assert segment_files(store, "t", 0)["leader-epoch"] == b"1\n0 0\n3 1\n"
    assert [r.value for r in store.read("t", 0, 0)] == [b"old", b"a", b"b", b"c", b"d", b"e"]
    assert store.check().ok


def test_the_epoch_at_open_is_the_largest_of_the_partitions(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("a")
        store.create_topic("b")
        store.log.set_leader_epoch(5)
        store.append("a", b"x")
    with eventstore.open(tmp_path / "s") as store:
        assert store.log.leader_epoch == 5
        assert store.log.last_epoch("a", 0) == 5
        assert store.log.last_epoch("b", 0) == -1
        store.append("b", b"y")
        assert batch_epochs(store, "b", 0) == [(5, 0)]
        with pytest.raises(InvalidArgumentError, match="below the current one"):
            store.log.set_leader_epoch(4)
        store.create_topic("c")
        store.append("c", b"z")
        assert batch_epochs(store, "c", 0) == [(5, 0)]


def test_epoch_end_offsets_answer_as_kafka_does(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append_batch("t", [b"a", b"b"])  # epoch 0: 0..1
    store.log.set_leader_epoch(2)
    store.append("t", b"c")  # epoch 2: 2
    store.log.set_leader_epoch(5)
    store.append_batch("t", [b"d", b"e", b"f"])  # epoch 5: 3..5
    table = {0: (0, 2), 1: (0, 2), 2: (2, 3), 3: (2, 3), 4: (2, 3), 5: (5, 6), 9: (5, 6)}
    for asked, answer in table.items():
        assert store.log.epoch_end_offset("t", 0, asked) == answer, asked
    store.create_topic("empty")
    assert store.log.epoch_end_offset("empty", 0, 5) == (-1, -1)


def test_a_new_epoch_with_no_batch_yet_is_noted_only_when_it_writes(store: eventstore.Store) -> None:
    store.create_topic("t", 2)
    store.append("t", b"a", partition=0)
    store.log.set_leader_epoch(1)
    store.append("t", b"b", partition=1)
    assert store.log.last_epoch("t", 0) == 0
    assert store.log.last_epoch("t", 1) == 1


def test_an_unreadable_epoch_file_is_rebuilt_from_the_batches(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t")
        store.append("t", b"a")
        store.log.set_leader_epoch(2)
        store.append_batch("t", [b"b", b"c"])
        store.log.set_leader_epoch(4)
        store.append("t", b"d")
        path = Path(store.log.partition_path("t", 0)) / "leader-epoch"
    path.write_bytes(b"garbage")
    with eventstore.open(tmp_path / "s") as store:
        assert path.read_bytes() == b"1\n0 0\n2 1\n4 3\n"
        assert store.log.epoch_end_offset("t", 0, 3) == (2, 3)


def test_recovery_drops_epoch_entries_past_the_recovered_end(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t")
        store.append_batch("t", [b"a", b"b"])
        store.log.set_leader_epoch(1)
        store.append("t", b"c")
        path = Path(store.log.partition_path("t", 0)) / "leader-epoch"
    path.write_bytes(b"1\n0 0\n1 2\n3 3\n7 9\n")  # 3 at the end is kept (harmless), 7 at 9 goes
    with eventstore.open(tmp_path / "s") as store:
        assert path.read_bytes() == b"1\n0 0\n1 2\n3 3\n"
        assert store.log.leader_epoch == 3


def test_recovery_finds_valid_batches_of_a_later_epoch_after_a_bad_one(tmp_path: Path) -> None:
    """A bad batch followed by valid ones is corruption (R5), not a torn tail to cut, whatever
    the epoch the batches after it carry."""
    cw = load("crash_writer")
    path = tmp_path / "s"
    with eventstore.open(path, durability="none") as store:
        store.create_topic("t")
        store.log.set_leader_epoch(3)
        for i in range(20):
            store.append("t", b"%d" % i * 50, timestamp_ms=TS + i)
        log = Path(store.log.partition_path("t", 0)) / "00000000000000000000.log"
    spans = cw.batch_layout(log.read_bytes())
    position = spans[-6].position
    next_offset = spans[-6].base_offset
    cw.write_checkpoint(path, "t", 0, [0, position, next_offset, TS + next_offset - 1, 0, 0])
    data = bytearray(log.read_bytes())
    data[spans[-4].end - 3] ^= 0x01  # its checksum; the three batches after it are valid
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="valid data follows"):
        eventstore.open(path)
    assert log.read_bytes() == bytes(data)


# --- append_replica ----------------------------------------------------------------------------


def fill_leader(leader: eventstore.Store) -> None:
    """A mixed log: native and Kafka batches, idempotent ones, a LogAppendTime topic, rolls,
    two epochs, two partitions."""
    leader.create_topic("mixed", 2, segment_bytes=1500)
    leader.create_topic("appendtime", 1, segment_bytes=1200, timestamp_type="LogAppendTime")
    for i in range(12):
        for p in (0, 1):
            leader.append("mixed", b"v%d" % i * 20, partition=p, key=b"k", headers=[("h", b"x")])
            leader.log.append_kafka("mixed", p, kafka_batch([b"a%d" % i, b"b%d" % i],
                                                            producer=(7 + p, 0, 2 * i)))
        leader.append_batch("appendtime", [b"t%d" % i, b"u%d" % i])
        leader.log.append_kafka("appendtime", 0, kafka_batch([b"k%d" % i]))
        if i == 6:
            leader.log.set_leader_epoch(3)


def test_append_replica_copies_a_log_byte_for_byte(
        pair: tuple[eventstore.Store, eventstore.Store]) -> None:
    leader, follower = pair
    fill_leader(leader)
    for cfg in leader.topics():
        assert follower.log.adopt_topic(cfg) == cfg
    for cfg in leader.topics():
        for p in range(cfg.partitions):
            copy_partition(leader, follower, cfg.name, p)
            assert segment_files(follower, cfg.name, p) == segment_files(leader, cfg.name, p)
            assert len([n for n in segment_files(leader, cfg.name, p) if n.endswith(".log")]) >= 2
            assert follower.read(cfg.name, p, 0, max_records=1000) == \
                leader.read(cfg.name, p, 0, max_records=1000)
            for epoch in (0, 3):
                assert follower.log.epoch_end_offset(cfg.name, p, epoch) == \
                    leader.log.epoch_end_offset(cfg.name, p, epoch)
    assert follower.check().ok
    # the copy's producer state answers a retried batch as the leader's does
    retried = kafka_batch([b"a11", b"b11"], producer=(7, 0, 22))
    on_leader = leader.log.append_kafka("mixed", 0, bytearray(retried))
    on_follower = follower.log.append_kafka("mixed", 0, bytearray(retried))
    assert on_leader.duplicate and on_follower.duplicate
    assert on_leader.base_offset == on_follower.base_offset


def test_a_copy_survives_a_reopen_and_keeps_following(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "l") as leader:
        fill_leader(leader)
        with eventstore.open(tmp_path / "f") as follower:
            for cfg in leader.topics():
                follower.log.adopt_topic(cfg)
            copy_partition(leader, follower, "mixed", 0, chunk=300)
        leader.log.set_leader_epoch(4)
        leader.append("mixed", b"more", partition=0)
        with eventstore.open(tmp_path / "f") as follower:
            assert follower.log.leader_epoch == 3
            copy_partition(leader, follower, "mixed", 0)
            assert segment_files(follower, "mixed", 0) == segment_files(leader, "mixed", 0)
            assert follower.log.last_epoch("mixed", 0) == 4


def refused(follower: eventstore.Store, data: bytes, error: type[Exception], match: str) -> None:
    before = segment_files(follower, "t", 0)
    end = follower.log.log_end("t", 0)
    with pytest.raises(error, match=match):
        follower.log.append_replica("t", 0, data)
    assert segment_files(follower, "t", 0) == before
    assert follower.log.log_end("t", 0) == end


def test_append_replica_refuses_with_nothing_written(
        pair: tuple[eventstore.Store, eventstore.Store]) -> None:
    leader, follower = pair
    leader.create_topic("t")
    leader.append_batch("t", [b"a", b"b"])
    leader.log.set_leader_epoch(2)
    leader.append("t", b"c")
    leader.log.append_kafka("t", 0, kafka_batch([b"d", b"e"]))
    follower.log.adopt_topic(leader.topic("t"))
    data, _ = leader.log.read_replica("t", 0, 0, 10_000)
    first = fmt.read_prefix(data, 0)[1]
    second = first + fmt.read_prefix(data, first)[1]
    refused(follower, data[first:], InvalidArgumentError, "starts at offset 2, but the partition ends at 0")
    follower.log.append_replica("t", 0, data[:first])
    refused(follower, data[:first], InvalidArgumentError, "starts at offset 0, but the partition ends at 2")
    refused(follower, data[first:second] + data[second + 1:], CorruptRecordError, "replica batch")
    bad = bytearray(data[first:])
    bad[30] ^= 1  # inside the native batch's checksummed bytes
    refused(follower, bytes(bad), CorruptRecordError, "checksum")
    bad = bytearray(data[second:])
    bad[-1] ^= 1  # inside the Kafka batch's CRC-covered bytes
    refused(follower, data[first:second] + bytes(bad), CorruptRecordError, "CRC")
    gap = data[first:second] + data[second:]  # both fine, then a batch that skips offsets
    refused(follower, gap + data[first:second], InvalidArgumentError, "not contiguous")
    follower.log.append_replica("t", 0, gap)
    assert segment_files(follower, "t", 0) == segment_files(leader, "t", 0)


def test_append_replica_refuses_an_epoch_going_back(
        pair: tuple[eventstore.Store, eventstore.Store]) -> None:
    leader, follower = pair
    leader.create_topic("t")
    follower.log.adopt_topic(leader.topic("t"))
    leader.log.set_leader_epoch(5)
    leader.append("t", b"a")
    data, _ = leader.log.read_replica("t", 0, 0, 10_000)
    follower.log.append_replica("t", 0, data)
    stale = fmt.encode_batch(1, [(1, TS, None, b"b", [])], TS, TS, epoch=4)
    refused(follower, stale, InvalidArgumentError, "epoch 4 after epoch 5")
    mixed = fmt.encode_batch(1, [(1, TS, None, b"b", [])], TS, TS, epoch=6) + \
        fmt.encode_batch(2, [(2, TS, None, b"c", [])], TS, TS, epoch=5)
    refused(follower, mixed, InvalidArgumentError, "epoch 5 after one of 6")


def test_adopt_topic_makes_exactly_the_given_topic(
        pair: tuple[eventstore.Store, eventstore.Store]) -> None:
    leader, follower = pair
    cfg = leader.create_topic("t", 3, retention_ms=60_000, streams=True)
    assert follower.log.adopt_topic(cfg) == cfg
    assert follower.topic("t") == cfg
    assert follower.log.adopt_topic(cfg) == cfg  # the same again: as it is
    other = leader.create_topic("u")
    with pytest.raises(eventstore.TopicExistsError):
        follower.log.adopt_topic(other.__class__(**{**_fields(other), "name": "t"}))


def _fields(cfg: eventstore.TopicConfig) -> dict[str, object]:
    return {f: getattr(cfg, f) for f in cfg.__struct_fields__}


# --- truncate and reset ------------------------------------------------------------------------


def test_truncate_rounds_down_to_a_batch_and_cuts_everything_after(store: eventstore.Store) -> None:
    store.create_topic("t", segment_bytes=1024)
    for i in range(10):
        store.append_batch("t", [b"%d-%d" % (i, j) * 40 for j in range(3)])  # offsets 3i..3i+2
        if i == 3:
            store.log.set_leader_epoch(2)  # from offset 12
    assert store.log.truncate("t", 0, 17) == 15
    assert store.offsets("t", 0) == (0, 15)
    assert store.log.log_end("t", 0) == 15
    assert store.log.epoch_end_offset("t", 0, 2) == (2, 15)
    assert store.log.truncate("t", 0, 99) == 15  # at or past the end: nothing to do
    assert store.log.truncate("t", 0, 15) == 15
    assert store.log.truncate("t", 0, 12) == 12
    assert store.log.last_epoch("t", 0) == 0
    assert store.log.truncate("t", 0, 0) == 0
    assert store.offsets("t", 0) == (0, 0)
    assert store.log.last_epoch("t", 0) == -1
    assert store.check().ok


def test_truncate_below_the_log_start_is_refused(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append_batch("t", [b"a", b"b", b"c"])
    store.log.delete_records("t", 0, 2)
    with pytest.raises(InvalidArgumentError, match="below the log start 2"):
        store.log.truncate("t", 0, 1)


def test_truncate_rebuilds_producer_state(store: eventstore.Store) -> None:
    store.create_topic("t")
    first = store.log.append_kafka("t", 0, kafka_batch([b"a"], producer=(9, 0, 0)))
    store.log.append_kafka("t", 0, kafka_batch([b"b"], producer=(9, 0, 1)))
    store.log.truncate("t", 0, 1)
    again = store.log.append_kafka("t", 0, kafka_batch([b"b"], producer=(9, 0, 1)))
    assert not again.duplicate and again.base_offset == 1  # the cut batch is not remembered
    assert store.log.append_kafka("t", 0, kafka_batch([b"a"], producer=(9, 0, 0))).duplicate
    assert first.base_offset == 0


def test_truncations_during_group_commits_leave_a_consistent_end(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t", segment_bytes=1024)
        stop = threading.Event()
        errors: list[BaseException] = []

        def append() -> None:
            try:
                while not stop.is_set():
                    store.append("t", b"x" * 100)
            except BaseException as e:  # reported below
                errors.append(e)

        appenders = [threading.Thread(target=append) for _ in range(3)]
        for thread in appenders:
            thread.start()
        try:
            for _ in range(30):
                time.sleep(0.005)
                end = store.log.log_end("t", 0)
                store.log.truncate("t", 0, max(0, end - 3))
        finally:
            stop.set()
            for thread in appenders:
                thread.join(10)
        assert not errors
        plog = store.log.partition("t", 0)
        plog.wait_durable(plog.end_written)
        end = plog.end_written
        assert store.offsets("t", 0) == (0, end) and store.log.log_end("t", 0) == end
        assert [r.offset for r in store.read("t", 0, 0, max_records=100_000)] == list(range(end))
        assert store.check().ok
    with eventstore.open(tmp_path / "s") as store:
        assert store.offsets("t", 0) == (0, end)
        assert store.check().ok


def test_reset_partition_restarts_it_empty_at_an_offset(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s") as store:
        store.create_topic("t", segment_bytes=1024)
        store.log.set_leader_epoch(1)
        for i in range(20):
            store.append("t", b"%d" % i * 100)
        store.log.reset_partition("t", 0, 500)
        assert store.offsets("t", 0) == (500, 500)
        assert store.log.last_epoch("t", 0) == -1
        assert [n for n in segment_files(store, "t", 0) if n.endswith(".log")] == [
            "00000000000000000500.log"]
        assert store.append("t", b"next").offset == 500
    with eventstore.open(tmp_path / "s") as store:
        assert store.offsets("t", 0) == (500, 501)
        assert store.log.epoch_end_offset("t", 0, 1) == (1, 501)
        assert store.check().ok


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.tuples(st.integers(1, 4), st.booleans(), st.booleans()), min_size=1, max_size=25),
       cut=st.floats(0, 1), more=st.integers(0, 4), data=st.data())
def test_truncate_anywhere_then_append_and_reopen(tmp_path_factory: pytest.TempPathFactory,
                                                  batches: list[tuple[int, bool, bool]], cut: float,
                                                  more: int, data: st.DataObject) -> None:
    path = tmp_path_factory.mktemp("s")
    epoch = 0
    expected: list[bytes] = []
    with eventstore.open(path) as store:
        store.create_topic("t", segment_bytes=data.draw(st.sampled_from([1024, 2048, 100_000])))
        for count, kafka, promote in batches:
            if promote:
                epoch += 1
                store.log.set_leader_epoch(epoch)
            values = [b"%d" % len(expected) + b"." * 150 for _ in range(count)]
            if kafka:
                store.log.append_kafka("t", 0, kafka_batch(values))
            else:
                store.append_batch("t", values)
            expected += values
        offset = int(cut * len(expected))
        end = store.log.truncate("t", 0, offset)
        assert end <= offset and end in boundaries(store)
        entries = [(e, s) for e, s in store.log.partition("t", 0).epochs.entries]
        assert all(s < end for _, s in entries)
        for i in range(more):
            store.append("t", b"more%d" % i)
        expected = expected[:end] + [b"more%d" % i for i in range(more)]
        assert [r.value for r in store.read("t", 0, 0, max_records=1000)] == expected
    with eventstore.open(path) as store:
        assert store.offsets("t", 0) == (0, len(expected))
        assert [r.value for r in store.read("t", 0, 0, max_records=1000)] == expected
        for offset in range(len(expected)):  # indexes lead every read to its record
            assert store.read("t", 0, offset, max_records=1)[0].offset == offset
        assert store.log.partition("t", 0).epochs.entries == epoch_entries(batch_epochs(store, "t", 0))
        assert store.check().ok


def boundaries(store: eventstore.Store) -> set[int]:
    bases = [base for _epoch, base in batch_epochs(store, "t", 0)]
    return {*bases, store.log.log_end("t", 0)}


def epoch_entries(batches: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for epoch, base in batches:
        if not out or epoch > out[-1][0]:
            out.append((epoch, base))
    return out


# --- the high-watermark gate -------------------------------------------------------------------


def test_readers_never_see_above_the_high_watermark(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.append_batch("t", [b"a", b"b"])
    store.log.enable_high_watermark()
    assert store.offsets("t", 0) == (0, 2)  # nothing visible is hidden
    store.append_batch("t", [b"c", b"d"])
    store.append("t", b"e")
    assert store.offsets("t", 0) == (0, 2)
    assert store.log.log_end("t", 0) == 5
    assert [r.value for r in store.read("t", 0, 0)] == [b"a", b"b"]
    assert store.log.read_batches("t", 0, 0, 10_000)[1] == 2
    assert store.log.read_replica("t", 0, 0, 10_000)[1] == 5
    store.log.set_high_watermark("t", 0, 3)  # inside the batch c, d: rounded down to its start
    assert store.offsets("t", 0) == (0, 2)
    store.log.set_high_watermark("t", 0, 4)
    assert [r.value for r in store.read("t", 0, 0)] == [b"a", b"b", b"c", b"d"]
    store.log.set_high_watermark("t", 0, 1)  # never back
    assert store.offsets("t", 0) == (0, 4)
    store.log.set_high_watermark("t", 0, 100)  # above the durable end: the durable end
    assert store.offsets("t", 0) == (0, 5)
    store.append("t", b"f")
    assert store.offsets("t", 0) == (0, 6)  # the watermark already covers it
    assert store.check().ok


def test_the_gate_maps_a_watermark_across_segments(store: eventstore.Store) -> None:
    store.create_topic("t", segment_bytes=1024)
    store.log.enable_high_watermark()
    for i in range(30):
        store.append("t", b"%02d" % i * 60)
    assert store.offsets("t", 0) == (0, 0)
    for hw in (1, 7, 8, 19, 29, 30):
        store.log.set_high_watermark("t", 0, hw)
        assert [r.offset for r in store.read("t", 0, 0, max_records=100)] == list(range(hw))
        assert store.offset_for_time("t", 0, 0) == 0


def test_watchers_wake_when_the_watermark_moves(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.log.enable_high_watermark()
    visible: list[int] = []
    ends: list[int] = []
    watch = store.log.watch([TopicPartition("t", 0)], lambda: visible.append(1))
    end_watch = store.log.watch_log_end([TopicPartition("t", 0)], lambda: ends.append(1))
    store.append("t", b"a")
    assert ends and not visible
    woke = threading.Event()
    waiter = threading.Thread(target=lambda: store.wait_for("t", 0, 0, 5) and woke.set())
    waiter.start()
    assert not woke.wait(0.1)
    store.log.set_high_watermark("t", 0, 1)
    waiter.join(5)
    assert woke.is_set() and visible
    watch.cancel()
    end_watch.cancel()
    assert store.log.partition("t", 0).listener_count() == 0


def test_a_waiting_consumer_sees_records_only_once_the_watermark_covers_them(
        store: eventstore.Store) -> None:
    store.create_topic("t")
    store.log.enable_high_watermark()
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([TopicPartition("t", 0)])
    store.append_batch("t", [b"a", b"b"])
    assert consumer.poll(timeout_ms=50) == {}
    timer = threading.Timer(0.2, store.log.set_high_watermark, ("t", 0, 2))
    timer.start()
    started = time.monotonic()
    got = consumer.poll(timeout_ms=5000)
    timer.join()
    assert [r.value for r in got[TopicPartition("t", 0)]] == [b"a", b"b"]
    assert 0.1 < time.monotonic() - started < 4  # woken by the watermark, not the timeout
    consumer.close()


def test_read_all_stops_at_the_watermark(store: eventstore.Store) -> None:
    store.append_to_stream("order-1", [eventstore.NewEvent(type="Made", data=b"{}")])
    store.log.enable_high_watermark()
    store.append_to_stream("order-2", [eventstore.NewEvent(type="Made", data=b"{}")])
    assert [e.stream_id for e in store.read_all()] == ["order-1"]
    for topic in store.topics():
        for p in range(topic.partitions):
            store.log.set_high_watermark(topic.name, p, store.log.log_end(topic.name, p))
    assert [e.stream_id for e in store.read_all()] == ["order-1", "order-2"]


def test_truncate_lowers_the_visible_end_and_the_watermark(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.log.enable_high_watermark()
    store.append_batch("t", [b"a", b"b", b"c"])
    store.append("t", b"d")
    store.log.set_high_watermark("t", 0, 4)
    store.log.truncate("t", 0, 3)
    assert store.offsets("t", 0) == (0, 3)
    store.append("t", b"e")
    assert store.offsets("t", 0) == (0, 3)  # the watermark came down to 3
    store.log.set_high_watermark("t", 0, 4)
    assert [r.value for r in store.read("t", 0, 0)] == [b"a", b"b", b"c", b"e"]


# --- durability "replicated" -------------------------------------------------------------------


class FakeWaiter:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.checked: list[list[TopicPartition]] = []
        self.waited: list[dict[TopicPartition, int]] = []

    def check(self, partitions: Iterable[TopicPartition]) -> None:
        self.checked.append(list(partitions))
        if self.refuse:
            raise NotEnoughReplicasError("1 in sync, 2 needed")

    def wait(self, ends: Mapping[TopicPartition, int]) -> None:
        self.waited.append(dict(ends))


def test_replicated_durability_without_followers_refuses_before_writing(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s", durability="replicated") as store:
        store.create_topic("t")
        with pytest.raises(NotEnoughReplicasError, match="served with followers"):
            store.append("t", b"a")
        with pytest.raises(NotEnoughReplicasError):
            store.append_batch("t", [b"a", b"b"])
        with pytest.raises(NotEnoughReplicasError):
            store.log.append_kafka("t", 0, kafka_batch([b"x"]))
        store.log.set_replication(FakeWaiter(refuse=True))
        with pytest.raises(NotEnoughReplicasError, match="2 needed"):
            store.append("t", b"a")
        assert store.offsets("t", 0) == (0, 0)
        assert segment_files(store, "t", 0)["00000000000000000000.log"] == b""


def test_replicated_durability_waits_with_the_right_ends(tmp_path: Path) -> None:
    with eventstore.open(tmp_path / "s", durability="replicated") as store:
        store.create_topic("t", 2)
        waiter = FakeWaiter()
        store.log.set_replication(waiter)
        store.append("t", b"a", partition=1)
        store.append_batch("t", [Message(value=b"b", partition=0), Message(value=b"c", partition=1)])
        store.log.append_kafka("t", 0, kafka_batch([b"x", b"y"]))
        tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
        assert waiter.checked == [[tp1], [tp0, tp1], [tp0]]
        assert waiter.waited == [{tp1: 1}, {tp0: 1, tp1: 2}, {tp0: 3}]
        assert store.log.partition("t", 0).is_durable(3)
