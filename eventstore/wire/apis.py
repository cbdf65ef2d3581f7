"""The APIs and versions the server serves (docs/protocol.md, section 4), and header versions.

``SERVED`` is what ApiVersions advertises, besides the extension APIs: an API is
listed only when it is implemented, because clients act on what is listed.
``FLEXIBLE_FROM`` is the first flexible version of each (compact encodings, tagged
fields, request header v2, response header v1), as Kafka's message schemas say; a
test holds both to kio's generated classes.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "API_VERSIONS_KEY",
    "DCB_KEYS",
    "EXTENSION_APIS",
    "EXTENSION_KEYS",
    "FLEXIBLE_FROM",
    "REPLICATION_KEYS",
    "KAFKA_API_NAMES",
    "SERVED",
    "advertised",
    "is_flexible",
    "is_served",
    "request_header_version",
    "response_header_version",
]

API_VERSIONS_KEY: Final = 18

# api key: (name, min version, max version, first flexible version or None)
_KAFKA: Final[dict[int, tuple[str, int, int, int | None]]] = {
    0: ("Produce", 3, 11, 9),
    1: ("Fetch", 4, 16, 12),
    2: ("ListOffsets", 1, 9, 6),
    3: ("Metadata", 0, 12, 9),
    8: ("OffsetCommit", 2, 9, 8),
    9: ("OffsetFetch", 1, 9, 6),
    10: ("FindCoordinator", 0, 6, 3),
    11: ("JoinGroup", 0, 9, 6),
    12: ("Heartbeat", 0, 4, 4),
    13: ("LeaveGroup", 0, 5, 4),
    14: ("SyncGroup", 0, 5, 4),
    15: ("DescribeGroups", 0, 5, 5),
    16: ("ListGroups", 0, 5, 3),
    17: ("SaslHandshake", 0, 1, None),
    18: ("ApiVersions", 0, 4, 3),
    19: ("CreateTopics", 2, 7, 5),
    20: ("DeleteTopics", 1, 6, 4),
    21: ("DeleteRecords", 0, 2, 2),
    22: ("InitProducerId", 0, 5, 2),
    23: ("OffsetForLeaderEpoch", 2, 4, 4),
    29: ("DescribeAcls", 1, 3, 2),
    30: ("CreateAcls", 1, 3, 2),
    31: ("DeleteAcls", 1, 3, 2),
    32: ("DescribeConfigs", 1, 4, 4),
    33: ("AlterConfigs", 0, 2, 2),
    35: ("DescribeLogDirs", 1, 4, 2),
    36: ("SaslAuthenticate", 0, 2, 2),
    37: ("CreatePartitions", 0, 3, 2),
    42: ("DeleteGroups", 0, 2, 2),
    44: ("IncrementalAlterConfigs", 0, 1, 1),
    47: ("OffsetDelete", 0, 0, None),
    48: ("DescribeClientQuotas", 0, 1, 1),
    49: ("AlterClientQuotas", 0, 1, 1),
    50: ("DescribeUserScramCredentials", 0, 0, 0),
    51: ("AlterUserScramCredentials", 0, 0, 0),
    60: ("DescribeCluster", 0, 1, 0),
    61: ("DescribeProducers", 0, 0, 0),
}

# The extension APIs for event sourcing (docs/protocol.md, section 7): keys no Kafka
# version uses, version 0 only, flexible from version 0.
EXTENSION_APIS: Final[dict[int, str]] = {
    20000: "AppendToStream",
    20001: "ReadStream",
    20002: "ReadAll",
    20003: "GetStreamMetadata",
    20004: "SetStreamMetadata",
    20005: "DeleteStream",
    20006: "TruncateStream",
    20007: "PollSubscription",
    20008: "StreamVersions",
    20009: "ListStreams",
    20010: "LoadSnapshot",
    20011: "SaveSnapshot",
    20012: "AppendEvents",
    20013: "ReadEvents",
    20014: "PollEvents",
    20015: "ReplicaCatalog",
    20016: "Promote",
}
EXTENSION_KEYS: Final = range(20000, 20012)
DCB_KEYS: Final = range(20012, 20015)  # dynamic consistency boundaries (handlers/dcb.py)
REPLICATION_KEYS: Final = range(20015, 20017)  # replication control (docs/replication.md, 5 and 6)

KAFKA_API_NAMES: Final[dict[int, str]] = {key: spec[0] for key, spec in _KAFKA.items()}
SERVED: Final[dict[int, tuple[int, int]]] = {key: (spec[1], spec[2]) for key, spec in _KAFKA.items()}
FLEXIBLE_FROM: Final[dict[int, int | None]] = {
    **{key: spec[3] for key, spec in _KAFKA.items()},
    **dict.fromkeys(EXTENSION_APIS, 0),
}


def advertised(extensions: bool = True) -> list[tuple[int, int, int]]:
    """``(api_key, min_version, max_version)`` of every API served, by key."""
    listed = [(key, low, high) for key, (low, high) in SERVED.items()]
    if extensions:
        listed += [(key, 0, 0) for key in EXTENSION_APIS]
    return sorted(listed)


def is_served(api_key: int, api_version: int) -> bool:
    if api_key in EXTENSION_APIS:
        return api_version == 0
    served = SERVED.get(api_key)
    return served is not None and served[0] <= api_version <= served[1]


def is_flexible(api_key: int, api_version: int) -> bool:
    """Whether the version uses compact encodings and tagged fields (unknown APIs: no)."""
    first = FLEXIBLE_FROM.get(api_key)
    return first is not None and api_version >= first


def request_header_version(api_key: int, api_version: int) -> int:
    return 2 if is_flexible(api_key, api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    # ApiVersions answers with header v0 at every version, so that a client that
    # sent a version the server does not know can still read the answer (KIP-511).
    if api_key == API_VERSIONS_KEY:
        return 0
    return 1 if is_flexible(api_key, api_version) else 0
