"""The ``es`` application: global options, error reporting, command registration."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..errors import EventStoreError, StoreLockedError, TopicNotFoundError

DATA_HELP = "Store directory (env ES_DATA)."
DataOption = Annotated[str, typer.Option("--data", envvar="ES_DATA", help=DATA_HELP)]

app = typer.Typer(
    name="es",
    help="Administer and inspect an eventstore store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
_state = {"debug": False}


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _hint(error: EventStoreError) -> str | None:
    if isinstance(error, StoreLockedError):
        return "another process has this store open; stop it or use another --data directory"
    if isinstance(error, TopicNotFoundError) and not error.suggestion:
        return "list topics with: es topics list"
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``es`` console script."""
    try:
        app(args=argv, prog_name="es", standalone_mode=True)
    except EventStoreError as e:
        if _state["debug"] or os.environ.get("ES_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        hint = _hint(e)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        sys.exit(1)


# Command modules register themselves on ``app``; import them last.
from . import bench_cmd, demo  # noqa: E402, F401
