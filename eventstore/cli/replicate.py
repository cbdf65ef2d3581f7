"""``es replicate``: serve replica fetches of a store an application owns, beside it
(docs/replication.md, 4.1), until SIGINT or SIGTERM. Nothing is written into the store."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from .. import store as store_module
from ..reader import open_reader
from .access import CliError, DataOption
from .serve import DEFAULT_LISTEN, log_to_stderr, stop_on_signal

if TYPE_CHECKING:
    from ..server import Server


def replicate(
    data: DataOption = store_module.DEFAULT_PATH,
    listen: Annotated[str, typer.Option(
        "--listen", metavar="HOST:PORT",
        help="Address followers connect to (port 0: any free port).")] = DEFAULT_LISTEN,
    node_id: Annotated[int, typer.Option(
        "--node-id", metavar="N", help="This node's id (unique in the cluster).")] = 0,
    poll_ms: Annotated[int, typer.Option(
        "--poll-ms", metavar="MS",
        help="How often the owner's appends are looked for (bounds the lag this adds).")] = 5,
) -> None:
    """Serve the store to followers ('es serve --replica-of') while an application owns it.

    Reads through the read-only view (no lock, nothing written); refuses every
    write. Replication is asynchronous: what the application wrote and no
    follower had fetched yet is its recovery point.
    """
    if not 1 <= poll_ms <= 10_000:
        raise CliError(f"--poll-ms must be in 1..10000, got {poll_ms}")
    log_to_stderr()
    from ..server.handle import backend_options  # the server extra: imported only by this command
    from ..server.replication.readonly import replicate_server

    with open_reader(data) as reader:
        make, close = replicate_server(reader, listen, node_id=node_id, poll_ms=poll_ms)

        async def run() -> None:
            server: Server = make()
            await server.start()
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_on_signal, server)
                await server.serve_forever()
                tg.cancel_scope.cancel()

        try:
            anyio.run(run, backend="asyncio", backend_options=backend_options())
        finally:
            close()
    logging.getLogger("eventstore.server").info("stopped; nothing was written into %s", data)
