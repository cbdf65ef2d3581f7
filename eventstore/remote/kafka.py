"""The log half of a remote store, on confluent-kafka (librdkafka): any Kafka-protocol server.

Topics go through the admin client; ``append`` through one shared producer
(``acks=all``, the call waits for its delivery report); ``read``, ``offsets`` and
``offset_for_time`` through one reading consumer that is assigned partitions by
hand and never joins a group. ``producer()`` and ``consumer()`` give objects with
the embedded clients' API over librdkafka's own producer and consumer, groups
included. librdkafka was chosen by measurement (docs/protocol.md, section 1).

Every librdkafka client the store makes gets its settings from one place
(``KafkaLog.client_config``): the servers, the logger and the security settings of
``connect`` (``security.py``). The first of them is made only after a connection of
our own has authenticated and been answered a Metadata request (``check_access``), so
a wrong password raises ``AuthenticationFailedError`` at once rather than after
librdkafka's retries.

Kafka errors come back as the embedded store's exceptions (``raise_kafka``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..client.consumer import OffsetAndTimestamp
from ..errors import (
    CommitFailedError,
    EventStoreError,
    IllegalStateError,
    InvalidArgumentError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    RecordDeserializationError,
    RecordTooLargeError,
    StoreClosedError,
    StreamsTopicError,
    TopicExistsError,
    TopicNotFoundError,
)
from ..groups.membership import GroupDescription, MemberDescription
from ..records import (
    TIMESTAMP_TYPES,
    Message,
    OffsetAndMetadata,
    Record,
    RecordMetadata,
    TopicConfig,
    TopicPartition,
)
from ..validation import as_bytes, check_headers
from .connection import error_with_message

try:
    import confluent_kafka as ck
    from confluent_kafka import admin as _admin
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(f"{__name__}: {e.name} is missing; the remote store needs the 'remote' extra: "
                      "pip install 'embedded-eventstore[remote]'") from e

__all__ = ["KafkaLog", "RemoteConsumer", "RemoteFuture", "RemoteProducer", "raise_kafka"]

ck_admin: Any = _admin  # its classes are re-exported without annotations
#: librdkafka's log lines go to Python logging, not to stderr
LOGGER = logging.getLogger("eventstore.remote")
TIMEOUT_S = 30.0
CATCH_UP_S = 5.0  # the longest poll(0) waits for records the server is known to hold
JOIN_WAIT_S = 30.0  # the longest an iterator waits for a group to give it partitions
WAIT_SLICE_S = 1.0  # wait_for asks for the end offset at least this often
FETCH_WAIT_MS = 100  # how long the server may hold a fetch: records appended wake it at once
#: The read-only topic config a store's server may describe: whether the topic holds streams
STREAMS_CONFIG = "eventstore.streams"
#: Every producer's settings: acknowledged by the leader's durable write, and keyed records
#: on the partition ``partition_for_key`` (murmur2, as the embedded store and Java clients).
PRODUCER_CONFIG: dict[str, Any] = {"logger": LOGGER, "acks": "all", "partitioner": "murmur2_random",
                                   "enable.idempotence": False}
_E = ck.KafkaError
# librdkafka's local error codes are named with a leading underscore (``KafkaError._TRANSPORT``)
_LOCAL: dict[str, int] = {name: getattr(_E, "_" + name) for name in (
    "UNKNOWN_TOPIC", "UNKNOWN_PARTITION", "TRANSPORT", "ALL_BROKERS_DOWN", "TIMED_OUT", "PARTITION_EOF",
    "MAX_POLL_EXCEEDED", "ASSIGNMENT_LOST", "STATE", "FENCED")}
#: What a fenced commit answers (the member was removed, or the group moved on): CommitFailedError
FENCED_COMMIT = {_E.ILLEGAL_GENERATION, _E.UNKNOWN_MEMBER_ID, _E.REBALANCE_IN_PROGRESS,
                 _E.FENCED_INSTANCE_ID, _LOCAL["MAX_POLL_EXCEEDED"], _LOCAL["ASSIGNMENT_LOST"],
                 _LOCAL["STATE"], _LOCAL["FENCED"]}
PARTITION_EOF = _LOCAL["PARTITION_EOF"]


def raise_kafka(error: Any, what: str) -> None:
    """Raise the store's exception for librdkafka's ``KafkaError`` met while doing ``what``."""
    if error is None:
        return
    code: Any = error.code() if hasattr(error, "code") else None
    text = f"{what}: {error.str() if hasattr(error, 'str') else error}"
    cls: type[EventStoreError] = {
        _E.UNKNOWN_TOPIC_OR_PART: TopicNotFoundError, _LOCAL["UNKNOWN_TOPIC"]: TopicNotFoundError,
        _LOCAL["UNKNOWN_PARTITION"]: PartitionNotFoundError, _E.TOPIC_ALREADY_EXISTS: TopicExistsError,
        _E.TOPIC_EXCEPTION: InvalidTopicError, _E.MSG_SIZE_TOO_LARGE: RecordTooLargeError,
        _E.INVALID_REQUEST: InvalidArgumentError, _E.INVALID_PARTITIONS: InvalidArgumentError,
        _E.INVALID_CONFIG: InvalidArgumentError, _E.OFFSET_OUT_OF_RANGE: OffsetOutOfRangeError,
        _E.INVALID_RECORD: StreamsTopicError,  # what a store's server answers a Produce to streams
        _LOCAL["TRANSPORT"]: StoreClosedError, _LOCAL["ALL_BROKERS_DOWN"]: StoreClosedError,
        _LOCAL["TIMED_OUT"]: StoreClosedError,
    }.get(code, EventStoreError)
    raise error_with_message(cls, text)


def _wait(future: concurrent.futures.Future[Any], what: str) -> Any:
    try:
        return future.result(TIMEOUT_S)
    except ck.KafkaException as e:
        raise_kafka(e.args[0] if e.args else None, what)
    except concurrent.futures.TimeoutError:
        raise _unavailable(f"{what}: no answer in {TIMEOUT_S:.0f} s") from None


def _unavailable(reason: str) -> EventStoreError:
    return error_with_message(StoreClosedError, reason)


def _headers(msg: Any) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v if v is not None else b"") for k, v in (msg.headers() or ()))


def take(consumer: Any, limit: int, timeout_s: float) -> list[Any]:
    """Up to ``limit`` messages, waiting up to ``timeout_s`` for the first only: librdkafka's
    ``consume(n, timeout)`` waits for all ``n``; a poll returns as soon as there are records."""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]


def record_of(msg: Any) -> Record:
    """librdkafka's message as the store's ``Record`` (its timestamp type too: librdkafka
    numbers LogAppendTime 2, the store 1, as Kafka)."""
    kind, timestamp = msg.timestamp()
    marked = Record.TIMESTAMP_LOG_APPEND_TIME if kind == ck.TIMESTAMP_LOG_APPEND_TIME else 0
    return Record(offset=msg.offset(), timestamp_ms=timestamp, key=msg.key(), value=msg.value(),
                  headers=_headers(msg), topic=msg.topic(), partition=msg.partition(), timestamp_type=marked)


_CONFIGS = (("retention_ms", "retention.ms"), ("retention_bytes", "retention.bytes"),
            ("segment_bytes", "segment.bytes"), ("segment_ms", "segment.ms"),
            ("max_record_bytes", "max.message.bytes"), ("timestamp_type", "message.timestamp.type"))


class KafkaLog:
    """Topics, appends and reads of a store (or any Kafka cluster) at ``bootstrap``."""

    def __init__(self, bootstrap: str, settings: Mapping[str, str] | None = None,
                 check_access: Callable[[], None] | None = None) -> None:
        self.bootstrap = bootstrap
        self._common: dict[str, Any] = {**(settings or {}), "bootstrap.servers": bootstrap, "logger": LOGGER}
        self._check_access = check_access
        self._access_checked = check_access is None
        self._admin_lock = threading.Lock()
        self._admin_client: Any = None
        self._counts: dict[str, int] = {}  # partition counts seen (check_partition)
        self._producer_lock = threading.Lock()
        self._producer: Any = None
        self._reader_lock = threading.Lock()
        self._reader: Any = None

    def client_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with the settings every client of the store shares; the first call
        checks that the server lets this client in (``check_access``; raises if not)."""
        if not self._access_checked:
            assert self._check_access is not None
            self._check_access()
            self._access_checked = True
        return {**config, **self._common}

    @property
    def _admin(self) -> Any:
        """The admin client, made on first use: a store used for streams only starts none of
        librdkafka's threads."""
        with self._admin_lock:
            if self._admin_client is None:
                self._admin_client = ck_admin.AdminClient(self.client_config({}))
            return self._admin_client

    def close(self) -> None:
        with self._producer_lock:
            if self._producer is not None:
                self._producer.flush(TIMEOUT_S)
                self._producer = None
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # --- topics ------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int | None, settings: dict[str, Any],
                     exist_ok: bool) -> TopicConfig:
        config = {key: str(-1 if settings[attr] is None else settings[attr])
                  for attr, key in _CONFIGS if attr in settings}
        topic = ck_admin.NewTopic(name, num_partitions=-1 if partitions is None else partitions,
                                  replication_factor=-1, config=config)
        try:
            _wait(self._admin.create_topics([topic])[name], f"create_topic({name!r})")
        except TopicExistsError:
            if not exist_ok:
                raise TopicExistsError(name) from None
        return self.topic(name)

    def delete_topic(self, name: str) -> None:
        _wait(self._admin.delete_topics([name])[name], f"delete_topic({name!r})")
        self._counts.pop(name, None)

    def alter_topic(self, name: str, partitions: int | None, settings: dict[str, Any]) -> TopicConfig:
        current = self.topic(name)
        if partitions is not None and partitions != current.partitions:
            new = ck_admin.NewPartitions(name, partitions)
            _wait(self._admin.create_partitions([new])[name], f"alter_topic({name!r})")
        entries = [ck_admin.ConfigEntry(key, str(-1 if settings[attr] is None else settings[attr]),
                                        incremental_operation=ck_admin.AlterConfigOpType.SET)
                   for attr, key in _CONFIGS if attr in settings]
        if entries:
            resource = ck_admin.ConfigResource(ck_admin.ResourceType.TOPIC, name, incremental_configs=entries)
            for f in self._admin.incremental_alter_configs([resource]).values():
                _wait(f, f"alter_topic({name!r})")
        return self.topic(name)

    def partitions(self, name: str) -> int:
        meta = self._admin.list_topics(name, timeout=TIMEOUT_S)
        topic = meta.topics.get(name)
        if topic is None or topic.error is not None:
            self._counts.pop(name, None)
            raise TopicNotFoundError(name)
        self._counts[name] = count = len(topic.partitions)
        return count

    def check_partition(self, name: str, partition: int | None) -> None:
        """``TopicNotFoundError`` / ``PartitionNotFoundError`` before sending, as the embedded
        store refuses before writing. Partition counts seen are kept (a send costs no metadata
        request); a partition past the kept count asks again, since topics only grow."""
        count = self._counts.get(name)
        if count is None or (partition is not None and type(partition) is int and partition >= count):
            count = self.partitions(name)
        if partition is not None and (type(partition) is not int or not 0 <= partition < count):
            raise PartitionNotFoundError(name, partition, count)

    def topic(self, name: str) -> TopicConfig:
        count = self.partitions(name)
        resource = ck_admin.ConfigResource(ck_admin.ResourceType.TOPIC, name)
        entries: dict[str, Any] = {}
        try:
            for f in self._admin.describe_configs([resource]).values():
                entries = {k: v.value for k, v in _wait(f, f"topic({name!r})").items()}
        except EventStoreError:
            entries = {}  # a server without DescribeConfigs: the partition count is what is known
        values: dict[str, Any] = {}
        for attr, key in _CONFIGS:
            raw = entries.get(key)
            if raw is not None and raw.lstrip("-").isdigit():
                number = int(raw)
                values[attr] = None if number < 0 and attr.startswith("retention") else number
        if entries.get("message.timestamp.type") in TIMESTAMP_TYPES:
            values["timestamp_type"] = entries["message.timestamp.type"]
        values["streams"] = entries.get(STREAMS_CONFIG) == "true"
        topic_id = self._topic_id(name)
        if topic_id is not None:
            values["topic_id"] = topic_id
        return TopicConfig(name=name, partitions=count, **values)

    def _topic_id(self, name: str) -> uuid.UUID | None:
        """The topic's id (DescribeTopicPartitions, or Metadata), None if the server has none."""
        try:
            found = _wait(self._admin.describe_topics(ck.TopicCollection([name]))[name],
                          f"topic({name!r})")
        except EventStoreError:
            return None
        raw = getattr(found, "topic_id", None)
        if raw is None:
            return None
        value = ((raw.get_most_significant_bits() & 0xFFFFFFFFFFFFFFFF) << 64) | (
            raw.get_least_significant_bits() & 0xFFFFFFFFFFFFFFFF)
        return uuid.UUID(int=value)

    def topic_names(self) -> list[str]:
        meta = self._admin.list_topics(timeout=TIMEOUT_S)
        return sorted(n for n in meta.topics if not n.startswith("__"))

    # --- appends -------------------------------------------------------------------

    def _shared_producer(self) -> Any:
        with self._producer_lock:
            if self._producer is None:
                self._producer = ck.Producer(self.client_config({**PRODUCER_CONFIG, "linger.ms": 0}))
            return self._producer

    def append_many(self, topic: str, messages: Sequence[Message]) -> list[RecordMetadata]:
        """Produce ``messages`` and wait for every delivery report; the first error raises."""
        where = f"append to topic {topic!r}"
        messages = [Message(value=as_bytes(m.value, "value", where), key=as_bytes(m.key, "key", where),
                            headers=list(check_headers(m.headers, where)) or None,
                            partition=m.partition, timestamp_ms=m.timestamp_ms) for m in messages]
        for partition in {m.partition for m in messages}:
            self.check_partition(topic, partition)
        producer = self._shared_producer()
        results: list[Any] = [None] * len(messages)
        pending = [len(messages)]

        def report(i: int) -> Callable[[Any, Any], None]:
            def done(err: Any, msg: Any) -> None:
                results[i] = err if err is not None else RecordMetadata(
                    msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1])
                pending[0] -= 1
            return done

        for i, m in enumerate(messages):
            kwargs: dict[str, Any] = {"on_delivery": report(i)}
            if m.partition is not None:
                kwargs["partition"] = m.partition
            if m.timestamp_ms is not None:
                kwargs["timestamp"] = m.timestamp_ms
            if m.headers:
                kwargs["headers"] = list(m.headers)
            try:
                producer.produce(topic, m.value, m.key, **kwargs)
            except ck.KafkaException as e:
                raise_kafka(e.args[0] if e.args else None, f"append to {topic!r}")
            except BufferError:
                producer.poll(0.1)
                producer.produce(topic, m.value, m.key, **kwargs)
        deadline = time.monotonic() + TIMEOUT_S
        while pending[0] > 0 and time.monotonic() < deadline:  # bounded by the deadline
            producer.poll(0.05)
        for r in results:
            if r is None:
                raise _unavailable(f"append to {topic!r}: no delivery report in {TIMEOUT_S:.0f} s")
            if not isinstance(r, RecordMetadata):
                raise_kafka(r, f"append to {topic!r}")
        return list(results)

    # --- reads ---------------------------------------------------------------------

    def _shared_reader(self) -> Any:
        if self._reader is None:
            self._reader = ck.Consumer(self.client_config({
                "group.id": f"eventstore-reader-{uuid.uuid4()}",
                "enable.auto.commit": False, "auto.offset.reset": "error",
                "isolation.level": "read_uncommitted",  # the high watermark, as Store.offsets
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                "enable.partition.eof": True}))
        return self._reader

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        self.partitions(topic)  # raises TopicNotFoundError
        with self._reader_lock:
            try:
                low, high = self._shared_reader().get_watermark_offsets(
                    ck.TopicPartition(topic, partition), timeout=TIMEOUT_S, cached=False)
            except ck.KafkaException as e:
                raise_kafka(e.args[0] if e.args else None, f"offsets({topic!r}, {partition})")
        return int(low), int(high)

    def read(self, topic: str, partition: int, offset: int, max_records: int,
             max_bytes: int | None) -> list[Record]:
        low, high = self.offsets(topic, partition)
        if offset < low or offset > high:
            raise OffsetOutOfRangeError(topic, partition, offset, low, high)
        if offset == high:
            return []
        out: list[Record] = []
        size = 0
        with self._reader_lock:
            reader = self._shared_reader()
            reader.assign([ck.TopicPartition(topic, partition, offset)])
            try:
                deadline = time.monotonic() + TIMEOUT_S
                while len(out) < max_records and time.monotonic() < deadline:  # bounded
                    msgs = take(reader, min(max_records - len(out), 10_000), 0.5)
                    for msg in msgs:
                        err = msg.error()
                        if err is not None:
                            if err.code() == PARTITION_EOF:
                                return out
                            raise_kafka(err, f"read({topic!r}, {partition}, {offset})")
                        record = record_of(msg)
                        size += len(record.value or b"") + len(record.key or b"")
                        if max_bytes is not None and out and size > max_bytes:
                            return out
                        out.append(record)
                    if out and out[-1].offset + 1 >= high:
                        return out
            finally:
                reader.unassign()
        return out

    def wait_for(self, topic: str, partition: int, offset: int, timeout_s: float | None) -> bool:
        """Until the partition's end passes ``offset`` (True) or the timeout (False): a fetch at
        ``offset`` the server holds until a record is there, on a consumer of this call's own."""
        self.check_partition(topic, partition)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if self.offsets(topic, partition)[1] > offset:
            return True
        waiter = ck.Consumer(self.client_config({
            "enable.auto.commit": False,
            "group.id": f"eventstore-waiter-{uuid.uuid4()}", "auto.offset.reset": "latest",
            "isolation.level": "read_uncommitted", "fetch.wait.max.ms": FETCH_WAIT_MS}))
        try:
            waiter.assign([ck.TopicPartition(topic, partition, offset)])
            while True:  # bounded by the deadline (None: until the record comes)
                left = WAIT_SLICE_S if deadline is None else min(WAIT_SLICE_S, deadline - time.monotonic())
                if left <= 0:
                    return self.offsets(topic, partition)[1] > offset
                msg = waiter.poll(left)
                if msg is not None and msg.error() is None:
                    return True
                if self.offsets(topic, partition)[1] > offset:  # e.g. reset to the end, past it
                    return True
        finally:
            waiter.close()

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        self.partitions(topic)
        with self._reader_lock:
            try:
                [tp] = self._shared_reader().offsets_for_times(
                    [ck.TopicPartition(topic, partition, timestamp_ms)], timeout=TIMEOUT_S)
            except ck.KafkaException as e:
                raise_kafka(e.args[0] if e.args else None, f"offset_for_time({topic!r}, {partition})")
        raise_kafka(tp.error, f"offset_for_time({topic!r}, {partition})")
        return None if tp.offset < 0 else int(tp.offset)

    # --- groups --------------------------------------------------------------------

    def list_groups(self) -> list[str]:
        result = _wait(self._admin.list_consumer_groups(), "list_groups()")
        return sorted(g.group_id for g in result.valid)

    def group_offsets(self, group: str) -> dict[TopicPartition, int]:
        request = [ck.ConsumerGroupTopicPartitions(group)]
        answer = _wait(self._admin.list_consumer_group_offsets(request)[group], f"group_offsets({group!r})")
        return {TopicPartition(tp.topic, tp.partition): int(tp.offset)
                for tp in answer.topic_partitions if tp.offset >= 0}

    def delete_group(self, group: str) -> None:
        _wait(self._admin.delete_consumer_groups([group])[group], f"delete_group({group!r})")

    def describe_group(self, group: str) -> GroupDescription:
        """The group as DescribeGroups shows it (members' assignments decoded by librdkafka)."""
        found = _wait(self._admin.describe_consumer_groups([group])[group], f"describe_group({group!r})")
        members = [MemberDescription(
            member_id=m.member_id, client_id=m.client_id, client_host=m.host or "", kind="kafka",
            group_instance_id=m.group_instance_id,
            topics=sorted({tp.topic for tp in _assigned(m)}),
            assignment=sorted(TopicPartition(tp.topic, tp.partition) for tp in _assigned(m)),
            owned=sorted(TopicPartition(tp.topic, tp.partition) for tp in _assigned(m)),
        ) for m in found.members]
        state = _STATES.get(found.state.name, found.state.name.title())
        return GroupDescription(group_id=group, state=state, generation=-1,
                                protocol=found.partition_assignor or "", members=members)

    def set_group_offsets(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` for a group with no active members (OffsetCommit by the admin)."""
        parts = [ck.TopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        request = [ck.ConsumerGroupTopicPartitions(group, parts)]
        answer = _wait(self._admin.alter_consumer_group_offsets(request)[group],
                       f"reset_group_offsets({group!r})")
        for tp in answer.topic_partitions:
            raise_kafka(tp.error, f"reset_group_offsets({group!r}) {tp.topic}/{tp.partition}")


#: librdkafka's group states under the names the embedded coordinator uses
_STATES = {"STABLE": "Stable", "EMPTY": "Empty", "PREPARING_REBALANCING": "PreparingRebalance",
           "COMPLETING_REBALANCING": "CompletingRebalance", "DEAD": "Dead", "UNKNOWN": "Unknown"}


def _assigned(member: Any) -> list[Any]:
    assignment = member.assignment
    return list(assignment.topic_partitions) if assignment is not None else []


# --- the embedded clients' API over librdkafka's ----------------------------------------------


class RemoteFuture:
    """A ``send``'s pending result: the API of ``eventstore.FutureRecordMetadata``."""

    def __init__(self) -> None:
        self._future: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()

    def is_done(self) -> bool:
        return self._future.done()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the record was not appended within {timeout} s") from None

    def get(self, timeout: float | None = None) -> RecordMetadata:
        return self.result(timeout)

    def exception(self) -> BaseException | None:
        return self._future.exception(0) if self._future.done() else None

    def succeeded(self) -> bool:
        return self._future.done() and self._future.exception(0) is None

    def add_callback(self, fn: Callable[[RecordMetadata], object]) -> RemoteFuture:
        self._future.add_done_callback(lambda f: None if f.exception() else fn(f.result()))
        return self

    def add_errback(self, fn: Callable[[BaseException], object]) -> RemoteFuture:
        def call(f: concurrent.futures.Future[RecordMetadata]) -> None:
            error = f.exception()
            if error is not None:
                fn(error)
        self._future.add_done_callback(call)
        return self

    def settle(self, err: Any, msg: Any) -> None:
        """librdkafka's delivery report for this record (on the producer's polling thread)."""
        if err is None:
            self._future.set_result(RecordMetadata(msg.topic(), msg.partition(), msg.offset(),
                                                   msg.timestamp()[1]))
            return
        try:
            raise_kafka(err, f"send to {msg.topic()!r}")
        except EventStoreError as e:
            self._future.set_exception(e)


class RemoteProducer:
    """``store.producer()`` of a remote store: the embedded Producer's API on librdkafka's."""

    def __init__(self, log: KafkaLog, *, key_serializer: Callable[[Any], bytes] | None = None,
                 value_serializer: Callable[[Any], bytes] | None = None,
                 client_id: str = "eventstore-producer") -> None:
        self._log = log
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self.client_id = client_id
        self._producer = ck.Producer(log.client_config({**PRODUCER_CONFIG, "client.id": client_id,
                                                        "linger.ms": 5}))
        self._known: set[str] = set()  # topics seen to exist: send checks others once
        self._closed = False
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name=f"{client_id}-reports", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():  # ends at close
            self._producer.poll(0.05)

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None,
             partition: int | None = None, timestamp_ms: int | None = None) -> RemoteFuture:
        """Queue one record; the future resolves once the server acknowledged it."""
        if self._closed:
            raise IllegalStateError("producer is closed")
        if self._value_serializer is not None and value is not None:
            value = self._value_serializer(value)
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        where = f"send to topic {topic!r}"
        value, key = as_bytes(value, "value", where), as_bytes(key, "key", where)
        headers = check_headers(headers, where)
        if topic not in self._known or partition is not None:
            self._log.check_partition(topic, partition)
            self._known.add(topic)
        future = RemoteFuture()
        kwargs: dict[str, Any] = {"on_delivery": future.settle}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if headers:
            kwargs["headers"] = list(headers)
        deadline = time.monotonic() + TIMEOUT_S
        while True:  # bounded by the deadline: a full queue drains as reports arrive
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return future
            except BufferError:
                if time.monotonic() > deadline:
                    raise _unavailable(f"send to {topic!r}: the queue stayed full") from None
                time.sleep(0.01)
            except ck.KafkaException as e:
                raise_kafka(e.args[0] if e.args else None, f"send to {topic!r}")

    def flush(self, timeout: float | None = None) -> None:
        left = self._producer.flush(TIMEOUT_S if timeout is None else timeout)
        if left:
            raise TimeoutError(f"{left} records not yet acknowledged")

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._producer.flush(TIMEOUT_S if timeout is None else timeout)
        finally:
            self._stop.set()
            self._poller.join(TIMEOUT_S)

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self._log.partitions(topic)))

    def __enter__(self) -> RemoteProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_RESETS = {"earliest": "earliest", "latest": "latest", "none": "error"}


class RemoteConsumer:
    """``store.consumer()`` of a remote store: the embedded Consumer's API on librdkafka's."""

    def __init__(self, log: KafkaLog, *topics: str, group_id: str | None = None,
                 client_id: str = "eventstore-consumer", auto_offset_reset: str = "latest",
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 max_poll_records: int = 500, max_poll_interval_ms: int = 300_000,
                 session_timeout_ms: int = 10_000, partition_assignment_strategy: str = "range",
                 consumer_timeout_ms: float = float("inf"),
                 key_deserializer: Callable[[bytes], Any] | None = None,
                 value_deserializer: Callable[[bytes], Any] | None = None) -> None:
        if auto_offset_reset not in _RESETS:
            raise InvalidArgumentError(f"auto_offset_reset must be one of {tuple(_RESETS)}, "
                                       f"got {auto_offset_reset!r}")
        if type(max_poll_records) is not int or max_poll_records < 1:
            raise InvalidArgumentError(f"max_poll_records must be a positive int, got {max_poll_records!r}")
        for name, fn in (("key_deserializer", key_deserializer), ("value_deserializer", value_deserializer)):
            if fn is not None and not callable(fn):
                raise InvalidArgumentError(f"{name} must be callable or None, got {fn!r}")
        self._log = log
        self.group_id = group_id
        self.client_id = client_id
        self._max_poll_records = max_poll_records
        self._reset = auto_offset_reset
        self._consumer_timeout_s = consumer_timeout_ms / 1000
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        strategy = {"range": "range", "roundrobin": "roundrobin",
                    "cooperative-sticky": "cooperative-sticky"}.get(partition_assignment_strategy)
        if strategy is None:
            raise InvalidArgumentError(f"partition_assignment_strategy must be 'range', 'roundrobin' or "
                                       f"'cooperative-sticky', got {partition_assignment_strategy!r}")
        self._consumer = ck.Consumer(log.client_config({
            "client.id": client_id,
            "group.id": group_id or f"eventstore-unnamed-{uuid.uuid4()}",
            "enable.auto.commit": bool(enable_auto_commit and group_id is not None),
            "auto.commit.interval.ms": auto_commit_interval_ms,
            "auto.offset.reset": _RESETS[auto_offset_reset],
            # librdkafka wants the session within the poll interval; the embedded consumer does not
            "max.poll.interval.ms": max_poll_interval_ms,
            "session.timeout.ms": min(session_timeout_ms, max_poll_interval_ms),
            "partition.assignment.strategy": strategy,
            # a seek or a new assignment waits for the fetch in flight: keep those waits short
            "fetch.wait.max.ms": FETCH_WAIT_MS,
        }))
        self._subscription: set[str] | None = None
        self._manual: set[TopicPartition] | None = None
        self._paused: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._counts = {"polls": 0, "records_consumed": 0, "commits": 0, "commit_failures": 0}
        self._failed: RecordDeserializationError | None = None  # raised by polls until a seek
        self._closed = False
        if topics:
            self.subscribe(topics)

    def _check_open(self) -> None:
        if self._closed:
            raise IllegalStateError("consumer is closed")

    def subscribe(self, topics: Iterable[str] = (), listener: Any = None, *,
                  pattern: str | None = None) -> None:
        """Join the group for ``topics`` (or every topic matching ``pattern``)."""
        self._check_open()
        if self.group_id is None:
            raise IllegalStateError("subscribe() needs a group_id; use assign() without one")
        names = list(topics) if pattern is None else ["^" + pattern]
        kwargs: dict[str, Any] = {}
        if listener is not None:
            kwargs["on_assign"] = lambda _c, parts: listener.on_partitions_assigned(
                {TopicPartition(p.topic, p.partition) for p in parts})
            kwargs["on_revoke"] = lambda _c, parts: listener.on_partitions_revoked(
                {TopicPartition(p.topic, p.partition) for p in parts})
        self._consumer.subscribe(names, **kwargs)
        self._subscription, self._manual = set(topics), None

    def subscription(self) -> set[str] | None:
        return None if self._subscription is None else set(self._subscription)

    def unsubscribe(self) -> None:
        self._check_open()
        self._consumer.unsubscribe()
        self._subscription = None

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self._check_open()
        parts = set(partitions)
        self._consumer.assign([ck.TopicPartition(tp.topic, tp.partition) for tp in parts])
        self._manual, self._subscription = parts, None

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(p.topic, p.partition) for p in self._consumer.assignment()}

    def position(self, tp: TopicPartition) -> int:
        known = self._positions.get(tp)
        if known is not None:
            return known
        [got] = self._consumer.position([ck.TopicPartition(tp.topic, tp.partition)])
        if got.offset >= 0:
            return int(got.offset)
        committed = self.committed(tp) if self.group_id is not None else None
        if committed is not None:
            return committed
        if self._reset == "none":
            from ..errors import NoOffsetForPartitionError

            raise NoOffsetForPartitionError(tp.topic, tp.partition, self.group_id)
        low, high = self._log.offsets(tp.topic, tp.partition)
        return low if self._reset == "earliest" else high

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_open()
        self._positions[tp] = offset
        failed = self._failed
        if failed is not None and (failed.topic, failed.partition) == (tp.topic, tp.partition):
            self._failed = None  # seeking the failed partition anywhere: polls read from there
        self._seek_librdkafka(tp, offset)

    def _seek_librdkafka(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(ck.TopicPartition(tp.topic, tp.partition, offset))
        except ck.KafkaException as e:
            manual = self._manual
            if manual is None or tp not in manual:
                raise_kafka(e.args[0] if e.args else None, f"seek({tp.topic!r}, {tp.partition})")
                return
            # librdkafka seeks only partitions it already fetches: assign again from the offsets
            self._consumer.assign([ck.TopicPartition(t.topic, t.partition, self._positions.get(t, -1001))
                                   for t in manual])

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self.assignment()):
            self.seek(tp, self._log.offsets(tp.topic, tp.partition)[0])

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self.assignment()):
            self.seek(tp, self._log.offsets(tp.topic, tp.partition)[1])

    def pause(self, *partitions: TopicPartition) -> None:
        self._consumer.pause([ck.TopicPartition(tp.topic, tp.partition) for tp in partitions])
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._consumer.resume([ck.TopicPartition(tp.topic, tp.partition) for tp in partitions])
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def poll(self, timeout_ms: float = 0, max_records: int | None = None,
             update_offsets: bool = True) -> dict[TopicPartition, list[Record]]:
        """Records from the assigned partitions, waiting up to ``timeout_ms`` for some."""
        self._check_open()
        if self._subscription is None and self._manual is None:
            raise IllegalStateError("poll() needs subscribe() or assign() first")
        limit = self._max_poll_records if max_records is None else max_records
        if type(limit) is not int or limit < 1:
            raise InvalidArgumentError(f"max_records must be a positive int, got {limit!r}")
        self._counts["polls"] += 1
        if self._failed is not None:
            raise self._failed
        msgs = take(self._consumer, limit, max(0.0, timeout_ms) / 1000)
        if not msgs and timeout_ms <= 0 and self._behind():
            # poll(0) returns what is there, as the embedded consumer's: records the server
            # holds past our positions are fetched (bounded) rather than reported as none
            msgs = take(self._consumer, limit, CATCH_UP_S)
        out: dict[TopicPartition, list[Record]] = {}
        for i, msg in enumerate(msgs):
            err = msg.error()
            if err is not None:
                if err.code() == PARTITION_EOF:
                    continue
                raise_kafka(err, "poll()")
            raw = record_of(msg)
            tp = TopicPartition(raw.topic, raw.partition)
            try:
                record = self._deserialized(raw)
            except RecordDeserializationError as e:
                self._rewind(msgs[i:])
                self._failed = e
                if not out:
                    raise
                break
            out.setdefault(tp, []).append(record)
            self._positions[tp] = record.offset + 1
            self._counts["records_consumed"] += 1
        return out

    def _rewind(self, unread: list[Any]) -> None:
        """Seek librdkafka back to the first of ``unread`` in each partition: they were fetched
        but not handed out (a record that did not deserialize, and what came after it)."""
        first: dict[TopicPartition, int] = {}
        for msg in unread:
            if msg.error() is None:
                first.setdefault(TopicPartition(msg.topic(), msg.partition()), msg.offset())
        for tp, offset in first.items():
            self._positions[tp] = offset
            self._seek_librdkafka(tp, offset)

    def _behind(self) -> bool:
        """Whether an assigned, unpaused partition has records past its position on the server."""
        for part in self._consumer.assignment():
            tp = TopicPartition(part.topic, part.partition)
            if tp in self._paused:
                continue
            if self.position(tp) < self._log.offsets(tp.topic, tp.partition)[1]:
                return True
        return False

    def _deserialized(self, record: Record) -> Record:
        """``record`` with its key and value deserialized (None passes through); a failure is a
        ``RecordDeserializationError`` naming the record, the deserializer's error its cause."""
        if self._key_deserializer is None and self._value_deserializer is None:
            return record
        import msgspec

        values: dict[str, Any] = {}
        for part, fn in (("key", self._key_deserializer), ("value", self._value_deserializer)):
            raw = getattr(record, part)
            if fn is None or raw is None:
                continue
            try:
                values[part] = fn(raw)
            except Exception as e:
                raise RecordDeserializationError(record.topic, record.partition, record.offset, part,
                                                 f"{type(e).__name__}: {e}") from e
        return msgspec.structs.replace(record, **values)

    def commit(self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None) -> None:
        """Commit ``offsets`` (default: the positions after what poll returned) to the group."""
        self._check_open()
        if self.group_id is None:
            raise IllegalStateError("commit() needs a group_id")
        chosen = dict(self._positions) if offsets is None else dict(offsets)
        if not chosen:
            return
        parts = [ck.TopicPartition(tp.topic, tp.partition,
                                   o.offset if isinstance(o, OffsetAndMetadata) else int(o))
                 for tp, o in chosen.items()]
        try:
            self._consumer.commit(offsets=parts, asynchronous=False)
        except ck.KafkaException as e:
            self._counts["commit_failures"] += 1
            error = e.args[0] if e.args else None
            if error is not None and error.code() in FENCED_COMMIT:
                raise CommitFailedError(self.group_id, error.str()) from None
            raise_kafka(error, "commit()")
        self._counts["commits"] += 1

    def commit_async(self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None,
                     callback: Any = None) -> None:
        """``commit``, then ``callback(offsets, exception_or_None)`` (as the embedded consumer)."""
        error: Exception | None = None
        try:
            self.commit(offsets)
        except EventStoreError as e:
            error = e
        if callback is not None:
            callback(offsets, error)
        elif error is not None:
            raise error

    def transaction(self) -> Any:
        from .store import EmbeddedOnlyError

        raise EmbeddedOnlyError("transaction")

    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                          ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, ts in timestamps.items():
            offset = self._log.offset_for_time(tp.topic, tp.partition, ts)
            if offset is None:
                out[tp] = None
            else:
                record = self._log.read(tp.topic, tp.partition, offset, 1, None)[0]
                out[tp] = OffsetAndTimestamp(offset, record.timestamp_ms)
        return out

    def metrics(self) -> dict[str, Any]:
        """What this consumer did: polls, records returned, commits (a subset of the embedded
        consumer's counts: fetching is librdkafka's)."""
        return dict(self._counts)

    def committed(self, tp: TopicPartition) -> int | None:
        [got] = self._consumer.committed([ck.TopicPartition(tp.topic, tp.partition)], timeout=TIMEOUT_S)
        return None if got.offset < 0 else int(got.offset)

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._log.offsets(tp.topic, tp.partition)[0] for tp in partitions}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._log.offsets(tp.topic, tp.partition)[1] for tp in partitions}

    def highwater(self, tp: TopicPartition) -> int:
        return self._log.offsets(tp.topic, tp.partition)[1]

    def topics(self) -> set[str]:
        return set(self._log.topic_names())

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._log.partitions(topic)))

    def close(self, autocommit: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        self._consumer.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> RemoteConsumer:
        return self

    def __next__(self) -> Record:
        """The next record, polled one at a time (so positions move only past records handed
        out); stops after ``consumer_timeout_ms`` idle. Joining the group is not idle time: a
        subscribed consumer first waits (at most ``JOIN_WAIT_S``) for its partitions."""
        if self._subscription is not None and not self._consumer.assignment():
            joined_by = time.monotonic() + JOIN_WAIT_S
            while not self._closed and not self._consumer.assignment() and time.monotonic() < joined_by:
                for records in self.poll(100, max_records=1).values():  # bounded by JOIN_WAIT_S
                    return records[0]
        deadline = time.monotonic() + self._consumer_timeout_s
        while not self._closed:  # bounded by consumer_timeout_ms (or close)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            batch = self.poll(min(left, 1.0) * 1000, max_records=1)
            for records in batch.values():
                return records[0]
        raise StopIteration

    def __enter__(self) -> RemoteConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
