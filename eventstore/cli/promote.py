"""``es promote``: make a follower the leader in a new epoch (docs/replication.md, section 6).

Online when a server holds the store (``<store>/serving`` names it and it answers): it is
asked with the Promote extension API and leads at once. Otherwise offline: the store is
opened (so no server may hold it), the new epoch is one more than the largest it knows
(``replication.json`` and its partitions' epoch files), and ``replication.json`` is
rewritten so that the next ``es serve`` without ``--replica-of`` leads. Either way it first
prints the node's log end and last written epoch.
"""

from __future__ import annotations

import socket

import typer

from .. import store as store_module
from ..errors import EventStoreError
from ..wire import FrameSplitter
from ..wire import extensions as codec
from ..wire.errors import ProtocolError
from .access import CliError, DataOption

PROMOTE_KEY = 20016
TIMEOUT_S = 30.0


def promote(data: DataOption = store_module.DEFAULT_PATH) -> None:
    """Make this store's node the leader in a new epoch (online if a server holds it)."""
    from ..server.replication.durable import read_serving  # the server extra: only for this command

    typer.echo(_describe(str(data)))
    address = read_serving(str(data))
    if address is not None:
        try:
            node_id, epoch = _promote_online(address)
        except ConnectionRefusedError:
            pass  # a server that died without removing the file: promote offline
        else:
            typer.echo(f"promoted: node {node_id} leads in epoch {epoch} (the server at {address})")
            return
    epoch = _promote_offline(str(data))
    typer.echo(f"promoted offline: epoch {epoch}; the next 'es serve --data {data}' leads")


def _describe(data: str) -> str:
    """What the node holds before it leads: the sum of its partitions' ends and the last
    epoch written, so an operator can check it is the best placed (docs/replication.md,
    section 6: the largest end in the newest epoch)."""
    from ..reader import open_reader

    total = partitions = 0
    last_epoch = -1
    try:
        with open_reader(data) as reader:
            for cfg in reader.topics():  # bounded by the topics and their partitions
                for p in range(cfg.partitions):
                    total += reader.offsets(cfg.name, p)[1]
                    partitions += 1
                    last_epoch = max([last_epoch, *(e for e, _start in reader.epoch_entries(cfg.name, p))])
    except EventStoreError as e:
        raise CliError(f"cannot read the store at {data}: {e}") from None
    epoch = "none" if last_epoch < 0 else str(last_epoch)
    return f"log end {total} (the sum over {partitions} partition(s)), last written epoch {epoch}"


def _promote_online(address: str) -> tuple[int, int]:
    """Ask the server at ``address``; ``(node_id, epoch)`` it now leads in."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT_S) as sock:
            sock.sendall(codec.encode_request(PROMOTE_KEY, 1, {"epoch": -1}, "es-promote"))
            splitter = FrameSplitter()
            frames: list[bytes] = []
            while not frames:  # one pass per chunk; bounded by the frame and the timeout
                chunk = sock.recv(65536)
                if not chunk:
                    raise CliError(f"the server at {address} closed the connection "
                                   f"(does it serve replication?)")
                frames = splitter.feed(chunk)
        _, response = codec.decode_response(PROMOTE_KEY, frames[0])
    except ConnectionRefusedError:
        raise
    except (OSError, ProtocolError) as e:
        raise CliError(f"cannot promote through the server at {address}: {e}") from None
    if response["error_code"]:
        reason = response["error_message"] or response["error_code"]
        raise CliError(f"the server at {address} refused: {reason}")
    return response["node_id"], response["epoch"]


def _promote_offline(data: str) -> int:
    """Rewrite ``replication.json`` as a leader in a new epoch; returns the epoch."""
    from ..server.replication.durable import DurableRole, read_role, write_role

    with store_module.open(data, create=False) as store:
        epoch = max(read_role(data).epoch, store.log.leader_epoch) + 1
        write_role(data, DurableRole("leader", epoch, None))
    return epoch
