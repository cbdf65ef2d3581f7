"""The ``eventsourcing`` library's DCB recorder cases (``DCBRecorderTestCase``) against
``EventStoreDCBRecorder``, and the library's in-memory (``popo``) recorder through the same
cases as a control. The library's cases are private methods; each runs here as a test."""

from __future__ import annotations

import shutil
import tempfile

from eventsourcing.dcb.api import DCBEvent, DCBRecorder
from eventsourcing.dcb.persistence import DCBInfrastructureFactory
from eventsourcing.dcb.popo import InMemoryDCBRecorder
from eventsourcing.dcb.tests import DCBRecorderTestCase
from eventsourcing.persistence import InfrastructureFactory, IntegrityError
from eventsourcing.utils import Environment

from eventstore.eventsourcing import EventStoreFactory
from eventstore.eventsourcing.dcb import EventStoreDCBRecorder

MODULE = "eventstore.eventsourcing"


class TestEventStoreDCBRecorder(DCBRecorderTestCase):
    def new_factory(self) -> EventStoreFactory:
        path = tempfile.mkdtemp(prefix="es-dcb-")
        self.addCleanup(shutil.rmtree, path, True)
        factory = InfrastructureFactory.construct(
            Environment(env={"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": path}))
        assert isinstance(factory, EventStoreFactory)
        self.addCleanup(factory.close)
        return factory

    def recorder(self) -> DCBRecorder:
        return self.new_factory().dcb_recorder()

    def test_append_read(self) -> None:
        self._test_append_read(self.recorder())

    def test_append_subscribe(self) -> None:
        self._test_append_subscribe(self.recorder())

    def test_append_read_after_earlier_events(self) -> None:
        """The library's ``initial_position``: DCB events recorded before the case starts."""
        recorder = self.recorder()
        recorder.append([DCBEvent("earlier", b"", ["earlier"]), DCBEvent("earlier", b"", [])])
        self._test_append_read(recorder, initial_position=2)

    def test_append_subscribe_after_earlier_events(self) -> None:
        recorder = self.recorder()
        recorder.append([DCBEvent("earlier", b"", ["earlier"])])
        self._test_append_subscribe(recorder, initial_position=1)

    def test_the_factory_is_the_library_dcb_factory(self) -> None:
        path = tempfile.mkdtemp(prefix="es-dcb-")
        self.addCleanup(shutil.rmtree, path, True)
        factory = DCBInfrastructureFactory.construct(
            Environment(env={"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": path}))
        self.addCleanup(factory.close)
        recorder = factory.dcb_recorder()
        self.assertIsInstance(recorder, EventStoreDCBRecorder)
        recorder.append([DCBEvent("t", b"x", ["a"])])
        with self.assertRaises(IntegrityError):
            recorder.append([DCBEvent("t", b"y", ["a"])], condition=None or _condition_on("a"))


def _condition_on(tag: str):  # type: ignore[no-untyped-def]
    from eventsourcing.dcb.api import DCBAppendCondition, DCBQuery, DCBQueryItem
    return DCBAppendCondition(DCBQuery([DCBQueryItem(tags=[tag])]))


class TestPopoDCBRecorderControl(DCBRecorderTestCase):
    """The library's reference recorder through the same cases: the cases themselves pass."""

    def test_append_read(self) -> None:
        self._test_append_read(InMemoryDCBRecorder())

    def test_append_subscribe(self) -> None:
        recorder = InMemoryDCBRecorder()
        self._test_append_subscribe(recorder)
