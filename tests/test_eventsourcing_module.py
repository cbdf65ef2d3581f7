"""``PERSISTENCE_MODULE=eventstore.eventsourcing``: the ``eventsourcing`` library's own test
cases for persistence modules, run against eventstore, and what they do not cover.

The library's cases are subclassed unchanged; each recorder gets a store of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, ClassVar
from unittest import TestCase

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    TrackingRecorder,
)

# as modules: pytest would collect (and run, unconfigured) test case classes named here
from eventsourcing.tests import application as app_cases
from eventsourcing.tests import persistence as cases
from eventsourcing.utils import Environment

from eventstore.eventsourcing import (
    EventStoreAggregateRecorder,
    EventStoreApplicationRecorder,
    EventStoreFactory,
    EventStoreProcessRecorder,
    EventStoreTrackingRecorder,
)

MODULE = "eventstore.eventsourcing"


class _Stores(TestCase):
    """A new store (directory) per recorder, closed and removed after the test."""

    def new_factory(self, **env: str) -> EventStoreFactory:
        path = tempfile.mkdtemp(prefix="es-eventsourcing-")
        self.addCleanup(shutil.rmtree, path, True)
        factory = InfrastructureFactory.construct(
            Environment(env={"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": path, **env}))
        assert isinstance(factory, EventStoreFactory)
        self.addCleanup(factory.close)
        return factory


class TestAggregateRecorder(_Stores, cases.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.new_factory().aggregate_recorder()


class TestSnapshotRecorder(_Stores, cases.AggregateRecorderTestCase):
    """The same case against the recorder the library makes for snapshots."""

    def create_recorder(self) -> AggregateRecorder:
        return self.new_factory().aggregate_recorder("snapshots")


class TestApplicationRecorder(_Stores, cases.ApplicationRecorderTestCase[EventStoreApplicationRecorder]):
    def create_recorder(self) -> EventStoreApplicationRecorder:
        return self.new_factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(_Stores, cases.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.new_factory().tracking_recorder()


class TestProcessRecorder(_Stores, cases.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.new_factory().process_recorder()


class TestNonInterleavingNotificationIDs(_Stores, cases.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.new_factory().application_recorder()


class TestNonInterleavingNotificationIDsProcess(_Stores, cases.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.new_factory().process_recorder()


class _TrackingRecorderSubclass(EventStoreTrackingRecorder):
    pass


class TestInfrastructureFactory(cases.InfrastructureFactoryTestCase[EventStoreFactory]):
    env: Environment

    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="es-eventsourcing-")
        self.addCleanup(shutil.rmtree, self.path, True)
        self.env = Environment("TestCase", {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": self.path})
        super().setUp()

    def expected_factory_class(self) -> type[EventStoreFactory]:
        return EventStoreFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return EventStoreAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return EventStoreApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return EventStoreTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return _TrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return EventStoreProcessRecorder


class TestExampleApplication(app_cases.ExampleApplicationTestCase):
    """The library's bank-account application, end to end, with snapshots, configured
    only through the environment (the case builds it with ``env`` of its own)."""

    expected_factory_topic = "eventstore.eventsourcing.factory:EventStoreFactory"
    saved: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        path = tempfile.mkdtemp(prefix="es-eventsourcing-")
        self.addCleanup(shutil.rmtree, path, True)
        for key, value in {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": path}.items():
            self.addCleanup(_restore_env, key, os.environ.get(key))
            os.environ[key] = value


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
