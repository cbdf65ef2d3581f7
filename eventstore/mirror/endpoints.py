"""The two ends of a mirror as the command line names them: a store's directory or a
cluster's ``kafka://HOST:PORT[,HOST:PORT...]``."""

from __future__ import annotations

import os
from typing import Literal

from ..errors import InvalidArgumentError

SCHEME = "kafka://"

#: ("data", a store's path) or ("kafka", bootstrap servers HOST:PORT[,...]).
Endpoint = tuple[Literal["data", "kafka"], str]


def parse_kafka_url(url: str) -> Endpoint:
    """``kafka://HOST:PORT[,HOST:PORT...]`` -> ``("kafka", "HOST:PORT,...")``."""
    if not url.startswith(SCHEME):
        raise InvalidArgumentError(f"expected kafka://HOST:PORT[,HOST:PORT...], got {url!r}")
    return "kafka", check_bootstrap(url[len(SCHEME):], url)


def check_bootstrap(servers: str, shown: str) -> str:
    """``HOST:PORT[,HOST:PORT...]`` checked; ``shown`` is what an error quotes."""
    for server in servers.split(","):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgumentError(f"expected HOST:PORT in {shown!r}, got {server!r}")
    return servers


def name(end: Endpoint) -> str:
    """How a checkpoint names an end: ``data:`` and the store's absolute path, or the URL."""
    return "data:" + os.path.abspath(end[1]) if end[0] == "data" else SCHEME + end[1]
