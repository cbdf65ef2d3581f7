"""A Kafka-protocol cluster as the mirror's source or destination, on librdkafka
(confluent-kafka, the ``remote`` extra; imported on first use)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import MirrorError
from ..records import Record, TopicPartition
from .endpoints import name as end_name

try:
    import confluent_kafka as ck
    from confluent_kafka import admin as _admin
except ImportError as e:  # pragma: no cover - depends on the installation
    raise MirrorError(f"{e.name} is missing; es mirror to or from a Kafka cluster needs the 'remote' "
                      "extra: pip install 'embedded-eventstore[remote]'") from None

ck_admin: Any = _admin  # its classes are re-exported without annotations

#: librdkafka's own log goes here, silent unless the application configures logging.
LOGGER = logging.getLogger("eventstore.mirror.librdkafka")
LOGGER.addHandler(logging.NullHandler())
LOGGER.propagate = False


def _common(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": LOGGER}


class Cluster:
    """The metadata, offsets and topic creation both ends need."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self.bootstrap = bootstrap
        self.name = end_name(("kafka", bootstrap))
        self.timeout_s = timeout_s
        self.admin = ck_admin.AdminClient(_common(bootstrap))
        self.offsets = ck.Consumer(_common(bootstrap) | {
            "group.id": "es-mirror", "enable.auto.commit": False, "isolation.level": "read_committed",
            "enable.partition.eof": True, "fetch.wait.max.ms": 20})
        self.topics()  # fails now, with one line, when the cluster is out of reach

    def topics(self) -> dict[str, int]:
        try:
            metadata = self.admin.list_topics(timeout=self.timeout_s)
        except ck.KafkaException as e:
            raise MirrorError(f"cannot reach {self.name} within {self.timeout_s:g} s: {_reason(e)}") from None
        return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        """(log start, end) of a partition: ListOffsets, the end confirmed by a Fetch from it,
        whose answer carries the high watermark (a broker may answer ListOffsets with less:
        Tansu's memory engine gives its last batch's base offset + 1)."""
        part = ck.TopicPartition(tp.topic, tp.partition)
        try:
            self.offsets.list_topics(tp.topic, timeout=self.timeout_s)  # a partition just added
            low, high = self.offsets.get_watermark_offsets(part, timeout=self.timeout_s, cached=False)
        except ck.KafkaException as e:
            raise MirrorError(f"{self.name}: no offsets for {tp.topic}[{tp.partition}]: {_reason(e)}",
                              ) from None
        self.offsets.assign([ck.TopicPartition(tp.topic, tp.partition, high)])
        try:
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline and not self.offsets.consume(1, 0.1):  # bounded
                pass  # a record past ``high``, or the partition's end (an EOF event): fetched
            fetched = self.offsets.get_watermark_offsets(part, cached=True)[1]
        finally:
            self.offsets.unassign()
        return int(low), max(int(high), int(fetched))

    def create(self, topic: str, partitions: int) -> None:
        """CreateTopics with the cluster's default replication; waits until Metadata shows it."""
        futures = self.admin.create_topics([ck_admin.NewTopic(topic, partitions)],
                                           operation_timeout=self.timeout_s)
        self._wait(futures, f"create topic {topic!r}")
        self.until(lambda: self.topics().get(topic) == partitions, f"topic {topic!r} to appear")

    def grow(self, topic: str, partitions: int) -> None:
        futures = self.admin.create_partitions([ck_admin.NewPartitions(topic, partitions)],
                                               operation_timeout=self.timeout_s)
        self._wait(futures, f"grow topic {topic!r} to {partitions} partitions")
        self.until(lambda: self.topics().get(topic) == partitions, f"topic {topic!r} to grow")

    def _wait(self, futures: dict[str, Any], what: str) -> None:
        for future in futures.values():
            try:
                future.result(timeout=self.timeout_s)
            except ck.KafkaException as e:
                raise MirrorError(f"{self.name}: cannot {what}: {_reason(e)}") from None

    def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until ``condition`` holds, at most the timeout."""
        deadline = time.monotonic() + self.timeout_s
        while not condition():  # bounded by the deadline
            if time.monotonic() > deadline:
                raise MirrorError(f"{self.name}: waited {self.timeout_s:g} s for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self.offsets.close()


class KafkaSource:
    """Reads a cluster with a consumer that assigns itself the partitions: no group joined,
    nothing committed on the source; committed records only (read_committed)."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self.cluster = Cluster(bootstrap, timeout_s)
        self.name = self.cluster.name
        self.consumer = ck.Consumer(_common(bootstrap) | {
            "group.id": "es-mirror", "enable.auto.commit": False, "isolation.level": "read_committed",
            "auto.offset.reset": "error", "enable.partition.eof": False})
        self.assigned: set[TopicPartition] = set()

    def topics(self) -> dict[str, int]:
        return self.cluster.topics()

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        return self.cluster.bounds(tp)

    def assign(self, positions: dict[TopicPartition, int]) -> None:
        self.consumer.incremental_assign([ck.TopicPartition(tp.topic, tp.partition, offset)
                                          for tp, offset in positions.items()])
        self.assigned.update(positions)

    def position(self, tp: TopicPartition) -> int:
        (got,) = self.consumer.position([ck.TopicPartition(tp.topic, tp.partition)])
        return int(got.offset)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        for message in self.consumer.consume(max_records, timeout_s):
            error = message.error()
            if error is not None:
                raise MirrorError(f"{self.name}: reading {message.topic()}[{message.partition()}]: "
                                  f"{error.str()}")
            out.append(_record(message))
        return out

    def close(self) -> None:
        self.consumer.close()
        self.cluster.close()


class Lane:
    """One destination partition's deliveries. The idempotent producer reports a partition's
    records in the order they were sent, so the source offsets sent wait in a queue and
    each report takes the first; after a failed one the lane records nothing more."""

    __slots__ = ("delivered", "failure", "sent", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.sent: deque[int] = deque()
        #: (next source offset, destination end) after the last delivery reported
        self.delivered: tuple[int, int] | None = None
        self.failure: str | None = None

    def report(self, error: Any, message: Any) -> None:
        source_offset = self.sent.popleft()
        if error is not None:
            self.failure = self.failure or error.str()
        elif self.failure is None:
            self.delivered = (source_offset + 1, message.offset() + 1)


class KafkaDestination:
    """Writes a cluster with the idempotent producer (acks=all): within its session no retry
    duplicates a record and a partition's records land in order, without a gap; the
    checkpoint covers restarts (docs/mirror.md)."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self.cluster = Cluster(bootstrap, timeout_s)
        self.name = self.cluster.name
        self.producer = ck.Producer(_common(bootstrap) | {
            "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "max.in.flight.requests.per.connection": 5})
        self.lanes: dict[tuple[str, int], Lane] = {}

    def topics(self) -> dict[str, int]:
        return self.cluster.topics()

    def create(self, topic: str, partitions: int) -> None:
        self.cluster.create(topic, partitions)
        self._known(topic, partitions)

    def grow(self, topic: str, partitions: int) -> None:
        self.cluster.grow(topic, partitions)
        self._known(topic, partitions)

    def _known(self, topic: str, partitions: int) -> None:
        """Wait until the producer's own metadata has every partition (it refuses the others)."""
        def known() -> bool:
            metadata = self.producer.list_topics(topic, timeout=self.cluster.timeout_s).topics.get(topic)
            return metadata is not None and len(metadata.partitions) == partitions

        self.cluster.until(known, f"the producer to see {partitions} partitions of {topic!r}")

    def end(self, tp: TopicPartition) -> int:
        return self.cluster.bounds(tp)[1]

    def send(self, records: list[Record]) -> None:
        produce = self.producer.produce
        lanes = self.lanes
        for r in records:
            lane = lanes.get((r.topic, r.partition))
            if lane is None:
                lane = lanes[(r.topic, r.partition)] = Lane(TopicPartition(r.topic, r.partition))
            while True:  # bounded: each turn serves reports, which frees the local queue
                try:
                    produce(r.topic, r.value, r.key, r.partition, on_delivery=lane.report,
                            timestamp=r.timestamp_ms, headers=list(r.headers) if r.headers else None)
                    break
                except BufferError:
                    self.poll(0.05)
                except ck.KafkaException as e:
                    raise MirrorError(f"{self.name}: cannot send to {r.topic}[{r.partition}]: "
                                      f"{_reason(e)}") from None
            lane.sent.append(r.offset)
        self.poll()

    def delivered(self) -> dict[TopicPartition, tuple[int, int]]:
        """(next source offset, destination end) of each partition with deliveries reported."""
        return {lane.tp: lane.delivered for lane in self.lanes.values() if lane.delivered is not None}

    def poll(self, timeout_s: float = 0) -> None:
        """Serve delivery reports; a failed delivery stops the mirror (what was delivered
        before it is checkpointed, nothing after it)."""
        self.producer.poll(timeout_s)
        self._check()

    def flush(self, timeout_s: float) -> None:
        remaining = self.producer.flush(timeout_s)
        self._check()
        if remaining:
            raise MirrorError(f"{self.name}: {remaining} records not acknowledged within {timeout_s:g} s")

    def _check(self) -> None:
        failed = next((lane for lane in self.lanes.values() if lane.failure is not None), None)
        if failed is not None:
            raise MirrorError(f"{self.name}: delivery failed for {failed.tp.topic}[{failed.tp.partition}]: "
                              f"{failed.failure}")

    def close(self) -> None:
        self.cluster.close()


def _record(message: Any) -> Record:
    """A consumed message as the Record the destination takes (headers as (str, bytes) pairs)."""
    ts_type, ts = message.timestamp()
    headers = tuple((k, v.encode() if isinstance(v, str) else v) for k, v in message.headers() or ())
    return Record(offset=message.offset(), timestamp_ms=ts if ts_type != ck.TIMESTAMP_NOT_AVAILABLE else 0,
                  key=message.key(), value=message.value(), headers=headers,
                  topic=message.topic(), partition=message.partition())


def _reason(error: ck.KafkaException) -> str:
    inner = error.args[0] if error.args else None
    return inner.str() if isinstance(inner, ck.KafkaError) else str(error)
