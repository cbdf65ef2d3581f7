"""Clusters of processes (docs/replication.md, sections 3-9): a leader with one or two
followers, each an ``es serve`` process (or an application serving its store
in-process) on its own port and directory; the leader killed with SIGKILL at random
points while clients write, a follower promoted with ``es promote``, the old leader
restarted as a follower of the new one; a loopback proxy that delays, stalls and cuts
the replication connection.

Every test ends with the history checker (tests/clusterkit.py): every acknowledged
write in every replica exactly once at its offset, every replica's log the same, and
no reader (consumer Fetches on the leader and the followers, recorded as they run)
saw a record that the final log does not hold there.

Every process is started by the test and stopped by its PID; every wait is bounded;
addresses are 127.0.0.1 with ports the system picked.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from clusterkit import History, Proxy, ends, log_files, log_of, until
from entry_points import environment, es_command
from serverkit import RawClient, ServeProcess, es_serve

import eventstore
from eventstore.wire.batch import decode_records, encode_batch, parse_header

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka_admin = pytest.importorskip("confluent_kafka.admin")

TIMEOUT_S = 30.0
TOPIC = "t"
PARTITIONS = 2
LAG_MS = 1500
NOT_ENOUGH_REPLICAS = 19
KILLS_KAFKA = {1: 10, 2: 6}
"""SIGKILLs of the leader per cluster size (followers: kills) with a librdkafka producer."""
KILLS_EMBEDDED = 14
"""SIGKILLs of the leading application; 30 kills in all with the above."""
APP = Path(__file__).with_name("replicated_app.py")




def standing(path: Path) -> tuple[int, int]:
    """``(last epoch written, sum of the ends)``: the best placed follower has the largest
    (docs/replication.md, section 6). An old leader back as a follower may hold a longer
    tail of an older epoch until it is truncated: its end alone would pick it wrongly."""
    with eventstore.open_reader(path) as reader:
        epochs = [e for cfg in reader.topics() for p in range(cfg.partitions)
                  for e, _start in reader.epoch_entries(cfg.name, p)]
    return max(epochs, default=-1), sum(ends(path).values())


def same_ends(paths: list[Path]) -> bool:
    first = ends(paths[0])
    return bool(first) and all(ends(p) == first for p in paths[1:])



def isr(bootstrap: str, topic: str = TOPIC, partition: int = 0) -> list[int]:
    """The in-sync replicas that the node's Metadata names for one partition."""
    admin = kafka_admin.AdminClient({"bootstrap.servers": bootstrap})
    return sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].isrs)


def create_topic(bootstrap: str) -> None:
    admin = kafka_admin.AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([kafka_admin.NewTopic(TOPIC, PARTITIONS, 1)], operation_timeout=10)[TOPIC]
    future.result(timeout=TIMEOUT_S)


def promote(data: Path) -> None:
    """``es promote --data DATA`` as a process (online: its server is running)."""
    done = subprocess.run([*es_command(), "promote", "--data", str(data)], capture_output=True,
                          env=environment(data), timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"promoted: node" in done.stdout, done.stdout


# --- readers ------------------------------------------------------------------------------------


def fetch_visible(bootstrap: str, partition: int, offset: int) -> list[tuple[int, bytes]]:
    """One consumer Fetch (v12, not a replica) of ``TOPIC``/``partition`` from ``offset`` on
    this node: what it lets readers see (up to its high watermark)."""
    from kio.schema.fetch.v12 import request as fr
    from kio.schema.types import BrokerId, TopicName
    from kio.static.primitive import i8, i32, i32Timedelta, i64

    part = fr.FetchPartition(partition=i32(partition), current_leader_epoch=i32(-1), fetch_offset=i64(offset),
                             partition_max_bytes=i32(1 << 20))
    request = fr.FetchRequest(
        replica_id=BrokerId(-1), max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=100)),
        min_bytes=i32(1), max_bytes=i32(1 << 20), isolation_level=i8(0), session_id=i32(0),
        session_epoch=i32(-1), topics=(fr.FetchTopic(topic=TopicName(TOPIC), partitions=(part,)),),
        forgotten_topics_data=(), rack_id="")
    with RawClient(bootstrap, timeout_s=5) as raw:
        answer = raw.call(request).responses[0].partitions[0]
    if int(answer.error_code) != 0 or not answer.records:
        return []
    data, position, rows = bytes(answer.records), 0, []
    while position + 61 <= len(data):  # bounded by the bytes
        size = parse_header(data, position).size
        if position + size > len(data):
            break  # a batch cut by the size limit
        rows.extend((row[0], row[3] or b"") for row in decode_records(data, position) if row[0] >= offset)
        position += size
    return rows


class Readers:
    """A thread that keeps reading every node the test lists (``nodes``: name -> bootstrap)
    and records each record it is shown in the history (``History.saw``)."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.nodes: dict[str, str] = {}
        self.reads: dict[str, int] = {}
        """Records read per node name."""
        self._next: dict[tuple[str, str, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readers", daemon=True)

    def __enter__(self) -> Readers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT_S)

    def _run(self) -> None:
        while not self._stop.is_set():  # bounded by the test's exit
            for name, bootstrap in list(self.nodes.items()):
                for partition in range(PARTITIONS):
                    self._read(name, bootstrap, partition)
            self._stop.wait(0.05)

    def _read(self, name: str, bootstrap: str, partition: int) -> None:
        key = (name, bootstrap, partition)
        try:
            rows = fetch_visible(bootstrap, partition, self._next.get(key, 0))
        except (OSError, ConnectionError, AssertionError):
            return  # a node killed or restarting: read it again later
        for offset, value in rows:
            self.history.saw(TOPIC, partition, offset, value)
        if rows:
            self.reads[name] = self.reads.get(name, 0) + len(rows)
            self._next[key] = rows[-1][0] + 1


# --- a cluster of es serve processes ------------------------------------------------------------


class Cluster:
    """``es serve`` nodes 0..n on directories ``tmp_path/nN``: node 0 leads at first; each
    node is started and stopped by the test (PID), all of them on the way out."""

    def __init__(self, tmp_path: Path, stack: ExitStack, size: int, readers: Readers) -> None:
        self.tmp_path = tmp_path
        self.stack = stack
        self.readers = readers
        self.procs: dict[int, ServeProcess] = {}
        self.leader = 0
        self.start(0, None)
        for node in range(1, size):
            self.start(node, self.procs[0].bootstrap)

    def data(self, node: int) -> Path:
        return self.tmp_path / f"n{node}"

    @property
    def bootstrap(self) -> str:
        return self.procs[self.leader].bootstrap

    def start(self, node: int, leader: str | None, *, via: Proxy | None = None) -> ServeProcess:
        args = ["--replica-id", str(node), "--min-insync-replicas", "2", "--replica-lag-ms", str(LAG_MS)]
        if leader is not None:
            args += ["--replica-of", via.address if via is not None else leader]
        proc = self.stack.enter_context(es_serve(self.data(node), *args))
        self.procs[node] = proc
        self.readers.nodes[f"n{node}"] = proc.bootstrap
        return proc

    def kill(self, node: int) -> None:
        self.readers.nodes.pop(f"n{node}", None)
        self.procs[node].stop(signal.SIGKILL)

    def fail_over(self) -> None:
        """Kill the leader; promote the best placed follower (``standing``); the others follow it."""
        old = self.leader
        self.kill(old)
        followers = [n for n in self.procs if n != old]
        new = max(followers, key=lambda n: standing(self.data(n)))
        promote(self.data(new))
        self.leader = new
        for node in followers:
            if node != new:
                self.readers.nodes.pop(f"n{node}", None)
                self.procs[node].stop()
                self.start(node, self.bootstrap)
        self.start(old, self.bootstrap)

    def settle_and_stop(self) -> dict[str, dict[tuple[str, int], list[tuple[int, bytes]]]]:
        """Until every replica's ends equal the leader's; stop all (SIGTERM); every final log."""
        until(lambda: same_ends([self.data(n) for n in sorted(self.procs)]), timeout_s=TIMEOUT_S)
        self.readers.nodes.clear()
        for proc in self.procs.values():
            assert proc.stop() == 0, proc.stderr.decode(errors="replace")[-2000:]
        return {f"n{n}": log_of(self.data(n), [TOPIC]) for n in sorted(self.procs)}


class AckedProducer:
    """librdkafka's idempotent producer with acks=all; each delivery report it gets is
    recorded in the history (``History.ack``) with the offset the leader answered."""

    def __init__(self, bootstrap: str, history: History, tag: str, acks: str = "all") -> None:
        self.history = history
        self.tag = tag
        self.count = 0
        self.acked = 0
        self.failed: list[Any] = []
        self.producer = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": acks == "all", "acks": acks,
            "linger.ms": 2, "message.timeout.ms": 20_000, "retry.backoff.ms": 50})

    def send(self, n: int = 1) -> None:
        for _ in range(n):  # bounded by n
            value = f"{self.tag}-{self.count}".encode()
            self.producer.produce(TOPIC, value=value, partition=self.count % PARTITIONS,
                                  on_delivery=self._report)
            self.count += 1
        self.producer.poll(0)

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(err)
            return
        self.history.ack(msg.topic(), msg.partition(), msg.offset(), msg.value())
        self.acked += 1

    def run_for(self, seconds: float) -> None:
        """Produce about 500 records/s for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # bounded by the deadline
            self.send(5)
            self.producer.poll(0.01)

    def abandon(self) -> None:
        """Drop what is queued or in flight (its outcome is unknown: not acknowledged)."""
        self.producer.purge(in_queue=True, in_flight=True)
        self.producer.flush(2)

    def flush(self) -> None:
        assert self.producer.flush(TIMEOUT_S) == 0
        assert self.failed == []


# --- 1. SIGKILL of the leader, es promote, the old leader rejoins -------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("followers", sorted(KILLS_KAFKA))
def test_leader_killed_during_acks_all_produce_loses_and_duplicates_nothing(
        tmp_path: Path, followers: int) -> None:
    rng = random.Random(followers)
    history = History()
    with Readers(history) as readers, ExitStack() as stack:
        cluster = Cluster(tmp_path, stack, 1 + followers, readers)
        create_topic(cluster.bootstrap)
        for cycle in range(KILLS_KAFKA[followers]):  # bounded by the kills
            producer = AckedProducer(cluster.bootstrap, history, f"c{cycle}")
            until(lambda p=producer: _acked_some(p), timeout_s=TIMEOUT_S, every_s=0)
            producer.run_for(rng.uniform(0.05, 0.6))  # the kill lands at a random point
            cluster.fail_over()
            producer.abandon()
        producer = AckedProducer(cluster.bootstrap, history, "last")
        producer.send(100)
        producer.flush()
        replicas = cluster.settle_and_stop()
    assert history.acked_count > 100 * KILLS_KAFKA[followers]
    assert len(readers.reads) == 1 + followers  # every node read from, leader or follower
    history.check(replicas)


def _acked_some(producer: AckedProducer) -> bool:
    """Send a few and serve reports; True once the leader acknowledged at least one."""
    producer.send(5)
    producer.producer.poll(0.02)
    return producer.acked > 0


class App:
    """``replicated_app.py`` as a process: its acknowledged appends go into the history as
    they are printed; stopped by PID."""

    def __init__(self, data: Path, node: int, history: History, leader: str | None) -> None:
        self.history = history
        self.acked = 0
        command = [sys.executable, str(APP), str(data), str(node), *([leader] if leader else [])]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=environment(data))
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().decode()
        found = re.match(r"listening (\S+)", first)
        assert found, f"the app did not start: {first!r}"
        self.bootstrap = found.group(1)
        self._thread = threading.Thread(target=self._acks, name="app-acks", daemon=True)
        self._thread.start()

    def _acks(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # bounded: ends when the process does
            if not line.endswith(b"\n"):
                break  # cut by a SIGKILL: the append's answer was not complete
            _, topic, partition, offset, value = line.decode().split()
            self.history.ack(topic, int(partition), int(offset), value.encode())
            self.acked += 1

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)
        try:
            self.proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(TIMEOUT_S)
        self._thread.join(TIMEOUT_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.mark.slow
def test_app_killed_during_replicated_appends_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(7)
    history = History()
    data = [tmp_path / "a0", tmp_path / "a1"]
    apps: dict[int, App] = {}
    with Readers(history) as readers:
        try:
            apps[0] = App(data[0], 0, history, None)
            apps[1] = App(data[1], 1, history, apps[0].bootstrap)
            lead = 0
            for _cycle in range(KILLS_EMBEDDED):  # bounded by the kills
                readers.nodes = {f"a{n}": app.bootstrap for n, app in apps.items()}
                before = apps[lead].acked
                until(lambda n=lead, b=before: apps[n].acked > b, timeout_s=TIMEOUT_S)
                time.sleep(rng.uniform(0.0, 0.4))
                apps[lead].stop(signal.SIGKILL)
                other = 1 - lead
                promote(data[other])
                apps[lead] = App(data[lead], lead, history, apps[other].bootstrap)
                lead = other
            before = apps[lead].acked
            until(lambda: apps[lead].acked > before + 50, timeout_s=TIMEOUT_S)
            readers.nodes = {}
        finally:
            for app in apps.values():
                app.stop()
    until(lambda: same_ends(data), timeout_s=5)
    assert history.acked_count > KILLS_EMBEDDED and set(readers.reads) == {"a0", "a1"}
    history.check({"a0": log_of(data[0], ["t"]), "a1": log_of(data[1], ["t"])})


# --- 2. the old leader's unreplicated tail ------------------------------------------------------


def test_old_leader_returns_with_an_unreplicated_tail_and_is_truncated_to_match(tmp_path: Path) -> None:
    history = History()
    with Readers(history) as readers, ExitStack() as stack:
        cluster = Cluster(tmp_path, stack, 1, readers)
        create_topic(cluster.bootstrap)
        proxy = stack.enter_context(Proxy(cluster.bootstrap))
        cluster.start(1, cluster.bootstrap, via=proxy)
        replicated = AckedProducer(cluster.bootstrap, history, "before")
        replicated.send(200)
        replicated.flush()
        proxy.stall()  # the follower hears nothing more
        lost = History()
        tail = AckedProducer(cluster.bootstrap, lost, "tail", acks="1")
        tail.send(50)
        tail.flush()
        assert lost.acked_count == 50  # acknowledged by the leader alone
        readers.nodes.pop("n0")
        cluster.kill(0)
        proxy.cut()  # what the proxy holds never reaches the follower
        assert sum(ends(cluster.data(1)).values()) < sum(ends(cluster.data(0)).values())
        promote(cluster.data(1))
        cluster.leader = 1
        proc = cluster.start(0, cluster.bootstrap)
        until(lambda: isr(cluster.bootstrap) == [0, 1])
        after = AckedProducer(cluster.bootstrap, history, "after")
        after.send(200)
        after.flush()
        replicas = cluster.settle_and_stop()
    assert b"truncated" in proc.stderr
    files = log_files(cluster.data(1))
    assert files and log_files(cluster.data(0)) == files
    history.check(replicas)
    for (topic, partition), acked in lost.acked.items():
        final = dict(replicas["n0"][(topic, partition)])
        assert all(final.get(offset) != value for offset, value in acked.items())


# --- 3. partitions and slowness between leader and follower -------------------------------------


def produce_raw(bootstrap: str) -> int:
    """One Produce v9 with acks -1 and one record to partition 0; its error code."""
    from kio.schema.produce.v9 import request as pr

    batch = encode_batch([(0, int(time.time() * 1000), None, b"raw", ())])
    data = pr.TopicProduceData(name=pr.TopicName(TOPIC),
                               partition_data=(pr.PartitionProduceData(index=pr.i32(0), records=batch),))
    timeout = pr.i32Timedelta.parse(datetime.timedelta(seconds=5))
    request = pr.ProduceRequest(transactional_id=None, acks=pr.i16(-1), timeout=timeout, topic_data=(data,))
    with RawClient(bootstrap) as raw:
        return int(raw.call(request).responses[0].partition_responses[0].error_code)


@pytest.mark.slow
def test_delays_stalls_and_cuts_lose_nothing_and_move_the_in_sync_set(tmp_path: Path) -> None:
    history = History()
    with Readers(history) as readers, ExitStack() as stack:
        cluster = Cluster(tmp_path, stack, 1, readers)
        create_topic(cluster.bootstrap)
        proxy = stack.enter_context(Proxy(cluster.bootstrap))
        cluster.start(1, cluster.bootstrap, via=proxy)
        until(lambda: isr(cluster.bootstrap) == [0, 1])
        producer = AckedProducer(cluster.bootstrap, history, "p")

        proxy.delay_s = 0.02  # slow: acks=all still answered, later
        producer.run_for(1.0)
        producer.flush()
        proxy.delay_s = 0.0
        for _ in range(5):  # cut while writing: the follower reconnects
            producer.run_for(0.2)
            proxy.cut()
        producer.flush()

        proxy.stall()  # deaf: the follower leaves the in-sync set
        until(lambda: isr(cluster.bootstrap) == [0], timeout_s=LAG_MS / 1000 + 10)
        before = ends(cluster.data(0))
        assert produce_raw(cluster.bootstrap) == NOT_ENOUGH_REPLICAS
        assert ends(cluster.data(0)) == before  # refused before writing
        proxy.resume()
        until(lambda: isr(cluster.bootstrap) == [0, 1], timeout_s=TIMEOUT_S)
        assert produce_raw(cluster.bootstrap) == 0

        proxy.refuse = True  # cut off: no new connection either
        proxy.cut()
        until(lambda: isr(cluster.bootstrap) == [0], timeout_s=LAG_MS / 1000 + 10)
        assert produce_raw(cluster.bootstrap) == NOT_ENOUGH_REPLICAS
        proxy.refuse = False
        until(lambda: isr(cluster.bootstrap) == [0, 1], timeout_s=TIMEOUT_S)
        producer.run_for(0.5)
        producer.flush()
        replicas = cluster.settle_and_stop()
    assert readers.reads.get("n0") and readers.reads.get("n1")
    history.check(replicas)
