"""Command line: ``python -m bench [--workload W1 ...] [--scale 0.1] [--json PATH] [--dir DIR]``."""

from __future__ import annotations

import argparse
import json
import sys

from bench.runner import WORKLOADS, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark eventstore against its peers; all systems run side by side.",
        epilog="Workloads: "
        + "; ".join(f"{name}: {workload.title}" for name, workload in WORKLOADS.items()),
    )
    parser.add_argument(
        "--workload",
        action="append",
        metavar="W",
        type=str.upper,
        choices=list(WORKLOADS),
        help="a workload to run; repeat for several (default: all)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies every record count, e.g. 0.01 for a quick run (default: 1)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the JSON report to PATH")
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="where to create the temporary data directory (default: the current directory)",
    )
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error("--scale must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(message: str) -> None:
        print(f"# {message}", file=sys.stderr, flush=True)

    def echo(table: str) -> None:
        print(table, flush=True)

    document = run(args.workload, args.scale, args.json, progress, base_dir=args.dir, echo=echo)
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if document["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
