"""The claim's cost on a backlog: checking whether a row may go (an older open row of its
serial key, another row of the key being carried out) must cost the same for a key with
a long run of waiting rows as for a key with one. Measured in rows the plan touches
(auto_explain's EXPLAIN ANALYZE of the statement inside `outbox_claim`), not in time, so load does not move it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text

from app.adapters.db import outbox_repo
from tests.helpers import driver_connection, executed_plans

KEYS = 4  # each a run of consecutive rows, as one busy end user makes
ROWS_PER_KEY = 1500
BLOCKED_KEYS = 3  # their oldest row is being carried out: every other row of theirs waits


async def _seed_backlog(conn) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO outbox (idempotency_key, kind, session_id, serial_key, payload, due_at)
            SELECT 'row-' || i, 'record', 's-' || i, 'crm-user-' || (i / :run),
                   '{}'::jsonb, now() - interval '1 hour' + i * interval '1 ms'
            FROM generate_series(0, :total - 1) AS i
            """
        ),
        {"run": ROWS_PER_KEY, "total": KEYS * ROWS_PER_KEY},
    )
    # The oldest row of each blocked key is in progress under a live lease.
    await conn.execute(
        text(
            "UPDATE outbox SET status = 'in_progress', attempts = 1, claim_id = gen_random_uuid(), "
            "lease_until = now() + interval '1 hour' WHERE id = ANY(:heads)"
        ),
        {"heads": [key * ROWS_PER_KEY + 1 for key in range(BLOCKED_KEYS)]},
    )
    await conn.execute(text("ANALYZE outbox"))


def _subplan_nodes(node: dict[str, Any], inside: bool = False) -> Iterator[dict[str, Any]]:
    inside = inside or node.get("Parent Relationship") == "SubPlan"
    if inside:
        yield node
    for child in node.get("Plans", []):
        yield from _subplan_nodes(child, inside)


async def test_the_per_key_check_touches_a_bounded_number_of_rows_however_long_the_key_run(clean_db):
    async with clean_db.begin() as conn:
        await _seed_backlog(conn)
    async with clean_db.connect() as conn:
        transaction = await conn.begin()
        pg = await driver_connection(conn)
        async with executed_plans(pg) as plans:  # the claim statement inside outbox_claim
            await outbox_repo.claim(pg, 10, lease_seconds=30)
        claimed = (await conn.execute(text("SELECT serial_key FROM outbox WHERE claimed_at IS NOT NULL"))).all()
        await transaction.rollback()
    plan = next(p for p in plans if p["Node Type"] == "ModifyTable")

    # Only the one key nobody is carrying out gives a row, its oldest.
    assert [row.serial_key for row in claimed] == [f"crm-user-{BLOCKED_KEYS}"]
    checks = list(_subplan_nodes(plan))
    # The claim walked the waiting rows and checked each (the check is what is measured).
    assert max(node["Actual Loops"] for node in checks) >= KEYS * ROWS_PER_KEY - BLOCKED_KEYS - 10
    for node in checks:
        # A check that reads the table rather than an index reads the whole run (or more).
        assert node["Node Type"] != "Seq Scan", f"a check scans the table: {node}"
        touched = node["Actual Rows"] + node.get("Rows Removed by Filter", 0) / node["Actual Loops"]
        assert touched <= 2, f"{node['Node Type']} touches {touched:.0f} rows per check: {node}"


async def test_counting_the_backlog_reads_the_open_and_parked_rows_not_every_row_ever_done(clean_db):
    """The operations gauges count the backlog every few seconds on every replica; done
    rows are kept (the audit trail), so a count that reads them grows without end."""
    from app.adapters.db.outbox_repo import backlog_counts
    from tests.helpers import rows_read

    async with clean_db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (idempotency_key, kind, session_id, payload, status) "
                "SELECT 'row-' || i, 'record', 's-' || i, '{}'::jsonb, "
                "CASE WHEN i <= 5 THEN 'pending' WHEN i <= 8 THEN 'parked' ELSE 'done' END "
                "FROM generate_series(1, 3000) AS i"
            )
        )
        await conn.execute(text("ANALYZE outbox"))
    async with clean_db.connect() as conn:
        pg = (await conn.get_raw_connection()).driver_connection
        assert pg is not None
        async with executed_plans(pg) as plans:
            counts = await backlog_counts(conn)
    assert counts == {"pending": 5, "in_progress": 0, "parked": 3}
    read = sum(rows_read(plan, "outbox") for plan in plans)
    assert read <= 20, json.dumps(plans, indent=1)
