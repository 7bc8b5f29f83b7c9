"""Adapters at the edge: PostgreSQL, Kafka, and one module per CRM."""
