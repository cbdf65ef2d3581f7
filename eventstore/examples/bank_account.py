"""Bank accounts as event-sourced aggregates, and what a concurrency conflict looks like.

Two clerks load the same account, both withdraw, both save: the second save is
refused with ``WrongExpectedVersionError`` (nothing written), the clerk reloads,
re-checks the rule against the current balance and tries again.

Run: ``python examples/bank_account.py [STORE_DIR]`` (or ``python -m eventstore.examples.bank_account``)
"""

from __future__ import annotations

import sys
import tempfile

import eventstore
from eventstore import Aggregate, Event, Repository, WrongExpectedVersionError, event_type


@event_type("AccountOpened")
class AccountOpened(Event):
    owner: str


@event_type("MoneyDeposited")
class MoneyDeposited(Event):
    amount_cents: int


@event_type("MoneyWithdrawn")
class MoneyWithdrawn(Event):
    amount_cents: int


class InsufficientFunds(Exception):
    pass


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.balance_cents = 0

    # commands: check the rules, then record what happened
    def open(self, owner: str) -> None:
        self.trigger_event(AccountOpened, owner=owner)

    def deposit(self, amount_cents: int) -> None:
        if amount_cents <= 0:
            raise ValueError("deposit a positive amount")
        self.trigger_event(MoneyDeposited, amount_cents=amount_cents)

    def withdraw(self, amount_cents: int) -> None:
        if amount_cents > self.balance_cents:
            raise InsufficientFunds(f"balance {self.balance_cents}, asked {amount_cents}")
        self.trigger_event(MoneyWithdrawn, amount_cents=amount_cents)

    # handlers: state changes only (they also run on replay)
    def apply_AccountOpened(self, event: AccountOpened) -> None:
        self.owner = event.owner

    def apply_MoneyDeposited(self, event: MoneyDeposited) -> None:
        self.balance_cents += event.amount_cents

    def apply_MoneyWithdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance_cents -= event.amount_cents


def withdraw_with_retry(repo: Repository[Account], account_id: str, amount_cents: int) -> int:
    """Withdraw, reloading and re-checking on a conflict; returns the attempts it took."""
    for attempt in range(1, 6):  # bounded: a conflict means someone else just won
        account = repo.get(account_id)
        account.withdraw(amount_cents)
        try:
            repo.save(account)
            return attempt
        except WrongExpectedVersionError:
            continue
    raise RuntimeError("too many concurrent changes")


def run(path: str) -> dict[str, int]:
    with eventstore.open(path) as store:
        repo = Repository(store, Account, snapshot_every=100)
        account = Account("account-42")
        account.open("Ada")
        account.deposit(10_000)
        repo.save(account)

        clerk_a = repo.get("account-42")
        clerk_b = repo.get("account-42")
        clerk_a.withdraw(3_000)
        clerk_b.withdraw(4_000)
        repo.save(clerk_a)  # first save wins
        conflicts = 0
        try:
            repo.save(clerk_b)  # expected version is stale: refused, nothing written
        except WrongExpectedVersionError as e:
            conflicts += 1
            print(f"conflict: {e}")
        attempts = withdraw_with_retry(repo, "account-42", 4_000)

        final = repo.get("account-42")
        print(f"{final.owner}'s balance: {final.balance_cents / 100:.2f} "
              f"after {final.version + 1} events ({conflicts} conflict, retry took {attempts})")
        return {"balance_cents": final.balance_cents, "events": final.version + 1,
                "conflicts": conflicts}


def main() -> None:
    run(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="bank-"))


if __name__ == "__main__":
    main()
