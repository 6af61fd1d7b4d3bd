"""The outside world: settings, PostgreSQL, signing keys, the signing mapper and recorder,
verification and logging."""
