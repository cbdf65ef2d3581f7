"""Replication (docs/replication.md): the node's role, the leader's view of its followers,
the follower's fetcher, the catalog over the wire, promotion, and the etcd coordinator."""
