"""The library's infrastructure factory for eventstore (``PERSISTENCE_MODULE=eventstore.eventsourcing``)."""

from __future__ import annotations

from typing import Any, TypeVar

from eventsourcing.dcb.persistence import DCBInfrastructureFactory
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment, EnvType, resolve_topic

from eventstore import Store

from . import settings as keys
from .dcb import EventStoreDCBRecorder
from .mapping import EVENTS
from .recorders import (
    EventStoreAggregateRecorder,
    EventStoreApplicationRecorder,
    EventStoreProcessRecorder,
    EventStoreTrackingRecorder,
)
from .settings import Settings, SettingsError, topic_prefix
from .shared import acquire, release

__all__ = ["EventStoreFactory"]

R = TypeVar("R")


class EventStoreFactory(InfrastructureFactory[EventStoreTrackingRecorder],
                        DCBInfrastructureFactory[EventStoreTrackingRecorder]):
    """Recorders on the store named by ``EVENTSTORE_PATH`` (settings.py lists every key).

    The store is opened when the factory is made (its pending commits applied,
    commits.py) and closed by ``close()`` once no other factory of the process
    uses it.
    """

    EVENTSTORE_PATH = keys.PATH
    EVENTSTORE_DURABILITY = keys.DURABILITY
    EVENTSTORE_FSYNC_INTERVAL_MS = keys.FSYNC_INTERVAL_MS
    EVENTSTORE_PARTITIONS = keys.PARTITIONS
    ORIGINATOR_ID_TYPE = keys.ORIGINATOR_ID_TYPE

    aggregate_recorder_class = EventStoreAggregateRecorder
    application_recorder_class = EventStoreApplicationRecorder
    tracking_recorder_class = EventStoreTrackingRecorder
    process_recorder_class = EventStoreProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self.settings = Settings.from_env(self.env)
        self._shared = acquire(self.settings)
        self._closed = False

    @property
    def store(self) -> Store:
        """The open store (shared with the process's other factories of the same path)."""
        return self._shared.store

    def aggregate_recorder(self, purpose: str = EVENTS) -> EventStoreAggregateRecorder:
        if not isinstance(purpose, str) or not purpose or not purpose.replace("_", "").isalnum():
            raise SettingsError(f"purpose must be letters, digits and '_', got {purpose!r}")
        return self.aggregate_recorder_class(self._shared, topic_prefix(self.env), purpose)

    def application_recorder(self) -> EventStoreApplicationRecorder:
        cls = self._class(self.APPLICATION_RECORDER_TOPIC, None, self.application_recorder_class)
        return cls(self._shared, topic_prefix(self.env))

    def tracking_recorder(
        self, tracking_recorder_class: type[EventStoreTrackingRecorder] | None = None
    ) -> EventStoreTrackingRecorder:
        cls = self._class(self.TRACKING_RECORDER_TOPIC, tracking_recorder_class, self.tracking_recorder_class)
        return cls(self._shared, topic_prefix(self.env))

    def process_recorder(self) -> EventStoreProcessRecorder:
        cls = self._class(self.PROCESS_RECORDER_TOPIC, None, self.process_recorder_class)
        return cls(self._shared, topic_prefix(self.env))

    def dcb_recorder(self) -> EventStoreDCBRecorder:
        """The library's DCB recorder on the store's tagged events (dcb.py)."""
        return EventStoreDCBRecorder(self._shared)

    def _class(self, key: str, given: type[R] | None, default: type[R]) -> type[R]:
        """``given``, else the class the environment names under ``key``, else ``default``."""
        cls: Any = given
        if cls is None:
            topic = self.env.get(key)
            cls = resolve_topic(topic) if topic else default
        if not (isinstance(cls, type) and issubclass(cls, default)):
            raise SettingsError(f"{key}: {cls!r} is not a subclass of {default.__qualname__}")
        return cls

    def close(self) -> None:
        """Let go of the store (closed once no factory of the process uses it). Idempotent."""
        if not self._closed:
            self._closed = True
            release(self._shared)
