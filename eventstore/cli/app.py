"""The ``es`` application: global options, error reporting, command registration."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ..errors import (
    CorruptionError,
    EventStoreError,
    RecordTooLargeError,
    StorageFullError,
    StoreLockedError,
    StreamNotFoundError,
    StreamsTopicError,
    TopicExistsError,
    TopicNotFoundError,
)
from ..repair import damaged_catalog
from . import acls as acls_cli
from . import backup as backup_cli
from . import config_cmd as config_cli
from . import consume, dump, groups, produce, promote, retention, serve, stats, streams, topics, verify
from . import mirror as mirror_cli
from . import replicate as replicate_cli
from . import users as users_cli
from .access import DATA_HELP, CliError, DataOption

__all__ = ["DATA_HELP", "DataOption", "app", "main"]

_state = {"debug": False}


class _Commands(TyperGroup):
    """The root group: turns expected errors of any command into ``error:`` + ``hint:``, exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (EventStoreError, CliError) as e:
            if _state["debug"] or os.environ.get("ES_DEBUG"):
                raise
            report(e)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="es",
    cls=_Commands,
    help="Administer and inspect an eventstore store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def report(error: EventStoreError | CliError) -> None:
    """One ``error:`` line on stderr, and a ``hint:`` line when there is something to do."""
    print(f"error: {error}", file=sys.stderr)
    hint = error.hint if isinstance(error, CliError) else _hint(error)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _hint(error: EventStoreError) -> str | None:
    if isinstance(error, StoreLockedError):
        return ("another process has this store open; commands that only read (topics list, "
                "consume without --group, groups list, stats) work beside it")
    if isinstance(error, TopicNotFoundError) and not error.suggestion:
        return "list topics with: es topics list"
    if isinstance(error, TopicExistsError):
        return f"see it with: es topics describe {error.topic}"
    if isinstance(error, StreamsTopicError):
        return "produce to a plain topic; 'es streams read' shows the streams of this one"
    if isinstance(error, RecordTooLargeError):
        return f"raise the limit with: es topics alter {error.topic} --max-record-bytes N"
    if isinstance(error, StreamNotFoundError):
        if error.deleted:
            return ("reading a deleted stream fails as above and es streams list leaves it out; "
                    "appending to it again continues its versions")
        return "list streams with: es streams list"
    if isinstance(error, StorageFullError):
        return "free disk space (or raise the quota) and try again"
    if isinstance(error, CorruptionError) and damaged_catalog(error):
        return "run 'es verify --repair' (it says what cannot be rebuilt; see docs/format.md, section 15)"
    if isinstance(error, CorruptionError):
        return "run 'es verify' for a full report; 'es dump FILE' shows the file's batches"
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``es`` console script."""
    app(args=argv, prog_name="es")


app.add_typer(topics.topics_app, name="topics")
app.command()(produce.produce)
app.command()(consume.consume)
app.add_typer(groups.groups_app, name="groups")
app.add_typer(streams.streams_app, name="streams")
app.command()(backup_cli.backup)
app.command()(backup_cli.restore)
app.command()(dump.dump)
app.command()(verify.verify)
app.command()(stats.stats)
app.command()(retention.retention)
app.command()(serve.serve)
app.command()(promote.promote)
app.command()(replicate_cli.replicate)
app.command(name="mirror")(mirror_cli.mirror_command)
app.add_typer(config_cli.config_app, name="config")
app.add_typer(users_cli.users_app, name="users")
app.add_typer(acls_cli.acls_app, name="acls")

# These modules register themselves on ``app``; import them last.
from . import bench_cmd, demo  # noqa: E402, F401
