"""``es serve``: serve a store over the Kafka wire protocol until SIGINT or SIGTERM."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any, cast

import anyio
import typer

from .. import store as store_module
from ..errors import InvalidArgumentError, StoreLockedError
from ..records import Durability
from ..store import DURABILITY_MODES
from .access import CliError, DataOption
from .config_file import ConfigOption

if TYPE_CHECKING:
    from ..server import Server

DEFAULT_LISTEN = "127.0.0.1:9092"


def serve(
    data: DataOption = store_module.DEFAULT_PATH,
    config: ConfigOption = None,
    listen: Annotated[str | None, typer.Option(
        "--listen", metavar="HOST:PORT",
        help="Address of a PLAINTEXT listener (port 0: any free port); default 127.0.0.1:9092 when no "
             "--listener is given.")] = None,
    listener: Annotated[list[str] | None, typer.Option(
        "--listener", metavar="NAME://HOST:PORT",
        help="A listener: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (repeatable; docs/operations.md, 1).")
    ] = None,
    ssl_certfile: Annotated[str | None, typer.Option(
        "--ssl-certfile", metavar="PEM",
        help="The server's certificate chain for SSL and SASL_SSL listeners (reloaded on SIGHUP).")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(
        "--ssl-keyfile", metavar="PEM",
        help="The certificate's private key (default: in --ssl-certfile).")] = None,
    ssl_cafile: Annotated[str | None, typer.Option(
        "--ssl-cafile", metavar="PEM",
        help="CA certificates: TLS clients must present a certificate they signed (principal User:CN).")
    ] = None,
    sasl_mechanisms: Annotated[str, typer.Option(
        "--sasl-mechanisms", metavar="M[,M...]",
        help="SASL mechanisms offered: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.")
    ] = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
    advertised_listener: Annotated[str | None, typer.Option(
        "--advertised-listener", metavar="HOST:PORT",
        help="Address clients are told to connect to (default: the listen address).")] = None,
    durability: Annotated[str, typer.Option(
        "--durability", metavar="fsync|interval|none|replicated",
        help="When appends reach the disk (docs/format.md, section 11); replicated: fsync, "
             "then the in-sync followers (docs/replication.md, 3).")] = "fsync",
    auto_create_topics: Annotated[bool, typer.Option(
        "--auto-create-topics", help="Create a topic a client names that does not exist.")] = False,
    replica_of: Annotated[str | None, typer.Option(
        "--replica-of", metavar="HOST:PORT[,HOST:PORT...]",
        help="Follow this leader: copy its log and catalog, refuse writes (docs/replication.md, 4).")] = None,
    replica_id: Annotated[int, typer.Option(
        "--replica-id", metavar="N", help="This node's id (unique in the cluster).")] = 0,
    min_insync_replicas: Annotated[int | None, typer.Option(
        "--min-insync-replicas", metavar="N",
        help="Replicas (this leader included) an acks=all write needs; readers stop at the high watermark.")
    ] = None,
    replica_lag_ms: Annotated[int, typer.Option(
        "--replica-lag-ms", metavar="MS",
        help="A follower not caught up for this long leaves the in-sync set.")] = 10_000,
    replica_security_protocol: Annotated[str, typer.Option(
        "--replica-security-protocol", metavar="PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL",
        help="How a follower connects to its leader (docs/replication.md, 4).")] = "PLAINTEXT",
    replica_sasl_mechanism: Annotated[str, typer.Option(
        "--replica-sasl-mechanism", metavar="PLAIN|SCRAM-SHA-256|SCRAM-SHA-512",
        help="The SASL mechanism a follower authenticates with.")] = "SCRAM-SHA-512",
    replica_username: Annotated[str | None, typer.Option(
        "--replica-username", metavar="NAME",
        help="The user a follower authenticates as (on SASL_PLAINTEXT and SASL_SSL).")] = None,
    replica_password_env: Annotated[str, typer.Option(
        "--replica-password-env", metavar="VAR",
        help="The environment variable holding that user's password.")] = "ES_REPLICA_PASSWORD",
    replica_ssl_cafile: Annotated[str | None, typer.Option(
        "--replica-ssl-cafile", metavar="PEM",
        help="CA certificates a follower checks its leader's certificate with (default: the system's).")
    ] = None,
    replica_ssl_certfile: Annotated[str | None, typer.Option(
        "--replica-ssl-certfile", metavar="PEM",
        help="A follower's client certificate, for a leader that asks for one.")] = None,
    replica_ssl_keyfile: Annotated[str | None, typer.Option(
        "--replica-ssl-keyfile", metavar="PEM",
        help="That certificate's private key (default: in --replica-ssl-certfile).")] = None,
    coordinator: Annotated[str | None, typer.Option(
        "--coordinator", metavar="etcd://HOST:PORT",
        help="Let etcd elect the leader and fail over (docs/replication.md, 7); needs --cluster.")] = None,
    cluster: Annotated[str, typer.Option(
        "--cluster", metavar="NAME", help="The cluster's name under the coordinator.")] = "",
    lease_ttl: Annotated[int, typer.Option(
        "--lease-ttl", metavar="S",
        help="Seconds of the coordinator's etcd lease; a leader cut off fences itself after half.")] = 2,
    super_user: Annotated[list[str] | None, typer.Option(
        "--super-user", metavar="User:NAME",
        help="A principal every ACL check permits (repeatable; docs/operations.md, 2).")] = None,
    allow_everyone_if_no_acl_found: Annotated[bool, typer.Option(
        "--allow-everyone-if-no-acl-found",
        help="Once ACLs exist, a resource no ACL names is open to every client (default: refused).")] = False,
    http: Annotated[str | None, typer.Option(
        "--http", metavar="HOST:PORT",
        help="Serve /metrics, /healthz and /readyz over HTTP here (docs/operations.md, 4).")] = None,
    log_format: Annotated[str, typer.Option(
        "--log-format", metavar="text|json",
        help="Log lines on stderr as text or one JSON object each.")] = "text",
    log_level: Annotated[str, typer.Option(
        "--log-level", metavar="debug|info|warning|error", help="Least severe log lines shown.")] = "info",
    slow_request_ms: Annotated[int, typer.Option(
        "--slow-request-ms", metavar="MS", help="Log requests slower than this (0: none).")] = 1000,
    group_initial_rebalance_delay_ms: Annotated[int, typer.Option(
        "--group-initial-rebalance-delay-ms", metavar="MS",
        help="How long a rebalance of an empty group waits for more members (0: none).")] = 3000,
    console: Annotated[bool, typer.Option(
        "--console/--no-console",
        help="Serve the web console on the HTTP port (docs/operations.md, 6).")] = True,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", metavar="N", help="Client connections served at once; more are closed.")] = 1000,
    max_connections_per_ip: Annotated[int, typer.Option(
        "--max-connections-per-ip", metavar="N",
        help="Connections one client address may hold at once; more are closed.")] = 2**31 - 1,
    quota_default_producer_bytes: Annotated[int | None, typer.Option(
        "--quota-default-producer-bytes", metavar="BYTES/S",
        help="Produce bytes per second each client id may send (below any quota set with "
             "AlterClientQuotas).")] = None,
    quota_default_consumer_bytes: Annotated[int | None, typer.Option(
        "--quota-default-consumer-bytes", metavar="BYTES/S",
        help="Fetch bytes per second each client id may receive (below any quota set with "
             "AlterClientQuotas).")] = None,
    quota_default_request_percentage: Annotated[float | None, typer.Option(
        "--quota-default-request-percentage", metavar="PERCENT",
        help="Share of one thread's time each client id's requests may take (100: a whole thread).")] = None,
    quota_window_num: Annotated[int, typer.Option(
        "--quota-window-num", metavar="N", help="Samples a quota's rate is measured over.")] = 11,
    quota_window_size_ms: Annotated[int, typer.Option(
        "--quota-window-size-ms", metavar="MS", help="Length of one quota sample.")] = 1000,
) -> None:
    """Serve the store to Kafka clients (docs/protocol.md) until SIGINT or SIGTERM.

    Makes the store if there is none. Stops gracefully on a signal: the requests
    in flight are answered, then the store is closed; exit status 0.
    """
    if durability not in DURABILITY_MODES:
        raise CliError(f"--durability must be one of {', '.join(DURABILITY_MODES)}, got {durability!r}")
    replica_password = _replica_password(replica_security_protocol, replica_password_env)
    from ..server.logs import configure_logging  # the server extra: imported only by this command

    try:
        configure_logging(log_format, log_level)
    except InvalidArgumentError as e:
        raise CliError(f"{e}") from None
    from ..server import server_factory  # the server extra: imported only by this command
    from ..server.handle import backend_options

    try:
        store = store_module.open(data, durability=cast(Durability, durability))
    except StoreLockedError as e:
        holder = f"process {e.pid}" if e.pid is not None else "another process"
        raise CliError(f"store {data!r} is in use by {holder} (another es serve, or an application)",
                       ) from None
    with store:
        make = server_factory(store.log, store.groups, lambda: store.streams,
                              listen if listen is not None or listener else DEFAULT_LISTEN,
                              listeners=listener or (),
                              ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, ssl_cafile=ssl_cafile,
                              sasl_mechanisms=sasl_mechanisms,
                              advertised_listener=advertised_listener, auto_create_topics=auto_create_topics,
                              node_id=replica_id, replica_of=replica_of or (),
                              max_connections=max_connections, max_connections_per_ip=max_connections_per_ip,
                              quota_default_producer_bytes=quota_default_producer_bytes,
                              quota_default_consumer_bytes=quota_default_consumer_bytes,
                              quota_default_request_percentage=quota_default_request_percentage,
                              quota_window_num=quota_window_num, quota_window_size_ms=quota_window_size_ms,
                              super_users=tuple(super_user or ()),
                              allow_everyone_if_no_acl_found=allow_everyone_if_no_acl_found,
                              min_insync_replicas=min_insync_replicas, replica_lag_ms=replica_lag_ms,
                              replica_security_protocol=replica_security_protocol,
                              replica_sasl_mechanism=replica_sasl_mechanism,
                              replica_username=replica_username,
                              replica_password=replica_password, replica_ssl_cafile=replica_ssl_cafile,
                              replica_ssl_certfile=replica_ssl_certfile,
                              replica_ssl_keyfile=replica_ssl_keyfile,
                              http=http, slow_request_ms=slow_request_ms, console=console,
                              group_initial_rebalance_delay_ms=group_initial_rebalance_delay_ms,
                              **_coordinated(coordinator, cluster, lease_ttl))

        async def run() -> None:
            server: Server = make()
            await server.start()
            # What exists now (modules, the open store, its indexes) lives as long as the
            # process: out of the cycle collector's reach, a full collection scans only what
            # requests made since, instead of pausing every request for 20-40 ms each time.
            gc.freeze()
            # logged once the store is open and the ports bound: a failure to start stays one line
            logging.getLogger("eventstore.server").info(
                "store %s, durability %s, settings from %s", data, durability, config or "flags and defaults")
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_on_signal, server)
                tg.start_soon(reload_tls_on_sighup, server)
                await server.serve_forever()
                tg.cancel_scope.cancel()

        anyio.run(run, backend="asyncio", backend_options=backend_options())
    logging.getLogger("eventstore.server").info("stopped; store closed")


def _replica_password(protocol: str, variable: str) -> str | None:
    """The follower's password, from the environment variable ``--replica-password-env`` names
    (never a flag: a command line is visible to every user of the machine); only on SASL."""
    if not protocol.upper().startswith("SASL_"):
        return None
    password = os.environ.get(variable)
    if not password:
        raise CliError(f"--replica-security-protocol {protocol} needs the follower's password in the "
                       f"environment variable {variable} (--replica-password-env)")
    return password


def _coordinated(coordinator: str | None, cluster: str, lease_ttl: int) -> dict[str, Any]:
    """The coordinator's server options, only when one is given."""
    if coordinator is None:
        return {}
    return {"coordinator": coordinator, "cluster": cluster, "lease_ttl": lease_ttl}


async def stop_on_signal(server: Server) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:  # the first signal stops the server
            logging.getLogger("eventstore.server").info(
                "%s: stopping (requests in flight are answered first)", signal.Signals(signum).name)
            server.request_stop()
            return


async def reload_tls_on_sighup(server: Server) -> None:
    """SIGHUP: read the TLS certificate, key and CA files again, for the connections made after."""
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:  # one reload per signal, until the server stops
            server.reload_tls()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The server's log lines on stderr: one per listener, one per connection closed on purpose."""


def log_to_stderr() -> None:
    server_log = logging.getLogger("eventstore.server")
    if not any(isinstance(h, _StderrHandler) for h in server_log.handlers):  # once per process
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    server_log.propagate = False
