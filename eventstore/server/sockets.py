"""Accepted connections as plain non-blocking sockets, read only when the server asks.

anyio's asyncio socket stream reads into a queue of its own and pauses its
transport only when a receive finds that queue empty, so a client that floods a
new connection from its first byte is read ahead of any bound the server keeps
(docs/protocol.md, section 3). Here nothing is read but by :meth:`RawStream.receive`:
the kernel's buffers fill, and TCP slows the client down.

Both use anyio's public ``wait_readable`` / ``wait_writable``, so they run on
asyncio and trio alike.
"""

from __future__ import annotations

import contextlib
import socket

import anyio
import anyio.abc
import anyio.lowlevel

from ..wire.framing import Buffer

__all__ = ["RawStream", "accept"]


class RawStream:
    """What the connection loop needs of a socket: receive, send, close."""

    __slots__ = ("closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.closed = False

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes``, waiting for the first; ``anyio.EndOfStream`` when the peer left."""
        while True:  # bounded: each pass waits for the socket to become readable
            try:
                data = self.sock.recv(max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
                continue
            except OSError as e:
                raise anyio.BrokenResourceError from e
            if not data:
                raise anyio.EndOfStream
            await anyio.lowlevel.checkpoint()  # a fast client must not starve the loop
            return data

    async def send(self, data: Buffer) -> None:
        """All of ``data``, waiting while the kernel's send buffer is full."""
        view = memoryview(data).cast("B")
        while view:  # bounded: each pass sends some bytes or waits for room
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self.sock)
                continue
            except OSError as e:
                raise anyio.BrokenResourceError from e
            view = view[sent:]
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            anyio.notify_closing(self.sock)
            self.sock.close()
        await anyio.lowlevel.checkpoint()


async def accept(listener: anyio.abc.SocketListener) -> tuple[RawStream, object]:
    """The next connection of ``listener``'s socket, and the peer's address."""
    lsock: socket.socket = listener.extra(anyio.abc.SocketAttribute.raw_socket)
    while True:  # bounded: each pass waits for a connection to be pending
        try:
            sock, peer = lsock.accept()
        except BlockingIOError:
            await anyio.wait_readable(lsock)
            continue
        return RawStream(sock), peer
