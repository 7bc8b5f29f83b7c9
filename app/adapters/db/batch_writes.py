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

import re
from collections.abc import Sequence
from typing import Any

import asyncpg

from app.adapters.db import decisions_repo, events_repo, outbox_repo, raw, sessions_repo
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.events_repo import ChatMessage
from app.adapters.db.outbox_repo import NewOutboxRow
from app.domain.session import SessionState

_BIND = re.compile(r"(?<![:\w]):(\w+)")
_PARTS = {
    "s": sessions_repo.SAVE_STATES,
    "m": events_repo.INSERT_MESSAGES,
    "d": decisions_repo.INSERT_DECISIONS,
    "o": outbox_repo.ENQUEUE,
}


def _renamed(prefix: str, sql: str) -> str:
    return _BIND.sub(lambda match: f":{prefix}_{match[1]}", sql.strip())


_WRITE = raw.positional(
    "WITH "
    + ",\n".join(f"part_{prefix} AS (\n{_renamed(prefix, statement.text)}\n)" for prefix, statement in _PARTS.items())
    # pg_notify is transactional like NOTIFY: the workers hear it when this commits.
    + f"\nSELECT pg_notify('{outbox_repo.NOTIFY_CHANNEL}', '') WHERE CAST(:notify AS boolean)"
)


def _prefixed(prefix: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{name}": value for name, value in parameters.items()}


async def write_batch(
    pg: asyncpg.Connection,
    states: Sequence[SessionState],
    messages: Sequence[ChatMessage],
    decisions: Sequence[DecisionRow],
    outbox_rows: Sequence[NewOutboxRow],
) -> None:
    """Everything a batch changed, in one statement; the workers are woken when it
    added outbox rows."""
    parameters = {
        **_prefixed("s", sessions_repo.save_states_parameters(states)),
        **_prefixed("m", events_repo.insert_messages_parameters(messages)),
        **_prefixed("d", decisions_repo.insert_decisions_parameters(decisions)),
        **_prefixed("o", outbox_repo.enqueue_parameters(outbox_rows)),
        "notify": bool(outbox_rows),
    }
    await raw.execute(pg, _WRITE, parameters)
