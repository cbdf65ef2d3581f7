"""The handlers, one module per group of APIs; importing this package registers them all.

Each module registers its coroutines with ``@handles(api_key)``
(``eventstore.server.dispatch``). Add a module's name to the import below.
"""

from . import (  # noqa: F401 (imported to register their handlers)
    acls,
    api_versions,
    client_quotas,
    configs,
    dcb,
    fetch,
    groups,
    leader_epochs,
    metadata,
    offsets,
    produce,
    producers,
    replication,
    sasl,
    streams,
    topics,
    users,
)
