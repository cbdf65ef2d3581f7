"""Aggregates and the repository: replay, optimistic concurrency, snapshots (cases S1 to S6)."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventstore
from eventstore.errors import InvalidArgumentError, StreamNotFoundError, WrongExpectedVersionError
from eventstore.sourcing.aggregate import Aggregate
from eventstore.sourcing.events import NewEvent, RecordedEvent, StreamMetadata
from eventstore.sourcing.repository import Repository
from eventstore.sourcing.snapshots import Snapshot
from eventstore.sourcing.types import Event, decode_events, event_type


@event_type("AggTestOpened")
class Opened(Event):
    owner: str


@event_type("AggTestDeposited")
class Deposited(Event):
    amount: int


@event_type("AggTestWithdrawn")
class Withdrawn(Event):
    amount: int


class InsufficientFunds(Exception):
    pass


class Account(Aggregate):
    """A bank account; ``applied`` counts the events applied, in commands and in replays."""

    applied: ClassVar[int] = 0

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.balance = 0

    @classmethod
    def open(cls, id: str, owner: str) -> Account:
        account = cls(id)
        account.trigger_event(Opened, owner=owner)
        return account

    def deposit(self, amount: int) -> None:
        self.trigger_event(Deposited, amount=amount)

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFunds(self.id)
        self.trigger_event(Withdrawn, amount=amount)

    def apply_Opened(self, event: Opened) -> None:
        self.owner = event.owner
        type(self).applied += 1

    def apply_Deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        type(self).applied += 1

    def apply_Withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.amount
        type(self).applied += 1


def balance_of(events: list[Any]) -> int:
    """The balance folded straight from the events, without the aggregate."""
    return sum(signed(e) for e in events if isinstance(e, Deposited | Withdrawn))


def signed(event: object) -> int:
    assert isinstance(event, Deposited | Withdrawn)
    return event.amount if isinstance(event, Deposited) else -event.amount


def replays(repo: Repository[Account], account_id: str) -> tuple[Account, int]:
    """Load an account; return it and how many events the load applied."""
    Account.applied = 0
    account = repo.get(account_id)
    return account, Account.applied


def account_with_history(repo: Repository[Account], account_id: str, deposits: int) -> Account:
    account = Account.open(account_id, "ann")
    for i in range(deposits):
        account.deposit(i + 1)
        if i % 7 == 6:
            repo.save(account)
    repo.save(account)
    return account


@pytest.fixture
def fast_store(open_store: Any) -> eventstore.Store:
    store: eventstore.Store = open_store(durability="none")
    return store


# --- the aggregate on its own ---------------------------------------------------------------


def test_trigger_event_applies_and_records() -> None:
    account = Account.open("account-1", "ann")
    account.deposit(5)
    assert (account.owner, account.balance, account.version) == ("ann", 5, 1)
    assert account.pending_events == [Opened(owner="ann"), Deposited(amount=5)]
    assert account.collect_events() == [Opened(owner="ann"), Deposited(amount=5)]
    assert account.pending_events == [] and account.version == 1


def test_an_event_whose_handler_raises_is_not_recorded() -> None:
    class Fussy(Aggregate):
        def apply_Deposited(self, event: Deposited) -> None:
            raise ValueError("no")

    fussy = Fussy("fussy-1")
    with pytest.raises(ValueError):
        fussy.trigger_event(Deposited, amount=1)
    assert (fussy.pending_events, fussy.version) == ([], -1)


def test_events_without_handler_leave_the_state_alone_and_raw_events_can_be_handled(
        fast_store: eventstore.Store) -> None:
    class Watcher(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.raw: list[str] = []
            self.deposits = 0

        def apply_Deposited(self, event: Deposited) -> None:
            self.deposits += 1

        def apply_RecordedEvent(self, event: RecordedEvent) -> None:
            self.raw.append(event.type)

    fast_store.append_to_stream("watch-1", [NewEvent(type="Foreign"), *_encoded(Opened(owner="x")),
                                            *_encoded(Deposited(amount=1))])
    watcher = Repository(fast_store, Watcher).get("watch-1")
    assert (watcher.raw, watcher.deposits, watcher.version) == (["Foreign"], 1, 2)


def test_when_can_be_overridden(fast_store: eventstore.Store) -> None:
    class Ledger(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.lines: list[str] = []

        def when(self, event: Any) -> None:
            match event:
                case Deposited(amount=n):
                    self.lines.append(f"+{n}")
                case Withdrawn(amount=n):
                    self.lines.append(f"-{n}")

    ledger = Ledger("ledger-1")
    ledger.trigger_event(Deposited, amount=3)
    ledger.trigger_event(Withdrawn, amount=1)
    repo = Repository(fast_store, Ledger)
    repo.save(ledger)
    assert repo.get("ledger-1").lines == ["+3", "-1"]


# --- rebuilding by replay -----------------------------------------------------------------------


def test_rebuild_equals_the_state_folded_from_the_events(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account)
    saved = account_with_history(repo, "account-1", 300)
    loaded, applied = replays(repo, "account-1")
    events = decode_events(fast_store.read_stream("account-1"))
    assert loaded.balance == saved.balance == balance_of(events)
    assert (loaded.owner, loaded.version, applied) == ("ann", 300, 301)


@given(st.lists(st.tuples(st.sampled_from(["deposit", "withdraw", "save"]), st.integers(1, 50)),
                max_size=60))
def test_rebuild_after_any_commands_equals_the_live_aggregate(commands: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as directory, \
            eventstore.open(directory, durability="none") as store:
        repo = Repository(store, Account, snapshot_every=4)
        live = Account.open("account-1", "bob")
        for command, amount in commands:
            if command == "save":
                repo.save(live)
            elif command == "deposit":
                live.deposit(amount)
            elif amount <= live.balance:
                live.withdraw(amount)
        repo.save(live)
        loaded = repo.get("account-1")
        assert (loaded.balance, loaded.owner, loaded.version) == (live.balance, live.owner, live.version)
        assert loaded.balance == balance_of(decode_events(store.read_stream("account-1")))


def test_get_at_an_earlier_version(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, snapshot_every=5)
    account_with_history(repo, "account-1", 20)
    past = repo.get("account-1", version=3)
    assert (past.version, past.balance) == (3, 1 + 2 + 3)
    assert repo.get("account-1", version=99).version == 20
    with pytest.raises(InvalidArgumentError):
        repo.get("account-1", version=-1)


def test_missing_and_deleted_streams_are_not_found(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, snapshot_every=2)
    with pytest.raises(StreamNotFoundError):
        repo.get("account-404")
    account_with_history(repo, "account-1", 3)
    assert "account-1" in repo and "account-404" not in repo
    fast_store.delete_stream("account-1")
    with pytest.raises(StreamNotFoundError):
        repo.get("account-1")


# --- optimistic concurrency ------------------------------------------------------------------


def test_the_second_of_two_concurrent_saves_raises_and_writes_nothing(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account)
    account_with_history(repo, "account-1", 2)
    first, second = repo.get("account-1"), repo.get("account-1")
    first.deposit(10)
    second.deposit(20)
    second.withdraw(1)
    repo.save(first)
    with pytest.raises(WrongExpectedVersionError) as info:
        repo.save(second)
    assert (info.value.expected, info.value.actual) == (2, 3)
    assert fast_store.stream_version("account-1") == 3
    assert repo.get("account-1").balance == 1 + 2 + 10
    assert len(second.pending_events) == 2  # kept: the caller may inspect them, then reload and retry


def test_a_new_aggregate_cannot_overwrite_an_existing_stream(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account)
    repo.save(Account.open("account-1", "ann"))
    with pytest.raises(WrongExpectedVersionError):
        repo.save(Account.open("account-1", "eve"))
    assert repo.get("account-1").owner == "ann"


def test_bank_accounts_under_concurrent_withdrawals(open_store: Any) -> None:
    """Threads deposit and withdraw at random, retrying on conflicts: no balance goes below zero,
    every acknowledged command is in the history, and the replayed state matches it."""
    store = open_store(durability="fsync")
    repo = Repository(store, Account, snapshot_every=10)
    ids = [f"bank-{i}" for i in range(3)]
    for account_id in ids:
        repo.save(Account.open(account_id, account_id))
    done: dict[str, list[int]] = {account_id: [] for account_id in ids}
    lock = threading.Lock()
    conflicts = [0]
    errors: list[BaseException] = []

    def teller(seed: int) -> None:
        try:
            commands(seed)
        except BaseException as e:
            errors.append(e)

    def commands(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):  # bounded: 40 commands, each retried until it commits
            account_id, amount = rng.choice(ids), rng.choice([5, -3, -3, -7])
            while True:  # bounded in practice: another teller commits on every conflict
                account = repo.get(account_id)
                try:
                    if amount > 0:
                        account.deposit(amount)
                    else:
                        account.withdraw(-amount)
                except InsufficientFunds:
                    break
                try:
                    repo.save(account)
                except WrongExpectedVersionError:
                    with lock:
                        conflicts[0] += 1
                    continue
                with lock:
                    done[account_id].append(amount)
                break

    threads = [threading.Thread(target=teller, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for account_id in ids:
        amounts = [signed(e) for e in decode_events(store.read_stream(account_id))[1:]]
        running = 0
        for amount in amounts:
            running += amount
            assert running >= 0
        assert sorted(done[account_id]) == sorted(amounts)
        assert repo.get(account_id).balance == running == sum(done[account_id])
        repo.snapshots.delete(account_id)
        assert repo.get(account_id).balance == running


# --- snapshots --------------------------------------------------------------------------------


def test_a_snapshot_spares_the_replay(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, snapshot_every=50)
    saved = account_with_history(repo, "account-1", 120)
    snapshot = repo.snapshots.get("account-1")
    assert snapshot is not None and snapshot.version in range(99, 121)
    loaded, applied = replays(repo, "account-1")
    assert applied == 120 - snapshot.version < 50
    assert (loaded.balance, loaded.version, loaded.owner) == (saved.balance, 120, "ann")


def test_snapshots_are_written_when_a_save_crosses_a_multiple(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, snapshot_every=10)
    account = Account.open("account-1", "ann")
    for i in range(8):
        account.deposit(1)
        repo.save(account)
        assert repo.snapshots.get("account-1") is None, i
    for _ in range(3):
        account.deposit(1)
    repo.save(account)  # versions 9..11: the 10th event is among them
    snapshot = repo.snapshots.get("account-1")
    assert snapshot is not None and snapshot.version == 11


def test_a_deleted_snapshot_changes_nothing_but_speed(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, snapshot_every=25)
    account_with_history(repo, "account-1", 60)
    snapshot = repo.snapshots.get("account-1")
    assert snapshot is not None and snapshot.version in range(49, 61)
    with_snapshot, fast = replays(repo, "account-1")
    assert repo.snapshots.delete("account-1") and not repo.snapshots.delete("account-1")
    without, slow = replays(repo, "account-1")
    assert without.snapshot_state() == with_snapshot.snapshot_state()
    assert without.version == with_snapshot.version
    assert (fast, slow) == (60 - snapshot.version, 61)
    # the long replay wrote the snapshot again
    assert replays(repo, "account-1")[1] == 0


def test_a_snapshot_of_another_schema_version_is_ignored(fast_store: eventstore.Store) -> None:
    class AccountV2(Account):
        aggregate_name = "Account"
        snapshot_version = 2

    repo = Repository(fast_store, Account, snapshot_every=20)
    account_with_history(repo, "account-1", 40)
    snapshot = repo.snapshots.get("account-1")
    assert snapshot is not None and (snapshot.name, snapshot.schema) == ("Account", 1)
    AccountV2.applied = 0
    loaded = Repository(fast_store, AccountV2, snapshot_every=1000).get("account-1")
    assert (AccountV2.applied, loaded.balance) == (41, sum(range(1, 41)))  # S2: full replay


def test_a_snapshot_of_another_aggregate_is_ignored(fast_store: eventstore.Store) -> None:
    class Audit(Account):
        pass

    repo = Repository(fast_store, Account, snapshot_every=10)
    account_with_history(repo, "account-1", 30)
    Audit.applied = 0
    assert Repository(fast_store, Audit, snapshot_every=1000).get("account-1").balance == sum(range(1, 31))
    assert Audit.applied == 31  # S1


def test_a_snapshot_newer_than_the_stream_is_ignored(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, snapshot_every=1000)
    account_with_history(repo, "account-1", 5)
    state = msgspec.Raw(msgspec.msgpack.encode({"owner": "ghost", "balance": 10**6}))
    future = Snapshot(Account.aggregate_name, Account.snapshot_version, 50, state)
    assert repo.snapshots.put("account-1", future)
    loaded, applied = replays(repo, "account-1")
    assert (loaded.owner, loaded.balance, applied) == ("ann", 15, 6)  # S3
    repo.take_snapshot(loaded)  # replaces the stale one
    snapshot = repo.snapshots.get("account-1")
    assert snapshot is not None and snapshot.version == 5


def test_an_older_snapshot_does_not_replace_a_newer_valid_one(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, snapshot_every=1000)
    account_with_history(repo, "account-1", 5)
    state = msgspec.Raw(msgspec.msgpack.encode({}))
    assert repo.snapshots.put("account-1", Snapshot("Account", 1, 4, state))
    assert not repo.snapshots.put("account-1", Snapshot("Account", 1, 2, state))
    snapshot = repo.snapshots.get("account-1")
    assert snapshot is not None and snapshot.version == 4


def test_a_stream_that_hides_events_is_replayed_without_snapshot(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, snapshot_every=10)
    account_with_history(repo, "account-1", 30)
    fast_store.truncate_stream("account-1", 26)
    loaded, applied = replays(repo, "account-1")
    assert (applied, loaded.balance, loaded.version) == (5, 26 + 27 + 28 + 29 + 30, 30)  # S4
    fast_store.set_stream_metadata("account-1", StreamMetadata())
    assert replays(repo, "account-1")[1] < 10


def test_an_undecodable_snapshot_is_ignored(fast_store: eventstore.Store) -> None:
    class Typed(Account):
        balance: int

    repo = Repository(fast_store, Account, snapshot_every=1000)
    account_with_history(repo, "account-1", 5)
    broken = Snapshot(Account.aggregate_name, 1, 5, msgspec.Raw(b"\xc1"))  # not MessagePack
    mistyped = Snapshot("Typed", 1, 5, msgspec.Raw(msgspec.msgpack.encode({"balance": "lots"})))
    for cls, snapshot in ((Account, broken), (Typed, mistyped)):
        repo.snapshots.put("account-1", snapshot)
        cls.applied = 0
        assert Repository(fast_store, cls, snapshot_every=1000).get("account-1").balance == 15
        assert cls.applied == 6  # S5


def test_snapshots_survive_reopening_and_go_with_the_index(store_path: Path) -> None:
    with eventstore.open(store_path, durability="none") as store:
        account_with_history(Repository(store, Account, snapshot_every=10), "account-1", 25)
    with eventstore.open(store_path, durability="none") as store:
        repo = Repository(store, Account, snapshot_every=10)
        snapshot = repo.snapshots.get("account-1")
        assert snapshot is not None and snapshot.version in range(19, 26)
        assert replays(repo, "account-1")[1] == 25 - snapshot.version
    shutil.rmtree(store_path / "index")  # the index is derived: rebuilt from the log, without snapshots
    with eventstore.open(store_path, durability="none") as store:
        loaded, applied = replays(Repository(store, Account, snapshot_every=10), "account-1")
        assert (applied, loaded.balance) == (26, sum(range(1, 26)))


def test_snapshot_state_keeps_annotated_types(fast_store: eventstore.Store) -> None:
    class Profile(Aggregate):
        tags: set[str]
        since: dt.datetime
        last: Deposited | None
        pair: tuple[int, str]

        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.tags = set()
            self.since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
            self.last = None
            self.pair = (0, "")
            self.loose = {"k": [1, 2]}
            self._cache = object()  # private: not in snapshots

        def apply_Deposited(self, event: Deposited) -> None:
            self.tags.add(f"t{event.amount}")
            self.since = dt.datetime(2026, 5, event.amount, tzinfo=dt.UTC)
            self.last = event
            self.pair = (event.amount, "x")

    repo = Repository(fast_store, Profile, snapshot_every=2)
    profile = Profile("profile-1")
    for n in (1, 2, 3):
        profile.trigger_event(Deposited, amount=n)
    repo.save(profile)
    loaded = repo.get("profile-1")
    assert loaded.snapshot_state() == profile.snapshot_state()
    assert isinstance(loaded.tags, set) and isinstance(loaded.last, Deposited)
    assert isinstance(loaded.pair, tuple) and loaded.loose == {"k": [1, 2]}
    assert "_cache" not in loaded.snapshot_state()


def test_an_unencodable_state_fails_the_save_before_anything_is_written(
        fast_store: eventstore.Store) -> None:
    class Locked(Account):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.guard = threading.Lock()

    repo = Repository(fast_store, Locked, snapshot_every=1)
    locked = Locked("locked-1")
    locked.trigger_event(Opened, owner="x")
    with pytest.raises(InvalidArgumentError, match="cannot snapshot"):
        repo.save(locked)
    assert fast_store.stream_version("locked-1") is None
    assert Repository(fast_store, Locked).save(locked) is not None  # without snapshots it saves


# --- arguments --------------------------------------------------------------------------------


def test_repository_arguments_are_checked(fast_store: eventstore.Store) -> None:
    with pytest.raises(InvalidArgumentError, match="Aggregate subclass"):
        Repository(fast_store, dict)  # type: ignore[type-var]
    for every in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="snapshot_every"):
            Repository(fast_store, Account, snapshot_every=every)  # type: ignore[arg-type]
    repo = Repository(fast_store, Account)

    class Other(Aggregate):
        pass

    with pytest.raises(InvalidArgumentError, match="saves Account"):
        repo.save(Other("other-1"))  # type: ignore[arg-type]
    assert repo.save(Account("account-9")) is None  # nothing pending: nothing to do


def test_take_snapshot_needs_a_saved_aggregate(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account)
    account = Account.open("account-1", "ann")
    with pytest.raises(InvalidArgumentError, match="save the aggregate"):
        repo.take_snapshot(account)
    repo.save(account)
    repo.take_snapshot(account)
    assert repo.snapshots.get("account-1") is not None


def test_saving_into_a_chosen_topic(fast_store: eventstore.Store) -> None:
    repo = Repository(fast_store, Account, topic="ledgers")
    repo.save(Account.open("account-1", "ann"))
    assert fast_store.read_stream("account-1")[0].topic == "ledgers"
    assert repo.get("account-1").owner == "ann"


def _encoded(event: Event) -> list[NewEvent]:
    from eventstore.sourcing.types import encode_event

    return [encode_event(event)]
