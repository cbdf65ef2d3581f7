"""The Kafka wire protocol server: ``es serve``, ``Store.serve`` (docs/protocol.md).

Modules, in the order a request meets them:

* ``config``: :class:`ServerConfig`, the options of ``serve`` and ``es serve``, checked;
* ``server``: :class:`Server`, the listeners and their accept loops, graceful stop;
* ``connection``: one connection's loop: frames in, handlers run (pipelined, at most
  ``max_in_flight``), responses out in request order;
* ``dispatch``: the registry of handlers (``@handles(api_key)``), and the error
  answers built when a handler fails or a version is not served;
* ``context``: :class:`Context`, what a handler sees: the log, the group coordinator,
  the streams, the configuration, worker threads, record wake-ups;
* ``handlers/``: one module per group of APIs;
* ``handle``: :class:`ServerHandle`, a server on a thread of its own beside an
  application that keeps using its store; :class:`AsyncServerHandle`, one on the
  caller's event loop;
* ``cluster``: the store's cluster id, made once and kept in the store directory.

The codec is ``eventstore.wire`` (sans I/O); nothing here parses bytes itself.
"""

from . import console as console  # the web console's routes on the HTTP port
from .config import DEFAULT_ADDRESS, ServerConfig, parse_address, server_config
from .context import Broker, Context
from .dispatch import Handler, handler_for, handles
from .handle import AsyncServerHandle, ServerHandle
from .server import Server, server_factory

__all__ = [
    "DEFAULT_ADDRESS",
    "AsyncServerHandle",
    "Broker",
    "Context",
    "Handler",
    "Server",
    "ServerConfig",
    "ServerHandle",
    "handler_for",
    "handles",
    "parse_address",
    "server_config",
    "server_factory",
]
