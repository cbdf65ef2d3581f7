"""A request a follower passes to its leader as it is (docs/replication.md, section 4.5).

librdkafka's idempotent producer asks *any* broker for its producer id (InitProducerId
without a transactional id, as Kafka allows), and keeps asking the same one when it is
refused. Producer ids come from the leader's sequence, so a follower forwards that
request's frame to the leader byte for byte on a connection of its own and returns the
leader's answer as it is (same correlation id), on a connection opened as the fetcher's
are (``connect_leader``: TLS and SASL as configured). When the leader cannot be reached
or refuses this node's credentials, the caller refuses instead.
"""

from __future__ import annotations

from typing import Final

import anyio

from ...errors import AuthenticationFailedError
from ...wire import FrameSplitter
from ...wire.errors import ProtocolError
from ...wire.framing import frame
from .client import connect_leader
from .state import Replication

__all__ = ["forward_to_leader"]

FORWARD_TIMEOUT_S: Final = 30.0


async def forward_to_leader(replication: Replication, frame_bytes: bytes) -> bytes | None:
    """The leader's response frame to ``frame_bytes`` (a request frame without its size), or
    None when the leader is unknown or does not answer in time."""
    leader = replication.leader
    if replication.role != "follower" or leader is None or leader.node_id < 0:
        return None
    try:
        with anyio.fail_after(FORWARD_TIMEOUT_S):
            async with await connect_leader(leader.host, leader.port, replication.security) as stream:
                await stream.send(frame(frame_bytes))
                splitter = FrameSplitter()
                while True:  # one pass per chunk; bounded by the frame and the timeout
                    frames = splitter.feed(await stream.receive())
                    if frames:
                        return frame(frames[0])
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, ProtocolError,
            AuthenticationFailedError):  # the fetcher logs why the leader cannot be reached
        return None
