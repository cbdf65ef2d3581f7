"""The persistence module's errors: eventstore errors that are also the library's.

The library catches its own classes (``IntegrityError`` above all); eventstore's
callers catch ``EventStoreError``. Each error here is both.
"""

from __future__ import annotations

from eventsourcing.persistence import DataError, IntegrityError

from eventstore import EventStoreError, InvalidArgumentError

__all__ = ["RecordConflictError", "UnsupportedVersionError"]


class RecordConflictError(IntegrityError, EventStoreError):
    """A record is already there: an originator's version, or a tracking record at or past this one."""


class UnsupportedVersionError(InvalidArgumentError, DataError):
    """An originator's events would leave a gap eventstore's stream versions cannot show
    (its n-th event may have at most version n), or an event is not of the library's types."""
