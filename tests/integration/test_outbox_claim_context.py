"""The claim brings each row's context (migration 0012): what the worker reads before
the CRM call, in the claim's round trip instead of one of its own, as of after the claim."""

from __future__ import annotations

import asyncio

import orjson

from app.adapters.db import outbox_claims, outbox_repo, raw, records_repo, sessions_repo
from app.adapters.db.outbox_repo import Claim, NewOutboxRow
from app.adapters.db.records_repo import NoteContext, RecordContext
from app.adapters.db.sessions_repo import SessionRecord
from app.domain.events import parse_event
from app.domain.kinds import OutboxKind, RecordAction
from app.domain.session import apply_event
from app.service.consume import apply_batch
from tests.factories import call_events, chat_events, to_event


async def _apply(engine, documents: list[dict]) -> None:
    async with raw.transaction(engine) as pg:
        await apply_batch(pg, [parse_event(orjson.dumps(d)) for d in documents], "sandbox")


async def _claim(engine, limit: int = 10):
    async with raw.connection(engine) as pg:
        return await outbox_claims.claim_with_context(pg, limit, 30, crm="sandbox", account="sandbox")


async def test_a_claimed_row_carries_the_context_the_worker_would_read(clean_db):
    await _apply(clean_db, chat_events("cc-chat", end_user_messages=3, end_user_id="eu-1")
                 + call_events("cc-call", end_user_id="eu-2"))
    async with clean_db.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO crm_end_users (crm_account, end_user_id, crm_user_id) VALUES ('sandbox', 'eu-1', 'c-1')")
    records = await _claim(clean_db)  # the notes wait behind their sessions' records
    assert sorted((r.kind, r.session_id) for r in records) == [("record", "cc-call"), ("record", "cc-chat")]
    async with raw.connection(clean_db) as pg:
        for row in records:
            assert isinstance(row.context, RecordContext)
            assert row.context == await records_repo.record_context(pg, "sandbox", row.session_id, with_newest=True)
    assert {r.context.contact_id for r in records if isinstance(r.context, RecordContext)} == {"c-1", None}

    async with clean_db.begin() as conn:
        await sessions_repo.set_records(conn, "sandbox", [
            SessionRecord(r.session_id, f"r-{r.session_id}", f"/r/{r.session_id}", RecordAction.CREATED)
            for r in records])
        await outbox_repo.mark_done_claimed(conn, [Claim(r.id, r.claim_id) for r in records])
    notes = await _claim(clean_db)
    assert sorted((r.kind, r.session_id) for r in notes) == [("ended_note", "cc-call"), ("ended_note", "cc-chat")]
    async with raw.connection(clean_db) as pg:
        for row in notes:
            assert isinstance(row.context, NoteContext)
            assert row.context == await records_repo.note_context(pg, row.session_id)
    [chat] = [r.context for r in notes if r.session_id == "cc-chat"]
    assert isinstance(chat, NoteContext) and len(chat.transcript) == 4 and chat.record_id == "r-cc-chat"


async def test_a_rows_context_is_read_after_the_claim_took_the_row(clean_db):
    # The claiming statement starts, then waits for the claim lock; meanwhile the row's
    # session is saved. The claim takes the row: its context must show that session, not
    # the database as of the statement's start (when the session did not exist).
    state = apply_event(None, to_event(call_events("cc-late")[0]))
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [NewOutboxRow("record:sandbox:cc-late", OutboxKind.RECORD, "cc-late",
                                                      "k-late", {"crm": "sandbox"})])
    holder = await clean_db.connect()
    await holder.begin()
    await holder.exec_driver_sql(f"SELECT pg_advisory_xact_lock({outbox_repo.CLAIM_LOCK_KEY})")
    claiming = asyncio.create_task(_claim(clean_db))
    await asyncio.sleep(0.3)
    assert not claiming.done()
    async with clean_db.begin() as conn:
        await sessions_repo.save_states(conn, [state])
    await holder.commit()
    await holder.close()
    [row] = await asyncio.wait_for(claiming, timeout=10)
    assert row.kind == OutboxKind.RECORD and isinstance(row.context, RecordContext)
    assert row.context.state.session_id == "cc-late"


async def test_the_claim_is_not_costed_into_jit_compilation(clean_db):
    # A set-returning function is guessed at 1,000 rows: the claim joined to its two
    # context functions was costed above jit_above_cost and spent 6 ms compiling itself
    # at every call (make bench: 8.8 ms a claim). Migration 0012 gives the functions
    # their real row counts.
    async with raw.connection(clean_db) as pg:
        explained = await pg.fetchval(
            "EXPLAIN (FORMAT JSON) " + outbox_claims.STATEMENT_SQL, 16, 30.0, "sandbox", "sandbox")
        [plan] = orjson.loads(explained) if isinstance(explained, str) else explained
        jit_above = float(await pg.fetchval("SELECT current_setting('jit_above_cost')"))
    assert plan["Plan"]["Total Cost"] < jit_above / 10, plan["Plan"]
