"""The trial domain: aggregates, events, clinical rules and the application service."""
