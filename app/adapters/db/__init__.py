"""PostgreSQL: the engine, the schema, and one repository module per concern.
Every query of the service lives in this package; callers own the transactions."""
