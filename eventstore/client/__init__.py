"""Kafka-style clients over an embedded store: consumer, producer, groups, dead letters."""
