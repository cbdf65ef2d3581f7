"""Consumer groups of unmodified Kafka clients against the store's server, in the store's one
coordinator and cursors: kafka-python, aiokafka and confluent-kafka (librdkafka).

Records are appended through the embedded store (the server serves them to the
clients); what the clients commit is read back through the store
(``group_offsets``, ``lag``, ``describe_group``, ``reset_group_offsets``), after a
restart of the server too. Every server is in-process on 127.0.0.1:0 and closed
by its test; the one member killed on purpose is a child process killed by its PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KTP
from kafka.structs import OffsetAndMetadata as KOffset

import eventstore
from eventstore import TopicPartition

TP = TopicPartition
DEADLINE_S = 20.0
# metadata_max_age_ms: kafka-python may join before its first Metadata answer and assign
# nothing; it rejoins only when it refreshes its metadata (every 5 min by default)
#: How long one poll of a kafka-python consumer waits: long, so that a rebalance is mostly
#: answered during a poll rather than in between (see poll_all)
POLL_MS = 500
FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 200, "max_poll_interval_ms": 20000,
        "metadata_max_age_ms": 1000}


@contextmanager
def serving(store: eventstore.Store, **options: Any) -> Iterator[str]:
    """The store served on a free loopback port; the bootstrap address; closed on the way out."""
    handle = store.serve("127.0.0.1:0", **options)
    try:
        yield f"127.0.0.1:{handle.address[1]}"
    finally:
        handle.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[eventstore.Store]:
    s = eventstore.open(tmp_path / "store")
    try:
        yield s
    finally:
        s.close()


def until(what: str, done: Callable[[], bool], step: Callable[[], object] = lambda: time.sleep(0.05),
          timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():  # bounded by the deadline
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        step()


def kp_consumer(bootstrap: str, name: str, **config: Any) -> KafkaConsumer:
    options: dict[str, Any] = {"bootstrap_servers": bootstrap, "group_id": "g", "client_id": name,
                               "enable_auto_commit": False, "auto_offset_reset": "earliest", **FAST}
    options.update(config)
    return KafkaConsumer("t", **options)


def poll_all(consumers: list[KafkaConsumer], got: dict[int, list[tuple[int, int]]]) -> None:
    """One poll of every consumer at once, each on a thread of its own (as members run in an
    application); records as ``got[consumer index] += (partition, offset)``.

    At once, because kafka-python (3.0) rejoins only inside ``poll()``: polled one after
    the other, a member waits in its poll for members that are not polling, its poll
    returns first, and the group answers in between; kafka-python then drops that answer
    and joins again, and a leader that joins again starts another rebalance."""
    with ThreadPoolExecutor(len(consumers)) as pool:
        polled = list(pool.map(lambda c: c.poll(timeout_ms=POLL_MS), consumers))
    for i, batch in enumerate(polled):
        for records in batch.values():
            got.setdefault(i, []).extend((r.partition, r.offset) for r in records)


def balanced(consumers: list[KafkaConsumer], partitions: int) -> bool:
    sets = [c.assignment() for c in consumers]
    return all(sets) and sum(len(s) for s in sets) == partitions and len(set().union(*sets)) == partitions


def commit(c: KafkaConsumer, offsets: dict[KTP, KOffset] | None = None) -> None:
    """kafka-python's commit, again after a poll while the group rebalances: a leader may
    rejoin on its own right after a generation completes, and a commit in the middle of it is
    refused (REBALANCE_IN_PROGRESS, or a generation that moved on), as against Kafka."""
    from kafka.errors import CommitFailedError, RebalanceInProgressError

    def attempt() -> bool:
        try:
            c.commit(offsets) if offsets is not None else c.commit()
        except (CommitFailedError, RebalanceInProgressError):
            c.poll(timeout_ms=POLL_MS)
            return False
        return True

    until("a commit", attempt, lambda: None)


def fill(store: eventstore.Store, per_partition: int, partitions: int, start: int = 0) -> None:
    for p in range(partitions):
        for i in range(per_partition):
            store.append("t", f"{p}-{start + i}".encode(), partition=p)


# --- kafka-python -------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [2, 3])
def test_kafka_python_members_split_commit_and_resume_after_a_restart(tmp_path: Path, members: int) -> None:
    path = tmp_path / "store"
    store = eventstore.open(path)
    store.create_topic("t", partitions=6)
    try:
        with serving(store) as bootstrap:
            consumers = [kp_consumer(bootstrap, f"c{i}") for i in range(members)]
            got: dict[int, list[tuple[int, int]]] = {}
            until("a balanced assignment", lambda: balanced(consumers, 6), lambda: poll_all(consumers, got))
            owned = {i: {tp.partition for tp in c.assignment()} for i, c in enumerate(consumers)}
            assert all(len(o) == 6 // members for o in owned.values())
            desc = store.describe_group("g")
            assert desc.state == "Stable" and len(desc.members) == members
            assert {m.client_id for m in desc.members} == {f"c{i}" for i in range(members)}
            assert all(m.kind == "kafka" and m.topics == ["t"] for m in desc.members)
            fill(store, 5, 6)
            until("30 records", lambda: sum(map(len, got.values())) == 30, lambda: poll_all(consumers, got))
            for i, records in got.items():  # each member read only its own partitions, once
                assert {p for p, _ in records} <= owned[i]
            everything = sorted(r for records in got.values() for r in records)
            assert everything == [(p, o) for p in range(6) for o in range(5)]
            for c in consumers:
                commit(c)
            assert store.group_offsets("g") == {TP("t", p): 5 for p in range(6)}
            assert store.lag("g") == {TP("t", p): 0 for p in range(6)}
            for c in consumers:
                c.close()
            assert store.describe_group("g").members == []
        fill(store, 2, 6, start=5)
    finally:
        store.close()
    store = eventstore.open(path)  # a restart: the commits are the store's
    try:
        assert store.lag("g") == {TP("t", p): 2 for p in range(6)}
        with serving(store) as bootstrap:
            c = kp_consumer(bootstrap, "again")
            got = {}
            until("the 12 records after the commit", lambda: sum(map(len, got.values())) >= 12,
                  lambda: poll_all([c], got))
            assert sorted(got[0]) == [(p, o) for p in range(6) for o in (5, 6)]
            assert c.committed(KTP("t", 0)) == 5
            c.close()
    finally:
        store.close()


def test_members_starting_together_make_one_generation(store: eventstore.Store) -> None:
    """Kafka's initial rebalance delay: three members started together join the empty group's
    first generation together, and no assignment comes before the delay is over. (1.2 s: the
    answer comes in the middle of a poll, not as one poll of 500 ms ends; see poll_all.)"""
    store.create_topic("t", partitions=6)
    with serving(store, group_initial_rebalance_delay_ms=1200) as bootstrap:
        consumers = [kp_consumer(bootstrap, f"c{i}") for i in range(3)]
        started = time.monotonic()
        until("a balanced assignment", lambda: balanced(consumers, 6), lambda: poll_all(consumers, {}))
        assert time.monotonic() - started >= 1.2
        desc = store.describe_group("g")
        assert desc.generation == 1 and len(desc.members) == 3
        for c in consumers:
            c.close()


def test_commit_metadata_fencing_and_standalone_commits(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=2)
    with serving(store) as bootstrap:
        c = kp_consumer(bootstrap, "c")
        until("an assignment", lambda: len(c.assignment()) == 2, lambda: c.poll(timeout_ms=POLL_MS))
        commit(c, {KTP("t", 0): KOffset(0, "from kafka-python", -1)})
        assert store.groups.committed("g", TP("t", 0)) == eventstore.OffsetAndMetadata(0, "from kafka-python")
        assert c.committed(KTP("t", 1)) is None  # OffsetFetch answers -1: nothing committed
        c.close()
        # a consumer with a manual assignment commits outside the membership (generation -1)
        manual = KafkaConsumer(bootstrap_servers=bootstrap, group_id="g", enable_auto_commit=False)
        manual.assign([KTP("t", 1)])
        manual.commit({KTP("t", 1): KOffset(0, "", -1)})
        assert store.group_offsets("g") == {TP("t", 0): 0, TP("t", 1): 0}
        manual.close()


def test_a_killed_member_loses_its_partitions_after_its_session(store: eventstore.Store) -> None:
    """A member in a child process, killed by its PID: no LeaveGroup; its session runs out."""
    store.create_topic("t", partitions=4)
    child = (
        "import sys, time\n"
        "from kafka import KafkaConsumer\n"
        "c = KafkaConsumer('t', bootstrap_servers=sys.argv[1], group_id='g', client_id='doomed',\n"
        "                  session_timeout_ms=1500, heartbeat_interval_ms=200, enable_auto_commit=False)\n"
        "deadline = time.monotonic() + 60\n"
        "while time.monotonic() < deadline:\n"
        "    c.poll(timeout_ms=100)\n"
        "    if c.assignment():\n"
        "        print('assigned', flush=True)\n"
    )
    with serving(store) as bootstrap:
        survivor = kp_consumer(bootstrap, "survivor", session_timeout_ms=1500)
        until("the survivor's assignment", lambda: len(survivor.assignment()) == 4,
              lambda: survivor.poll(timeout_ms=POLL_MS))
        proc = subprocess.Popen([sys.executable, "-c", child, bootstrap], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            until("two members", lambda: len(store.describe_group("g").members) == 2,
                  lambda: survivor.poll(timeout_ms=POLL_MS))
            until("a split", lambda: len(survivor.assignment()) == 2,
                  lambda: survivor.poll(timeout_ms=POLL_MS))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            killed = time.monotonic()
            until("the partitions back", lambda: len(survivor.assignment()) == 4,
                  lambda: survivor.poll(timeout_ms=POLL_MS))
            took = time.monotonic() - killed
            assert 1.0 < took < 10, took  # the session (1.5 s), then a rebalance
            assert [m.client_id for m in store.describe_group("g").members] == ["survivor"]
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            assert proc.stdout is not None
            proc.stdout.close()
        survivor.close()


# --- the store's view of a group of network consumers ---------------------------------------------


def test_store_admin_on_a_group_of_network_consumers(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, 3, 2)
    with serving(store) as bootstrap:
        c = kp_consumer(bootstrap, "net")
        got: dict[int, list[tuple[int, int]]] = {}
        until("6 records", lambda: sum(map(len, got.values())) == 6, lambda: poll_all([c], got))
        commit(c, {KTP("t", 0): KOffset(2, "", -1)})
        assert store.lag("g") == {TP("t", 0): 1, TP("t", 1): 3}
        assert store.list_groups() == ["g"]
        with pytest.raises(eventstore.GroupNotEmptyError):
            store.reset_group_offsets("g", "earliest", topics=["t"])
        with pytest.raises(eventstore.InvalidArgumentError, match="Kafka clients"):
            store.consumer("t", group_id="g")
        c.close()
        assert store.reset_group_offsets("g", "earliest", topics=["t"]) == {TP("t", 0): 0, TP("t", 1): 0}
        c = kp_consumer(bootstrap, "net-again")
        got = {}
        until("the 6 records again", lambda: sum(map(len, got.values())) == 6, lambda: poll_all([c], got))
        c.close()
        # an embedded group refuses Kafka clients: INCONSISTENT_GROUP_PROTOCOL
        with store.consumer("t", group_id="embedded") as mine:
            mine.poll(timeout_ms=0)
            other = kp_consumer(bootstrap, "intruder", group_id="embedded")
            with pytest.raises(Exception, match="InconsistentGroupProtocol"):
                until("an error", lambda: False, lambda: other.poll(timeout_ms=POLL_MS), timeout_s=5)
            other.close()


def test_kafka_admin_client_lists_describes_and_deletes_groups(store: eventstore.Store) -> None:
    """kafka-python 3's admin calls (list_groups, describe_groups, list_group_offsets,
    delete_groups: the consumer_group names of earlier releases)."""
    store.create_topic("t", partitions=3)
    with serving(store) as bootstrap:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        c = kp_consumer(bootstrap, "described")
        until("an assignment", lambda: len(c.assignment()) == 3, lambda: c.poll(timeout_ms=POLL_MS))
        commit(c, {KTP("t", 1): KOffset(0, "m", -1)})
        assert admin.list_groups() == [{"group_id": "g", "protocol_type": "consumer", "group_state": "Stable",
                                        "group_type": "classic"}]
        assert admin.list_groups(states_filter=["Empty"]) == []
        desc = admin.describe_groups(["g"])["g"]
        assert (desc["group_state"], desc["protocol_type"], desc["protocol_data"]) == \
            ("Stable", "consumer", "range")
        [member] = desc["members"]
        assert member["client_id"] == "described" and member["client_host"] == "/127.0.0.1"
        assert member["member_metadata"]["topics"] == ["t"]
        assert member["member_assignment"]["assigned_partitions"] == [{"topic": "t", "partitions": [0, 1, 2]}]
        offsets = admin.list_group_offsets({"g": None})["g"]
        assert {tp.partition: (om.offset, om.metadata) for tp, om in offsets.items()} == {1: (0, "m")}
        wanted = admin.list_group_offsets({"g": [KTP("t", 0), KTP("t", 1)]})["g"]
        assert {tp.partition: om.offset for tp, om in wanted.items()} == {0: -1, 1: 0}
        assert admin.delete_groups(["g"]) == {"g": "NonEmptyGroupError"}
        c.close()
        assert admin.delete_groups(["g"]) == {"g": "OK"}
        assert admin.delete_groups(["g"]) == {"g": "GroupIdNotFoundError"}
        assert store.list_groups() == [] and admin.list_groups() == []
        admin.close()


# --- aiokafka ---------------------------------------------------------------------------------------


def test_aiokafka_members_split_and_commit(store: eventstore.Store) -> None:
    from aiokafka import AIOKafkaConsumer

    store.create_topic("t", partitions=4)
    fill(store, 2, 4)

    async def main(bootstrap: str) -> dict[int, int]:
        consumers = [AIOKafkaConsumer("t", bootstrap_servers=bootstrap, group_id="g", client_id=f"a{i}",
                                      enable_auto_commit=False, auto_offset_reset="earliest",
                                      session_timeout_ms=6000, heartbeat_interval_ms=200)
                     for i in range(2)]
        for c in consumers:
            await c.start()
        try:
            seen: dict[int, int] = {}
            deadline = time.monotonic() + DEADLINE_S
            while sum(seen.values()) < 8 or not all(c.assignment() for c in consumers):
                assert time.monotonic() < deadline, (seen, [c.assignment() for c in consumers])
                for i, c in enumerate(consumers):
                    batch = await c.getmany(timeout_ms=50)
                    seen[i] = seen.get(i, 0) + sum(len(rs) for rs in batch.values())
            assert {len(c.assignment()) for c in consumers} == {2}
            for c in consumers:
                await c.commit()
            return seen
        finally:
            for c in consumers:
                await c.stop()

    with serving(store) as bootstrap:
        seen = asyncio.run(main(bootstrap))
    assert sum(seen.values()) == 8
    assert store.group_offsets("g") == {TP("t", p): 2 for p in range(4)}


# --- confluent-kafka (librdkafka) ---------------------------------------------------------------------


def ck_consumer(bootstrap: str, name: str, **extra: Any) -> Any:
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": bootstrap, "group.id": "g", "client.id": name,
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 200, "topic.metadata.refresh.interval.ms": 1000, **extra}
    c = Consumer(conf)
    c.subscribe(["t"])
    return c


def ck_poll(consumers: list[Any], got: dict[int, list[tuple[int, int]]]) -> None:
    for i, c in enumerate(consumers):
        msg = c.poll(0.05)
        if msg is not None and msg.error() is None:
            got.setdefault(i, []).append((msg.partition(), msg.offset()))


def test_confluent_kafka_members_split_commit_and_resume(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=4)
    with serving(store) as bootstrap:
        consumers = [ck_consumer(bootstrap, f"r{i}") for i in range(2)]
        got: dict[int, list[tuple[int, int]]] = {}
        until("a split", lambda: all(len(c.assignment()) == 2 for c in consumers),
              lambda: ck_poll(consumers, got))
        fill(store, 3, 4)  # once the group is stable: each record is read once
        until("12 records", lambda: sum(map(len, got.values())) >= 12, lambda: ck_poll(consumers, got))
        assert sorted(r for records in got.values() for r in records) == [(p, o) for p in range(4)
                                                                           for o in range(3)]
        for i, c in enumerate(consumers):
            assert {p for p, _ in got.get(i, [])} <= {tp.partition for tp in c.assignment()}
            c.commit(asynchronous=False)
        assert store.group_offsets("g") == {TP("t", p): 3 for p in range(4)}
        desc = store.describe_group("g")
        assert sorted(m.client_id for m in desc.members) == ["r0", "r1"]
        for c in consumers:
            c.close()
        fill(store, 1, 4, start=3)
        again = ck_consumer(bootstrap, "r2")
        got = {}
        until("the 4 new records", lambda: len(got.get(0, [])) == 4, lambda: ck_poll([again], got))
        assert sorted(got[0]) == [(p, 3) for p in range(4)]
        again.close()


def test_confluent_kafka_static_member_restarts_without_a_rebalance(store: eventstore.Store) -> None:
    store.create_topic("t", partitions=4)
    with serving(store) as bootstrap:
        a = ck_consumer(bootstrap, "sa", **{"group.instance.id": "ia"})
        b = ck_consumer(bootstrap, "sb", **{"group.instance.id": "ib"})
        until("a split", lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2,
              lambda: ck_poll([a, b], {}))
        before = store.describe_group("g")
        b_parts = sorted(tp.partition for tp in b.assignment())
        b.close()  # a static member's close sends no LeaveGroup: its place is kept
        b = ck_consumer(bootstrap, "sb", **{"group.instance.id": "ib"})
        until("b back", lambda: len(b.assignment()) == 2, lambda: ck_poll([a, b], {}))
        after = store.describe_group("g")
        assert after.generation == before.generation  # no rebalance
        assert sorted(tp.partition for tp in b.assignment()) == b_parts
        assert {m.group_instance_id for m in after.members} == {"ia", "ib"}
        assert len({m.member_id for m in after.members} - {m.member_id for m in before.members}) == 1
        a.close()
        b.close()


# --- the server on the caller's event loop, asyncio and trio -----------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_a_group_on_a_server_in_the_callers_loop(tmp_path: Path) -> None:
    """JoinGroup and SyncGroup wait on the loop while the clients run in a worker thread; the
    coordinator's answers come from worker threads (asyncio and trio alike)."""
    import anyio.to_thread

    async with await eventstore.aio.open(tmp_path / "s") as store, \
            await store.serve("127.0.0.1:0") as server:
        await store.create_topic("t", partitions=4)
        bootstrap = f"127.0.0.1:{server.address[1]}"

        def clients() -> list[int]:
            consumers = [kp_consumer(bootstrap, f"c{i}") for i in range(2)]
            try:
                until("a split", lambda: balanced(consumers, 4), lambda: poll_all(consumers, {}))
                for c in consumers:
                    commit(c, {KTP("t", p): KOffset(0, "", -1) for p in range(4)
                                  if KTP("t", p) in c.assignment()})
                return sorted(len(c.assignment()) for c in consumers)
            finally:
                for c in consumers:
                    c.close()

        assert await anyio.to_thread.run_sync(clients) == [2, 2]
        assert await store.group_offsets("g") == {TP("t", p): 0 for p in range(4)}
        assert (await store.describe_group("g")).state == "Empty"


def test_es_groups_describes_librdkafka_members_over_the_wire(store: eventstore.Store) -> None:
    """``es groups describe --bootstrap``: the members, assignment and lag of a group of
    confluent-kafka consumers, from the server's DescribeGroups and OffsetFetch."""
    import json

    from typer.testing import CliRunner

    from eventstore.cli.app import app

    store.create_topic("t", partitions=2)
    fill(store, 2, 2)
    with serving(store) as bootstrap:
        c = ck_consumer(bootstrap, "rdkafka-member")
        got: dict[int, list[tuple[int, int]]] = {}
        until("4 records", lambda: len(got.get(0, [])) == 4, lambda: ck_poll([c], got))
        c.commit(asynchronous=False)
        result = CliRunner().invoke(app, ["groups", "describe", "g", "--bootstrap", bootstrap, "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert out["state"] == "Stable"
        [member] = out["members"]
        assert member["client_id"] == "rdkafka-member"
        assert member["assignment"] == [{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}]
        rows = [(p["partition"], p["committed"], p["lag"]) for p in out["partitions"]]
        assert rows == [(0, 2, 0), (1, 2, 0)]
        c.close()


def test_records_produced_by_a_kafka_producer_are_split_over_a_group(store: eventstore.Store) -> None:
    """confluent-kafka produces, three kafka-python members of one group consume each record
    once, commit, and the store sees no lag."""
    from confluent_kafka import Producer

    store.create_topic("t", partitions=6)
    with serving(store) as bootstrap:
        consumers = [kp_consumer(bootstrap, f"p{i}") for i in range(3)]
        got: dict[int, list[tuple[int, int]]] = {}
        until("a balanced group", lambda: balanced(consumers, 6), lambda: poll_all(consumers, got))
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(60):
            producer.produce("t", value=f"v{i}".encode(), partition=i % 6)
        assert producer.flush(DEADLINE_S) == 0
        del producer  # librdkafka's handle goes with its last reference, before the server
        until("60 records", lambda: sum(map(len, got.values())) >= 60, lambda: poll_all(consumers, got))
        everything = sorted(r for records in got.values() for r in records)
        assert everything == [(p, o) for p in range(6) for o in range(10)]
        for c in consumers:
            commit(c)
            c.close()
    assert store.lag("g") == {TP("t", p): 0 for p in range(6)}


def test_librdkafka_cooperative_sticky_rebalances_incrementally(store: eventstore.Store) -> None:
    """The client-side cooperative protocol needs nothing of the coordinator but the pass-through:
    a first member holds all six partitions, two more join, each ends with two."""
    store.create_topic("t", partitions=6)
    sticky = {"partition.assignment.strategy": "cooperative-sticky"}
    with serving(store) as bootstrap:
        first = ck_consumer(bootstrap, "k0", **sticky)
        until("the first member's six", lambda: len(first.assignment()) == 6, lambda: ck_poll([first], {}))
        consumers = [first, ck_consumer(bootstrap, "k1", **sticky), ck_consumer(bootstrap, "k2", **sticky)]
        until("two each", lambda: all(len(c.assignment()) == 2 for c in consumers),
              lambda: ck_poll(consumers, {}))
        desc = store.describe_group("g")
        assert desc.protocol == "cooperative-sticky" and desc.state == "Stable"
        assert sorted(tp.partition for m in desc.members for tp in m.assignment) == list(range(6))
        for c in consumers:
            c.close()
