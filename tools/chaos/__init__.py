"""Fault-injection proof of the service's guarantees (`make chaos`, `make backlog`).

Outside the production package on purpose: it reuses the tests' event factory and fake
CRMs, and runs the service only as replicas in subprocesses."""
