"""The package's public surface: ``__all__`` and the error hierarchy."""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import eventstore
import eventstore.errors as errors

# What the README's API section and error list promise; the package may export more.
DOCUMENTED = {
    "open", "Store", "open_reader", "StoreReader", "CheckProblem",
    "Message", "Record", "RecordMetadata", "TopicConfig", "TopicPartition",
    "StoreStatistics", "PartitionStatistics", "CheckReport", "RecoveryEvent",
    "murmur2", "partition_for_key",
    "EventStoreError", "TopicNotFoundError", "TopicExistsError", "PartitionNotFoundError",
    "OffsetOutOfRangeError", "RecordTooLargeError", "InvalidArgumentError", "InvalidTopicError",
    "StoreLockedError", "StoreNotFoundError", "StoreClosedError", "StorageError", "StorageFullError",
    "CorruptionError",
}


USER_PROGRAM = """
import json

import eventstore
from eventstore import Record, RecordMetadata, TopicPartition


def summary(path: str) -> dict[str, int]:
    with eventstore.open(path, create=False) as store:
        meta: RecordMetadata = store.append("orders", b"v", key=b"k")
        records: list[Record] = store.read("orders", meta.partition, 0)
        consumer = store.consumer("orders", group_id="g", value_deserializer=json.loads)
        polled: dict[TopicPartition, list[Record]] = consumer.poll(timeout_ms=100)
        lag = consumer.metrics()["records_lag_max"]
        consumer.close()
        return {"records": len(records) + sum(map(len, polled.values())), "lag": lag or 0,
                "first": records[0].timestamp if records else 0}
"""
# one error a checker can only report if it reads eventstore's annotations
MISTAKE = """

def mistake(store: eventstore.Store) -> str:
    return store.append("orders", b"v").offset
"""


def test_a_typed_user_program_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    """The package ships ``py.typed`` (PEP 561), so a user's checker reads its annotations.

    mypy runs outside the repository (its own configuration and source paths
    out of the way) and finds eventstore where the interpreter imports it from,
    as an installed package: without the marker it would skip eventstore's
    annotations, treat it as untyped, and not see the mistake below.
    """
    package_root = Path(eventstore.__file__).resolve().parent.parent
    assert (package_root / "eventstore" / "py.typed").is_file()

    def mypy(source: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "user.py").write_text(source)
        env = {**os.environ, "PYTHONPATH": str(package_root)}
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull,
             "--python-executable", sys.executable, "user.py"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )

    clean = mypy(USER_PROGRAM)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    wrong = mypy(USER_PROGRAM + MISTAKE)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert 'Incompatible return value type (got "int", expected "str")' in wrong.stdout, wrong.stdout
    assert "py.typed" not in wrong.stdout and "import-untyped" not in wrong.stdout


def _error_classes() -> list[type[BaseException]]:
    return [
        obj for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]


def test_all_has_no_duplicates() -> None:
    assert len(eventstore.__all__) == len(set(eventstore.__all__))


def test_every_name_in_all_is_importable() -> None:
    for name in eventstore.__all__:
        assert getattr(eventstore, name, None) is not None, name
    namespace: dict[str, object] = {}
    exec("from eventstore import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == set(eventstore.__all__)


def test_all_is_exactly_the_public_names() -> None:
    """Every public, non-module attribute of the package is in ``__all__`` and nothing else is."""
    public = {
        name for name, obj in vars(eventstore).items()
        if not name.startswith("_") and not isinstance(obj, types.ModuleType)
    }
    assert public == set(eventstore.__all__)


def test_documented_names_are_exported() -> None:
    assert set(eventstore.__all__) >= DOCUMENTED


def test_exported_objects_come_from_the_package() -> None:
    for name in eventstore.__all__:
        obj = getattr(eventstore, name)
        module = getattr(obj, "__module__", "")
        assert module == "eventstore" or module.startswith("eventstore."), (name, module)


def test_every_error_class_derives_from_event_store_error() -> None:
    classes = _error_classes()
    assert errors.EventStoreError in classes
    assert len(classes) >= 13
    for cls in classes:
        assert issubclass(cls, errors.EventStoreError), cls.__name__


def test_errors_all_lists_every_error_class() -> None:
    assert {c.__name__ for c in _error_classes()} == set(errors.__all__)


def test_exported_error_names_are_the_classes_of_errors_module() -> None:
    for name in eventstore.__all__:
        obj = getattr(eventstore, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert getattr(errors, name) is obj, name


def test_error_hierarchy_details() -> None:
    assert issubclass(errors.StorageFullError, errors.StorageError)
    assert issubclass(errors.InvalidTopicError, errors.InvalidArgumentError)
    assert issubclass(errors.RecordTooLargeError, errors.InvalidArgumentError)
    # the stdlib bases let callers catch them the Python way too
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.TopicNotFoundError, KeyError)
    assert issubclass(errors.PartitionNotFoundError, IndexError)


def test_error_messages_name_what_and_where() -> None:
    assert "4242" in str(errors.StoreLockedError("/s", 4242))
    assert str(errors.TopicNotFoundError("ordres", "orders")) == (
        "topic 'ordres' does not exist (did you mean 'orders'?)"
    )
    e = errors.CorruptionError("/s/x.log", 17, "checksum mismatch")
    assert (e.path, e.position, e.reason) == ("/s/x.log", 17, "checksum mismatch")
    assert "/s/x.log" in str(e) and "17" in str(e)
    oor = errors.OffsetOutOfRangeError("t", 1, 99, 5, 10)
    assert (oor.offset, oor.log_start_offset, oor.end_offset) == (99, 5, 10)


def _sample_errors() -> list[BaseException]:
    return [
        errors.StoreLockedError("/s", 42),
        errors.StoreClosedError("/s"),
        errors.RecordTooLargeError("t", 10, 5, 2),
        errors.TopicNotFoundError("ordres", "orders"),
        errors.TopicExistsError("t"),
        errors.PartitionNotFoundError("t", 7, 3),
        errors.OffsetOutOfRangeError("t", 0, 9, 0, 5),
        errors.StorageError("/s/x.log", "write failed"),
        errors.StorageFullError("/s/x.log", "write failed"),
        errors.CorruptionError("/s/x.log", 17, "checksum mismatch"),
        errors.RecordDeserializationError("t", 1, 5, "value", "ValueError: not JSON"),
    ]


def test_errors_survive_pickling() -> None:
    """Errors cross process boundaries (multiprocessing, ProcessPoolExecutor) intact."""
    for e in _sample_errors():
        copy = pickle.loads(pickle.dumps(e))
        assert type(copy) is type(e)
        assert str(copy) == str(e)
        assert vars(copy) == vars(e)
