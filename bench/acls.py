"""N1A: N1's produce (bench/network.py) with 1,000 ACLs defined vs none (docs/operations.md, 2).

The same ``es serve`` and librdkafka producer as N1, on two fresh stores: one without ACLs
(no check is made at all) and one holding ``ACLS`` ACLs, so that every request is decided
by the authorizer. The client connects as ``User:ANONYMOUS``, which those ACLs allow to
write the topic and create it (not as a super user, which would skip the checks); the
others name other principals, other topics and prefixes that match the topic (``b``,
``be``, ...), so the ACLs of the topic's resource are more than the client's own. The
runs alternate, ``REPEATS`` of each, and the medians' ratio is the figure: the issue's
target is at most 5 % lost (>= 0.95).
"""

from __future__ import annotations

import statistics
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from bench import network
from bench.base import Measured

if TYPE_CHECKING:
    from bench.runner import Context, WorkloadResult

ACLS = 1_000
REPEATS = 3
CLIENT = "User:ANONYMOUS"


def acl_set(topic: str) -> list[tuple[int, str, int, str, str, int, int]]:
    """``ACLS`` bindings as ``acl_rows.binding`` arguments: the client's, then others'."""
    from eventstore.catalog.acls import CLUSTER_NAME, Operation, PatternType, Permission, ResourceType

    allow, literal, prefixed = Permission.ALLOW, PatternType.LITERAL, PatternType.PREFIXED
    own = [(ResourceType.TOPIC, topic, literal, CLIENT, "*", Operation.WRITE, allow),
           (ResourceType.CLUSTER, CLUSTER_NAME, literal, CLIENT, "*", Operation.CREATE, allow),
           (ResourceType.CLUSTER, CLUSTER_NAME, literal, CLIENT, "*", Operation.IDEMPOTENT_WRITE, allow)]
    others = []
    for i in range(ACLS - len(own)):  # bounded: ACLS
        principal = f"User:user-{i}"
        if i < len(topic):
            prefix = topic[:i + 1]
            others.append((ResourceType.TOPIC, prefix, prefixed, principal, "*", Operation.READ, allow))
        elif i % 3 == 0:
            others.append((ResourceType.GROUP, f"group-{i}", literal, principal, "*", Operation.READ, allow))
        else:
            others.append((ResourceType.TOPIC, f"topic-{i}", literal, principal, "*", Operation.WRITE, allow))
    return [(int(a), n, int(p), who, h, int(o), int(m)) for a, n, p, who, h, o, m in own + others]


class WithAcls(network.EventStoreServer):
    """``es serve`` on a store given ``ACLS`` ACLs just before it starts."""

    def command(self, data: Path, port: int) -> list[str]:
        import eventstore
        from eventstore.catalog import acls as acl_rows

        with eventstore.open(data / "store") as store:
            acl_rows.add(store.log.catalog, [acl_rows.binding(*args) for args in acl_set(network.TOPIC)])
        return super().command(data, port)


def n1_acls(ctx: Context) -> WorkloadResult:
    records = ctx.scaled(network.N_RECORDS)
    plain, guarded = network.EventStoreServer("fsync"), WithAcls("fsync")
    runs: dict[str, list[float]] = {"none": [], f"{ACLS} ACLs": []}
    rows = []
    for _ in range(REPEATS):  # alternated, so a drift of the machine's speed falls on both
        for variant, broker in (("none", plain), (f"{ACLS} ACLs", guarded)):
            row = ctx.measure("N1A", broker, records, partial(_produce, broker, ctx.values, records), variant)
            rows.append(row)
            if row.get("records_per_s"):
                runs[variant].append(row["records_per_s"])
    medians = {v: statistics.median(r) if r else None for v, r in runs.items()}
    without, with_acls = medians["none"], medians[f"{ACLS} ACLs"]
    ratio = with_acls / without if with_acls and without else None
    return rows, {"ACLs/none": ratio}, {f"median records/s ({v})": m for v, m in medians.items()}


def _produce(broker: network.EventStoreServer, values: list[bytes], records: int,
             directory: Path) -> Measured:
    return network.n1_produce(broker, directory, values, records)
