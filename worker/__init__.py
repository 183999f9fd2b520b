"""The sync worker: domain core, adapters (Graph, PostgreSQL, Kafka) and the processes built on them."""
