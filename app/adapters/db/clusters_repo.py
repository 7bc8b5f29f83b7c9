"""Which Kafka cluster each consumer group last read from (table kafka_clusters)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db.schema import kafka_clusters


@dataclass(frozen=True, slots=True)
class ClusterSighting:
    cluster_id: str
    previous_cluster_id: str | None  # set when the group last read from another cluster
    previous_bootstrap_servers: str | None
    previous_seen_at: datetime | None
    first_time: bool

    @property
    def changed(self) -> bool:
        return self.previous_cluster_id is not None


async def record_cluster(conn: AsyncConnection, group_id: str, cluster_id: str, bootstrap: str) -> ClusterSighting:
    """Remember `cluster_id` for `group_id`; say whether it differs from the last one."""
    known = (await conn.execute(
        select(kafka_clusters).where(kafka_clusters.c.group_id == group_id).with_for_update()
    )).mappings().first()
    if known is None:
        await conn.execute(
            insert(kafka_clusters)
            .values(group_id=group_id, cluster_id=cluster_id, bootstrap_servers=bootstrap)
            .on_conflict_do_nothing()
        )
        return ClusterSighting(cluster_id, None, None, None, first_time=True)
    if known["cluster_id"] == cluster_id:
        await conn.execute(
            update(kafka_clusters).where(kafka_clusters.c.group_id == group_id)
            .values(last_seen_at=datetime.now().astimezone(), bootstrap_servers=bootstrap)
        )
        return ClusterSighting(cluster_id, None, None, None, first_time=False)
    now = datetime.now().astimezone()
    await conn.execute(
        update(kafka_clusters).where(kafka_clusters.c.group_id == group_id).values(
            cluster_id=cluster_id, bootstrap_servers=bootstrap, previous_cluster_id=known["cluster_id"],
            changed_at=now, first_seen_at=now, last_seen_at=now,
        )
    )
    return ClusterSighting(cluster_id, known["cluster_id"], known["bootstrap_servers"], known["last_seen_at"],
                           first_time=False)
