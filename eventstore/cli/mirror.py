"""``es mirror``: copy topics into a Kafka-protocol cluster, or from one into a store
(docs/mirror.md)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from ..errors import StoreLockedError
from ..mirror import DEFAULT_CHECKPOINT, DEFAULT_TIMEOUT_S, Endpoint, check_bootstrap, mirror, parse_kafka_url
from .access import CliError


def mirror_command(
    to: Annotated[str | None, typer.Option(
        "--to", metavar="kafka://HOST:PORT", help="Copy into this cluster.")] = None,
    from_: Annotated[str | None, typer.Option(
        "--from", metavar="kafka://HOST:PORT",
        help="Copy from this cluster into the store at --data.")] = None,
    data: Annotated[str | None, typer.Option(
        "--data",
        help="The store: the source with --to (read beside its owner), the destination with --from.")] = None,
    bootstrap: Annotated[str | None, typer.Option(
        "--bootstrap", metavar="HOST:PORT",
        help="Read the source through Kafka (an es serve, a cluster) instead of --data.")] = None,
    topics: Annotated[str | None, typer.Option(
        "--topics", metavar="PATTERN", help="Shell-style patterns, comma-separated (default: every topic).")]
    = None,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Keep copying new records and topics until SIGINT or SIGTERM.")] = False,
    include_internal: Annotated[bool, typer.Option(
        "--include-internal", help="Copy topics whose names start with '__' too.")] = False,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", metavar="FILE", help="The mirror's durable progress.")] = DEFAULT_CHECKPOINT,
    timeout: Annotated[float, typer.Option(
        "--timeout", metavar="SECONDS", help="How long to wait for a broker.")] = DEFAULT_TIMEOUT_S,
) -> None:
    """Copy topics into a Kafka-protocol cluster (--to), or from one into a store (--from).

    Same topic names, partition counts and partition of each record; keys, values,
    headers and timestamps kept; resumable from --checkpoint without duplicates
    (docs/mirror.md). Exit status 0 when done, or when --follow is stopped by a signal.
    """
    source, destination = _ends(to, from_, data, bootstrap)
    with _stop_on_signal() as stop:
        try:
            copied = mirror(source, destination, topics=topics, follow=follow,
                            include_internal=include_internal, checkpoint=checkpoint,
                            timeout_s=timeout, stop=stop)
        except StoreLockedError as e:
            holder = f"process {e.pid}" if e.pid is not None else "another process"
            raise CliError(f"store {data!r} is in use by {holder}",
                           hint="a store the mirror writes must not be open elsewhere") from None
    typer.echo(f"copied {copied:,} records from {_shown(source)} to {_shown(destination)}")


def _ends(to: str | None, from_: str | None, data: str | None,
          bootstrap: str | None) -> tuple[Endpoint, Endpoint]:
    """(source, destination) from the options, or a one-line error."""
    if (to is None) == (from_ is None):
        raise CliError("give one of --to kafka://HOST:PORT or --from kafka://HOST:PORT")
    if to is not None:
        if (data is None) == (bootstrap is None):
            raise CliError("give the source: --data DIR or --bootstrap HOST:PORT")
        source: Endpoint = ("data", data) if data is not None else \
            ("kafka", check_bootstrap(bootstrap or "", f"--bootstrap {bootstrap}"))
        return source, parse_kafka_url(to)
    if data is None or bootstrap is not None:
        raise CliError("--from copies into a store: give --data DIR (and no --bootstrap)")
    return parse_kafka_url(from_ or ""), ("data", data)


def _shown(end: Endpoint) -> str:
    return end[1] if end[0] == "data" else f"kafka://{end[1]}"


@contextmanager
def _stop_on_signal() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the mirror runs: it stops cleanly."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda _signum, _frame: stop.set())
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
