"""``es streams``: list, read, delete and truncate event streams."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from .. import store as store_module
from ..errors import StreamNotFoundError
from ..sourcing.events import RecordedEvent
from .access import CliError, DataOption, did_you_mean, open_store
from .output import JsonOption, add_row, bytes_json, console, note, print_json, show_bytes, table
from .times import format_ms

streams_app = typer.Typer(help="List, read, delete and truncate event streams.", no_args_is_help=True)

Json = Annotated[bool, JsonOption]
DATA_COLUMN_WIDTH = 200


@contextmanager
def _suggesting(store: store_module.Store, stream_id: str) -> Iterator[None]:
    """Turn "stream does not exist" into an error with the closest existing stream id."""
    try:
        yield
    except StreamNotFoundError as e:
        if e.deleted:
            raise
        close = did_you_mean(stream_id, store.list_streams())
        if not close:
            raise
        raise CliError(f"{e}{close}", hint="list streams with: es streams list") from None


@streams_app.command("list")
def list_streams(
    category: Annotated[str | None, typer.Argument(help="Only streams of this category "
                                                   "(the id's text before the first '-').")] = None,
    data: DataOption = store_module.DEFAULT_PATH,
    json: Json = False,
) -> None:
    """Stream ids with their last version (deleted streams left out)."""
    with open_store(data) as store:
        rows = [(sid, store.stream_version(sid)) for sid in store.list_streams(category)]
    if json:
        print_json([{"stream_id": sid, "version": version} for sid, version in rows])
        return
    if not rows:
        note("no streams" + (f" in category {category!r}" if category else ""))
        return
    t = table("STREAM", "VERSION>")
    for sid, version in rows:
        add_row(t, sid, version)
    console().print(t)


def event_json(e: RecordedEvent) -> dict[str, Any]:
    return {"stream_id": e.stream_id, "version": e.version, "type": e.type, "data": bytes_json(e.data),
            "metadata": bytes_json(e.metadata), "id": str(e.id), "position": e.position,
            "timestamp_ms": e.timestamp_ms, "topic": e.topic, "partition": e.partition,
            "offset": e.offset}


@streams_app.command()
def read(
    stream_id: str,
    from_version: Annotated[int | None, typer.Option("--from", min=0, help="First version to read "
                                                     "(with --backwards: the highest).")] = None,
    backwards: Annotated[bool, typer.Option(help="Newest first.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="At most N events.")] = None,
    data: DataOption = store_module.DEFAULT_PATH,
    json: Json = False,
) -> None:
    """A stream's events in version order (or newest first with --backwards)."""
    start = from_version if from_version is not None else (-1 if backwards else 0)
    with open_store(data) as store, _suggesting(store, stream_id):
        events = store.read_stream(stream_id, start, limit, backwards)
    if json:
        print_json([event_json(e) for e in events])
        return
    t = table("VERSION>", "TYPE", "TIME (UTC)", "DATA")
    for e in events:
        add_row(t, e.version, e.type, format_ms(e.timestamp_ms), show_bytes(e.data, DATA_COLUMN_WIDTH))
    console().print(t)


def _change(data: str, stream_id: str,
            action: Callable[[store_module.Store, int], object]) -> int:
    """Run ``action(store, last_version)`` on an existing stream; returns the last version."""
    with open_store(data) as store, _suggesting(store, stream_id):
        last = store.stream_version(stream_id)
        if last is None:
            raise StreamNotFoundError(stream_id)
        action(store, last)
    return last


@streams_app.command()
def delete(stream_id: str, data: DataOption = store_module.DEFAULT_PATH) -> None:
    """Soft-delete a stream: reading it fails (exit status 1); appending again continues its versions."""
    last = _change(data, stream_id, lambda store, _last: store.delete_stream(stream_id))
    print(f"deleted stream {stream_id!r} (versions 0..{last}); a new append gets version {last + 1}")


@streams_app.command()
def truncate(
    stream_id: str,
    before: Annotated[int, typer.Option("--before", min=0, metavar="V",
                                        help="Hide the events below version V.")],
    data: DataOption = store_module.DEFAULT_PATH,
) -> None:
    """Hide a stream's events below a version (e.g. to remove personal data from reads)."""
    def truncate_before(store: store_module.Store, last: int) -> None:
        if before > last + 1:
            raise CliError(f"stream {stream_id!r} ends at version {last}; --before {before} is past it",
                           hint=f"use --before {last + 1} to hide every event")
        store.truncate_stream(stream_id, before)

    _change(data, stream_id, truncate_before)
    print(f"truncated stream {stream_id!r}: versions below {before} are hidden")
