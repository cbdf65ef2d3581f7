"""The log half of the store's API through ``eventstore.connect``: tests of the embedded suite
(``test_api_suite``), run on an embedded store and on a remote one served from 127.0.0.1
(port 0) by the test itself; and the errors a remote store raises the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_api_suite import (
    ERRORS,
    test_a_deserializer_error_names_the_record_and_can_be_skipped,
    test_append_and_read_round_trip,
    test_append_batch_returns_metadata_in_input_order,
    test_deserializers_apply_to_the_records_handed_out,
    test_group_commits_and_resumes_after_reopen,
    test_iteration_advances_only_past_records_handed_out,
    test_iteration_yields_records_then_stops_when_idle,
    test_keyed_records_land_on_their_partition,
    test_poll_wakes_as_soon_as_a_record_is_appended,
    test_producer_futures_resolve_to_durable_metadata,
    test_seek_and_position_with_manual_assignment,
    test_wait_for_returns_once_the_offset_is_written,
)

import eventstore
from eventstore import InvalidArgumentError, TopicPartition

__all__ = [  # the embedded suite's tests, collected here again over both stores
    "test_a_deserializer_error_names_the_record_and_can_be_skipped",
    "test_append_and_read_round_trip",
    "test_append_batch_returns_metadata_in_input_order",
    "test_deserializers_apply_to_the_records_handed_out",
    "test_group_commits_and_resumes_after_reopen",
    "test_iteration_advances_only_past_records_handed_out",
    "test_iteration_yields_records_then_stops_when_idle",
    "test_keyed_records_land_on_their_partition",
    "test_poll_wakes_as_soon_as_a_record_is_appended",
    "test_producer_futures_resolve_to_durable_metadata",
    "test_seek_and_position_with_manual_assignment",
    "test_wait_for_returns_once_the_offset_is_written",
]
# Not collected here: test_group_members_split_the_partitions and test_a_removed_member_cannot_commit
# expect a group to rebalance within one 10 ms poll / a 100 ms max_poll_interval, which an embedded
# coordinator does in the call and a network group protocol does not.

#: Errors raised by the embedded store's own machinery with no remote twin.
EMBEDDED_ONLY_CASES = {"transaction to unknown topic"}


@pytest.fixture(params=["embedded", "remote"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``eventstore.open`` or ``eventstore.connect``. The remote variant serves one embedded
    store for the whole test; opening again (after a close) connects again to it."""
    embedded: list[Any] = []
    servers: list[Any] = []
    opened: list[Any] = []

    def _open(**kwargs: Any) -> Any:
        if request.param == "embedded":
            store = eventstore.open(tmp_path / "store", **kwargs)
        else:
            if not servers:
                embedded.append(eventstore.open(tmp_path / "store", **kwargs))
                servers.append(embedded[0].serve("127.0.0.1:0"))
            store = eventstore.connect(f"127.0.0.1:{servers[0].address[1]}")
        opened.append(store)
        return store

    yield _open
    for store in opened:
        if request.param == "embedded" and not store.closed:
            assert store.check().ok
        store.close()
    for server in servers:
        server.close()
    for store in embedded:
        report = store.check()
        assert report.ok, "\n".join(map(str, report.problems))
        store.close()


@pytest.mark.parametrize("case", sorted(set(ERRORS) - EMBEDDED_ONLY_CASES))
def test_errors_are_the_same(open_store: Callable[..., Any], case: str) -> None:
    store = open_store()
    store.create_topic("orders", max_record_bytes=1024)
    operation, error = ERRORS[case]
    with pytest.raises(error) as excinfo:
        operation(store)
    assert isinstance(excinfo.value, error)


def test_group_administration(open_store: Callable[..., Any]) -> None:
    """list, offsets, lag, reset and delete of a group with no members, the same on both."""
    store = open_store()
    store.create_topic("orders", partitions=2)
    store.append_batch("orders", [b"a", b"b", b"c"], partition=0)
    store.append_batch("orders", [b"d"], partition=1)
    consumer = store.consumer(group_id="billing", enable_auto_commit=False)
    tps = [TopicPartition("orders", 0), TopicPartition("orders", 1)]
    consumer.commit({tps[0]: 1, tps[1]: 1})
    consumer.close()
    assert "billing" in store.list_groups()
    assert store.group_offsets("billing") == {tps[0]: 1, tps[1]: 1}
    assert store.lag("billing") == {tps[0]: 2, tps[1]: 0}
    assert store.describe_group("billing").state == "Empty"
    assert store.reset_group_offsets("billing", "earliest") == {tps[0]: 0, tps[1]: 0}
    assert store.group_offsets("billing") == {tps[0]: 0, tps[1]: 0}
    assert store.reset_group_offsets("billing", {("orders", 0): 3}) == {tps[0]: 3}
    assert store.lag("billing") == {tps[0]: 0, tps[1]: 1}
    with pytest.raises(InvalidArgumentError):
        store.reset_group_offsets("billing", {("orders", 0): 99})
    store.delete_group("billing")
    assert "billing" not in store.list_groups()
