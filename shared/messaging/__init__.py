"""Integration events: envelope, transactional outbox + relay, idempotent consumer, DLQ."""
