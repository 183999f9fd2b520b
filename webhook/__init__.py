"""The Graph notification webhook: answers the validation handshake, verifies clientState, publishes to Kafka.

Stateless and horizontally scalable. It never talks to Graph or PostgreSQL; its only outside system is the
Kafka broker, reached through `webhook.sink`. `webhook.app.run_webhook` is the process entry point.
"""
