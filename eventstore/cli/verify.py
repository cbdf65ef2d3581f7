"""``es verify``: read every byte of every partition and check it (what ``store.check()`` does)."""

from __future__ import annotations

from typing import Annotated, Any

from .. import store as store_module
from ..storage.check import CheckProblem, CheckReport
from .access import CliError, DataOption, open_store
from .output import JsonOption, human_size, plural, print_json, progress


def problem_json(problem: CheckProblem) -> dict[str, Any]:
    return {"path": problem.path, "position": problem.position, "reason": problem.reason}


def check_with_progress(store: store_module.Store) -> CheckReport:
    """``store.check()`` with a progress bar in bytes."""
    with progress("verify", store.statistics().size_bytes, unit="bytes") as bar:
        return store.check(on_progress=bar.advance)


def verify(data: DataOption = store_module.DEFAULT_PATH,
           json: Annotated[bool, JsonOption] = False) -> None:
    """Check every checksum, record offset and index entry of the store.

    Exit status 1 when anything is wrong; the report names each file and position.
    What recovery repaired while opening the store is listed too.
    """
    with open_store(data) as store:
        recovered = list(store.recovery_events)
        report = check_with_progress(store)
    if json:
        print_json({
            "ok": report.ok, "partitions": report.partitions, "segments": report.segments,
            "batches": report.batches, "records": report.records, "bytes": report.bytes,
            "foreign_records": report.foreign_records,
            "problems": [problem_json(p) for p in report.problems],
            "recovery": [{"case": e.case, "path": e.path, "position": e.position, "detail": e.detail}
                         for e in recovered],
        })
    else:
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
