"""Contracts between components: Kafka message types, topic names, clientState and SQL migrations.

Nothing here does I/O. Every component imports its wire formats from here, never defines its own.
"""
