"""The worker's statements keep a bounded cost when the tables grow after the driver
first prepared them.

asyncpg (and SQLAlchemy on it) prepares each statement once per connection, and after
five runs PostgreSQL may switch the prepared statement to a generic plan, planned with
the sizes the tables had then and kept until something invalidates it. A service that
starts on an empty database (a new deployment, the bench) plans its statements on empty
tables: a plan that reads every row of an empty table is the cheapest there, and it then
reads every row of a table of millions. `make bench` found three: the record row's
context read every end user of the CRM account, the claim read and sorted the whole
backlog, and the sandbox read every contact for each new end user. The first two are
shaped so that no plan, generic or not, reads more than it needs, and the service's
connections keep PostgreSQL's default plan cache; the sandbox, a stand-in for a remote
CRM, has a pool of its own that plans every statement for its own parameters
(adapters/crm/sandbox.py).

What the statements read is measured in rows, from the plan PostgreSQL actually ran
(auto_explain, sent back to the test's own connection), not in time."""

from __future__ import annotations

import json

import asyncpg
from sqlalchemy import text

from app.adapters.crm.sandbox import SandboxAdapter
from app.adapters.db import outbox_repo, outbox_writes, raw, records_repo, sessions_repo
from app.adapters.db.outbox_repo import Claim
from app.domain.session import apply_event
from app.settings import Settings
from tests.factories import call_events, to_event
from tests.helpers import executed_plans, nodes, rows_read

GROWN = 3000  # rows added after the statements were prepared and run on empty tables
WARM_UP_RUNS = 8  # more than the five custom plans after which PostgreSQL may go generic


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
    [read] = [plan for plan in plans if plan["Node Type"] != "Function Scan"]  # the function's query
    assert rows_read(read, "crm_end_users") <= 2, json.dumps(read, indent=1)


async def test_a_claim_reads_about_its_limit_however_large_the_backlog_grew(clean_db):
    limit = 16
    async with clean_db.connect() as conn:
        # The worker's path: the claim in a transaction of its own on asyncpg's connection.
        pg = (await conn.get_raw_connection()).driver_connection
        assert pg is not None
        for _ in range(WARM_UP_RUNS):  # planned on an empty outbox
            assert await outbox_repo.claim(pg, limit, lease_seconds=30) == []
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
        async with executed_plans(pg) as plans:
            claimed = await outbox_repo.claim(pg, limit, lease_seconds=30)
    assert [row.idempotency_key for row in claimed] == [f"row-{i}" for i in range(1, limit + 1)]
    claim_plan = next(p for p in plans if p["Node Type"] == "ModifyTable")
    # Each row read is checked (its key's oldest open row, a running row of its key): a
    # claim that reads the whole backlog checks every row of it, and sorts them all.
    assert rows_read(claim_plan, "outbox") <= 20 * limit, json.dumps(claim_plan, indent=1)


async def test_the_sandbox_finds_an_end_user_however_many_contacts_it_has(clean_db):
    """Found in `make bench`: a plan cached while sandbox_contacts was small walked the
    contacts in id order (`ORDER BY id LIMIT 1`) and filtered on the email: every new
    chat end user read every contact."""
    from app.adapters.db import sandbox_repo

    async def create(pg: asyncpg.Connection, n: int, phone: str | None, email: str | None) -> None:
        await sandbox_repo.insert_record_for_end_user(
            pg, session_id=f"sb-{n}", title="Session", description="", tags=[], medium="chat" if email else "call",
            external_id=f"eu-sb-{n}", name=None, phone=phone, email=email,
        )

    sandbox = SandboxAdapter.from_settings(Settings(_env_file=None), engine=clean_db)
    try:
        await _grow_the_sandbox_between_plans(sandbox.engine, create)
    finally:
        await sandbox.aclose()


async def _grow_the_sandbox_between_plans(engine, create) -> None:
    async with raw.connection(engine) as pg:
        # The statistics of a young sandbox: a few hundred contacts, calls with a phone and
        # chats with an email.
        await pg.execute(
            "INSERT INTO sandbox_contacts (external_id, phone, email) "
            "SELECT 'eu-young-' || i, CASE WHEN i % 2 = 0 THEN '+5522' || lpad(i::text, 9, '0') END, "
            "CASE WHEN i % 2 = 1 THEN 'young-' || i || '@example.com' END FROM generate_series(1, 300) AS i"
        )
        await pg.execute("ANALYZE sandbox_contacts")
        for n in range(2 * WARM_UP_RUNS):  # planned on an (almost) empty sandbox_contacts: calls and chats
            await create(pg, n, None if n % 2 else f"+55119000000{n:02d}", f"eu-{n}@example.com" if n % 2 else None)
        await pg.execute(
            "INSERT INTO sandbox_contacts (external_id, phone, email) "
            "SELECT 'eu-grown-' || i, '+5521' || lpad(i::text, 9, '0'), 'grown-' || i || '@example.com' "
            "FROM generate_series(1, $1::int) AS i", GROWN
        )
        for n, (phone, email) in enumerate([("+5531999999999", None), (None, "new@example.com")]):
            async with executed_plans(pg) as plans:  # new end users: looked for, then created
                await create(pg, 100 + n, phone, email)
            plan = plans[-1]
            assert rows_read(plan, "sandbox_contacts") <= 10, json.dumps(plan, indent=1)


def _blocks(plan: dict) -> int:
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


async def test_the_bookkeeping_finds_its_rows_by_id_however_many_rows_left_the_running_index(clean_db):
    """Found by `make bench --sessions 10000`: marking a row done read every entry of the
    partial index of running rows (ix_outbox_serial_running), 33,000 of them, 3,200 pages,
    6.5 ms a batch. Rows leave that index's predicate when they finish, and their entries
    stay until the table is vacuumed; the plan, made when statistics said few rows run,
    read the index whole (a bitmap scan) instead of the finished rows by their ids."""

    def bookkeeping(row) -> outbox_writes.Bookkeeping:
        return outbox_writes.Bookkeeping([Claim(row.id, row.claim_id)], {}, [], [], [], [], [])

    async with clean_db.begin() as conn:
        await conn.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = false)"))
    try:
        async with raw.connection(clean_db) as pg:
            # The plan PostgreSQL may settle on after five runs (it did, in the bench).
            await pg.execute("SET plan_cache_mode = force_generic_plan")

            async def claim_one(key: str):
                await pg.execute("INSERT INTO outbox (idempotency_key, kind, session_id, serial_key, payload) "
                                 "VALUES ($1, 'record', $1, $1, '{}')", key)
                [row] = await outbox_repo.claim(pg, 1, lease_seconds=30)
                return row

            for n in range(WARM_UP_RUNS):
                warm_up = bookkeeping(await claim_one(f"w{n}"))
                await outbox_writes.write_bookkeeping(pg, "sandbox", "sandbox", 30, warm_up)
            # Rows that ran and finished: their entries in the running index are dead until a vacuum.
            await pg.execute(
                "INSERT INTO outbox (idempotency_key, kind, session_id, serial_key, payload, status) "
                "SELECT 'done-' || i, 'record', 's-' || i, 'user-' || i, '{}', 'in_progress' "
                "FROM generate_series(1, $1::int) AS i", GROWN)
            await pg.execute("UPDATE outbox SET status = 'done' WHERE idempotency_key LIKE 'done-%'")
            await pg.execute("ANALYZE outbox")
            row = await claim_one("last")
            async with executed_plans(pg) as plans:
                await outbox_writes.write_bookkeeping(pg, "sandbox", "sandbox", 30, bookkeeping(row))
            await pg.execute("RESET plan_cache_mode")
    finally:
        async with clean_db.begin() as conn:
            await conn.execute(text("ALTER TABLE outbox RESET (autovacuum_enabled)"))
    marked = next(n for p in plans for n in nodes(p)
                  if n.get("Node Type") == "ModifyTable" and n.get("Operation") == "Update")
    # By the primary key, whatever the partial indexes hold (here the plan took ix_outbox_due).
    scans = {n.get("Index Name") or n["Node Type"] for n in nodes(marked)
             if n.get("Relation Name") == "outbox" and n is not marked}
    scans |= {n["Index Name"] for n in nodes(marked) if n.get("Node Type") == "Bitmap Index Scan"}
    assert scans == {"outbox_pkey"}, json.dumps(marked, indent=1)
    assert _blocks(marked) <= 60, json.dumps(marked, indent=1)
