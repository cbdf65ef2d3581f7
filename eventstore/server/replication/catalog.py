"""The catalog over the wire (docs/replication.md, section 5): what lives in LMDB and not in
the log — topics, committed offsets, log starts, the producer id sequence, ACLs, SCRAM
users and client quotas — copied from
the leader to its followers with the ReplicaCatalog extension API (20015).

Leader: a :class:`CatalogTracker` keeps a snapshot of the catalog, a version that
counts changes of this leader instance, and a bounded ring of the changes. It is
event driven: every committed catalog write (``Catalog.add_write_hook``) marks it
stale and wakes the long polls; a stale tracker takes a new snapshot, and the
difference to the last one becomes the next version's changes (a write that changed
nothing replicated — a projection checkpoint — makes no version). A follower whose
instance differs, or whose version is older than the ring, gets the full state.

Follower: :func:`sync_catalog` long-polls the leader on a connection of its own and
applies each answer (:func:`apply_full`, :func:`apply_changes`): topics with the
leader's id and creation time (``Log.adopt_topic``), deletions, partitions added,
configurations altered, cursors copied, log starts moved up, the producer id
sequence advanced, ACLs, users and client quotas made equal. Each applied answer that
changed ACLs, users or quotas calls ``Replication.on_catalog`` with those kinds, so the
running server's authorizer and quotas decide from them at once.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
import msgspec

from ...catalog import acls as acl_rows
from ...catalog import producer_ids
from ...catalog import quotas as quota_rows
from ...catalog import users as user_rows
from ...errors import EventStoreError, InvalidArgumentError, TopicNotFoundError
from ...groups import GroupCoordinator
from ...log import Log
from ...records import TopicConfig
from ...wakeup import Wakeup
from ...wire import FrameSplitter
from ...wire import extensions as codec
from ...wire.errors import ProtocolError
from .client import connect_leader
from .state import FollowerInfo, NodeAddress, Replication, now_ms
from .view import cluster_view

__all__ = [
    "CATALOG_KEY", "Applied", "CatalogState", "CatalogTracker", "Change", "apply_changes",
    "apply_full", "diff", "first_catalog", "learn_leader", "register_follower", "snapshot", "sync_catalog",
    "close_tracker", "tracker_of", "wait_catalog_replicated",
]

log = logging.getLogger("eventstore.server")

CATALOG_KEY: Final = 20015
RING_VERSIONS: Final = 1024
"""Versions whose changes a leader keeps; a follower further behind gets the full state."""
POLL_WAIT_MS: Final = 5_000
RETRY_S: Final = 0.5
CATALOG_ACK_TIMEOUT_S: Final = 5.0
"""How long an OffsetCommit waits for the in-sync followers to apply it (section 5)."""
STOP_CHECK_S: Final = 0.1
"""How often a held long poll looks whether the server is stopping."""
NO_INSTANCE: Final = uuid.UUID(int=0)
ALTERABLE: Final = ("partitions", "retention_ms", "retention_bytes", "segment_bytes", "segment_ms",
                    "max_record_bytes", "timestamp_type")
"""The settings ``Log.alter_topic`` changes; a topic that differs otherwise is made again."""

Change = list[Any]
"""One change of a delta, as section 5 lists them: ``["topic", config]`` and the others."""
CursorKey = tuple[str, str, int]
AclKey = tuple[Any, ...]
"""An ACL binding's seven fields (``catalog.acls.AclBinding``)."""
UserCredentials = dict[str, list[Any]]
"""Mechanism -> [salt, iterations, stored_key, server_key]."""
QuotaEntity = tuple[tuple[str, str | None], ...]
SECURITY_KINDS: Final = ("acls", "users", "quotas")
"""What an applied answer reports to ``Replication.on_catalog`` when it changed them."""


@dataclass(slots=True)
class CatalogState:
    """The replicated catalog at one moment, in the shapes the wire carries."""

    topics: dict[str, dict[str, Any]] = field(default_factory=dict)
    cursors: dict[CursorKey, list[Any]] = field(default_factory=dict)
    """(group, topic, partition) -> [offset, metadata, committed_ms, incarnation]."""
    log_starts: dict[tuple[str, int], int] = field(default_factory=dict)
    producer_id_seq: int = -1
    acls: set[AclKey] = field(default_factory=set)
    users: dict[str, UserCredentials] = field(default_factory=dict)
    quotas: dict[QuotaEntity, dict[str, float]] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The full state as section 5's MessagePack map."""
        return msgspec.msgpack.encode({
            "topics": list(self.topics.values()),
            "cursors": [[g, t, p, *rest] for (g, t, p), rest in self.cursors.items()],
            "log_starts": [[t, p, o] for (t, p), o in self.log_starts.items()],
            "producer_id_seq": self.producer_id_seq,
            "acls": sorted(list(a) for a in self.acls),
            "users": self.users,
            "quotas": [[[list(part) for part in entity], values] for entity, values in self.quotas.items()],
        })

    @classmethod
    def decode(cls, data: bytes) -> CatalogState:
        """A full state from the wire; ``ProtocolError`` when it is not one."""
        try:
            raw = msgspec.msgpack.decode(data)
            return cls(
                topics={t["name"]: t for t in raw["topics"]},
                cursors={(c[0], c[1], int(c[2])): list(c[3:7]) for c in raw["cursors"]},
                log_starts={(t, int(p)): int(o) for t, p, o in raw["log_starts"]},
                producer_id_seq=int(raw["producer_id_seq"]),
                acls={tuple(a) for a in raw.get("acls", ())},
                users={str(name): dict(creds) for name, creds in raw.get("users", {}).items()},
                quotas={_entity(e): dict(v) for e, v in raw.get("quotas", ())},
            )
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise ProtocolError(f"ReplicaCatalog state: {e}") from None


def _entity(raw: Any) -> QuotaEntity:
    return tuple((str(kind), None if name is None else str(name)) for kind, name in raw)


def _security_rows(store_log: Log) -> tuple[set[AclKey], dict[str, UserCredentials],
                                            dict[QuotaEntity, dict[str, float]]]:
    """The catalog's ACLs, users and client quotas, in the shapes the wire carries (blocking)."""
    catalog = store_log.catalog
    acls = {tuple(msgspec.to_builtins(b)) for b in acl_rows.load(catalog)}
    users = {name: {m: [c.salt, c.iterations, c.stored_key, c.server_key] for m, c in creds.items()}
             for name, creds in user_rows.names(catalog).items()}
    return acls, users, quota_rows.load(catalog)


def snapshot(store_log: Log, groups: GroupCoordinator) -> CatalogState:
    """The replicated catalog now (blocking: reads LMDB)."""
    topics = store_log.topics()
    starts = {}
    for cfg in topics:  # bounded by the topics and their partitions
        for p in range(cfg.partitions):
            start = store_log.offsets(cfg.name, p)[0]
            if start > 0:
                starts[(cfg.name, p)] = start
    last = producer_ids.last_allocated(store_log.catalog)
    acls, users, quotas = _security_rows(store_log)
    return CatalogState(
        topics={cfg.name: msgspec.to_builtins(cfg) for cfg in topics},
        cursors={(g, t, p): [offset, metadata, committed_ms, incarnation]
                 for g, t, p, offset, metadata, committed_ms, incarnation in groups.stored_cursors()},
        log_starts=starts,
        producer_id_seq=-1 if last is None else last,
        acls=acls, users=users, quotas=quotas,
    )


def diff(old: CatalogState, new: CatalogState) -> list[Change]:
    """The changes that make ``old`` into ``new``, in the order a follower applies them:
    topics (deleted, then made or altered) before what belongs to them."""
    changes: list[Change] = [["topic_deleted", name] for name in old.topics if name not in new.topics]
    changes += [["topic", cfg] for name, cfg in new.topics.items() if old.topics.get(name) != cfg]
    changes += [["log_start", t, p, o] for (t, p), o in new.log_starts.items()
                if old.log_starts.get((t, p)) != o]
    changes += [["cursor_deleted", *key] for key in old.cursors if key not in new.cursors]
    changes += [["cursor", *key, *value] for key, value in new.cursors.items()
                if old.cursors.get(key) != value]
    if new.producer_id_seq != old.producer_id_seq:
        changes.append(["producer_id_seq", new.producer_id_seq])
    return changes + _security_diff(old, new)


def _security_diff(old: CatalogState, new: CatalogState) -> list[Change]:
    changes: list[Change] = [["acl_deleted", *a] for a in sorted(old.acls - new.acls)]
    changes += [["acl", *a] for a in sorted(new.acls - old.acls)]
    changes += [["user_deleted", name] for name in old.users if name not in new.users]
    changes += [["user", name, creds] for name, creds in new.users.items() if old.users.get(name) != creds]
    changes += [["quota", [list(p) for p in entity], {}] for entity in old.quotas if entity not in new.quotas]
    changes += [["quota", [list(p) for p in entity], values] for entity, values in new.quotas.items()
                if old.quotas.get(entity) != values]
    return changes


class CatalogTracker:
    """The leader's catalog versions (one per server, made on the first ReplicaCatalog)."""

    def __init__(self, store_log: Log, groups: GroupCoordinator, state: CatalogState) -> None:
        self.instance = uuid.uuid4()
        self.version = 0
        self.state = state
        self._log, self._groups = store_log, groups
        self._ring: collections.deque[tuple[int, list[Change]]] = collections.deque(maxlen=RING_VERSIONS)
        self._stale = True
        """Starts true: a write between ``state``'s snapshot and the hook's registration
        below would otherwise never make a version."""
        self._wakeups: set[Wakeup] = set()
        self._refreshing = anyio.Lock()
        self._reported = anyio.Event()
        self.remove_hook = store_log.catalog.add_write_hook(self._mark_stale)

    def _mark_stale(self) -> None:
        """After a catalog write, in the writing thread: never blocks."""
        self._stale = True
        for wakeup in list(self._wakeups):  # bounded by the followers polling
            wakeup.notify()

    async def refresh(self) -> None:
        """Take a snapshot if a write came since the last one; a difference is a new version."""
        async with self._refreshing:
            if not self._stale:
                return
            self._stale = False
            new = await anyio.to_thread.run_sync(snapshot, self._log, self._groups)
            changes = diff(self.state, new)
            if changes:
                self.version += 1
                self._ring.append((self.version, changes))
                self.state = new

    def answer(self, instance: uuid.UUID, applied: int) -> tuple[bool, bytes]:
        """``(full, state)`` for a follower that applied ``applied`` of ``instance``."""
        oldest = self._ring[0][0] if self._ring else self.version + 1
        if instance != self.instance or applied < oldest - 1 or applied > self.version:
            return True, self.state.encode()
        changes = [c for version, batch in self._ring if version > applied for c in batch]
        return False, msgspec.msgpack.encode(changes)

    async def wait_newer(self, instance: uuid.UUID, applied: int, max_wait_ms: int,
                         stopping: Callable[[], bool]) -> None:
        """Return once there is a version the follower has not applied, after ``max_wait_ms``,
        or soon after ``stopping()`` says the server stops."""
        wakeup = Wakeup()
        self._wakeups.add(wakeup)
        deadline = anyio.current_time() + max(0, max_wait_ms) / 1000
        try:
            while True:  # one pass per catalog write or stop check; ends by the deadline
                wakeup.clear()
                await self.refresh()
                left = deadline - anyio.current_time()
                if instance != self.instance or self.version != applied or stopping() or left <= 0:
                    return
                with anyio.move_on_after(min(left, STOP_CHECK_S)):
                    await wakeup.wait()
        finally:
            self._wakeups.discard(wakeup)

    def reported(self) -> None:
        """A follower said what it applied: wake the commits waiting for it."""
        self._reported.set()
        self._reported = anyio.Event()

    async def wait_applied(self, replication: Replication, followers: Iterable[int],
                           timeout_s: float) -> bool:
        """Wait until each of ``followers`` has applied this instance's current version;
        False if ``timeout_s`` passed first."""
        await self.refresh()
        version, instance = self.version, self.instance.bytes

        def done() -> bool:
            infos = [replication.followers.get(node) for node in followers]
            return all(i is not None and i.applied_instance == instance and i.applied_catalog >= version
                       for i in infos)

        with anyio.move_on_after(timeout_s):
            while not done():  # one pass per follower report; ends by the timeout
                await self._reported.wait()
            return True
        return False

    def close(self) -> None:
        self.remove_hook()
        for wakeup in list(self._wakeups):
            wakeup.notify()


async def tracker_of(state: dict[str, Any], store_log: Log, groups: GroupCoordinator) -> CatalogTracker:
    """The server's tracker (``broker.state``), made with a first snapshot on first use."""
    tracker = state.get(__name__)
    if tracker is None:
        first = await anyio.to_thread.run_sync(snapshot, store_log, groups)
        tracker = state.get(__name__)  # another request made it meanwhile
        if tracker is None:
            tracker = state[__name__] = CatalogTracker(store_log, groups, first)
    assert isinstance(tracker, CatalogTracker)
    return tracker


def close_tracker(state: dict[str, Any]) -> None:
    """At a server's stop: its tracker (if one was made) stops watching the catalog."""
    tracker = state.pop(__name__, None)
    if isinstance(tracker, CatalogTracker):
        tracker.close()


# --- the follower ---------------------------------------------------------------------------


def apply_full(store: Log, groups: GroupCoordinator, state: CatalogState) -> set[str]:
    """Make the follower's catalog equal to the leader's ``state`` (blocking; the log's
    refusal of local writes does not apply: ``Log.replica_writes``). Returns which of
    ``SECURITY_KINDS`` it changed."""
    with store.replica_writes():
        _apply_full(store, groups, state)
        local = CatalogState()
        local.acls, local.users, local.quotas = _security_rows(store)
        return _apply_changes(store, groups, _security_diff(local, state))


def _apply_full(store: Log, groups: GroupCoordinator, state: CatalogState) -> None:
    for cfg in store.topics():  # bounded by the topics
        if cfg.name not in state.topics:
            _delete_topic(store, cfg.name)
    for config in state.topics.values():  # bounded by the leader's topics
        _put_topic(store, config)
    for (topic, partition), offset in state.log_starts.items():  # bounded by the partitions
        _move_log_start(store, topic, partition, offset)
    local = {(g, t, p): [o, m, c, i] for g, t, p, o, m, c, i in groups.stored_cursors()}
    groups.copy_cursors([(*key, *value) for key, value in state.cursors.items() if local.get(key) != value],
                        [key for key in local if key not in state.cursors])
    _advance_producer_ids(store, state.producer_id_seq)


def apply_changes(store: Log, groups: GroupCoordinator, changes: Iterable[Change]) -> set[str]:
    """Apply a delta's changes in order (blocking, as ``apply_full``); ``ProtocolError`` on
    one not understood. Returns which of ``SECURITY_KINDS`` it changed."""
    with store.replica_writes():
        return _apply_changes(store, groups, changes)


def _apply_changes(store: Log, groups: GroupCoordinator, changes: Iterable[Change]) -> set[str]:
    touched: set[str] = set()
    for change in changes:  # bounded by the delta
        kind, args = change[0], change[1:]
        try:
            if kind == "topic":
                _put_topic(store, args[0])
            elif kind == "topic_deleted":
                _delete_topic(store, args[0])
            elif kind == "log_start":
                _move_log_start(store, args[0], int(args[1]), int(args[2]))
            elif kind == "cursor":
                groups.copy_cursors([(args[0], args[1], int(args[2]), *args[3:7])], [])
            elif kind == "cursor_deleted":
                groups.copy_cursors([], [(args[0], args[1], int(args[2]))])
            elif kind == "producer_id_seq":
                _advance_producer_ids(store, int(args[0]))
            elif kind in _SECURITY_APPLY:
                touched.add(_SECURITY_APPLY[kind](store, args))
            else:
                raise ProtocolError(f"ReplicaCatalog: unknown change {kind!r}")
        except (IndexError, TypeError, ValueError, msgspec.ValidationError) as e:
            raise ProtocolError(f"ReplicaCatalog: change {change!r}: {e}") from None
    return touched


def _put_acl(store: Log, args: list[Any]) -> str:
    acl_rows.add(store.catalog, [msgspec.convert(args, acl_rows.AclBinding)])
    return "acls"


def _delete_acl(store: Log, args: list[Any]) -> str:
    acl_rows.remove(store.catalog, [msgspec.convert(args, acl_rows.AclBinding)])
    return "acls"


def _put_user(store: Log, args: list[Any]) -> str:
    credentials = {str(m): user_rows.Credential(bytes(c[0]), int(c[1]), bytes(c[2]), bytes(c[3]))
                   for m, c in dict(args[1]).items()}
    user_rows.replace(store.catalog, str(args[0]), credentials)
    return "users"


def _delete_user(store: Log, args: list[Any]) -> str:
    user_rows.delete(store.catalog, str(args[0]))
    return "users"


def _put_quota(store: Log, args: list[Any]) -> str:
    """Quotas of one entity set to the leader's (none: the entity's row goes)."""
    values = {str(k): float(v) for k, v in dict(args[1]).items()}
    quota_rows.replace(store.catalog, {_entity(args[0]): values})
    return "quotas"


_SECURITY_APPLY: Final[dict[str, Callable[[Log, list[Any]], str]]] = {
    "acl": _put_acl, "acl_deleted": _delete_acl, "user": _put_user, "user_deleted": _delete_user,
    "quota": _put_quota,
}


def _put_topic(store: Log, config: dict[str, Any]) -> None:
    """The leader's topic, with its id: made, made again (another id), or altered."""
    try:
        wanted = msgspec.convert(config, TopicConfig)
    except msgspec.ValidationError as e:
        raise ProtocolError(f"ReplicaCatalog topic: {e}") from None
    have = store.find_topic(wanted.name)
    if have is not None and (have.topic_id != wanted.topic_id or have.streams != wanted.streams):
        log.info("replica: topic %r was made again on the leader; made again here", wanted.name)
        _delete_topic(store, wanted.name)
        have = None
    if have is None:
        store.adopt_topic(wanted)
        return
    changes = {name: getattr(wanted, name) for name in ALTERABLE
               if getattr(have, name) != getattr(wanted, name)}
    if changes:
        store.alter_topic(wanted.name, **changes)


def _delete_topic(store: Log, name: str) -> None:
    with contextlib.suppress(TopicNotFoundError):
        store.delete_topic(name)


def _move_log_start(store: Log, topic: str, partition: int, offset: int) -> None:
    """Move a partition's log start up to the leader's; one beyond the local end waits for the
    fetcher (which restarts the partition there: section 4, out of range)."""
    try:
        start, end = store.offsets(topic, partition)
    except EventStoreError:
        return  # the topic's own change has not come yet, or it is gone again
    if start < offset <= end:
        store.delete_records(topic, partition, offset)


def _advance_producer_ids(store: Log, last: int) -> None:
    """Make the producer id sequence at least the leader's, so a promoted follower never hands
    out an id the leader did."""
    mine = producer_ids.last_allocated(store.catalog)
    have = -1 if mine is None else mine
    if last > have:
        producer_ids.allocate(store.catalog, last - have)


@dataclass(slots=True)
class Applied:
    """What a follower applied last: the leader instance and its version."""

    instance: uuid.UUID = NO_INSTANCE
    version: int = -1


async def first_catalog(leader: tuple[str, int], store: Log, groups: GroupCoordinator,
                        replication: Replication, advertised: NodeAddress) -> Applied:
    """One ReplicaCatalog request (no wait), applied: what the follower needs before its
    first Fetch. Raises ``OSError``/``ProtocolError``/``EventStoreError`` when it fails."""
    applied = Applied()
    async with await connect_leader(*leader, replication.security) as stream:
        await _exchange(stream, store, groups, replication, advertised, applied, 0)
    return applied


async def sync_catalog(leader: tuple[str, int], store: Log, groups: GroupCoordinator,
                       replication: Replication, advertised: NodeAddress,
                       applied: Applied | None = None) -> None:
    """Long-poll the leader's catalog and apply every answer, on a connection of its own,
    until cancelled or this node is promoted; a broken connection is opened again after
    ``RETRY_S``. ``applied``: what :func:`first_catalog` returned."""
    applied = applied or Applied()
    with anyio.CancelScope() as scope:
        replication.on_promote.append(scope.cancel)
        try:
            while replication.role == "follower":  # one pass per connection
                try:
                    async with await connect_leader(*leader, replication.security) as stream:
                        while replication.role == "follower":  # one pass per long poll
                            await _exchange(stream, store, groups, replication, advertised, applied,
                                            POLL_WAIT_MS)
                except (OSError, anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError,
                        ProtocolError, EventStoreError) as e:
                    log.warning("replica catalog from %s:%d: %s; again in %.1f s", *leader, e, RETRY_S)
                await anyio.sleep(RETRY_S)
        finally:
            replication.on_promote.remove(scope.cancel)


async def _exchange(stream: anyio.abc.ByteStream, store: Log, groups: GroupCoordinator,
                    replication: Replication, advertised: NodeAddress, applied: Applied,
                    wait_ms: int) -> None:
    """One ReplicaCatalog request and its answer applied."""
    request = {"node_id": advertised.node_id, "host": advertised.host, "port": advertised.port,
               "leader_epoch": replication.epoch, "instance": applied.instance,
               "applied_version": applied.version, "max_wait_ms": wait_ms}
    await stream.send(codec.encode_request(CATALOG_KEY, 1, request, "eventstore-replica"))
    with anyio.fail_after(wait_ms / 1000 + 30):
        frame_bytes = await _receive_frame(stream)
    _, response = codec.decode_response(CATALOG_KEY, frame_bytes)
    if response["error_code"]:
        code, message = response["error_code"], response["error_message"]
        raise ProtocolError(f"ReplicaCatalog answered error {code}: {message}")
    learn_leader(replication, response)
    instance = uuid.UUID(bytes=bytes(response["instance"]))
    if instance == applied.instance and response["version"] == applied.version:
        return
    state = bytes(response["state"])
    if response["full"]:
        full = CatalogState.decode(state)
        touched = await anyio.to_thread.run_sync(apply_full, store, groups, full)
    else:
        changes = _decode_changes(state)
        touched = await anyio.to_thread.run_sync(apply_changes, store, groups, changes)
    applied.instance, applied.version = instance, int(response["version"])
    if touched:
        for callback in list(replication.on_catalog):  # bounded by the server's registrations
            callback(frozenset(touched))


def learn_leader(replication: Replication, response: dict[str, Any]) -> None:
    """What a ReplicaCatalog answer says of the cluster: the leader, its epoch, the replicas."""
    replication.leader = NodeAddress(response["leader_id"], response["leader_host"], response["leader_port"])
    if response["leader_epoch"] > replication.epoch:
        replication.epoch = response["leader_epoch"]
    replication.replicas = tuple((NodeAddress(n, h, p), bool(s)) for n, h, p, s in response["replicas"])


def _decode_changes(data: bytes) -> list[Change]:
    try:
        changes = msgspec.msgpack.decode(data)
    except msgspec.DecodeError as e:
        raise ProtocolError(f"ReplicaCatalog changes: {e}") from None
    if not isinstance(changes, list) or not all(isinstance(c, list) and c for c in changes):
        raise ProtocolError("ReplicaCatalog changes: not an array of changes")
    return changes


async def _receive_frame(stream: anyio.abc.ByteStream) -> bytes:
    splitter = FrameSplitter()
    while True:  # one pass per chunk received; bounded by the frame's size
        frames = splitter.feed(await stream.receive())
        if frames:
            return frames[0]


def register_follower(replication: Replication, request: dict[str, Any]) -> None:
    """A follower's ReplicaCatalog request: its address for Metadata, what it applied."""
    node_id = request["node_id"]
    if node_id == replication.node_id or node_id < 0:
        raise InvalidArgumentError(f"a replica's node id must be >= 0 and not the leader's, got {node_id}")
    info = replication.followers.get(node_id)
    address = NodeAddress(node_id, request["host"], request["port"])
    if info is None:
        info = replication.followers[node_id] = FollowerInfo(address)
    info.address = address
    info.applied_catalog = request["applied_version"]
    info.applied_instance = bytes(request["instance"])
    info.last_seen_ms = now_ms()


async def wait_catalog_replicated(broker: Any, timeout_s: float = CATALOG_ACK_TIMEOUT_S) -> bool:
    """After a catalog write on a leader with ``min_insync_replicas > 1`` (an OffsetCommit):
    wait until the in-sync followers have applied a version that holds it (section 5); False
    after ``timeout_s``. Without that setting, or on a node that does not lead: True at once."""
    rep: Replication = broker.replication
    if rep.min_insync_replicas <= 1 or rep.role != "leader":
        return True
    view = cluster_view(broker, NodeAddress(rep.node_id, broker.advertised_host, broker.advertised_port))
    followers = [node for node in view.in_sync_all if node != rep.node_id]
    if not followers:
        return True
    tracker = await tracker_of(broker.state, broker.log, broker.groups)
    return await tracker.wait_applied(rep, followers, timeout_s)
