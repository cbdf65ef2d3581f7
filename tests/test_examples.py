"""Every example in ``examples/`` runs, and says what it should."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"eventstore.examples.{name}")


def test_bank_account_conflict_and_retry(tmp_path: Path) -> None:
    result = _load("bank_account").run(str(tmp_path / "bank"))
    # 100.00 deposited, 30.00 and (after the refused save and a retry) 40.00 withdrawn
    assert result == {"balance_cents": 3_000, "events": 4, "conflicts": 1}


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs_as_a_script(tmp_path: Path, script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(tmp_path / "store")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_ecommerce_flow_settles_exactly_once(tmp_path: Path) -> None:
    summary = _load("ecommerce").run(str(tmp_path / "shop"), orders=300)
    types = summary["events_per_type"]
    assert types["OrderPlaced"] == 301  # 300 orders and the poison one
    assert types["InventoryReserved"] + types["OutOfStock"] == 300
    assert types["PaymentCompleted"] == types["InventoryReserved"]
    assert types["CustomerNotified"] == 300
    assert summary["dead_lettered"] == 1
    assert summary["fraud_alerts"] == 1
    assert all(lag == 0 for lag in summary["lag"].values())
    assert summary["sample_order"]["status"].endswith("customer notified")
