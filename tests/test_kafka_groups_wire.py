"""The group APIs at every served version, with any values a well-formed request can carry.

Hypothesis builds requests of JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and OffsetDelete
from kio's classes for each version the server lists (empty and odd strings,
negative and huge numbers, unknown members, stray assignments, null arrays), sends
them on one connection, and checks that each is answered (never a closed connection)
and that the server still answers a plain request afterwards. A few hand-picked
requests check the exact codes of the version-specific paths (MEMBER_ID_REQUIRED from
v4, batched LeaveGroup from v3, OffsetFetch of several groups from v8).
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema
from kio.schema.errors import ErrorCode
from serverkit import RawClient, served

import eventstore
from eventstore.wire.apis import SERVED

GROUP_APIS = {11: "JoinGroup", 14: "SyncGroup", 12: "Heartbeat", 13: "LeaveGroup", 8: "OffsetCommit",
              9: "OffsetFetch", 16: "ListGroups", 15: "DescribeGroups", 42: "DeleteGroups",
              47: "OffsetDelete"}
VERSIONS = [(key, v) for key in GROUP_APIS for v in range(SERVED[key][0], SERVED[key][1] + 1)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[eventstore.Store, str]]:
    with served(Path(tmp_path_factory.mktemp("groups-wire"))) as (store, bootstrap):
        store.create_topic("t", partitions=2)
        yield store, bootstrap


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strategy(annotation: Any, name: str) -> st.SearchStrategy[Any]:
    """Any value of a kio field's type (bounded sizes; group ids and topics from a few)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is tuple:
        return st.lists(_strategy(args[0], name), max_size=3).map(tuple)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return st.none() | _strategy(inner, name)
    if dataclasses.is_dataclass(annotation):
        return _entity(annotation)
    assert isinstance(annotation, type), annotation
    if issubclass(annotation, ErrorCode):
        return st.just(ErrorCode.none)
    if issubclass(annotation, datetime.timedelta):
        parse = annotation.parse  # type: ignore[attr-defined]
        # short: a join waits for the members of earlier examples for up to a rebalance timeout
        return st.integers(-1000, 1000).map(lambda ms: parse(datetime.timedelta(milliseconds=ms)))
    if issubclass(annotation, bool):
        return st.booleans()
    if issubclass(annotation, int):
        low = getattr(annotation, "__low__", -(2**31))
        high = getattr(annotation, "__high__", 2**31 - 1)
        return st.one_of(st.sampled_from([-1, 0, 1, 2]), st.integers(low, high)).map(annotation)
    if issubclass(annotation, str):
        if "group" in name or name in ("groups", "groups_names"):
            return st.sampled_from(["g", "h", "", "x" * 300, "g\x00"]).map(annotation)
        if name in ("name", "topic"):
            return st.sampled_from(["t", "missing", ""]).map(annotation)
        words = st.sampled_from(["", "consumer", "range", "m"])
        return st.one_of(words, st.text(max_size=12)).map(annotation)
    if issubclass(annotation, bytes):
        return st.binary(max_size=24)
    if issubclass(annotation, uuid.UUID):
        return st.just(uuid.UUID(int=0))
    raise TypeError(f"no strategy for {annotation!r}")


def _entity(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = _hints(cls)
    fields = {f.name: _strategy(hints[f.name], f.name) for f in dataclasses.fields(cls)}
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


@st.composite
def requests(draw: st.DrawFn) -> Any:
    key, version = draw(st.sampled_from(VERSIONS))
    return draw(_entity(load_request_schema(key, version)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(batch=st.lists(requests(), min_size=1, max_size=5))
def test_every_group_request_is_answered(server: tuple[eventstore.Store, str], batch: list[Any]) -> None:
    _, bootstrap = server
    with RawClient(bootstrap, timeout_s=15) as client:
        for i, request in enumerate(batch):
            response = client.call(request, correlation_id=i + 1)  # raises if the server closed
            assert type(response).__name__.endswith("Response")
        from kio.schema.list_groups.v4.request import ListGroupsRequest

        after = client.call(ListGroupsRequest(states_filter=()), correlation_id=99)
        assert after.error_code == ErrorCode.none


def _call(bootstrap: str, request: Any) -> Any:
    with RawClient(bootstrap) as client:
        return client.call(request)


def test_member_id_required_from_v4_only(server: tuple[eventstore.Store, str]) -> None:
    from kio.schema.join_group.v3.request import JoinGroupRequest as V3
    from kio.schema.join_group.v4.request import JoinGroupRequest as V4
    from kio.schema.join_group.v4.request import JoinGroupRequestProtocol as P4
    from kio.static.primitive import i32Timedelta

    _, bootstrap = server
    ms = i32Timedelta.parse(datetime.timedelta(seconds=10))
    r4 = _call(bootstrap, V4(group_id="w4", session_timeout=ms, rebalance_timeout=ms, member_id="",
                             protocol_type="consumer", protocols=(P4(name="range", metadata=b""),)))
    assert r4.error_code == ErrorCode.member_id_required and r4.member_id
    from kio.schema.join_group.v3.request import JoinGroupRequestProtocol as P3

    r3 = _call(bootstrap, V3(group_id="w3", session_timeout=ms, rebalance_timeout=ms, member_id="",
                             protocol_type="consumer", protocols=(P3(name="range", metadata=b""),)))
    assert r3.error_code == ErrorCode.none and r3.leader == r3.member_id and r3.generation_id == 1
    from kio.schema.leave_group.v3.request import LeaveGroupRequest, MemberIdentity

    left = _call(bootstrap, LeaveGroupRequest(group_id="w3", members=(
        MemberIdentity(member_id=r3.member_id, group_instance_id=None),
        MemberIdentity(member_id="ghost", group_instance_id=None))))
    assert [m.error_code for m in left.members] == [ErrorCode.none, ErrorCode.unknown_member_id]


def test_offset_fetch_of_several_groups_and_of_all_partitions(server: tuple[eventstore.Store, str]) -> None:
    from kio.schema.offset_fetch.v8.request import OffsetFetchRequest, OffsetFetchRequestGroup

    store, bootstrap = server
    store.reset_group_offsets("f1", {("t", 0): 0})
    store.append("t", b"x", partition=1)
    store.reset_group_offsets("f2", {("t", 1): 1})
    response = _call(bootstrap, OffsetFetchRequest(groups=(
        OffsetFetchRequestGroup(group_id="f1", topics=None),
        OffsetFetchRequestGroup(group_id="f2", topics=None),
        OffsetFetchRequestGroup(group_id="none", topics=None)), require_stable=False))
    got = {str(g.group_id): [(str(t.name), int(p.partition_index), int(p.committed_offset))
                             for t in g.topics for p in t.partitions] for g in response.groups}
    assert got == {"f1": [("t", 0, 0)], "f2": [("t", 1, 1)], "none": []}
