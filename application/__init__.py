"""The application layer: composes the domain, the read side and the adapters into the
deployment's use cases (runtime, exports, sealing rounds, rebuilds, imports, the demo);
the HTTP API and the CLI call it."""
