"""The groups seam: one fenced ``commit_offsets`` for every committer (consumer, transaction,
admin), member kinds, and the Store's group methods as the coordinator's."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import eventstore
from eventstore.catalog import outbox
from eventstore.errors import CommitFailedError, InvalidArgumentError
from eventstore.groups import EmbeddedMember, GroupCoordinator, Member
from eventstore.records import OffsetAndMetadata, TopicPartition
from eventstore.store import _GROUP_METHODS, Store

TP = TopicPartition


def _member_of(consumer: eventstore.Consumer, store: eventstore.Store, group: str) -> Member:
    consumer.poll(0)  # joins, catches up with the generation, takes its partitions
    g = store.groups.find(group)
    assert g is not None
    (member,) = g.members.values()
    return member


def test_the_stores_group_methods_are_the_coordinators(store: eventstore.Store) -> None:
    for name in _GROUP_METHODS:
        method = getattr(store, name)
        assert method.__self__ is store.groups and method.__func__ is getattr(GroupCoordinator, name)
        assert inspect.signature(getattr(Store, name)) == inspect.signature(getattr(GroupCoordinator, name))
        assert getattr(Store, name).__doc__ == getattr(GroupCoordinator, name).__doc__


def test_a_member_commits_what_it_owns_in_its_generation(store: eventstore.Store) -> None:
    store.create_topic("t", 2)
    consumer = store.consumer("t", group_id="g", auto_offset_reset="earliest")
    member = _member_of(consumer, store, "g")
    assert isinstance(member, EmbeddedMember)
    store.groups.commit_offsets("g", member.member_id, member.generation, {TP("t", 0): OffsetAndMetadata(0)})
    assert store.group_offsets("g") == {TP("t", 0): 0}
    with pytest.raises(CommitFailedError, match="generation"):
        store.groups.commit_offsets("g", member.member_id, member.generation - 1,
                                    {TP("t", 0): OffsetAndMetadata(1)})
    with pytest.raises(CommitFailedError, match="not owned"):
        store.groups.commit_offsets("g", member.member_id, member.generation,
                                    {TP("other", 0): OffsetAndMetadata(1)})
    with pytest.raises(CommitFailedError):
        store.groups.commit_offsets("g", "nobody-1", member.generation, {TP("t", 0): OffsetAndMetadata(1)})
    with pytest.raises(CommitFailedError):
        store.groups.commit_offsets("nogroup", member.member_id, 0, {TP("t", 0): OffsetAndMetadata(1)})
    assert store.group_offsets("g") == {TP("t", 0): 0}  # none of the refused commits wrote
    consumer.close(autocommit=False)
    with pytest.raises(CommitFailedError, match="removed"):  # left the group: fenced
        store.groups.commit_offsets("g", member.member_id, member.generation,
                                    {TP("t", 0): OffsetAndMetadata(2)})


def test_a_refused_commit_writes_nothing_of_its_transaction(store: eventstore.Store) -> None:
    store.create_topic("t")
    consumer = store.consumer("t", group_id="g", auto_offset_reset="earliest")
    member = _member_of(consumer, store, "g")
    written: list[Any] = []

    def extra(txn: Any) -> None:
        written.append(txn)

    with pytest.raises(CommitFailedError):
        store.groups.commit_offsets("g", member.member_id, member.generation + 5,
                                    {TP("t", 0): OffsetAndMetadata(1)}, txn=extra)
    assert written == []
    store.groups.commit_offsets("g", member.member_id, member.generation,
                                {TP("t", 0): OffsetAndMetadata(1)}, txn=extra)
    assert len(written) == 1 and store.group_offsets("g") == {TP("t", 0): 1}
    consumer.close(autocommit=False)


def test_a_commit_outside_membership_is_not_fenced(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.groups.commit_offsets("g", None, -1, {TP("t", 0): OffsetAndMetadata(3, "m")})
    assert store.groups.committed("g", TP("t", 0)) == OffsetAndMetadata(3, "m")
    with pytest.raises(InvalidArgumentError):
        store.groups.commit_offsets("", None, -1, {TP("t", 0): OffsetAndMetadata(3)})


def test_a_removed_members_transaction_leaves_no_outbox_entry(store: eventstore.Store) -> None:
    store.create_topic("in")
    store.create_topic("out")
    store.append("in", b"x")
    consumer = store.consumer("in", group_id="g", auto_offset_reset="earliest")
    assert consumer.poll(1000)
    tx = consumer.transaction()
    tx.append("out", b"y")
    other = store.consumer("in", group_id="g")
    other.poll(0)  # a rebalance: the first consumer's partition moves once it lets go
    consumer.unsubscribe()  # its membership ends: its transaction must not commit offsets
    with pytest.raises(CommitFailedError):
        tx.commit()
    assert outbox.pending(store.log.catalog) == []
    assert store.offsets("out", 0) == (0, 0)
    other.close()
    consumer.close()


def test_deleting_a_topic_forgets_its_committed_offsets(store: eventstore.Store) -> None:
    store.create_topic("t")
    store.create_topic("keep")
    store.groups.commit_offsets("g", None, -1, {TP("t", 0): OffsetAndMetadata(0),
                                                TP("keep", 0): OffsetAndMetadata(0)})
    store.delete_topic("t")
    assert store.group_offsets("g") == {TP("keep", 0): 0}
    store.create_topic("t")  # made again: no offsets from the old one
    assert store.groups.committed("g", TP("t", 0)) is None
