"""Every replica's view of itself, shared through PostgreSQL: each writes a heartbeat row
every few seconds with its partitions' consumer lag, its dead-letter counts and its CRM
health; the operations view reads all rows, adds them up and marks the replicas that
stopped writing (stale: their partitions have moved or are about to)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.adapters.db import replicas_repo
from app.service.readiness import CrmHealth

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
FORGET_AFTER_SECONDS = 86400.0  # a replica gone for a day leaves the view


def replica_id() -> str:
    """The pod's name under Kubernetes (HOSTNAME), else the host's; with the process id."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}:{os.getpid()}"


def metric_samples(metric_name: str, label: str) -> dict[str, float]:
    """This process's current values of one metric, by one of its labels."""
    values: dict[str, float] = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric_name and label in sample.labels:
                values[sample.labels[label]] = sample.value
    return values


@dataclass(frozen=True, slots=True)
class ReplicaView:
    replica_id: str
    seen_at: datetime
    stale: bool
    consumer_lag: dict[str, float]
    dead_letters: dict[str, float]
    crm: str
    crm_ok: bool
    crm_detail: str


@dataclass(slots=True)
class ReplicasOverview:
    replicas: list[ReplicaView] = field(default_factory=list)
    # Over the live replicas: each partition is read by one replica at a time.
    consumer_lag: dict[str, float] = field(default_factory=dict)
    # Over every replica shown, stale ones included: what each counted since it started.
    dead_letters: dict[str, float] = field(default_factory=dict)


def _partition_order(partition: str) -> tuple[int, str]:
    return (int(partition) if partition.isdigit() else -1, partition)


def _view(row: replicas_repo.ReplicaRow) -> ReplicaView:
    crm = row.crm_health
    return ReplicaView(
        row.replica_id, row.seen_at, row.age_seconds > STALE_AFTER_SECONDS,
        dict(sorted(row.consumer_lag.items(), key=lambda item: _partition_order(item[0]))), row.dead_letters,
        crm.crm, crm.ok, crm.detail,
    )


def overview(rows: list[replicas_repo.ReplicaRow]) -> ReplicasOverview:
    result = ReplicasOverview([_view(row) for row in rows])
    lag: dict[str, float] = {}
    for replica in result.replicas:
        if not replica.stale:
            for partition, behind in replica.consumer_lag.items():
                lag[partition] = lag.get(partition, 0.0) + behind
        for reason, count in replica.dead_letters.items():
            result.dead_letters[reason] = result.dead_letters.get(reason, 0.0) + count
    result.consumer_lag = dict(sorted(lag.items(), key=lambda item: _partition_order(item[0])))
    return result


async def beat_once(engine: AsyncEngine, replica: str, crm_name: str, health: CrmHealth) -> None:
    """Write this replica's heartbeat from its own metrics and CRM check."""
    crm = replicas_repo.ReplicaCrmHealth(crm=crm_name, ok=health.ok, detail=health.detail)
    async with engine.begin() as conn:
        await replicas_repo.beat(conn, replica, metric_samples("crm_records_consumer_lag_messages", "partition"),
                                 metric_samples("crm_records_events_dead_lettered_total", "reason"), crm)
        await replicas_repo.forget_older_than(conn, FORGET_AFTER_SECONDS)


async def beat_periodically(engine: AsyncEngine, crm_name: str, health: CrmHealth, stop: asyncio.Event,
                            every: float = HEARTBEAT_SECONDS) -> None:
    replica = replica_id()
    while not stop.is_set():
        try:
            await beat_once(engine, replica, crm_name, health)
        except Exception as exc:  # the database may be away for a moment: the next beat tries again
            log.warning("replica heartbeat not written: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
