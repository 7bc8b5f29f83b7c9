"""One heartbeat row per running replica: what the operations view shows of each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class ReplicaCrmHealth:
    """A replica's CRM check as its heartbeat stores it (the row's `crm_health` JSON)."""

    crm: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"crm": self.crm, "ok": self.ok, "detail": self.detail}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ReplicaCrmHealth:
        """A row written before its first check holds `{}`: no CRM, not ok, no detail."""
        return cls(crm=str(doc.get("crm") or ""), ok=bool(doc.get("ok")), detail=str(doc.get("detail") or ""))


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    replica_id: str
    seen_at: datetime
    age_seconds: float  # by the database's clock, so replicas' clocks need not agree
    consumer_lag: dict[str, float]  # partition -> messages behind
    dead_letters: dict[str, float]  # reason class -> messages since the replica started
    crm_health: ReplicaCrmHealth


_BEAT = text(
    """
    INSERT INTO replica_heartbeats (replica_id, seen_at, consumer_lag, dead_letters, crm_health)
    VALUES (:replica_id, now(), CAST(:lag AS jsonb), CAST(:dead AS jsonb), CAST(:crm AS jsonb))
    ON CONFLICT (replica_id) DO UPDATE SET seen_at = now(), consumer_lag = EXCLUDED.consumer_lag,
        dead_letters = EXCLUDED.dead_letters, crm_health = EXCLUDED.crm_health
    """
)
_FORGET = text("DELETE FROM replica_heartbeats WHERE seen_at < now() - make_interval(secs => :seconds)")
_ALL = text(
    "SELECT replica_id, seen_at, EXTRACT(EPOCH FROM now() - seen_at), consumer_lag, dead_letters, crm_health "
    "FROM replica_heartbeats ORDER BY replica_id"
)


async def beat(conn: AsyncConnection, replica_id: str, consumer_lag: dict[str, float],
               dead_letters: dict[str, float], crm_health: ReplicaCrmHealth) -> None:
    await conn.execute(_BEAT, {"replica_id": replica_id, "lag": orjson.dumps(consumer_lag).decode(),
                               "dead": orjson.dumps(dead_letters).decode(),
                               "crm": orjson.dumps(crm_health.to_json()).decode()})


async def forget_older_than(conn: AsyncConnection, seconds: float) -> None:
    await conn.execute(_FORGET, {"seconds": seconds})


async def all_replicas(conn: AsyncConnection) -> list[ReplicaRow]:
    result = await conn.execute(_ALL)
    return [ReplicaRow(row[0], row[1], float(row[2]), dict(row[3]), dict(row[4]),
                       ReplicaCrmHealth.from_json(dict(row[5]))) for row in result]
