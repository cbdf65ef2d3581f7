"""``es mirror``: copy topics into a Kafka-protocol cluster, or from one into a store
(docs/mirror.md). Modules:

* ``checkpoint``: the durable progress, one JSON file replaced atomically;
* ``copier``: the loop — topics matched and made, partitions resumed, records sent in order;
* ``endpoints``: the ends as the command line names them;
* ``disk``: a store as source (beside its owner, through ``open_reader``) or destination;
* ``kafka``: a cluster as source (a consumer, no group) or destination (the idempotent
  producer), on confluent-kafka, the ``remote`` extra, imported only when an end needs it.
"""

from __future__ import annotations

import threading

from ..errors import InvalidArgumentError
from .checkpoint import Checkpoint
from .copier import Destination, Mirror, Source, topic_filter
from .disk import StoreDestination, StoreSource
from .endpoints import Endpoint, check_bootstrap, parse_kafka_url
from .endpoints import name as end_name

__all__ = ["DEFAULT_CHECKPOINT", "DEFAULT_TIMEOUT_S", "Endpoint", "check_bootstrap", "mirror",
           "parse_kafka_url"]

DEFAULT_CHECKPOINT = "es-mirror.json"
DEFAULT_TIMEOUT_S = 10.0


def mirror(source: Endpoint, destination: Endpoint, *, topics: str | None = None, follow: bool = False,
           include_internal: bool = False, checkpoint: str = DEFAULT_CHECKPOINT,
           timeout_s: float = DEFAULT_TIMEOUT_S, stop: threading.Event | None = None) -> int:
    """Copy the topics matching ``topics`` from ``source`` to ``destination``; with ``follow``
    until ``stop`` is set. Returns the records copied by this run."""
    if source[0] == "data" and destination[0] == "data":
        raise InvalidArgumentError("one end of a mirror must be a Kafka cluster (kafka://HOST:PORT)")
    if type(timeout_s) not in (int, float) or not timeout_s > 0:
        raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout_s!r}")
    reader = _source(source, timeout_s)
    try:
        copier = Mirror(reader, Checkpoint(checkpoint, reader.name, end_name(destination)),
                        topic_filter(topics, include_internal), follow, stop or threading.Event())
        writer = _destination(destination, timeout_s)
        try:
            return copier.run(writer)
        finally:
            writer.close()
    finally:
        reader.close()


def _source(end: Endpoint, timeout_s: float) -> Source:
    if end[0] == "data":
        return StoreSource(end[1])
    from .kafka import KafkaSource

    return KafkaSource(end[1], timeout_s)


def _destination(end: Endpoint, timeout_s: float) -> Destination:
    if end[0] == "data":
        return StoreDestination(end[1])
    from .kafka import KafkaDestination

    return KafkaDestination(end[1], timeout_s)
