"""Use case: notice that the Kafka cluster behind the configured address is not the one
this consumer group read from before, and say what that means.

A new cluster (the embedded broker of `make run`, which keeps nothing across restarts, or
a Kafka rebuilt or migrated) has empty or different topics and none of the group's
committed offsets: its offsets are not comparable with the old ones. The service never
stores Kafka offsets in PostgreSQL, so nothing in it can mistake the new offsets for old
ones: the group starts at the earliest offset of each partition, and what was done
before stays done, because every event id already applied is in `processed_events`
(a re-published event is a duplicate, not a second record) and every outbox row is
keyed per session and action."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db import clusters_repo
from app.adapters.db.clusters_repo import ClusterSighting
from app.settings import Settings

log = logging.getLogger(__name__)


async def check_cluster(engine: AsyncEngine, settings: Settings, cluster_id: str | None) -> ClusterSighting | None:
    if not cluster_id:
        return None
    async with engine.begin() as conn:
        sighting = await clusters_repo.record_cluster(
            conn, settings.kafka_group_id, cluster_id, settings.resolved_bootstrap_servers()
        )
    if sighting.changed:
        log.warning(
            "Kafka cluster changed for group %s: now %s, was %s (last seen %s at %s). Its topics and committed "
            "offsets are new: the group reads each partition from the earliest offset; events applied before are "
            "recognised by their event id and not applied again, and records already made are not made again",
            settings.kafka_group_id, sighting.cluster_id, sighting.previous_cluster_id,
            sighting.previous_seen_at.isoformat() if sighting.previous_seen_at else "?",
            sighting.previous_bootstrap_servers,
        )
    elif sighting.first_time:
        log.info("first start of group %s on Kafka cluster %s", settings.kafka_group_id, sighting.cluster_id)
    return sighting
