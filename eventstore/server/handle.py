"""A running server, for its owner: on a thread of its own, or in the caller's event loop.

:class:`ServerHandle` (``Store.serve``): the server runs on a daemon thread with its
own event loop (asyncio, uvloop when installed), so an application keeps using its
store embedded meanwhile. The constructor returns once the listeners are bound (or
raises their ``ServerError``); ``close()`` stops the server gracefully and joins the
thread.

:class:`AsyncServerHandle` (``eventstore.aio.Store.serve``): the server bound on the
caller's loop; ``async with`` runs it in a task group of its own and stops it on the
way out, or a task runs ``serve_forever()``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from .config import format_address
from .server import Server

__all__ = ["AsyncServerHandle", "ServerHandle"]

log = logging.getLogger("eventstore.server")


def backend_options() -> dict[str, Any]:
    """asyncio's options: uvloop when it is installed (the faster loop for many sockets)."""
    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


class ServerHandle:
    """A server running on a thread of its own; a context manager that closes it."""

    def __init__(self, make: Callable[[], Server],
                 on_close: Callable[[ServerHandle], object] | None = None) -> None:
        self._make = make
        self._on_close = on_close
        self._server: Server | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self.address: tuple[str, int] = ("", 0)
        """``(host, port)`` actually bound (port 0 resolved)."""
        self.listeners: dict[str, tuple[str, int]] = {}
        """``(host, port)`` bound by listener name (``PLAINTEXT``, ``SASL_SSL``, ...), the first of each."""
        self.http_address: tuple[str, int] | None = None
        """The HTTP port's ``(host, port)`` as bound, when the server has one (``http=``)."""
        self._thread = threading.Thread(target=self._run, name="eventstore-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        self._raise_start_error()

    def _raise_start_error(self) -> None:
        """The error that kept the server from listening (``_run`` sets it on its thread)."""
        error, self._error = self._error, None
        if error is not None:
            self._thread.join()
            raise error

    def _run(self) -> None:
        try:
            anyio.run(self._main, backend="asyncio", backend_options=backend_options())
        except BaseException as e:  # handed to the caller, or logged once running
            if not self._ready.is_set():
                self._error = e
            else:
                log.exception("the server stopped on an error")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        server = self._make()
        await server.start()
        self._server = server
        self._token = anyio.lowlevel.current_token()
        self.address = server.address
        self.http_address = server.http.address if server.http is not None else None
        self.listeners = server.listeners
        self._ready.set()
        await server.serve_forever()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop gracefully (requests in flight answered) and wait for the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        server, token = self._server, self._token
        if server is not None and token is not None:
            with contextlib.suppress(anyio.RunFinishedError, RuntimeError):
                anyio.from_thread.run_sync(server.request_stop, token=token)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if self._on_close is not None:
            self._on_close(self)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<eventstore.ServerHandle {format_address(*self.address)} ({state})>"


class AsyncServerHandle:
    """A server bound on the caller's event loop: ``async with`` runs it, leaving stops it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (port 0 resolved)."""
        return self.server.address

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The HTTP port's ``(host, port)`` as bound, when the server has one (``http=``)."""
        http = self.server.http
        return http.address if http is not None else None

    async def serve_forever(self) -> None:
        """Serve until ``close()``; for ``task_group.start_soon(handle.serve_forever)``."""
        await self.server.serve_forever()

    async def close(self) -> None:
        """Stop gracefully; a server never run just releases its listeners."""
        self.server.request_stop()
        if self._tg is None:
            with anyio.CancelScope(shield=True):
                await self.server.close_listeners()

    async def __aenter__(self) -> AsyncServerHandle:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self.server.serve_forever)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        self.server.request_stop()
        tg, self._tg = self._tg, None
        assert tg is not None
        return await tg.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<eventstore.aio.ServerHandle {format_address(*self.address)}>"
