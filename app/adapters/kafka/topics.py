"""Creates the service's topics when missing (inbound, dead-letter, outcomes), and
reports which Kafka cluster it found them on."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from app.settings import Settings

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, *, attempts: int = 30) -> str | None:
    """Create the missing topics; returns the cluster's id (None if the broker has none)."""
    names = [settings.kafka_topic, settings.kafka_dlq_topic, settings.kafka_output_topic]
    for attempt in range(1, attempts + 1):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.resolved_bootstrap_servers())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                try:
                    await admin.create_topics(
                        [NewTopic(n, settings.kafka_topic_partitions, 1) for n in missing]
                    )
                    log.info("created topics %s with %d partitions", missing, settings.kafka_topic_partitions)
                except TopicAlreadyExistsError:
                    pass  # another replica got there first
            return await _cluster_id(admin)
        except KafkaConnectionError:
            if attempt == attempts:
                raise
            log.info("waiting for the broker at %s", settings.resolved_bootstrap_servers())
            await asyncio.sleep(1)
        finally:
            await admin.close()


async def _cluster_id(admin: AIOKafkaAdminClient) -> str | None:
    try:
        return (await admin.describe_cluster()).get("cluster_id")
    except Exception as exc:  # an old broker without DescribeCluster: no identity to compare
        log.info("the broker did not say its cluster id (%r)", exc)
        return None
