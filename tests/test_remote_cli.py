"""``es produce``, ``consume``, ``topics`` and ``groups`` with ``--bootstrap`` (or
``ES_BOOTSTRAP``): the same output and ``--json`` shapes as with ``--data``, through a server
this test starts on 127.0.0.1 (port 0) over a store of its own."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import eventstore
from eventstore.cli.app import app

Run = Callable[..., Result]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[eventstore.Store, str, Path]]:
    """A store of the test's own, served; yields (store, bootstrap, a second store's path)."""
    store = eventstore.open(tmp_path / "served")
    server = store.serve("127.0.0.1:0")
    try:
        yield store, f"127.0.0.1:{server.address[1]}", tmp_path / "local"
    finally:
        server.close()
        store.close()


@pytest.fixture
def run() -> Run:
    runner = CliRunner()

    def _run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), input=input, prog_name="es", env=env or {})

    return _run


def _ok(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return result.output


def _shape(value: Any) -> Any:
    """The keys of a JSON value, all the way down (a list by its items' shapes)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(_shape(v), sort_keys=True) for v in value})
    return None


def test_produce_consume_topics_over_the_wire(served: tuple[eventstore.Store, str, Path], run: Run) -> None:
    store, bootstrap, local = served
    where = {"remote": ["--bootstrap", bootstrap], "local": ["--data", str(local)]}
    outputs: dict[str, dict[str, Any]] = {}
    for name, target in where.items():
        _ok(run("topics", "create", "orders", "-p", "2", *target))
        produced = json.loads(_ok(run("produce", "orders", "--partition", "1", "--json", *target,
                                      input="a\nb\nc\n")))
        consumed = [json.loads(line) for line in
                    _ok(run("consume", "orders", "--json", *target)).splitlines()]
        listed = json.loads(_ok(run("topics", "list", "--json", *target)))
        described = json.loads(_ok(run("topics", "describe", "orders", "--json", *target)))
        outputs[name] = {"produced": produced, "consumed": consumed, "listed": listed,
                         "described": described}
    remote, local_out = outputs["remote"], outputs["local"]
    assert remote["produced"] == local_out["produced"] == {
        "topic": "orders", "records": 3,
        "partitions": [{"partition": 1, "first_offset": 0, "last_offset": 2, "records": 3}]}
    assert [r["value"] for r in remote["consumed"]] == [r["value"] for r in local_out["consumed"]]
    assert [r["offset"] for r in remote["consumed"]] == [0, 1, 2]
    assert _shape(remote["consumed"]) == _shape(local_out["consumed"])
    assert _shape(remote["listed"]) == _shape(local_out["listed"])
    assert [(t["name"], t["records"]) for t in remote["listed"]] == [("orders", 3)]
    remote_parts = remote["described"]["partitions"]
    assert _shape(remote["described"]["config"]) == _shape(local_out["described"]["config"])
    assert [p.keys() for p in remote_parts] == [p.keys() for p in local_out["described"]["partitions"]]
    assert [p["end_offset"] for p in remote["described"]["partitions"]] == [0, 3]
    assert [r.value for r in store.read("orders", 1, 0)] == [b"a", b"b", b"c"]


def test_groups_over_the_wire_with_the_environment(served: tuple[eventstore.Store, str, Path],
                                                    run: Run) -> None:
    store, bootstrap, _local = served
    env = {"ES_BOOTSTRAP": bootstrap}
    store.create_topic("orders")
    store.append_batch("orders", [b"x", b"y", b"z"])
    printed = _ok(run("consume", "orders", "--group", "billing", "--max", "2", env=env))
    assert printed.splitlines() == ["x", "y"]
    groups = json.loads(_ok(run("groups", "list", "--json", env=env)))
    assert groups == [{"group": "billing", "topics": ["orders"], "lag": 1}]
    described = json.loads(_ok(run("groups", "describe", "billing", "--json", env=env)))
    assert described["state"] == "Empty" and described["partitions"][0]["committed"] == 2
    reset = json.loads(_ok(run("groups", "reset-offsets", "billing", "--to-earliest", "--json", env=env)))
    assert reset["partitions"] == [{"topic": "orders", "partition": 0, "previous": 2, "offset": 0}]
    assert store.group_offsets("billing") == {eventstore.TopicPartition("orders", 0): 0}
    _ok(run("groups", "delete", "billing", env=env))
    assert store.list_groups() == []
    _ok(run("topics", "delete", "orders", env=env))
    assert store.topics() == []


def test_a_server_that_is_not_there_is_an_error(run: Run) -> None:
    result = run("topics", "list", "--bootstrap", "no-port")
    assert result.exit_code != 0
    assert "host:port" in result.output
