"""A consumer batch's writes in one statement: the session states, chat messages,
decisions and outbox rows (and the workers' wake-up) as data-modifying CTEs.

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

import asyncpg

from app.adapters.db import decisions_repo, events_repo, outbox_repo, raw, sessions_repo
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.events_repo import ChatMessage
from app.adapters.db.outbox_repo import NewOutboxRow
from app.domain.session import SessionState

_WRITE = raw.with_parts(
    {
        "s": sessions_repo.SAVE_STATES.text,
        "m": events_repo.INSERT_MESSAGES.text,
        "d": decisions_repo.INSERT_DECISIONS.text,
        "o": outbox_repo.ENQUEUE.text,
    },
    # pg_notify is transactional like NOTIFY: the workers hear it when this commits.
    f"SELECT pg_notify('{outbox_repo.NOTIFY_CHANNEL}', :wake_token) WHERE CAST(:notify AS boolean)",
)


async def write_batch(
    pg: asyncpg.Connection,
    states: Sequence[SessionState],
    messages: Sequence[ChatMessage],
    decisions: Sequence[DecisionRow],
    outbox_rows: Sequence[NewOutboxRow],
    *,
    wake_token: str = "",
) -> None:
    """Everything a batch changed, in one statement; the workers are woken when it
    added outbox rows (`wake_token`: the notification's payload, which tells a worker
    woken directly by this process's consumer not to claim again for it)."""
    parameters = {
        **raw.prefixed("s", sessions_repo.save_states_parameters(states)),
        **raw.prefixed("m", events_repo.insert_messages_parameters(messages)),
        **raw.prefixed("d", decisions_repo.insert_decisions_parameters(decisions)),
        **raw.prefixed("o", outbox_repo.enqueue_parameters(outbox_rows)),
        "notify": bool(outbox_rows),
        "wake_token": wake_token,
    }
    await raw.execute(pg, _WRITE, parameters)
