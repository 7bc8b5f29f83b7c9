"""Kafka: the producer (dead letters, record outcomes), the consumer, and topic set-up."""
