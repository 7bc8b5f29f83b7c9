"""A consumer batch's reads, in one statement (`raw`, on asyncpg's connection).

`read_batch`, the usual way, outside a transaction: the settings in force and the batch's
sessions' states with their versions, nothing locked. The batch's one write
(batch_writes) checks that no state changed meanwhile and that every event is new: an
event seen before (a replay, after a crash or a rebalance) fails the write, and the batch
is applied the locked way, which sorts the duplicates out. The ids are not looked up
here: a replay is rare, and a lookup by a list of ids was planned, on a young database,
as a scan of every processed event (3 ms a batch at 20,000 events).

`start_batch`, the locked way (when that check failed), in a transaction: its dedup rows
inserted and the settings in force read. The session states are locked and read by the
next statement, not folded in here: a
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
from app.adapters.db.sessions_repo import VersionedStates
from app.adapters.db.settings_repo import SettingsInForce
from app.domain.events import SessionEvent
from app.domain.session import SessionState

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


# One snapshot for both: the settings row (session_id NULL) and the states.
_READ = raw.positional(
    f"""
    SELECT NULL AS session_id, current.version::bigint AS version, current.document, NULL::jsonb AS state
    FROM ({settings_repo.CURRENT_SQL}) AS current
    UNION ALL
    SELECT session_id, state_version, NULL, state FROM sessions WHERE session_id = ANY(CAST(:session_ids AS text[]))
    """
)


@dataclass(frozen=True, slots=True)
class BatchSnapshot:
    settings: SettingsInForce
    states: VersionedStates


async def read_batch(pg: asyncpg.Connection, events: Sequence[SessionEvent]) -> BatchSnapshot:
    states: dict[str, SessionState] = {}
    versions: dict[str, int] = {}
    version, document = None, None
    for session_id, row_version, row_document, state in await raw.fetch(
        pg, _READ, {"session_ids": sorted({e.session.id for e in events})}
    ):
        if session_id is None:
            version, document = row_version, row_document
        else:
            states[session_id] = SessionState.from_document(state)
            versions[session_id] = row_version
    return BatchSnapshot(settings_repo.in_force_of(version, document), VersionedStates(states, versions))
