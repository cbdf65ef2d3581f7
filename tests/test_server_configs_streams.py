"""DescribeConfigs tells whether a topic holds event streams (``eventstore.streams``, read-only),
so that a remote client's ``topic(name).streams`` is the embedded store's answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverkit import served

import eventstore

ck = pytest.importorskip("confluent_kafka")
admin_module = pytest.importorskip("confluent_kafka.admin")

INVALID_CONFIG = 40


def _describe(admin: object, topic: str) -> dict[str, object]:
    resource = admin_module.ConfigResource(admin_module.ResourceType.TOPIC, topic)
    (future,) = admin.describe_configs([resource]).values()  # type: ignore[attr-defined]
    return dict(future.result(timeout=10))


def test_a_topic_describes_whether_it_holds_streams(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.log.create_topic("orders", partitions=2, streams=True)
        store.log.create_topic("clicks", partitions=1)
        admin = admin_module.AdminClient({"bootstrap.servers": bootstrap})
        streams, plain = _describe(admin, "orders"), _describe(admin, "clicks")
        assert streams["eventstore.streams"].value == "true"  # type: ignore[attr-defined]
        assert plain["eventstore.streams"].value == "false"  # type: ignore[attr-defined]
        assert streams["eventstore.streams"].is_read_only  # type: ignore[attr-defined]


def test_the_remote_client_reads_streams_from_the_server(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.log.create_topic("orders", partitions=2, streams=True)
        store.log.create_topic("clicks", partitions=3)
        remote = eventstore.connect(bootstrap)
        try:
            orders, clicks = remote.topic("orders"), remote.topic("clicks")
        finally:
            remote.close()
        assert (orders.streams, orders.partitions) == (True, 2)
        assert (clicks.streams, clicks.partitions) == (False, 3)
        assert orders.streams == store.topic("orders").streams


def test_streams_cannot_be_altered_but_may_be_restated(tmp_path: Path) -> None:
    with served(tmp_path) as (store, bootstrap):
        store.log.create_topic("orders", partitions=1, streams=True)
        admin = admin_module.AdminClient({"bootstrap.servers": bootstrap})

        def alter(value: str) -> None:
            entry = admin_module.ConfigEntry("eventstore.streams", value,
                                             incremental_operation=admin_module.AlterConfigOpType.SET)
            resource = admin_module.ConfigResource(admin_module.ResourceType.TOPIC, "orders",
                                                   incremental_configs=[entry])
            (future,) = admin.incremental_alter_configs([resource]).values()
            future.result(timeout=10)

        alter("true")  # the value it has: accepted, nothing changes
        with pytest.raises(ck.KafkaException) as refused:
            alter("false")
        assert refused.value.args[0].code() == INVALID_CONFIG
        assert store.topic("orders").streams is True
        assert _describe(admin, "orders")["eventstore.streams"].value == "true"  # type: ignore[attr-defined]
