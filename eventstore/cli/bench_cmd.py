"""``es bench``: run the benchmark suite (the ``bench`` package) and print its tables."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app


@app.command()
def bench(
    workload: Annotated[
        list[str] | None, typer.Option("--workload", "-w", help="W1..W11; repeat for several.")
    ] = None,
    scale: Annotated[float, typer.Option(min=0.0001, help="Multiply every record count.")] = 1.0,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the report here.")] = None,
    directory: Annotated[
        str | None, typer.Option("--dir", help="Where temporary stores go (default: .).")
    ] = None,
) -> None:
    """Run the workloads side by side with their peers and print the tables and ratios."""
    try:
        from bench import run
    except ImportError as e:  # pragma: no cover - bench ships with the package
        raise typer.BadParameter(f"the bench package is not installed: {e}") from e
    run(workload or None, scale, json_out, base_dir=directory, progress=_progress, echo=typer.echo)


def _progress(message: str) -> None:
    typer.echo(message, err=True)
