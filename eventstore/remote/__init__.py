"""A client of a remote store: eventstore's API over the Kafka wire protocol of ``es serve``."""
