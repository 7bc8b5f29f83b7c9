"""A consumer batch's first round trip: its dedup rows inserted and the settings in force
read, in one statement (`raw`, on asyncpg's connection).

The session states are locked and read by the next statement, not folded in here: a
statement sees the database as of its start, so a session row that a concurrent batch
(the partition's previous owner, during a rebalance) created while this statement waited
on the dedup rows' unique index would be invisible to it, and that session's state would
be overwritten. The next statement starts after the wait, and sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from app.adapters.db import events_repo, raw, settings_repo
from app.adapters.db.settings_repo import SettingsInForce
from app.domain.events import SessionEvent

_START = raw.positional(
    f"""
    WITH new AS ({events_repo.INSERT_NEW_EVENTS})
    SELECT event_id, CAST(NULL AS int) AS version, CAST(NULL AS text) AS document FROM new
    UNION ALL
    SELECT NULL, current.* FROM ({settings_repo.CURRENT_SQL}) AS current
    """
)


@dataclass(frozen=True, slots=True)
class BatchStart:
    new_event_ids: set[str]  # the batch's event ids never seen before: the ones to apply
    settings: SettingsInForce


async def start_batch(pg: asyncpg.Connection, events: Sequence[SessionEvent]) -> BatchStart:
    new_event_ids: set[str] = set()
    version, document = None, None
    for row in await raw.fetch(pg, _START, events_repo.insert_new_events_parameters(events)):
        if row["event_id"] is not None:
            new_event_ids.add(row["event_id"])
        else:
            version, document = row["version"], row["document"]
    return BatchStart(new_event_ids, settings_repo.in_force_of(version, document))
