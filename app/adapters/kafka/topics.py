"""Creates the service's topics when missing (inbound, dead-letter, outcomes), and
reports which Kafka cluster it found them on and how large a message the dead-letter
topic accepts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerFacts:
    cluster_id: str | None  # None: the broker has none to give
    dlq_max_message_bytes: int | None  # None: the broker names no limit


async def ensure_topics(settings: Settings) -> BrokerFacts:
    """Create the missing topics. One attempt: the caller retries while the broker is
    unreachable."""
    names = [settings.kafka_topic, settings.kafka_dlq_topic, settings.kafka_output_topic]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.resolved_bootstrap_servers())
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(n, settings.kafka_topic_partitions, 1) for n in missing])
                log.info("created topics %s with %d partitions", missing, settings.kafka_topic_partitions)
            except TopicAlreadyExistsError:
                pass  # another replica got there first
        return BrokerFacts(await _cluster_id(admin), await _message_limit(admin, settings.kafka_dlq_topic))
    finally:
        await admin.close()


async def _cluster_id(admin: AIOKafkaAdminClient) -> str | None:
    try:
        return (await admin.describe_cluster()).get("cluster_id")
    except Exception as exc:  # an old broker without DescribeCluster: no identity to compare
        log.info("the broker did not say its cluster id (%r)", exc)
        return None


async def _message_limit(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    """`max.message.bytes` of the topic (it defaults to the broker's `message.max.bytes`).
    Brokers that report no configuration (the embedded one) give None."""
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    except Exception as exc:  # not every Kafka-compatible broker implements DescribeConfigs
        log.info("the broker did not describe topic %s (%r); using the configured message size limit", topic, exc)
        return None
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == "max.message.bytes" and entry[1]:
                    return int(entry[1])
    return None
