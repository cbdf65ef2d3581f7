"""The log engine: batch format, segments, indexes, partitions, recovery,
retention and checks. It knows nothing of LMDB, consumer groups or events."""
