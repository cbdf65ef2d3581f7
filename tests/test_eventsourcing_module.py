"""``PERSISTENCE_MODULE=eventstore.eventsourcing``: the ``eventsourcing`` library's own test
cases for persistence modules, run against eventstore, and what they do not cover.

The library's cases are subclassed unchanged; each recorder gets a store of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from unittest import TestCase
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.cipher import AESCipher
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    StoredEvent,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.popo import POPOAggregateRecorder

# as modules: pytest would collect (and run, unconfigured) test case classes named here
from eventsourcing.tests import application as app_cases
from eventsourcing.tests import persistence as cases
from eventsourcing.tests import projection as proj_cases
from eventsourcing.utils import Environment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import Aggregate as NativeAggregate
from eventstore import Event, EventStoreError, Repository, event_type
from eventstore.eventsourcing import (
    EventStoreAggregateRecorder,
    EventStoreApplicationRecorder,
    EventStoreFactory,
    EventStoreProcessRecorder,
    EventStoreTrackingRecorder,
    RecordConflictError,
    SettingsError,
    UnsupportedVersionError,
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


class TestEventSourcedProjection(proj_cases.EventSourcedProjectionTestCase):
    """The library's projection runner: an application and an event-sourced projection whose
    process recorder writes each counter's events with the tracking record (one commit)."""

    def setUp(self) -> None:
        path = tempfile.mkdtemp(prefix="es-eventsourcing-")
        self.addCleanup(shutil.rmtree, path, True)
        self.env = {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": path}


# --- what the library's cases do not cover -------------------------------------------------


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[EventStoreFactory]:
    made = InfrastructureFactory.construct(
        Environment("Shop", {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": str(tmp_path / "store")}))
    assert isinstance(made, EventStoreFactory)
    yield made
    made.close()


def _stored(originator_id: UUID | str, version: int, topic: str = "t", state: bytes = b"s") -> StoredEvent:
    return StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=state)


def test_an_aggregates_events_are_a_stream_one_version_below(factory: EventStoreFactory) -> None:
    recorder = factory.application_recorder()
    oid = uuid4()
    ids = recorder.insert_events([_stored(oid, 1, "A.Created", b"{}"), _stored(oid, 2, "A.Done", b"[]")])
    events = factory.store.read_stream(str(oid))
    assert [(e.version, e.type, e.data, e.metadata) for e in events] == [
        (0, "A.Created", b"{}", b""), (1, "A.Done", b"[]", b"")]
    assert {e.topic for e in events} == {"shop_events"}
    assert ids == [e.position + 1 for e in events]


def test_versions_from_zero_are_written_into_the_metadata(factory: EventStoreFactory) -> None:
    recorder = factory.application_recorder()
    oid = uuid4()
    recorder.insert_events([_stored(oid, 0), _stored(oid, 1)])
    recorder.insert_events([_stored(oid, 2)])
    events = factory.store.read_stream(str(oid))
    assert [e.metadata for e in events] == [b'{"originator_version":%d}' % v for v in (0, 1, 2)]
    assert [s.originator_version for s in recorder.select_events(oid)] == [0, 1, 2]
    assert [s.originator_version for s in recorder.select_events(oid, gt=0, lte=1)] == [1]
    with pytest.raises(RecordConflictError):
        recorder.insert_events([_stored(oid, 2)])


def test_a_lower_version_after_a_higher_one_is_a_conflict(factory: EventStoreFactory) -> None:
    snapshots = factory.aggregate_recorder("snapshots")
    oid = uuid4()
    snapshots.insert_events([_stored(oid, 5)])
    with pytest.raises(RecordConflictError, match="at version 5"):
        snapshots.insert_events([_stored(oid, 3)])  # a database would take it: documented


def test_an_aggregate_stream_with_a_gap_is_refused_before_anything_is_written(
        factory: EventStoreFactory) -> None:
    recorder = factory.application_recorder()
    oid = uuid4()
    with pytest.raises(UnsupportedVersionError):
        recorder.insert_events([_stored(oid, 3)])
    recorder.insert_events([_stored(oid, 1)])
    with pytest.raises(UnsupportedVersionError):
        recorder.insert_events([_stored(oid, 4)])
    with pytest.raises(EventStoreError):  # both families: the library's and eventstore's
        recorder.insert_events([_stored(oid, 1)])
    assert [s.originator_version for s in recorder.select_events(oid)] == [1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.integers(1, 4), min_size=1, max_size=12), start=st.sampled_from([0, 1]),
       queries=st.lists(st.tuples(st.none() | st.integers(-1, 40), st.none() | st.integers(-1, 40),
                                  st.booleans(), st.none() | st.integers(1, 5)), max_size=8))
def test_selects_match_the_in_memory_recorder(factory: EventStoreFactory, steps: list[int], start: int,
                                              queries: list[tuple[Any, Any, bool, Any]]) -> None:
    """Snapshot streams skip versions; selects by range find them by binary search."""
    ours, model = factory.aggregate_recorder("snapshots"), POPOAggregateRecorder()
    oid = uuid4()
    version = start
    for step in steps:
        for recorder in (ours, model):
            recorder.insert_events([_stored(oid, version, state=b"%d" % version)])
        version += step
    for gt, lte, desc, limit in [*queries, (None, None, True, 1)]:
        got = ours.select_events(oid, gt=gt, lte=lte, desc=desc, limit=limit)
        assert got == model.select_events(oid, gt=gt, lte=lte, desc=desc, limit=limit)


def test_several_originators_in_one_insert_are_one_commit(factory: EventStoreFactory) -> None:
    recorder = factory.application_recorder()
    a, b = uuid4(), uuid4()
    recorder.insert_events([_stored(a, 1)])
    ids = recorder.insert_events([_stored(b, 1), _stored(a, 2), _stored(b, 2)])
    assert ids is not None and len(set(ids)) == 3
    by_id = {n.id: (n.originator_id, n.originator_version)
             for n in recorder.select_notifications(None, 10)}
    assert [by_id[i] for i in ids] == [(b, 1), (a, 2), (b, 2)]
    # a conflict on one originator writes nothing for the others
    with pytest.raises(RecordConflictError):
        recorder.insert_events([_stored(b, 3), _stored(a, 2)])
    assert [s.originator_version for s in recorder.select_events(b)] == [1, 2]


def test_notifications_skip_snapshots_and_tracking_records(factory: EventStoreFactory) -> None:
    app = factory.process_recorder()
    snapshots = factory.aggregate_recorder("snapshots")
    a = uuid4()
    app.insert_events([_stored(a, 1, "T1")])
    snapshots.insert_events([_stored(a, 1, "Snapshot")])
    app.insert_events([], tracking=Tracking("Upstream", 7))
    app.insert_events([_stored(a, 2, "T2")], tracking=Tracking("Upstream", 8))
    app.insert_events([_stored(a, 3, "T1")])
    notes = app.select_notifications(None, 10)
    assert [(n.topic, n.originator_version) for n in notes] == [("T1", 1), ("T2", 2), ("T1", 3)]
    assert app.max_notification_id() == notes[-1].id
    assert [n.originator_version for n in app.select_notifications(None, 1, topics=["T1"])] == [1]
    assert [n.originator_version for n in app.select_notifications(notes[0].id, 10,
                                                                  inclusive_of_start=False)] == [2, 3]
    assert app.select_notifications(None, 10, stop=notes[1].id) == notes[:2]
    snapshots.insert_events([_stored(a, 3, "Snapshot")])  # the last event is not a notification
    assert app.max_notification_id() == notes[-1].id
    assert app.max_tracking_id("Upstream") == 8


def test_max_notification_id_after_reopening(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": str(tmp_path / "store")}
    with closing(InfrastructureFactory.construct(env)) as first:
        recorder = first.application_recorder()
        for _ in range(5):  # five streams, spread over the topic's partitions
            recorder.insert_events([_stored(uuid4(), 1)])
        expected = recorder.max_notification_id()
    with closing(InfrastructureFactory.construct(env)) as second:
        assert second.application_recorder().max_notification_id() == expected == 5


def test_eventstores_repository_reads_and_extends_what_the_library_wrote(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": str(tmp_path / "store")}
    with Dogs(env=env) as dogs:
        dog_id = dogs.register("Fido")
        dogs.add_trick(dog_id, "roll over")
        store = dogs.factory.store  # type: ignore[attr-defined]
        repository = Repository(store, NativeDog, topic="dogs_events")
        native = repository.get(str(dog_id))
        assert (native.name, native.tricks, native.version) == ("Fido", ["roll over"], 1)
        native.learn("play dead")  # appended by eventstore, read by the library
        repository.save(native)
        dog = dogs.repository.get(dog_id)
        assert (dog.tricks, dog.version) == (["roll over", "play dead"], 3)
        assert [n.topic.rsplit(".", 1)[1] for n in dogs.notification_log["1,10"].items] == [
            "Registered", "TrickAdded", "TrickAdded"]


def test_cipher_and_compressor_hooks_work_unchanged(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": str(tmp_path / "store"),
           "CIPHER_KEY": AESCipher.create_key(16),
           "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"}
    with Dogs(env=env) as dogs:
        dog_id = dogs.register("Rex")
        dogs.add_trick(dog_id, "sit")
        stored = dogs.factory.store.read_stream(str(dog_id))  # type: ignore[attr-defined]
        assert b"Rex" not in stored[0].data  # compressed, then encrypted
        assert dogs.repository.get(dog_id).tricks == ["sit"]


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SHOP_EVENTSTORE_PATH, EVENTSTORE_PATH"):
        InfrastructureFactory.construct(Environment("Shop", {"PERSISTENCE_MODULE": MODULE}))
    base = {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": str(tmp_path / "s")}
    with pytest.raises(SettingsError, match="EVENTSTORE_DURABILITY"):
        InfrastructureFactory.construct({**base, "EVENTSTORE_DURABILITY": "sometimes"})
    with pytest.raises(SettingsError, match="EVENTSTORE_PARTITIONS"):
        InfrastructureFactory.construct({**base, "EVENTSTORE_PARTITIONS": "0"})
    assert not (tmp_path / "s").exists()  # nothing made for a refused setting
    app_env = Environment("Shop", {**base, "SHOP_EVENTSTORE_DURABILITY": "none"})
    with closing(InfrastructureFactory.construct(app_env)) as first:
        assert isinstance(first, EventStoreFactory) and first.store.durability == "none"
        with closing(InfrastructureFactory.construct(app_env)) as second:  # the same store, shared
            assert isinstance(second, EventStoreFactory) and second.store is first.store
        assert not first.store.closed
        with pytest.raises(SettingsError, match="already open"):
            InfrastructureFactory.construct(base)  # fsync asked, none open
        store = first.store
    assert store.closed


def test_a_subscription_stops_while_it_waits(factory: EventStoreFactory) -> None:
    recorder = factory.application_recorder()
    recorder.insert_events([_stored(uuid4(), 1)])
    got: list[int] = []
    with recorder.subscribe(gt=None) as subscription:
        def consume() -> None:
            got.extend(n.id for n in subscription)

        thread = threading.Thread(target=consume)
        thread.start()
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        recorder.insert_events([_stored(uuid4(), 1)])
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        subscription.stop()
        thread.join(5)
    assert not thread.is_alive() and got == [1, 2]


# --- an application and a native aggregate over the same streams --------------------------


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class Dogs(Application[UUID]):
    def register(self, name: str) -> UUID:
        dog = Dog(name)
        self.save(dog)
        return dog.id

    def add_trick(self, dog_id: UUID, trick: str) -> None:
        dog: Dog = self.repository.get(dog_id)
        dog.add_trick(trick)
        self.save(dog)


TOPIC = f"{__name__}:Dog"


@event_type(f"{TOPIC}.Registered")
class DogRegistered(Event):
    name: str
    timestamp: dict[str, str]


@event_type(f"{TOPIC}.TrickAdded")
class TrickAdded(Event):
    trick: str
    timestamp: dict[str, str]


class NativeDog(NativeAggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.name = ""
        self.tricks: list[str] = []

    def learn(self, trick: str) -> None:
        now = {"_type_": "datetime_iso", "_data_": datetime.now(UTC).isoformat()}
        self.trigger_event(TrickAdded, trick=trick, timestamp=now)

    def apply_DogRegistered(self, e: DogRegistered) -> None:
        self.name = e.name

    def apply_TrickAdded(self, e: TrickAdded) -> None:
        self.tricks.append(e.trick)


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README, "Using eventstore from the eventsourcing library": the python block, as written."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Using eventstore from the `eventsourcing` library", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {"BankAccounts": app_cases.BankAccounts}
    exec(code, scope)
    app = scope["app"]
    try:
        assert isinstance(app.factory, EventStoreFactory)
        assert app.factory.store.path == "bank-data"
        assert app.repository.get(scope["account_id"]).full_name == "Alice"
    finally:
        app.close()


def test_the_module_uses_only_eventstores_public_api() -> None:
    """eventstore/eventsourcing/ imports eventstore's top-level names only and touches no
    private attribute of anything but its own objects: refactors below it cannot break it."""
    import ast

    import eventstore.eventsourcing as package

    found = []
    for path in Path(package.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(
                    "eventstore."):
                found.append(f"{path.name}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.Import) and any(a.name.startswith("eventstore.") for a in node.names):
                found.append(f"{path.name}:{node.lineno} imports a submodule of eventstore")
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.name}:{node.lineno} reads .{node.attr}")
    assert found == []
