"""``es verify``: read every byte of every partition and check it (what ``store.check()`` does);
with ``--repair``, first replace a damaged catalog (``eventstore.repair``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Annotated, Any

import typer

from .. import repair as repair_module
from .. import store as store_module
from ..storage.check import CheckProblem, CheckReport
from .access import CliError, DataOption, is_store, open_store
from .output import JsonOption, human_size, plural, print_json, progress


def problem_json(problem: CheckProblem) -> dict[str, Any]:
    return {"path": problem.path, "position": problem.position, "reason": problem.reason}


def check_with_progress(store: store_module.Store) -> CheckReport:
    """``store.check()`` with a progress bar in bytes."""
    with progress("verify", store.statistics().size_bytes, unit="bytes") as bar:
        return store.check(on_progress=bar.advance)


RepairOption = typer.Option(
    "--repair", help="If the catalog is damaged, keep it aside and make a new one from the log "
                     "and each topic.json, then check; says what could not be rebuilt.")


def verify(data: DataOption = store_module.DEFAULT_PATH,
           json: Annotated[bool, JsonOption] = False,
           repair: Annotated[bool, RepairOption] = False) -> None:
    """Check every checksum, record offset and index entry of the store.

    Exit status 1 when anything is wrong; the report names each file and position.
    What recovery repaired while opening the store is listed too.
    """
    repaired = _repair(data) if repair else None
    with open_store(data) as store:
        recovered = list(store.recovery_events)
        report = check_with_progress(store)
        damage = repair_module.catalog_damage(data)
    if damage is not None:
        report.problems.append(CheckProblem(
            os.path.join(data, "catalog", "data.mdb"), None,
            f"damaged catalog: {damage}; run 'es verify --repair'"))
    if json:
        extra = {"repair": None if repaired is None else dataclasses.asdict(repaired)} if repair else {}
        print_json({
            "ok": report.ok, "partitions": report.partitions, "segments": report.segments,
            "batches": report.batches, "records": report.records, "bytes": report.bytes,
            "foreign_records": report.foreign_records,
            "problems": [problem_json(p) for p in report.problems],
            "recovery": [{"case": e.case, "path": e.path, "position": e.position, "detail": e.detail}
                         for e in recovered],
            **extra,
        })
    else:
        for line in repaired.lines() if repaired is not None else []:
            print(f"repaired: {line}")
        print(f"checked {plural(report.partitions, 'partition')}: "
              f"{plural(report.segments, 'segment')}, {plural(report.batches, 'batch')}, "
              f"{plural(report.records, 'record')}, {human_size(report.bytes)}")
        if report.foreign_records:
            print(f"{plural(report.foreign_records, 'foreign record')} in streams topics "
                  "(not event envelopes; the stream index skips them)")
        for e in recovered:
            print(f"repaired on open ({e.case}): {e.path} at position {e.position}: {e.detail}")
        for problem in report.problems:
            print(f"problem: {problem}")
        if report.ok:
            print("no problems found")
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise CliError(f"{report.problems[0]}{more}",
                       hint="'es dump FILE' shows the file's batches; restore the store from a "
                            "backup or copy its good records to a new topic")


def _repair(data: str) -> repair_module.CatalogRepair | None:
    if not is_store(data):
        raise CliError(f"no store at {data!r}", hint="pass --data DIR (or set ES_DATA)")
    return repair_module.repair_catalog(data)
