"""The failover coordinator against a real etcd (docs/replication.md, section 7).

One etcd per module (tests/etcdkit.py); every test uses a cluster name of its own, so
the tests share the etcd but no keys. Nodes run as coordinators in this process, each
recording when its callbacks came on one monotonic clock, so that the order of
fencing and election is asserted from the recorded times.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.abc
import etcd3gw
import pytest
from etcdkit import CuttableProxy, etcd_server, free_port

from eventstore.errors import CoordinatorError, InvalidArgumentError
from eventstore.server.replication.coordinator import Coordinator, MemberState, parse_endpoint, rank
from eventstore.server.replication.state import NodeAddress

TTL = 2
_names = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the coordinator's etcd calls run in worker threads; one loop suffices


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with etcd_server(tmp_path_factory.mktemp("etcd") / "data") as endpoint:
        yield endpoint


def _cluster() -> str:
    return f"c{next(_names)}-{time.monotonic_ns()}"


@dataclass
class Node:
    """One coordinated node: its advertised state, and what it was told, when."""

    node_id: int
    end: int = 0
    epoch: int = 0
    events: list[tuple[float, str, object]] = field(default_factory=list)
    coordinator: Coordinator | None = None

    def state(self) -> MemberState:
        return MemberState("127.0.0.1", 9000 + self.node_id, self.epoch, self.end)

    async def elected(self, epoch: int) -> None:
        self.epoch = epoch
        self.events.append((time.monotonic(), "elected", epoch))

    async def leader(self, address: NodeAddress, epoch: int) -> None:
        self.events.append((time.monotonic(), "leader", (address.node_id, epoch)))

    async def fenced(self, reason: str) -> None:
        self.events.append((time.monotonic(), "fenced", reason))

    def times(self, kind: str) -> list[float]:
        return [t for t, k, _ in self.events if k == kind]

    def of(self, kind: str) -> list[object]:
        return [v for _, k, v in self.events if k == kind]

    def coordinate(self, endpoint: str, cluster: str, **options: object) -> Coordinator:
        self.coordinator = Coordinator(
            endpoint, cluster, self.node_id, self.state,
            on_elected=self.elected, on_leader=self.leader, on_fenced=self.fenced,
            lease_ttl=TTL, **options,  # type: ignore[arg-type]
        )
        return self.coordinator


async def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.02)
        return
    pytest.fail(f"not within {timeout} s: {what}")


async def _start(tasks: anyio.abc.TaskGroup, endpoint: str, cluster: str, nodes: list[Node],
                 **options: object) -> None:
    for node in nodes:
        await tasks.start(node.coordinate(endpoint, cluster, **options).run)


def _read(endpoint: str, key: str) -> bytes | None:
    host, port = parse_endpoint(endpoint)
    found = etcd3gw.client(host=host, port=port, timeout=5).get(key)
    return found[0] if found else None


@pytest.fixture
async def tasks() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group whose coordinators are cancelled (and so revoke their leases) at the end."""
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


# --- without etcd --------------------------------------------------------------------------


def test_endpoints_other_than_etcd_host_port_are_refused() -> None:
    assert parse_endpoint("etcd://127.0.0.1:2379") == ("127.0.0.1", 2379)
    for bad in ("http://127.0.0.1:2379", "etcd://127.0.0.1", "etcd://:2379", "etcd://h:99999", "etcd://h:1/x"):
        with pytest.raises(InvalidArgumentError):
            parse_endpoint(bad)


def test_rank_counts_the_better_placed_members() -> None:
    me = MemberState("h", 1, 3, 100)
    others = {
        1: MemberState("h", 1, 3, 100),  # equal, smaller id: ahead
        2: me,  # this node itself
        3: MemberState("h", 1, 3, 100),  # equal, larger id: behind
        4: MemberState("h", 1, 4, 0),  # newer epoch: ahead whatever its end
        5: MemberState("h", 1, 2, 10**9),  # older epoch: behind whatever its end
        6: MemberState("h", 1, 3, 101),  # same epoch, longer log: ahead
    }
    assert rank(me, 2, others) == 3


@pytest.mark.anyio
async def test_an_unreachable_etcd_at_start_is_a_clear_error() -> None:
    endpoint = f"etcd://127.0.0.1:{free_port()}"  # nothing listens there
    node = Node(1)
    expected = r"coordinator etcd://127\.0\.0\.1:\d+: etcd did not grant a lease"
    with anyio.fail_after(10), pytest.raises(CoordinatorError, match=expected):
        await node.coordinate(endpoint, _cluster()).run()
    assert node.events == []


# --- against etcd -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_single_node_is_elected_and_hands_over_when_stopped(etcd: str) -> None:
    cluster, node = _cluster(), Node(1, end=5)
    async with anyio.create_task_group() as tasks:
        await _start(tasks, etcd, cluster, [node])
        await _wait_for(lambda: bool(node.of("elected")), 5, "the only node elected")
        assert node.of("elected") == [1]
        assert json.loads(_read(etcd, f"/eventstore/{cluster}/leader") or b"") == {
            "node_id": 1, "host": "127.0.0.1", "port": 9001, "epoch": 1}
        assert _read(etcd, f"/eventstore/{cluster}/epoch") == b"1"
        assert json.loads(_read(etcd, f"/eventstore/{cluster}/members/1") or b"")["end"] == 5
        node.end = 7
        await _wait_for(
            lambda: json.loads(_read(etcd, f"/eventstore/{cluster}/members/1") or b"{}").get("end") == 7,
            3, "the member record refreshed")
        await anyio.sleep(TTL * 1.5)  # its lease outlives the TTL: the refreshes are confirmed
        assert node.of("fenced") == [] and node.of("elected") == [1]
        tasks.cancel_scope.cancel()
    # a stopped coordinator revoked its lease: no waiting for the TTL
    assert _read(etcd, f"/eventstore/{cluster}/leader") is None
    assert _read(etcd, f"/eventstore/{cluster}/members/1") is None


@pytest.mark.anyio
async def test_of_three_nodes_the_best_placed_is_the_one_leader(
        etcd: str, tasks: anyio.abc.TaskGroup) -> None:
    cluster = _cluster()
    nodes = [Node(1, end=10), Node(2, end=30), Node(3, end=20)]
    await _start(tasks, etcd, cluster, nodes)
    await _wait_for(lambda: all(n.of("elected") or n.of("leader") for n in nodes), 5, "a leader known to all")
    await anyio.sleep(1.0)  # no late second winner
    assert [n.of("elected") for n in nodes] == [[], [1], []]
    assert nodes[0].of("leader") == nodes[2].of("leader") == [(2, 1)]
    assert all(n.of("fenced") == [] for n in nodes)


@pytest.mark.anyio
async def test_a_leader_cut_off_from_etcd_fences_itself_before_another_is_elected(
        etcd: str, tasks: anyio.abc.TaskGroup) -> None:
    cluster = _cluster()
    etcd_port = parse_endpoint(etcd)[1]
    nodes = [Node(1, end=200), Node(2, end=100), Node(3, end=50)]
    proxies = [CuttableProxy(etcd_port) for _ in nodes]
    for node, proxy in zip(nodes, proxies, strict=True):
        port = await tasks.start(proxy.serve)
        await tasks.start(node.coordinate(f"etcd://127.0.0.1:{port}", cluster).run)
    old, best, other = nodes
    await _wait_for(lambda: bool(old.of("elected")) and bool(best.of("leader")) and bool(other.of("leader")),
                    5, "node 1 elected and followed")
    assert old.of("elected") == [1]
    await anyio.sleep(0.6)  # a few confirmed refreshes

    cut_at = time.monotonic()
    proxies[0].cut = True
    await _wait_for(lambda: bool(best.of("elected")), TTL * 3, "a new leader")

    [fenced_at] = old.times("fenced")
    [elected_at] = best.times("elected")
    # the old leader stopped within TTL/2 of its last confirmed refresh (sent before the cut)...
    assert fenced_at - cut_at <= TTL / 2 + 0.2
    # ...and before etcd, TTL after it last heard from it, let another claim the lead
    assert fenced_at < elected_at
    assert elected_at - fenced_at >= TTL / 2 - 0.3, (fenced_at - cut_at, elected_at - cut_at)
    # the best placed of the rest won, in the next epoch, and the other follows it
    assert best.of("elected") == [2] and other.of("elected") == []
    await _wait_for(lambda: (2, 2) in other.of("leader"), 3, "node 3 follows node 2")
    assert json.loads(_read(etcd, f"/eventstore/{cluster}/leader") or b"")["node_id"] == 2


@pytest.mark.anyio
async def test_a_follower_cut_off_and_healed_rejoins_under_the_same_leader(
        etcd: str, tasks: anyio.abc.TaskGroup) -> None:
    """Cut off, its lease expires and its calls fail or hang until their timeouts; healed,
    it takes a new lease, publishes itself again and follows the leader it had."""
    cluster = _cluster()
    leader, follower = Node(1, end=10), Node(2, end=5)
    proxy = CuttableProxy(parse_endpoint(etcd)[1])
    await tasks.start(leader.coordinate(etcd, cluster).run)
    port = await tasks.start(proxy.serve)
    await tasks.start(follower.coordinate(f"etcd://127.0.0.1:{port}", cluster).run)
    await _wait_for(lambda: follower.of("leader") == [(1, 1)], 5, "node 2 follows node 1")
    member_key = f"/eventstore/{cluster}/members/2"
    proxy.cut = True
    await _wait_for(lambda: _read(etcd, member_key) is None, TTL * 3, "node 2's lease expired")
    proxy.cut = False
    await _wait_for(lambda: _read(etcd, member_key) is not None, TTL * 3, "node 2 published again")
    await anyio.sleep(0.5)
    assert follower.of("leader") == [(1, 1)] and follower.of("elected") == [] == follower.of("fenced")
    assert leader.of("elected") == [1] and leader.of("fenced") == []


@pytest.mark.anyio
async def test_a_leader_whose_clock_runs_fast_fences_itself_and_steps_down(
        etcd: str, tasks: anyio.abc.TaskGroup) -> None:
    """Its refreshes look older than TTL/2 by its own clock, though etcd keeps its lease:
    it fences (erring on the safe side), revokes the lease its claim holds, and the
    cluster elects again at once, in a new epoch."""
    cluster, node = _cluster(), Node(1)
    start = time.monotonic()
    fast = lambda: start + 3 * (time.monotonic() - start)  # noqa: E731
    await tasks.start(node.coordinate(etcd, cluster, clock=fast).run)
    await _wait_for(lambda: len(node.of("elected")) >= 2, TTL * 4, "fenced and elected again")
    kinds = [k for _, k, _ in node.events]
    assert kinds[:3] == ["elected", "fenced", "elected"]
    assert node.of("elected")[:2] == [1, 2]


@pytest.mark.anyio
async def test_concurrent_candidates_never_both_win(etcd: str) -> None:
    for _ in range(20):  # bounded: each round elects once
        cluster = _cluster()
        nodes = [Node(i, end=10) for i in range(1, 4)]
        async with anyio.create_task_group() as tasks:
            # no settling, no rank wait: the three race for the one transaction
            coordinators = [n.coordinate(etcd, cluster, rank_delay=0.0, settle=0.0) for n in nodes]
            for coordinator in coordinators:
                tasks.start_soon(coordinator.run)
            await _wait_for(lambda: all(n.of("elected") or n.of("leader") for n in nodes), 5, "one leader")  # noqa: B023
            await anyio.sleep(0.1)
            winners = [n.node_id for n in nodes if n.of("elected")]
            assert len(winners) == 1, [n.events for n in nodes]
            assert all(n.of("leader") == [(winners[0], 1)] for n in nodes if n.node_id != winners[0])
            tasks.cancel_scope.cancel()
