"""Benchmarks of eventstore against the physical limit, SQLite, LMDB and eventsourcing.

Run ``python -m bench --help``, or call :func:`run` (as ``es bench`` does).
"""

from bench.runner import WORKLOADS, format_table, run

__all__ = ["WORKLOADS", "format_table", "run"]
