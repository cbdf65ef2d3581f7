"""Automatic failover through etcd: one node's lease, member record, leader watch,
election and self-fencing (docs/replication.md, section 7).

etcd decides who leads; this module never votes on its own. A :class:`Coordinator`
runs beside the server on its event loop and tells it, through three callbacks, when
to promote itself (``on_elected``), whom to follow (``on_leader``) and when to stop
accepting writes at once (``on_fenced``). etcd's client (``etcd3gw``, the ``cluster``
extra) blocks, so every call to etcd runs in a worker thread with a timeout; each loop
below has a client of its own, so that a slow watch never delays a lease refresh.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.abc
import etcd3gw
import requests
from etcd3gw.exceptions import Etcd3Exception, WatchTimedOut
from etcd3gw.types import KeyValue

from eventstore.errors import CoordinatorError, InvalidArgumentError
from eventstore.server.replication.state import NodeAddress

__all__ = [
    "DEFAULT_LEASE_TTL",
    "Coordinator",
    "MemberState",
    "parse_endpoint",
    "rank",
]

DEFAULT_LEASE_TTL: Final = 2
"""Seconds; etcd leases are whole seconds (section 7)."""
MEMBER_INTERVAL: Final = 0.5
"""How often a node rewrites its ``members/<id>`` record."""
RANK_DELAY: Final = 0.3
"""The wait per better-placed live member before a node stands for election."""
WATCH_WINDOW: Final = 1.0
"""The longest one watch of ``leader`` lasts before the key is read again."""
KEY_ROOT: Final = "/eventstore"

ETCD_ERRORS: Final = (Etcd3Exception, requests.RequestException)
"""What a call to an etcd out of reach raises: etcd3gw wraps most of requests' errors,
but not those of its watch stream."""

T = TypeVar("T")
OnElected = Callable[[int], Awaitable[None]]
OnLeader = Callable[[NodeAddress, int], Awaitable[None]]
OnFenced = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MemberState:
    """What a node says of itself in ``members/<id>``: where it serves, and how far its
    log goes, which ranks it in an election."""

    host: str
    port: int
    epoch: int
    end: int
    """The sum of its partitions' log ends."""


def parse_endpoint(url: str) -> tuple[str, int]:
    """``etcd://HOST:PORT`` -> (host, port); anything else is refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgumentError(f"coordinator {url!r}: {exc}") from None
    if parts.scheme != "etcd" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise InvalidArgumentError(f"coordinator {url!r}: expected etcd://HOST:PORT")
    return parts.hostname, port


def rank(me: MemberState, node_id: int, members: dict[int, MemberState]) -> int:
    """How many other live members are better placed to lead than this node: a larger
    ``(epoch, end)``, or an equal one and a smaller node id."""
    mine = (me.epoch, me.end)
    return sum(
        1
        for other_id, other in members.items()
        if other_id != node_id
        and ((other.epoch, other.end) > mine or ((other.epoch, other.end) == mine and other_id < node_id))
    )


class _BoundedSession(requests.Session):
    """A session whose every request has a timeout. etcd3gw's watch sets none, and a
    request to an etcd that stopped answering must not hold a worker thread forever."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(*args, **kwargs)


def _read(client: etcd3gw.Etcd3Client, key: str) -> list[tuple[bytes, KeyValue]]:
    """One key with its revisions and lease (empty when absent)."""
    return client.get(key, metadata=True)


def _b64(text: str) -> str:
    """A key or value as the JSON gateway takes it."""
    return base64.b64encode(text.encode()).decode("ascii")


class Coordinator:
    """One node's part in the election of section 7. ``await run()`` until cancelled."""

    def __init__(
        self,
        endpoint: str,
        cluster: str,
        node_id: int,
        member: Callable[[], MemberState],
        *,
        on_elected: OnElected,
        on_leader: OnLeader,
        on_fenced: OnFenced,
        lease_ttl: int = DEFAULT_LEASE_TTL,
        member_interval: float = MEMBER_INTERVAL,
        rank_delay: float = RANK_DELAY,
        settle: float | None = None,
        watch_window: float = WATCH_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = parse_endpoint(endpoint)
        if not cluster or "/" in cluster:
            raise InvalidArgumentError(f"cluster name {cluster!r}: must be non-empty, without '/'")
        if node_id < 0:
            raise InvalidArgumentError(f"node id {node_id}: must be >= 0")
        if lease_ttl < 1:
            raise InvalidArgumentError(f"lease TTL {lease_ttl} s: must be a whole number of seconds >= 1")
        self.endpoint = endpoint
        self.node_id = node_id
        self.lease_ttl = lease_ttl
        self._member = member
        self._on_elected = on_elected
        self._on_leader = on_leader
        self._on_fenced = on_fenced
        self._member_interval = member_interval
        self._rank_delay = rank_delay
        self._settle = float(lease_ttl) if settle is None else settle
        self._started = -math.inf
        self._watch_window = watch_window
        self._clock = clock
        root = f"{KEY_ROOT}/{cluster}"
        self._leader_key = f"{root}/leader"
        self._epoch_key = f"{root}/epoch"
        self._members_prefix = f"{root}/members/"
        # one client per loop: requests' sessions are not shared between threads
        self._lease_client = self._client(lease_ttl / 4)
        self._member_client = self._client(lease_ttl / 2)
        self._election_client = self._client(lease_ttl / 2)
        self._watch_client = self._client(watch_window)
        self._lease: etcd3gw.Lease | None = None
        self._confirmed_at = -math.inf
        """Clock time at which the last grant or refresh that etcd confirmed was sent."""
        self._limiter: anyio.CapacityLimiter | None = None
        self.leading = False
        """True from winning an election until fenced."""
        self.epoch: int | None = None
        """The epoch this node won, while it leads."""
        self.leader: tuple[NodeAddress, int] | None = None
        """The other node this one was last told to follow, and its epoch."""

    @property
    def fence_after(self) -> float:
        """Seconds after the send time of the last confirmed refresh at which a leader fences."""
        return self.lease_ttl / 2

    def lease_fresh(self) -> bool:
        """Whether etcd confirmed a refresh of this node's lease sent less than TTL/2 ago."""
        return self._clock() - self._confirmed_at < self.fence_after

    def _client(self, timeout: float) -> etcd3gw.Etcd3Client:
        return etcd3gw.Etcd3Client(
            host=self.host, port=self.port, timeout=timeout, session=_BoundedSession(timeout)
        )

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking etcd call in a worker thread (bounded by its client's timeout)."""
        assert self._limiter is not None
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), abandon_on_cancel=True, limiter=self._limiter
        )

    # --- the whole ----------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take a lease and publish this member, then refresh, watch, elect and fence until
        cancelled; on the way out, revoke the lease so that the others elect at once.

        Raises :class:`CoordinatorError` when etcd cannot be reached at start."""
        self._limiter = anyio.CapacityLimiter(8)
        self._started = self._clock()
        try:
            await self._grant()
        except ETCD_ERRORS as exc:
            raise CoordinatorError(self.endpoint, f"etcd did not grant a lease: {exc}") from exc
        await self._publish_member()
        task_status.started()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._keep_alive)
                tasks.start_soon(self._refresh_member)
                tasks.start_soon(self._watch_lease)
                tasks.start_soon(self._elect_or_follow)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.lease_ttl / 4):
                await self._revoke_own_lease()

    # --- the lease -------------------------------------------------------------------------

    async def _grant(self) -> None:
        sent = self._clock()
        self._lease = await self._call(self._lease_client.lease, self.lease_ttl)
        self._confirmed_at = sent

    async def _revoke_own_lease(self) -> None:
        lease, self._lease = self._lease, None
        self._confirmed_at = -math.inf
        if lease is not None:
            with contextlib.suppress(*ETCD_ERRORS):  # etcd expires it after its TTL anyway
                await self._call(lease.revoke)

    async def _keep_alive(self) -> None:
        """Refresh the lease every TTL/4; a lease etcd says has expired is replaced (after
        fencing, if this node leads)."""
        interval = self.lease_ttl / 4
        while True:
            sent = self._clock()
            await self._refresh_once(sent)
            await anyio.sleep(max(0.0, sent + interval - self._clock()))

    async def _refresh_once(self, sent: float) -> None:
        lease = self._lease
        try:
            if lease is None:
                await self._grant()
                await self._publish_member()
                return
            ttl = await self._call(lease.refresh)
        except ETCD_ERRORS:
            return  # unconfirmed: the fencing watch decides
        if ttl > 0:
            if lease is self._lease:
                self._confirmed_at = max(self._confirmed_at, sent)
            return
        if self.leading:
            await self._fence("etcd expired this node's lease")
        if lease is self._lease:
            self._lease = None
            self._confirmed_at = -math.inf

    async def _watch_lease(self) -> None:
        """Fence a leader whose last confirmed refresh was sent TTL/2 ago or more: etcd
        expires the lease no sooner than TTL after it received that refresh."""
        step = self.lease_ttl / 40
        while True:
            if self.leading and not self.lease_fresh():
                await self._fence(f"no lease refresh confirmed by etcd for {self.fence_after:g} s")
            await anyio.sleep(step)

    async def _fence(self, reason: str) -> None:
        if not self.leading:
            return
        self.leading = False
        self.epoch = None
        await self._on_fenced(reason)

    # --- the member record ----------------------------------------------------------------

    async def _refresh_member(self) -> None:
        while True:
            await anyio.sleep(self._member_interval)
            await self._publish_member()

    async def _publish_member(self) -> None:
        lease = self._lease
        if lease is None:
            return
        state = self._member()
        value = json.dumps({"host": state.host, "port": state.port, "epoch": state.epoch, "end": state.end})
        # on failure the next refresh tries again; the lease, not this record, says who is alive
        with contextlib.suppress(*ETCD_ERRORS):
            await self._call(self._member_client.put, f"{self._members_prefix}{self.node_id}", value, lease)

    # --- the election ---------------------------------------------------------------------

    async def _elect_or_follow(self) -> None:
        while True:
            try:
                await self._step()
            except ETCD_ERRORS:
                await anyio.sleep(self.lease_ttl / 4)  # etcd out of reach: the fencing watch acts

    async def _step(self) -> None:
        """Read ``leader`` once: stand when it is absent, else follow (or clear a stale
        claim of this node's), then watch it for one window."""
        found = await self._call(_read, self._election_client, self._leader_key)
        if not found:
            await self._stand()
            return
        value, meta = found[0]
        address, epoch = self._leader_record(value)
        if address.node_id == self.node_id:
            if not self.leading:
                await self._clear_stale_claim(int(meta.get("lease", "0")))
                return
        else:
            await self._fence(f"etcd names node {address.node_id} the leader")
            await self._follow(address, epoch)
        with contextlib.suppress(WatchTimedOut):  # no change within the window: read it again
            await self._call(
                self._watch_client.watch_once, self._leader_key,
                timeout=self._watch_window, start_revision=int(meta["mod_revision"]) + 1,
            )

    async def _follow(self, address: NodeAddress, epoch: int) -> None:
        if self.leader != (address, epoch):
            self.leader = (address, epoch)
            await self._on_leader(address, epoch)

    async def _clear_stale_claim(self, lease_id: int) -> None:
        """``leader`` names this node, which does not lead (it restarted within the TTL, or
        fenced itself while its lease lived on): revoke that lease so the cluster elects now."""
        if self._lease is not None and self._lease.id == lease_id:
            await self._revoke_own_lease()  # the lease loop grants a new one within TTL/4
        elif lease_id:
            await self._call(etcd3gw.Lease(lease_id, self._election_client).revoke)

    async def _stand(self) -> None:
        """Wait for the better placed, then try the one transaction that creates ``leader``."""
        if self._lease is None or not self.lease_fresh():
            await anyio.sleep(self.lease_ttl / 4)
            return
        settling = self._started + self._settle - self._clock()
        if settling > 0:  # let the peers that started with this node publish their records
            await anyio.sleep(settling)
            return
        me = self._member()
        members = await self._members()
        place = rank(me, self.node_id, members)
        if place:
            await anyio.sleep(self._rank_delay * place)
        found = await self._call(_read, self._election_client, self._epoch_key)
        current, revision = (int(found[0][0]), int(found[0][1]["mod_revision"])) if found else (0, 0)
        epoch = max(current, me.epoch) + 1
        lease = self._lease
        if lease is None or not self.lease_fresh():
            return
        claim = json.dumps({"node_id": self.node_id, "host": me.host, "port": me.port, "epoch": epoch})
        txn = {
            "compare": [
                {"key": _b64(self._leader_key), "result": "EQUAL", "target": "CREATE", "create_revision": 0},
                {"key": _b64(self._epoch_key), "result": "EQUAL", "target": "MOD", "mod_revision": revision},
            ],
            "success": [
                {"request_put": {"key": _b64(self._leader_key), "value": _b64(claim), "lease": lease.id}},
                {"request_put": {"key": _b64(self._epoch_key), "value": _b64(str(epoch))}},
            ],
            "failure": [],
        }
        result = await self._call(self._election_client.transaction, txn)
        if result.get("succeeded"):
            self.leading = True
            self.epoch = epoch
            self.leader = None
            await self._on_elected(epoch)

    async def _members(self) -> dict[int, MemberState]:
        found = await self._call(self._election_client.get_prefix, self._members_prefix)
        out = {}
        for value, meta in found:
            key = meta["key"].decode()
            record = self._decode(key, value)
            try:
                out[int(key.rsplit("/", 1)[1])] = MemberState(
                    str(record["host"]), int(record["port"]), int(record["epoch"]), int(record["end"])
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise CoordinatorError(self.endpoint, f"{key} is not a member record: {exc!r}") from None
        return out

    def _leader_record(self, value: bytes) -> tuple[NodeAddress, int]:
        record = self._decode(self._leader_key, value)
        try:
            address = NodeAddress(int(record["node_id"]), str(record["host"]), int(record["port"]))
            return address, int(record["epoch"])
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"{self._leader_key} is not a leader record: {exc!r}"
            raise CoordinatorError(self.endpoint, reason) from None

    def _decode(self, key: str, value: bytes) -> dict[str, Any]:
        """A record of this cluster's keys; another program's bytes there stop the coordinator."""
        try:
            record = json.loads(value)
        except ValueError as exc:
            raise CoordinatorError(self.endpoint, f"{key} is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise CoordinatorError(self.endpoint, f"{key} is not a JSON object: {value!r}")
        return record
