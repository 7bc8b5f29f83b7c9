"""The worker's statements keep a bounded cost when the tables grow after the driver
first prepared them.

asyncpg (and SQLAlchemy on it) prepares each statement once per connection, and after
five runs PostgreSQL may switch the prepared statement to a generic plan, planned with
the sizes the tables had then and kept until something invalidates it. A service that
starts on an empty database (a new deployment, the bench) plans its statements on empty
tables: a plan that reads every row of an empty table is the cheapest there, and it then
reads every row of a table of millions. `make bench` found two: the record row's context
read every end user of the CRM account, and the claim read and sorted the whole backlog.

What the statements read is measured in rows, from the plan PostgreSQL actually ran
(auto_explain, sent back to the test's own connection), not in time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import text

from app.adapters.db import outbox_repo, raw, records_repo, sessions_repo
from app.domain.session import apply_event
from tests.factories import call_events, to_event

GROWN = 3000  # rows added after the statements were prepared and run on empty tables
WARM_UP_RUNS = 8  # more than the five custom plans after which PostgreSQL may go generic


@asynccontextmanager
async def executed_plans(pg: asyncpg.Connection) -> AsyncIterator[list[dict[str, Any]]]:
    """The plans of the statements run on `pg` inside the block, with their actual rows."""
    plans: list[dict[str, Any]] = []

    def collect(_connection: Any, message: Any) -> None:
        text_ = message.message
        if "plan:" in text_:
            plans.append(json.loads(text_.split("plan:", 1)[1])["Plan"])

    await pg.execute(
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; "
        "SET auto_explain.log_format = 'json'; SET auto_explain.log_level = 'notice'"
    )
    pg.add_log_listener(collect)
    try:
        yield plans
    finally:
        pg.remove_log_listener(collect)
        await pg.execute("SET auto_explain.log_min_duration = -1")


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def rows_read(plan: dict[str, Any], relation: str) -> float:
    """Rows the plan's scans of `relation` read, kept or filtered out, over all their loops."""
    total = 0.0
    for node in nodes(plan):
        if node.get("Relation Name") == relation:
            loops = node.get("Actual Loops", 1)
            kept = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            total += kept * loops + node.get("Rows Removed by Index Recheck", 0)
    return total


async def test_the_record_context_reads_one_end_user_however_many_the_account_has(clean_db):
    state = apply_event(None, to_event(call_events("ctx-1", end_user_id="eu-ctx-1")[0]))
    async with clean_db.begin() as conn:
        await sessions_repo.save_states(conn, [state])
    async with raw.connection(clean_db) as pg:
        for _ in range(WARM_UP_RUNS):  # planned on an empty crm_end_users
            await records_repo.record_context(pg, "sandbox", "ctx-1", with_newest=True)
        await pg.execute(
            "INSERT INTO crm_end_users (crm_account, end_user_id, crm_user_id) "
            "SELECT 'sandbox', 'eu-' || i, 'c-' || i FROM generate_series(1, $1::int) AS i", GROWN
        )
        async with executed_plans(pg) as plans:
            context = await records_repo.record_context(pg, "sandbox", "ctx-1", with_newest=True)
    assert context is not None and context.contact_id is None
    assert len(plans) == 1
    assert rows_read(plans[0], "crm_end_users") <= 2, json.dumps(plans[0], indent=1)


async def test_a_claim_reads_about_its_limit_however_large_the_backlog_grew(clean_db):
    limit = 16
    async with clean_db.connect() as conn:
        for _ in range(WARM_UP_RUNS):  # planned on an empty outbox
            async with conn.begin():
                assert await outbox_repo.claim(conn, limit, lease_seconds=30) == []
        async with conn.begin():
            # A backlog of due rows, one end user each: any of them may go.
            await conn.execute(
                text(
                    "INSERT INTO outbox (idempotency_key, kind, session_id, serial_key, payload, due_at) "
                    "SELECT 'row-' || i, 'record', 's-' || i, 'user-' || i, '{}'::jsonb, "
                    "now() - interval '1 hour' + i * interval '1 ms' FROM generate_series(1, :n) AS i"
                ),
                {"n": GROWN},
            )
        pg = (await conn.get_raw_connection()).driver_connection
        assert pg is not None
        async with executed_plans(pg) as plans:
            async with conn.begin():
                claimed = await outbox_repo.claim(conn, limit, lease_seconds=30)
    assert [row.idempotency_key for row in claimed] == [f"row-{i}" for i in range(1, limit + 1)]
    claim_plan = next(p for p in plans if p["Node Type"] == "ModifyTable")
    # Each row read is checked (its key's oldest open row, a running row of its key): a
    # claim that reads the whole backlog checks every row of it, and sorts them all.
    assert rows_read(claim_plan, "outbox") <= 20 * limit, json.dumps(claim_plan, indent=1)
