"""Behaviour across requests and instances: cache, revocation, throttling,
concurrency, idempotency, streaming, transactions and faults."""
