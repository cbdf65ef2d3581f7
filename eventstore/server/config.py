"""The server's options: where it listens, what it advertises, its bounds (docs/protocol.md, 3).

One frozen :class:`ServerConfig` per server, made by :func:`server_config` from what
``Store.serve`` and ``es serve`` were given, every value checked there so that a
typo fails before anything listens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final

from ..errors import InvalidArgumentError
from ..wire import FRAME_BYTES_MAX
from ..wire.security import DEFAULT_SASL_MECHANISM, SASL_MECHANISMS, SECURITY_PROTOCOLS

__all__ = [
    "DEFAULT_ADDRESS", "SASL_MECHANISMS", "SECURITY_PROTOCOLS", "Listener", "ServerConfig", "format_address",
    "parse_address", "parse_listener", "server_config",
]


DEFAULT_ADDRESS: Final = "127.0.0.1:9092"
FETCH_CACHE_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Listener:
    """One address the server listens on, and how its clients authenticate."""

    name: str
    """The security protocol: one of ``SECURITY_PROTOCOLS``."""
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.name in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.name in ("SASL_PLAINTEXT", "SASL_SSL")

    def __str__(self) -> str:
        return f"{self.name}://{format_address(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What one server does; every field has Kafka's default where Kafka has one."""

    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str | None = None
    """The host clients are told to connect to (Metadata, FindCoordinator); default ``host``."""
    advertised_port: int | None = None
    """The port clients are told; default the port actually bound."""
    max_in_flight: int = 32
    """Requests of one connection being worked on or waiting to be answered."""
    max_frame_bytes: int = FRAME_BYTES_MAX
    max_connections: int = 1000
    auto_create_topics: bool = False
    """Metadata (and Produce) of an unknown topic creates it, as Kafka's auto.create.topics.enable."""
    node_id: int = 0
    fetch_cache_bytes: int = FETCH_CACHE_BYTES
    """Bound of the cache of native batches converted to Kafka batches for Fetch."""
    listeners: tuple[Listener, ...] = ()
    """Every listener, the first at ``host:port``; empty: one PLAINTEXT listener at ``host:port``."""
    ssl_certfile: str | None = None
    """The server's certificate chain (PEM), for the SSL and SASL_SSL listeners."""
    ssl_keyfile: str | None = None
    """The certificate's private key (PEM); None: it is in ``ssl_certfile``."""
    ssl_cafile: str | None = None
    """CA certificates (PEM): given, every TLS client must present a certificate they signed
    (mutual TLS; the principal is ``User:<CN>``)."""
    sasl_mechanisms: tuple[str, ...] = SASL_MECHANISMS
    """The SASL mechanisms the SASL listeners offer."""
    replica_of: tuple[str, ...] = ()
    """The leader's addresses (``host:port``) when this node is a follower (docs/replication.md, 4)."""
    min_insync_replicas: int | None = None
    """Replicas (the leader included) an acks=all write needs; None: not given (no high watermark gate)."""
    replica_lag_ms: int = 10_000
    """A follower not caught up for this long leaves the in-sync set (Kafka's replica.lag.time.max.ms)."""
    replica_security_protocol: str = "PLAINTEXT"
    """How a follower connects to its leader: one of ``SECURITY_PROTOCOLS`` (docs/replication.md, 4)."""
    replica_sasl_mechanism: str = DEFAULT_SASL_MECHANISM
    """The SASL mechanism a follower authenticates with (on SASL_PLAINTEXT and SASL_SSL)."""
    replica_username: str | None = None
    """The user a follower authenticates as; the leader sees it as ``User:<name>``."""
    replica_password: str | None = field(default=None, repr=False)
    """That user's password (``es serve`` reads it from an environment variable)."""
    replica_ssl_cafile: str | None = None
    """CA certificates (PEM) a follower checks its leader's certificate with; None: the system's."""
    replica_ssl_certfile: str | None = None
    """A follower's client certificate (PEM), for a leader that asks for one."""
    replica_ssl_keyfile: str | None = None
    """That certificate's private key (PEM); None: it is in ``replica_ssl_certfile``."""
    coordinator: str | None = None
    """``etcd://HOST:PORT``: etcd decides this node's role (docs/replication.md, 7); None: the options do."""
    cluster: str = ""
    """The cluster's name under the coordinator (its etcd keys' prefix)."""
    lease_ttl: int = 2
    """Seconds of the coordinator's etcd lease: a leader cut off from etcd fences itself after half of it."""
    super_users: tuple[str, ...] = ()
    """Principals (``User:NAME``) every ACL check permits (Kafka's super.users)."""
    allow_everyone_if_no_acl_found: bool = False
    """Once ACLs exist, a resource with no ACL at all is open to everyone (Kafka's
    allow.everyone.if.no.acl.found); off: refused to all but super users."""
    http: str | None = None
    """``HOST:PORT`` of the HTTP port (``/metrics``, ``/healthz``, ``/readyz``; docs/operations.md,
    4); None: no HTTP port."""
    group_initial_rebalance_delay_ms: int = 3000
    """How long a rebalance that starts in an empty group waits for more members before the
    join completes (Kafka's group.initial.rebalance.delay.ms; docs/protocol.md; 0: not at all)."""
    slow_request_ms: int = 1000
    """A request that takes longer is logged with its client and principal (0: never)."""
    console: bool = True
    """Serve the web console (``/console``, ``/api/...``) on the HTTP port; off: those paths are
    404 and only ``/metrics``, ``/healthz``, ``/readyz`` answer (docs/operations.md, 6)."""
    max_connections_per_ip: int = 2**31 - 1
    """Connections one client address may hold at once (Kafka's max.connections.per.ip)."""
    quota_default_producer_bytes: int | None = None
    """Produce bytes per second each client id may send unless a stored quota says otherwise."""
    quota_default_consumer_bytes: int | None = None
    """Fetch bytes per second each client id may receive unless a stored quota says otherwise."""
    quota_default_request_percentage: float | None = None
    """Percent of one thread's time each client id's requests may take unless a stored quota
    says otherwise."""
    quota_window_num: int = 11
    """Samples a quota's rate is measured over (Kafka's quota.window.num)."""
    quota_window_size_ms: int = 1000
    """Length of one sample (Kafka's quota.window.size.seconds, in milliseconds)."""
    extra: tuple[tuple[str, Any], ...] = field(default=())
    """Options for handler modules, by name (they check their own)."""

    @property
    def all_listeners(self) -> tuple[Listener, ...]:
        return self.listeners or (Listener("PLAINTEXT", self.host, self.port),)


_INT_BOUNDS: Final[dict[str, tuple[int, int]]] = {
    "port": (0, 65535),
    "advertised_port": (1, 65535),
    "max_in_flight": (1, 10_000),
    "max_frame_bytes": (64, FRAME_BYTES_MAX),
    "max_connections": (1, 1_000_000),
    "node_id": (0, 2**31 - 1),
    "fetch_cache_bytes": (0, 2**40),
    "min_insync_replicas": (1, 1000),
    "replica_lag_ms": (1, 2**31 - 1),
    "max_connections_per_ip": (1, 2**31 - 1),
    "quota_default_producer_bytes": (1, 2**63 - 1),
    "quota_default_consumer_bytes": (1, 2**63 - 1),
    "quota_window_num": (2, 1000),
    "quota_window_size_ms": (1, 3_600_000),
    "slow_request_ms": (0, 2**31 - 1),
    "group_initial_rebalance_delay_ms": (0, 2**31 - 1),
    "lease_ttl": (1, 3600),
}
_QUOTA_DEFAULTS: Final = ("quota_default_producer_bytes", "quota_default_consumer_bytes",
                          "quota_default_request_percentage")


def parse_address(address: str, what: str = "address") -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:9092"`` for IPv6) as ``(host, port)``; port 0 = any free port."""
    if not isinstance(address, str):
        raise InvalidArgumentError(f"{what} must be 'HOST:PORT', got {address!r}")
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidArgumentError(f"{what} must be 'HOST:PORT' with a port in 0..65535, got {address!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listener(text: str) -> Listener:
    """``NAME://HOST:PORT`` with NAME one of ``SECURITY_PROTOCOLS``."""
    name, sep, address = str(text).partition("://")
    if not sep or name.upper() not in SECURITY_PROTOCOLS:
        names = ", ".join(SECURITY_PROTOCOLS)
        raise InvalidArgumentError(f"a listener is 'NAME://HOST:PORT', NAME one of {names}; got {text!r}")
    host, port = parse_address(address, f"listener {text!r}")
    return Listener(name.upper(), host, port)


def server_config(listen: str | None = DEFAULT_ADDRESS, *, advertised_listener: str | None = None,
                  listeners: Any = (), **options: Any) -> ServerConfig:
    """A checked :class:`ServerConfig`: ``listen`` and ``advertised_listener`` are
    ``HOST:PORT``; ``listeners`` are more listeners (``NAME://HOST:PORT``, after ``listen``,
    a PLAINTEXT one, unless it is None); ``options`` are the other fields by name
    (unknown names are refused, except ``extra``, a mapping handed to handler modules)."""
    every = _listeners(listen, listeners)
    host, port = every[0].host, every[0].port
    given: dict[str, Any] = {"host": host, "port": port, "listeners": every}
    if advertised_listener is not None:
        ahost, aport = parse_address(advertised_listener, "advertised listener")
        if aport == 0:
            raise InvalidArgumentError(f"advertised listener needs a port, got {advertised_listener!r}")
        given.update(advertised_host=ahost, advertised_port=aport)
    known = {f.name for f in fields(ServerConfig)} - {"host", "port", "advertised_host", "advertised_port",
                                                       "listeners"}
    for name, value in options.items():
        if name not in known:
            names = ", ".join(sorted(known | {"advertised_listener"}))
            raise InvalidArgumentError(f"unknown server option {name!r}; known: {names}")
        given[name] = _checked(name, value)
    if any(listener.tls for listener in every) and given.get("ssl_certfile") is None:
        raise InvalidArgumentError("an SSL or SASL_SSL listener needs a certificate (ssl_certfile)")
    config = ServerConfig(**given)
    if config.coordinator is not None and config.replica_of:
        raise InvalidArgumentError("replica_of and coordinator exclude each other: etcd names the leader")
    if config.coordinator is not None and not config.cluster:
        raise InvalidArgumentError("a coordinator needs a cluster name")
    _check_replica_security(config)
    return config


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` as one of ``choices`` (in capitals, as given in any case)."""
    if not isinstance(value, str) or value.upper() not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value.upper()


def _check_replica_security(config: ServerConfig) -> None:
    """A follower's settings that go together: credentials exactly with SASL, TLS files only with TLS."""
    protocol = config.replica_security_protocol
    if protocol.startswith("SASL_"):
        if config.replica_username is None or config.replica_password is None:
            raise InvalidArgumentError(f"replica_security_protocol {protocol} needs replica_username and "
                                       f"a password")
    elif config.replica_username is not None or config.replica_password is not None:
        raise InvalidArgumentError(f"replica_username and a password need a SASL replica_security_protocol "
                                   f"(SASL_SSL or SASL_PLAINTEXT), got {protocol}")
    files = {"replica_ssl_cafile": config.replica_ssl_cafile,
             "replica_ssl_certfile": config.replica_ssl_certfile,
             "replica_ssl_keyfile": config.replica_ssl_keyfile}
    given = [name for name, value in files.items() if value is not None]
    if given and protocol not in ("SSL", "SASL_SSL"):
        raise InvalidArgumentError(f"{', '.join(given)}: only with a TLS replica_security_protocol "
                                   f"(SSL or SASL_SSL), got {protocol}")
    if config.replica_ssl_keyfile is not None and config.replica_ssl_certfile is None:
        raise InvalidArgumentError("replica_ssl_keyfile needs replica_ssl_certfile "
                                   "(the certificate it goes with)")


def _listeners(listen: str | None, more: Any) -> tuple[Listener, ...]:
    """``listen`` as a PLAINTEXT listener, then ``more``; at least one, no address twice."""
    if isinstance(more, str) or not isinstance(more, (list, tuple)):
        raise InvalidArgumentError(f"listeners must be a list of 'NAME://HOST:PORT', got {more!r}")
    every = [] if listen is None else [Listener("PLAINTEXT", *parse_address(listen, "listen address"))]
    every += [m if isinstance(m, Listener) else parse_listener(m) for m in more]
    if not every:
        raise InvalidArgumentError("no listener: give a listen address or at least one listener")
    bound = [(m.host, m.port) for m in every if m.port != 0]
    if len(set(bound)) != len(bound):
        raise InvalidArgumentError(f"two listeners on one address: {', '.join(map(str, every))}")
    return tuple(every)


def _checked(name: str, value: Any) -> Any:
    if name in ("ssl_certfile", "ssl_keyfile", "ssl_cafile", "replica_ssl_certfile", "replica_ssl_keyfile",
                "replica_ssl_cafile"):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidArgumentError(f"{name} must be a file's path, got {value!r}")
        return value
    if name == "sasl_mechanisms":
        items = tuple(value.split(",") if isinstance(value, str) else value)
        if not items or any(m not in SASL_MECHANISMS for m in items):
            names = ", ".join(SASL_MECHANISMS)
            raise InvalidArgumentError(f"sasl_mechanisms must name some of {names}, got {value!r}")
        return items
    if name == "replica_security_protocol":
        return _choice(name, value, SECURITY_PROTOCOLS)
    if name == "replica_sasl_mechanism":
        return _choice(name, value, SASL_MECHANISMS)
    if name in ("replica_username", "replica_password"):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidArgumentError(f"{name} must be a non-empty str")  # never the value: a password
        return value
    if name in ("auto_create_topics", "allow_everyone_if_no_acl_found", "console"):
        if type(value) is not bool:
            raise InvalidArgumentError(f"{name} must be a bool, got {value!r}")
        return value
    if name == "super_users":
        return _principals(value)
    if name == "replica_of":
        return _leaders(value)
    if name == "min_insync_replicas" and value is None:
        return None
    if name in _QUOTA_DEFAULTS and value is None:
        return None
    if name == "quota_default_request_percentage":
        if type(value) not in (int, float) or not 0 < value < float("inf"):
            raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}")
        return float(value)
    if name == "http":
        return None if value is None else format_address(*parse_address(value, "http address"))
    if name == "coordinator":
        return _coordinator(value)
    if name == "cluster":
        if not isinstance(value, str) or not value or "/" in value:
            raise InvalidArgumentError(f"cluster must be a non-empty name without '/', got {value!r}")
        return value
    if name == "extra":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise InvalidArgumentError(f"extra must be a dict of options by name, got {value!r}")
        return tuple(sorted(value.items()))
    low, high = _INT_BOUNDS[name]
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be an int in {low}..{high}, got {value!r}")
    return value


def _coordinator(value: Any) -> str | None:
    """``etcd://HOST:PORT`` (or None)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("etcd://"):
        raise InvalidArgumentError(f"coordinator must be 'etcd://HOST:PORT', got {value!r}")
    parse_address(value.removeprefix("etcd://"), "coordinator address")
    return value


def _leaders(value: Any) -> tuple[str, ...]:
    """``replica_of`` as checked ``host:port`` strings: one string (commas separate several) or a
    sequence (empty: not a follower)."""
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, (list, tuple)) and not items and not isinstance(value, str):
        return ()  # not a follower
    if not isinstance(items, (list, tuple)):
        raise InvalidArgumentError(f"replica_of must be 'HOST:PORT[,HOST:PORT...]', got {value!r}")
    out = []
    for item in items:  # bounded by the caller's list
        host, port = parse_address(str(item).strip() if isinstance(item, str) else item, "replica_of address")
        if port == 0:
            raise InvalidArgumentError(f"replica_of needs the leader's port, got {item!r}")
        out.append(format_address(host, port))
    return tuple(out)

def _principals(value: Any) -> tuple[str, ...]:
    """``super_users``: principals ``TYPE:NAME`` (one string, commas separating several, or a sequence)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InvalidArgumentError(f"super_users must be principals 'User:NAME', got {value!r}")
    out = []
    for item in items:  # bounded by the caller's list
        text = str(item).strip()
        kind, sep, name = text.partition(":")
        if not sep or not kind or not name:
            raise InvalidArgumentError(f"a super user is a principal 'User:NAME', got {item!r}")
        out.append(text)
    return tuple(out)
