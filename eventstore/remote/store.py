"""``eventstore.connect(address)``: the embedded ``Store``'s API over the network.

An application moves from embedded to networked by changing
``eventstore.open(path)`` into ``eventstore.connect("host:9092[,host2:9092]")``.
The log half (topics, appends, reads, producers, consumers, groups) goes through
a Kafka client library (``kafka.py``), so it also works against any Kafka
cluster; the event-sourcing half (streams, subscriptions, snapshots, so
``Repository`` too) goes over the extension APIs (``streams.py``). A server that
does not serve them (a Kafka cluster) makes every stream call raise one error
naming it.

What only an embedded store can do (``check()``, retention on its disk,
transactions across partitions, ...) raises :class:`EmbeddedOnlyError` naming the
method; ``EMBEDDED_ONLY`` lists each with its reason, and a test holds every other
public method of ``Store`` to the same signature here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import EventStoreError, InvalidArgumentError, StoreClosedError, TopicNotFoundError
from ..groups.membership import GroupDescription
from ..log import DEFAULT_MAX_RECORDS, UNSET
from ..records import Message, Record, RecordMetadata, TopicConfig, TopicPartition
from ..sourcing.dcbtypes import AppendCondition, Query, TaggedEvent, TaggedRead
from ..sourcing.events import AppendResult, NewEvent, RecordedEvent, StreamMetadata, StreamState
from ..sourcing.rules import check_stream_id
from ..sourcing.subscriptions import PAGE_EVENTS, check_count
from ..validation import check_group_id, check_int64, check_wait
from .connection import ConnectionPool, parse_bootstrap
from .dcb import RemoteDCB, RemoteTaggedSubscription
from .security import Security, security
from .streams import RemoteStreams, RemoteSubscription

if TYPE_CHECKING:  # imported when first used: the Kafka client library is the 'remote' extra
    from .kafka import RemoteConsumer, RemoteProducer

__all__ = ["EMBEDDED_ONLY", "EmbeddedOnlyError", "RemoteStore", "connect"]


#: Public methods of ``Store`` a remote store cannot offer, and why.
EMBEDDED_ONLY: dict[str, str] = {
    "check": "reads the store's files on its own disk",
    "retention": "deletes segments on the store's own disk (the server applies retention)",
    "enforce_retention": "deletes segments on the store's own disk (the server applies retention)",
    "statistics": "counts the store's files on its own disk",
    "transaction": "appends to several partitions under the store's own lock",
    "pending_transactions": "the transactions of the store's own process",
    "serve": "serves the store's own files (run es serve where they are)",
    "metrics": "measures the store's own process (scrape the server's /metrics instead)",
    "register_metrics": "measures the store's own process (scrape the server's /metrics instead)",
}


class EmbeddedOnlyError(EventStoreError):
    """A method of the embedded store that a remote one cannot offer."""

    def __init__(self, method: str) -> None:
        self.method = method
        super().__init__(f"Store.{method}() needs an embedded store (eventstore.open): "
                         f"it {EMBEDDED_ONLY[method]}")


def connect(address: str, *, security_protocol: str = "PLAINTEXT", sasl_mechanism: str | None = None,
            username: str | None = None, password: str | None = None, ssl_cafile: str | None = None,
            ssl_certfile: str | None = None, ssl_keyfile: str | None = None, ssl_check_hostname: bool = True,
            max_bytes: int = 4 * 1024 * 1024) -> RemoteStore:
    """A store served at ``address`` (``"host:port[,host:port...]"``), with ``Store``'s API.

    The security settings are named as Kafka clients name them (docs/operations.md,
    section 1.4): ``security_protocol`` PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL;
    on a SASL protocol ``username``, ``password`` and ``sasl_mechanism`` (PLAIN,
    SCRAM-SHA-256, default SCRAM-SHA-512); with TLS ``ssl_cafile`` (the CA that signed
    the server's certificate; default the system's), ``ssl_certfile`` and
    ``ssl_keyfile`` (a client certificate, for a server that asks for one), and
    ``ssl_check_hostname`` (False: the certificate need not name the host).
    ``max_bytes``: about how many bytes one stream read asks for at a time (larger
    reads are paged). Connecting checks the arguments and reads the TLS files only;
    the first call connects (and raises ``AuthenticationFailedError`` if refused).
    """
    addresses = parse_bootstrap(address)
    if type(max_bytes) is not int or max_bytes < 1:
        raise InvalidArgumentError(f"max_bytes must be a positive int, got {max_bytes!r}")
    settings = security(security_protocol, sasl_mechanism, username, password, ssl_cafile, ssl_certfile,
                        ssl_keyfile, ssl_check_hostname)
    return RemoteStore(address, addresses, max_bytes, settings)


class RemoteStore:
    """A store on a server. Use ``eventstore.connect()`` to get one; close it (or use ``with``)."""

    def __init__(self, address: str, addresses: list[tuple[str, int]], max_bytes: int,
                 settings: Security | None = None) -> None:
        self.address = address
        self.path = address
        """Where the store is: its address (``Store.path`` is its directory)."""
        self._max_bytes = max_bytes
        from .kafka import KafkaLog

        settings = settings or Security()
        self.security_protocol = settings.protocol
        """How the store reaches the server (``connect``'s ``security_protocol``)."""
        pool = ConnectionPool(addresses, settings)
        self._log = KafkaLog(",".join(f"{h}:{p}" for h, p in addresses), settings.kafka_settings(),
                             pool.check_access)
        self._streams = RemoteStreams(pool, max_bytes)
        self._dcb = RemoteDCB(pool, max_bytes)
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()  # producers and consumers made here
        self._closed = False

    # --- open / close ------------------------------------------------------

    def close(self) -> None:
        """Flush what was appended and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._streams.closed = True
        try:
            for client in list(self._clients):  # as the embedded store's: unusable once it is closed
                client.close()
            self._log.close()
        finally:
            self._streams.connection.close()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<eventstore.RemoteStore {self.address!r} ({'closed' if self._closed else 'open'})>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(self.address)

    def flush(self) -> None:
        """Every append has been acknowledged by the server before it returned: nothing to wait for."""
        self._check_open()

    # --- topics ------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = UNSET, *, retention_ms: int | None = UNSET,
                     retention_bytes: int | None = UNSET, segment_bytes: int = UNSET,
                     segment_ms: int = UNSET, max_record_bytes: int = UNSET,
                     exist_ok: bool = False, streams: bool = UNSET,
                     timestamp_type: str = UNSET) -> TopicConfig:
        self._check_open()
        if streams is not UNSET and streams:
            raise InvalidArgumentError("a streams topic is made by the first append_to_stream to it")
        settings = {k: v for k, v in (("retention_ms", retention_ms), ("retention_bytes", retention_bytes),
                                      ("segment_bytes", segment_bytes), ("segment_ms", segment_ms),
                                      ("max_record_bytes", max_record_bytes),
                                      ("timestamp_type", timestamp_type)) if v is not UNSET}
        return self._log.create_topic(name, None if partitions is UNSET else partitions, settings, exist_ok)

    def alter_topic(self, name: str, *, partitions: int = UNSET, retention_ms: int | None = UNSET,
                    retention_bytes: int | None = UNSET, segment_bytes: int = UNSET,
                    segment_ms: int = UNSET, max_record_bytes: int = UNSET,
                    timestamp_type: str = UNSET) -> TopicConfig:
        self._check_open()
        settings = {k: v for k, v in (("retention_ms", retention_ms), ("retention_bytes", retention_bytes),
                                      ("segment_bytes", segment_bytes), ("segment_ms", segment_ms),
                                      ("max_record_bytes", max_record_bytes),
                                      ("timestamp_type", timestamp_type)) if v is not UNSET}
        return self._log.alter_topic(name, None if partitions is UNSET else partitions, settings)

    def delete_topic(self, name: str) -> None:
        self._check_open()
        self._log.delete_topic(name)

    def topic(self, name: str) -> TopicConfig:
        self._check_open()
        return self._log.topic(name)

    def topics(self) -> list[TopicConfig]:
        self._check_open()
        return [self._log.topic(n) for n in self._log.topic_names()]

    # --- appending and reading ------------------------------------------------------

    def append(self, topic: str, value: bytes | None, *, key: bytes | None = None,
               headers: Sequence[tuple[str, bytes]] | None = None, partition: int | None = None,
               timestamp_ms: int | None = None) -> RecordMetadata:
        self._check_open()
        message = Message(value=value, key=key, headers=list(headers) if headers else None,
                          partition=partition, timestamp_ms=timestamp_ms)
        return self._log.append_many(topic, [message])[0]

    def append_batch(self, topic: str,
                     items: Iterable[bytes | tuple[bytes | None, bytes | None] | Message | None], *,
                     partition: int | None = None) -> Sequence[RecordMetadata]:
        self._check_open()
        messages = []
        for item in items:
            if isinstance(item, Message):
                if partition is not None and item.partition is None:
                    item = Message(value=item.value, key=item.key, headers=item.headers,
                                   partition=partition, timestamp_ms=item.timestamp_ms)
                messages.append(item)
            elif isinstance(item, tuple):
                messages.append(Message(key=item[0], value=item[1], partition=partition))
            elif item is None or isinstance(item, bytes):
                messages.append(Message(value=item, partition=partition))
            else:
                raise InvalidArgumentError(f"append_batch items must be bytes, (key, value) or Message, "
                                           f"got {type(item).__name__}")
        return self._log.append_many(topic, messages) if messages else []

    def read(self, topic: str, partition: int, offset: int, *, max_records: int = DEFAULT_MAX_RECORDS,
             max_bytes: int | None = None) -> list[Record]:
        self._check_open()
        if type(offset) is not int:
            raise InvalidArgumentError(f"offset must be an int, got {type(offset).__name__}")
        if type(max_records) is not int or max_records < 1:
            raise InvalidArgumentError(f"max_records must be a positive int, got {max_records!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise InvalidArgumentError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        return self._log.read(topic, partition, offset, max_records, max_bytes)

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        self._check_open()
        return self._log.offsets(topic, partition)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        self._check_open()
        return self._log.offset_for_time(topic, partition, timestamp_ms)

    def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        """Block until the partition's end offset passes ``offset`` (True) or the timeout (False)."""
        self._check_open()
        return self._log.wait_for(topic, partition, offset, check_wait(offset, timeout_s))

    # --- clients and groups ------------------------------------------------------------

    def consumer(self, *topics: str, **config: Any) -> RemoteConsumer:
        """A Kafka-style consumer with the embedded Consumer's API, on librdkafka's."""
        self._check_open()
        from .kafka import RemoteConsumer

        try:
            consumer = RemoteConsumer(self._log, *topics, **config)
        except TypeError as e:
            raise InvalidArgumentError(f"consumer(): {e}") from None
        self._clients.add(consumer)
        return consumer

    def producer(self, **config: Any) -> RemoteProducer:
        """A Kafka-style producer with the embedded Producer's API, on librdkafka's."""
        self._check_open()
        from .kafka import RemoteProducer

        try:
            producer = RemoteProducer(self._log, **config)
        except TypeError as e:
            raise InvalidArgumentError(f"producer(): {e}") from None
        self._clients.add(producer)
        return producer

    def transaction(self) -> Any:
        raise EmbeddedOnlyError("transaction")

    def pending_transactions(self) -> list[int]:
        raise EmbeddedOnlyError("pending_transactions")

    def list_groups(self) -> list[str]:
        self._check_open()
        return self._log.list_groups()

    def describe_group(self, group: str) -> GroupDescription:
        """The group's state and members, as the server's DescribeGroups answers (Kafka clients'
        members only: a server's embedded consumers are its own)."""
        self._check_open()
        return self._log.describe_group(check_group_id(group))

    def group_offsets(self, group: str) -> dict[TopicPartition, int]:
        self._check_open()
        return self._log.group_offsets(group)

    def lag(self, group: str) -> dict[TopicPartition, int]:
        """Per partition of the topics the group committed to: end offset - committed offset
        (from the log start where it has none, or where retention passed it)."""
        self._check_open()
        committed = self._log.group_offsets(check_group_id(group))
        out: dict[TopicPartition, int] = {}
        for topic in sorted({tp.topic for tp in committed}):
            try:
                count = self._log.partitions(topic)
            except TopicNotFoundError:
                continue
            for p in range(count):
                tp = TopicPartition(topic, p)
                start, end = self._log.offsets(topic, p)
                out[tp] = end - max(committed.get(tp, start), start)
        return out

    def reset_group_offsets(
        self, group: str, to: str | int | Mapping[TopicPartition, int] | Mapping[tuple[str, int], int],
        topics: list[str] | None = None,
    ) -> dict[TopicPartition, int]:
        """Set the group's offsets: ``"earliest"``, ``"latest"``, a timestamp (ms) or explicit
        offsets, as ``Store.reset_group_offsets``; the server refuses a group with members."""
        self._check_open()
        check_group_id(group)
        if isinstance(to, Mapping):
            target = {(k if isinstance(k, TopicPartition) else TopicPartition(*k)): v for k, v in to.items()}
        else:
            if not (to in ("earliest", "latest") or (type(to) is int and to >= 0)):
                raise InvalidArgumentError(f"to must be 'earliest', 'latest', a timestamp in ms or a "
                                           f"mapping of offsets, got {to!r}")
            names = sorted(set(topics) if topics is not None else
                           {tp.topic for tp in self._log.group_offsets(group)})
            target = {TopicPartition(n, p): self._resolve(n, p, to)
                      for n in names for p in range(self._log.partitions(n))}
        for tp, offset in target.items():
            start, end = self._log.offsets(tp.topic, tp.partition)
            if type(offset) is not int or not start <= offset <= end:
                raise InvalidArgumentError(
                    f"offset {offset} for {tp.topic}/{tp.partition} is outside {start}..{end}")
        if target:
            self._log.set_group_offsets(group, target)
        return target

    def _resolve(self, topic: str, partition: int, to: str | int) -> int:
        start, end = self._log.offsets(topic, partition)
        if to == "earliest":
            return start
        if to == "latest":
            return end
        assert isinstance(to, int)
        found = self._log.offset_for_time(topic, partition, to)
        return end if found is None else found

    def delete_group(self, group: str) -> int:
        """Delete the group; returns how many committed offsets it had."""
        self._check_open()
        count = len(self._log.group_offsets(group))
        self._log.delete_group(group)
        return count

    # --- streams --------------------------------------------------------------------------

    @property
    def streams(self) -> RemoteStreams:
        """The stream calls over the extension APIs (what ``Repository`` uses)."""
        self._check_open()
        return self._streams

    def append_to_stream(self, stream_id: str, events: Sequence[NewEvent] | NewEvent,
                         expected_version: int | StreamState = StreamState.ANY, *,
                         topic: str | None = None) -> AppendResult:
        """Append events to a stream, atomically, if it is at ``expected_version`` (as ``Store``)."""
        batch = [events] if isinstance(events, NewEvent) else events
        return self.streams.append(stream_id, batch, expected_version, topic)

    def read_stream(self, stream_id: str, from_version: int = 0, limit: int | None = None,
                    backwards: bool = False) -> list[RecordedEvent]:
        if backwards and from_version == 0:
            from_version = -1
        return self.streams.read(stream_id, from_version, limit, backwards)

    def read_all(self, from_position: int = 0, limit: int | None = 1000) -> list[RecordedEvent]:
        return self.streams.read_all(from_position, limit)

    def stream_version(self, stream_id: str) -> int | None:
        return self.streams.stream_version(stream_id)

    def stream_versions(self, stream_ids: Sequence[str]) -> list[int]:
        """The last version of each stream (-1: no events), in one round trip."""
        return self.streams.stream_versions(stream_ids)

    def list_streams(self, category: str | None = None) -> list[str]:
        return self.streams.list_streams(category)

    def subscribe_to_all(self, from_position: int | None = 0, **options: Any) -> RemoteSubscription:
        """Every stream's events in position order, history then live (as ``Store``)."""
        return self._subscribe(0, None, from_position, "from_position", **options)

    def subscribe_to_category(self, category: str, from_position: int | None = 0,
                              **options: Any) -> RemoteSubscription:
        if not isinstance(category, str) or not category or "-" in category or "\x00" in category:
            raise InvalidArgumentError(
                f"category must be a non-empty str without '-' or NUL characters, got {category!r}")
        return self._subscribe(1, category, from_position, "from_position", **options)

    def subscribe_to_stream(self, stream_id: str, from_version: int | None = 0,
                            **options: Any) -> RemoteSubscription:
        check_stream_id(stream_id)
        return self._subscribe(2, stream_id, from_version, "from_version", **options)

    def _subscribe(self, kind: int, target: str | None, start: int | None, what: str, *,
                   page_events: int = PAGE_EVENTS) -> RemoteSubscription:
        check_int64(start, what, optional=True)
        check_count(page_events, "page_events")
        streams = self.streams
        if start is None:
            if kind == 2:
                assert target is not None
                version = streams.stream_version(target)
                start = 0 if version is None else version + 1
            else:
                start = streams.watermark()
        else:
            streams.stream_versions([])  # the server serves streams: fail here, not in next()
        return RemoteSubscription(streams.connection.open_one(), kind, target, start, page_events,
                                  self._max_bytes)

    # --- dynamic consistency boundaries (AppendEvents, ReadEvents, PollEvents) ----------

    @property
    def dcb(self) -> RemoteDCB:
        """The DCB calls over the extension APIs."""
        self._check_open()
        return self._dcb

    def append_events(self, events: Sequence[TaggedEvent] | TaggedEvent,
                      condition: AppendCondition | None = None) -> int:
        """Append tagged events atomically unless ``condition`` fails (as ``Store``)."""
        return self.dcb.append(events, condition)

    def read_events(self, query: Query | None = None, *, after: int | None = None,
                    limit: int | None = None) -> TaggedRead:
        """The tagged events matching ``query`` after ``after``, up to ``limit`` (as ``Store``)."""
        return self.dcb.read(query, after, limit)

    def subscribe_events(self, query: Query | None = None, *, after: int | None = None,
                         page_events: int = PAGE_EVENTS) -> RemoteTaggedSubscription:
        """The tagged events matching ``query`` after ``after``: history, then live."""
        return self.dcb.subscribe(query, after, page_events)

    def get_stream_metadata(self, stream_id: str) -> StreamMetadata:
        return self.streams.metadata(stream_id)

    def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> AppendResult:
        """Set max age, max count, truncate-before or custom metadata of a stream."""
        return self.streams.set_metadata(stream_id, metadata)

    def delete_stream(self, stream_id: str) -> AppendResult:
        """Soft-delete a stream (as ``Store.delete_stream``)."""
        return self.streams.delete(stream_id)

    def truncate_stream(self, stream_id: str, before_version: int) -> AppendResult:
        """Hide the stream's events below ``before_version``."""
        return self.streams.truncate_before(stream_id, before_version)

    # --- maintenance: the embedded store's own disk ------------------------------------------

    def enforce_retention(self, now_ms: int | None = None) -> int:
        raise EmbeddedOnlyError("enforce_retention")

    def retention(self, topics: Iterable[str] | None = None, *, now_ms: int | None = None,
                  dry_run: bool = False, on_progress: Callable[[Any], object] | None = None) -> list[Any]:
        raise EmbeddedOnlyError("retention")

    def check(self, on_progress: Callable[[int], object] | None = None) -> Any:
        raise EmbeddedOnlyError("check")

    def statistics(self) -> Any:
        raise EmbeddedOnlyError("statistics")

    def serve(self, address: str = "127.0.0.1:9092", **options: Any) -> Any:
        raise EmbeddedOnlyError("serve")

    def metrics(self, registry: Any = None) -> Any:
        raise EmbeddedOnlyError("metrics")

    def register_metrics(self, registry: Any) -> Any:
        raise EmbeddedOnlyError("register_metrics")
