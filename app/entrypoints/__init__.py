"""Thin entrypoints that wire adapters and use cases: consumer loop, outbox worker,
HTTP API, CLI, and the process that runs them together."""
