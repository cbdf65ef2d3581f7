"""A client of a remote store: eventstore's API over the Kafka wire protocol of ``es serve``.

``eventstore.connect("host:port[,host:port...]")`` returns a :class:`RemoteStore`
with the embedded ``Store``'s API: the log half on a Kafka client library
(confluent-kafka, the ``remote`` extra; ``kafka.py``), the event-sourcing half on
the extension APIs over a connection of our own (``connection.py``,
``streams.py``). Modules:

* ``connection``: one blocking connection for the extension APIs, and the error
  codes back to the store's exceptions;
* ``security``: ``connect``'s TLS and SASL settings, checked; librdkafka's settings
  from them, and the SASL exchange of the connections of our own;
* ``streams``: the stream calls, snapshots and subscriptions;
* ``kafka``: topics, appends, reads, producers, consumers and groups on librdkafka
  (imported on first use);
* ``store``: :class:`RemoteStore` and :func:`connect`.
"""

from .connection import StreamsNotServedError, parse_bootstrap
from .store import EMBEDDED_ONLY, EmbeddedOnlyError, RemoteStore, connect
from .streams import RemoteStreams, RemoteSubscription

__all__ = [
    "EMBEDDED_ONLY",
    "EmbeddedOnlyError",
    "RemoteStore",
    "RemoteStreams",
    "RemoteSubscription",
    "StreamsNotServedError",
    "connect",
    "parse_bootstrap",
]
