"""Kafka's edges other than the consumer loop itself (app/entrypoints/consumer.py): the
one producer (dead letters, record outcomes), the dead-letter topic's writer and reader,
topic set-up and cluster identity, and stepping over batches the consumer cannot decode."""
