"""Kafka topic names. Every message is keyed by the Microsoft tenant id, so one tenant's work stays ordered."""

NOTIFICATIONS = "entra.notifications"
LIFECYCLE = "entra.lifecycle"
COMMANDS = "entra.commands"
DEAD_LETTER = "entra.dead-letter"

ALL = (NOTIFICATIONS, LIFECYCLE, COMMANDS, DEAD_LETTER)
