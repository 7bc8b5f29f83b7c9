"""A consumer batch's writes in one statement: its dedup rows, the session states, chat
messages, decisions and outbox rows (and the workers' wake-up) as data-modifying CTEs.

The statement also checks what the batch read without locks (batch_reads.read_batch):
every new event id is inserted (no other consumer applied it meanwhile) and every state
is saved over the version it was read at. If not, it fails whole (BatchConflict) and
writes nothing. The locked way inserts the dedup rows first and passes none here.

Each part is its repository's own statement and parameters, renamed apart; together
they cost one round trip instead of five, run on asyncpg's connection (adapters/db/raw.py).
Every statement in a WITH runs exactly once and to completion whether or not the outer
query reads it (PostgreSQL's rule), and an error in any part fails the whole statement,
as the separate statements failed the transaction. Measured in docs/bench.md: each
statement costs the service CPU of its own, which at small batches is most of the
consumer's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from app.adapters.db import decisions_repo, events_repo, outbox_repo, raw, sessions_repo
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.events_repo import ChatMessage
from app.adapters.db.outbox_repo import NewOutboxRow
from app.adapters.db.sessions_repo import VersionedStates
from app.domain.events import SessionEvent
from app.domain.session import SessionState

_WRITE = raw.with_parts(
    {
        "e": events_repo.INSERT_NEW_EVENTS,
        "s": sessions_repo.SAVE_STATES.text,
        "m": events_repo.INSERT_MESSAGES.text,
        "d": decisions_repo.INSERT_DECISIONS.text,
        "o": outbox_repo.ENQUEUE.text,
    },
    # The checks (migrations 0013's and 0015's functions raise), then the wake-up:
    # pg_notify is transactional like NOTIFY, the workers hear it when this commits.
    f"""SELECT CASE WHEN counted.new_events <> CAST(:new_events AS int) OR counted.saved <> CAST(:states AS int)
                    THEN consumer_batch_conflict(counted.new_events, :new_events, counted.saved, :states) END,
           CASE WHEN CAST(:check_settings AS boolean)
                     AND counted.in_force IS DISTINCT FROM CAST(:settings_version AS int)
                THEN consumer_settings_moved(:settings_version, counted.in_force) END,
           CASE WHEN CAST(:notify AS boolean) THEN pg_notify('{outbox_repo.NOTIFY_CHANNEL}', :wake_token) END
    FROM (SELECT (SELECT count(*)::int FROM part_e) AS new_events,
                 (SELECT count(*)::int FROM part_s) AS saved,
                 (SELECT max(version) FROM settings_versions) AS in_force) AS counted""",
)

STATEMENT_SQL = _WRITE.sql  # for tools.bench.pg_write, which replays captured writes


@dataclass(frozen=True, slots=True)
class SettingsCheck:
    """The settings version a batch was folded with (None: the defaults, nothing saved),
    for its write to check it is still the one in force."""

    version: int | None


class BatchConflict(Exception):
    """What the batch read no longer holds at its write: one of its events was applied
    before (a replay) or meanwhile, or one of its sessions was saved meanwhile (another
    consumer, in a rebalance). Nothing was written."""


async def write_batch(
    pg: asyncpg.Connection,
    new_events: Sequence[SessionEvent],
    states: Sequence[SessionState],
    versions: VersionedStates,
    messages: Sequence[ChatMessage],
    decisions: Sequence[DecisionRow],
    outbox_rows: Sequence[NewOutboxRow],
    *,
    wake_token: str = "",
    folded_with: SettingsCheck | None = None,
) -> None:
    """Everything a batch changed, in one statement: `new_events`' dedup rows, `states`
    each over its version in `versions`, ...; the workers are woken when it added outbox
    rows (`wake_token`: the notification's payload, which tells a worker woken directly
    by this process's consumer not to claim again for it). Raises BatchConflict when
    what the batch read changed meanwhile, or when `folded_with` is given and another
    settings version is in force."""
    parameters = {
        **raw.prefixed("e", events_repo.insert_new_events_parameters(new_events)),
        **raw.prefixed("s", sessions_repo.save_states_parameters(states, versions)),
        **raw.prefixed("m", events_repo.insert_messages_parameters(messages)),
        **raw.prefixed("d", decisions_repo.insert_decisions_parameters(decisions)),
        **raw.prefixed("o", outbox_repo.enqueue_parameters(outbox_rows)),
        "new_events": len(new_events),
        "states": len(states),
        "check_settings": folded_with is not None,
        "settings_version": folded_with.version if folded_with is not None else None,
        "notify": bool(outbox_rows),
        "wake_token": wake_token,
    }
    try:
        await raw.execute(pg, _WRITE, parameters)
    except asyncpg.SerializationError as exc:
        raise BatchConflict(str(exc)) from exc
