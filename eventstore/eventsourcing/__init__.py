"""The ``eventsourcing`` library's persistence module on eventstore.

Set ``PERSISTENCE_MODULE=eventstore.eventsourcing`` and ``EVENTSTORE_PATH``
in an application's environment (settings.py lists the other keys). How the
library's records map onto streams is mapping.py; how writes to several
streams and tracking records stay atomic is commits.py; docs/format.md,
section 16, has both.

The library finds the factory as the one ``InfrastructureFactory`` subclass
of this module: keep it the only one here.
"""

from __future__ import annotations

from .errors import RecordConflictError, UnsupportedVersionError
from .factory import EventStoreFactory
from .recorders import (
    EventStoreAggregateRecorder,
    EventStoreApplicationRecorder,
    EventStoreProcessRecorder,
    EventStoreTrackingRecorder,
)
from .settings import Settings, SettingsError
from .subscription import EventStoreSubscription

Factory = EventStoreFactory

__all__ = [
    "EventStoreAggregateRecorder",
    "EventStoreApplicationRecorder",
    "EventStoreFactory",
    "EventStoreProcessRecorder",
    "EventStoreSubscription",
    "EventStoreTrackingRecorder",
    "Factory",
    "RecordConflictError",
    "Settings",
    "SettingsError",
    "UnsupportedVersionError",
]
