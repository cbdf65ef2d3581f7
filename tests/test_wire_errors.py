"""The one table from eventstore's errors to Kafka error codes."""

from __future__ import annotations

import inspect

from kio.schema.errors import ErrorCode

from eventstore import errors as es
from eventstore.wire import errors as wire
from eventstore.wire.errors import (
    CLIENT_SIDE_ERRORS,
    EXTENSION_ERRORS,
    KAFKA_ERRORS,
    KafkaError,
    kafka_error_for,
)


def store_errors() -> list[type[es.EventStoreError]]:
    found = [getattr(es, name) for name in es.__all__]
    return [cls for cls in found if inspect.isclass(cls) and issubclass(cls, es.EventStoreError)]


def test_every_error_of_the_store_has_a_code_or_is_raised_only_in_a_client() -> None:
    unmapped = []
    for cls in store_errors():
        if cls is es.EventStoreError or cls in CLIENT_SIDE_ERRORS:
            continue
        listed = [base for base in cls.__mro__ if base in KAFKA_ERRORS and base is not es.EventStoreError]
        if not listed:
            unmapped.append(cls.__name__)
    assert not unmapped, (
        f"add these to KAFKA_ERRORS (or CLIENT_SIDE_ERRORS) in eventstore/wire/errors.py "
        f"and to docs/protocol.md, section 5: {unmapped}")


def test_client_side_errors_have_no_code_of_their_own() -> None:
    assert not CLIENT_SIDE_ERRORS & set(KAFKA_ERRORS)


def test_codes_names_and_retriable_are_kafkas() -> None:
    codes = {error for error in KAFKA_ERRORS.values()} | set(EXTENSION_ERRORS)
    for error in codes:
        if error in EXTENSION_ERRORS:
            continue
        kafka = ErrorCode(error.code)
        assert kafka.name.upper() == error.name, error
        assert kafka.retriable == error.retriable, error


def test_extension_codes_are_outside_every_kafka_code() -> None:
    kafka_codes = {int(code) for code in ErrorCode}
    for error in EXTENSION_ERRORS:
        assert error.code not in kafka_codes
        assert 20000 <= error.code < 2**15 and not error.retriable
    assert len({e.code for e in EXTENSION_ERRORS}) == len(EXTENSION_ERRORS)


def test_the_table_as_documented() -> None:
    expect = {
        es.TopicNotFoundError("t"): (3, True),
        es.PartitionNotFoundError("t", 9, 3): (3, True),
        es.OffsetOutOfRangeError("t", 0, 99, 0, 10): (1, False),
        es.RecordTooLargeError("t", 10, 5): (10, False),
        es.TopicExistsError("t"): (36, False),
        es.InvalidTopicError("bad name"): (17, False),
        es.InvalidArgumentError("x"): (42, False),
        es.StreamsTopicError("t"): (87, False),
        es.GroupNotEmptyError("g", 2): (68, False),
        es.CommitFailedError("g", "fenced"): (22, False),
        es.StorageFullError("/p", "full"): (56, True),
        es.CorruptionError("/p", 0, "crc"): (56, True),
        es.StoreClosedError("/p"): (6, True),
        es.TransactionRelayPendingError(1, "full"): (-1, False),
        es.WrongExpectedVersionError("s-1", 3, 4): (20001, False),
        es.StreamNotFoundError("s-1"): (20002, False),
        es.StreamNotFoundError("s-1", deleted=True): (20003, False),
        wire.CorruptRecordError("crc"): (2, True),
        wire.ProtocolError("bad"): (42, False),
        wire.UnsupportedVersionError(0, 2): (35, False),
        wire.FrameTooLargeError(10**9, 100): (42, False),
    }
    for error, (code, retriable) in expect.items():
        found = kafka_error_for(error)
        assert (found.code, found.retriable) == (code, retriable), type(error).__name__


def test_a_subclass_takes_its_nearest_listed_base() -> None:
    class DiskGone(es.StorageError):
        pass

    class Odd(es.EventStoreError):
        pass

    assert kafka_error_for(DiskGone) == KafkaError(56, "KAFKA_STORAGE_ERROR", True)
    assert kafka_error_for(DiskGone("/p", "gone")).code == 56
    assert kafka_error_for(Odd()).code == -1


def test_wire_errors_are_store_errors_and_name_where() -> None:
    error = wire.ProtocolError("array of 9 items cannot fit", 12)
    assert isinstance(error, es.EventStoreError)
    assert "byte 12" in str(error) and error.position == 12
    too_large = wire.FrameTooLargeError(2**30, 100 * 2**20)
    assert isinstance(too_large, wire.ProtocolError) and too_large.size == 2**30
