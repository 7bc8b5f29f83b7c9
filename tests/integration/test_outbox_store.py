"""The outbox's storage on a real database: the schema the migrations build, claim
order, and the batched bookkeeping of finished rows."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from app.adapters.crm.base import CallLog, CrmCall, RecordRef
from app.adapters.db import outbox_repo, raw, records_repo, sessions_repo
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.outbox_repo import Claim, NewOutboxRow
from app.adapters.db.schema import metadata
from app.domain.kinds import DecisionKind, RecordAction
from app.domain.session import apply_event
from app.service.outbox import Completion, CompletionWriter, Finished, LeaseLost, MadeRecord
from tests.factories import call_events, to_event
from tests.helpers import driver_connection


async def test_migrations_build_exactly_the_declared_schema(engine):
    def differences(sync_conn):
        return compare_metadata(MigrationContext.configure(sync_conn), metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


def _row(key: str, kind: str, serial_key: str | None, session_id: str | None = None) -> NewOutboxRow:
    return NewOutboxRow(key, kind, session_id or f"s-{key}", serial_key, {"n": key})


async def test_records_are_claimed_before_older_notes_and_each_serial_key_in_order(clean_db):
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(
            conn,
            [
                _row("note-a", "ended_note", "k-a"),
                _row("note-b", "ended_note", "k-b"),
                _row("record-c", "record", "k-c"),
                # Behind note-b in its serial key: its priority does not let it jump the queue.
                _row("record-b2", "record", "k-b"),
                _row("publish-d", "publish", None),
            ],
        )
    async with clean_db.begin() as conn:
        first = await outbox_repo.claim(await driver_connection(conn), 2, lease_seconds=30)
    assert {r.idempotency_key for r in first} == {"record-c", "publish-d"}
    async with clean_db.begin() as conn:
        rest = await outbox_repo.claim(await driver_connection(conn), 10, lease_seconds=30)
    assert {r.idempotency_key for r in rest} == {"note-a", "note-b"}
    async with clean_db.begin() as conn:
        await outbox_repo.mark_done(conn, [r.id for r in rest if r.idempotency_key == "note-b"])
    async with clean_db.begin() as conn:
        assert await _claimed_keys(conn) == ["record-b2"]


async def test_a_row_committed_after_a_newer_one_of_its_serial_key_waits_while_that_one_runs(clean_db):
    # Two consumers (two replicas) enqueue rows of one serial key; the older id commits
    # last. The newer row is claimed first (the older one is not visible yet); once the
    # older one is committed it must wait for the newer one to finish: the two are one
    # end user's records in one leaf queue, and the second must see the first's record.
    older = await clean_db.connect()
    await older.begin()
    await outbox_repo.enqueue(older, [_row("record-a", "record", "k-race")])
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [_row("record-b", "record", "k-race")])
    async with clean_db.begin() as conn:
        assert await _claimed_keys(conn) == ["record-b"]
    await older.commit()
    await older.close()
    async with clean_db.begin() as conn:
        assert await outbox_repo.claim(await driver_connection(conn), 10, lease_seconds=30) == []
        await outbox_repo.mark_done(conn, [(await conn.execute(
            text("SELECT id FROM outbox WHERE idempotency_key = 'record-b'"))).scalar_one()])
    async with clean_db.begin() as conn:
        assert await _claimed_keys(conn) == ["record-a"]


async def test_a_claim_waits_for_a_concurrent_claim_to_commit_before_it_looks(clean_db):
    # The narrow case of the test above: claim X takes the newer row while the older one
    # is not committed yet; the older one commits; claim Y starts before X has committed.
    # Y's snapshot would show the newer row as still pending and not locked by anyone it
    # can see, so without serialising claims Y took the older row too: the same end
    # user's two records ran at once and both were created.
    older = await clean_db.connect()
    await older.begin()
    await outbox_repo.enqueue(older, [_row("record-a", "record", "k-race")])
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [_row("record-b", "record", "k-race")])
    claim_x = await clean_db.connect()
    await claim_x.begin()
    assert await _claimed_keys(claim_x) == ["record-b"]
    await older.commit()
    await older.close()

    async def claim_y():
        async with clean_db.begin() as conn:
            return await outbox_repo.claim(await driver_connection(conn), 10, lease_seconds=30)

    second = asyncio.create_task(claim_y())
    done, _ = await asyncio.wait({second}, timeout=0.5)
    assert not done, "a claim ran while another claim's rows were not committed"
    await claim_x.commit()
    await claim_x.close()
    assert await asyncio.wait_for(second, timeout=10) == []


async def test_a_claim_outside_a_transaction_commits_in_one_of_its_own(clean_db):
    # The worker's path: no transaction around the call; the claim begins, locks, claims
    # and commits on its own, so another connection sees the row taken.
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [_row("own-1", "record", "k-own")])
    async with raw.connection(clean_db) as pg:
        [row] = await outbox_repo.claim(pg, 10, lease_seconds=30)
        assert not pg.is_in_transaction()
    async with clean_db.connect() as conn:
        status, claim_id = (await conn.execute(text("SELECT status, claim_id::text FROM outbox"))).one()
    assert (status, claim_id) == ("in_progress", row.claim_id)


async def test_a_claim_that_fails_leaves_no_transaction_and_no_claim_lock_behind(clean_db):
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [_row("after-failure", "record", "k-fail")])
    async with raw.connection(clean_db) as pg:
        with pytest.raises(Exception, match="LIMIT must not be negative"):
            await outbox_repo.claim(pg, -1, lease_seconds=30)
        assert not pg.is_in_transaction()
        # The claim lock went with the rolled-back transaction: a claim elsewhere proceeds.
        async with raw.connection(clean_db) as other:
            claimed = await asyncio.wait_for(outbox_repo.claim(other, 10, lease_seconds=30), timeout=5)
        assert [r.idempotency_key for r in claimed] == ["after-failure"]


async def test_a_raw_connection_left_in_a_transaction_is_not_handed_to_the_next_user(clean_db):
    # SQLAlchemy's pool rolls back on return only what SQLAlchemy began; a transaction
    # begun on asyncpg's connection must not reach the next checkout still open.
    with pytest.raises(RuntimeError):
        async with raw.connection(clean_db) as pg:
            await pg.execute("BEGIN; SELECT pg_advisory_xact_lock(42)")
            raise RuntimeError("the block failed inside its own transaction")
    async with raw.connection(clean_db) as pg:
        assert not pg.is_in_transaction()
        assert await asyncio.wait_for(pg.fetchval("SELECT pg_try_advisory_lock(42)"), timeout=5)
        await pg.execute("SELECT pg_advisory_unlock(42)")


async def test_a_claim_notes_when_it_was_made(clean_db):
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [_row("r-1", "record", "k-1")])
    async with clean_db.begin() as conn:
        assert (await conn.execute(text("SELECT claimed_at FROM outbox"))).scalar_one() is None
        before = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        await outbox_repo.claim(await driver_connection(conn), 1, lease_seconds=30)
        claimed_at, created_at = (await conn.execute(text("SELECT claimed_at, created_at FROM outbox"))).one()
    assert claimed_at >= before and claimed_at > created_at


async def _claimed_keys(conn) -> list[str]:
    claimed = await outbox_repo.claim(await driver_connection(conn), 10, lease_seconds=30)
    return [r.idempotency_key for r in claimed]


async def _claimed_record_rows(engine, session_ids: list[str]):
    async with engine.begin() as conn:
        states = [apply_event(None, to_event(call_events(sid, end_user_id=f"eu-{sid}")[0])) for sid in session_ids]
        await sessions_repo.save_states(conn, states)
        await outbox_repo.enqueue(conn, [_row(sid, "record", None, sid) for sid in session_ids])
        claimed = await outbox_repo.claim(await driver_connection(conn), len(session_ids), lease_seconds=30)
    return {s.session_id: s for s in states}, {r.idempotency_key: r for r in claimed}


def _finished(row, state, reason: str) -> Finished:
    calls = CallLog([CrmCall("create_record", "SQL", "sandbox", 200, 1.5, None)])
    completion = Completion(
        decisions=[DecisionRow(state.session_id, DecisionKind.RECORD_CREATED, reason, None, None,
                               f"r-{state.session_id}")],
        session_record=MadeRecord(f"r-{state.session_id}", f"/r/{state.session_id}", RecordAction.CREATED),
        new_record=RecordRef(f"r-{state.session_id}", f"/r/{state.session_id}"),
        contact=f"c-{state.session_id}",
        state=state,
    )
    return Finished(row, completion, calls)


async def test_rows_finishing_together_are_written_together_and_a_bad_one_fails_alone(clean_db):
    states, rows = await _claimed_record_rows(clean_db, ["w1", "w2", "w3"])
    writer = CompletionWriter(clean_db, "sandbox")
    results = await asyncio.gather(
        writer.write(_finished(rows["w1"], states["w1"], "created")),
        # PostgreSQL refuses a NUL character in text: this row's bookkeeping cannot be written.
        writer.write(_finished(rows["w2"], states["w2"], "bad \x00 reason")),
        writer.write(_finished(rows["w3"], states["w3"], "created")),
        return_exceptions=True,
    )
    assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception)
    assert isinstance(results[1], Exception)

    async with clean_db.connect() as conn:
        status = dict((await conn.execute(text("SELECT idempotency_key, status FROM outbox"))).all())
        attempts = (await conn.execute(text("SELECT outbox_id, operation FROM crm_attempts ORDER BY id"))).all()
        session = await sessions_repo.get_session(conn, "w1")
    async with raw.connection(clean_db) as pg:
        known = await records_repo.record_context(pg, "sandbox", "w3", with_newest=True)
    assert status == {"w1": "done", "w2": "in_progress", "w3": "done"}
    assert sorted(a.outbox_id for a in attempts) == sorted([rows["w1"].id, rows["w3"].id])
    assert known is not None and known.contact_id == "c-w3"
    assert known.newest is not None and known.newest.record_id == "r-w3" and known.newest.session_id == "w3"
    assert session is not None and (session.record_id, session.record_action) == ("r-w1", "created")


async def test_rows_finishing_together_cost_one_statement_and_a_row_whose_claim_ran_out_writes_nothing(
    clean_db, monkeypatch
):
    states, rows = await _claimed_record_rows(clean_db, ["l1", "l2", "l3"])
    async with clean_db.begin() as conn:  # another worker claimed l2 after this claim's lease ran out
        await conn.execute(text("UPDATE outbox SET claim_id = gen_random_uuid() WHERE idempotency_key = 'l2'"))
    statements: list[str] = []
    opened = raw.connection

    @contextlib.asynccontextmanager
    async def logged(engine):
        def log(query) -> None:
            statements.append(query.query)

        async with opened(engine) as pg:
            pg.add_query_logger(log)
            try:
                yield pg
                await asyncio.sleep(0.05)  # asyncpg calls its query loggers soon after, not at once
            finally:
                pg.remove_query_logger(log)  # the connection goes back to the pool

    monkeypatch.setattr(raw, "connection", logged)
    writer = CompletionWriter(clean_db, "sandbox")
    finished = [_finished(rows[k], states[k], "created") for k in ("l1", "l2", "l3")]
    results = await asyncio.gather(*(writer.write(f) for f in finished), return_exceptions=True)
    assert isinstance(results[1], LeaseLost) and not isinstance(results[0], Exception)
    # The three together (refused whole), then each alone: one statement each, no BEGIN, no COMMIT.
    assert [q.split()[0] for q in statements] == ["WITH"] * 4, statements
    async with clean_db.connect() as conn:
        status = dict((await conn.execute(text("SELECT idempotency_key, status FROM outbox"))).all())
        attempts = (await conn.execute(text("SELECT outbox_id FROM crm_attempts"))).scalars().all()
        decided = (await conn.execute(text("SELECT session_id FROM decisions"))).scalars().all()
        recorded = (await conn.execute(text("SELECT session_id FROM sessions WHERE record_id IS NOT NULL"))).all()
    assert status == {"l1": "done", "l2": "in_progress", "l3": "done"}
    assert sorted(attempts) == sorted([rows["l1"].id, rows["l3"].id])
    assert sorted(decided) == ["l1", "l3"] and sorted(r[0] for r in recorded) == ["l1", "l3"]


@pytest.mark.parametrize("with_newest", [True, False])
async def test_record_context_reads_the_newest_record_only_when_asked(clean_db, with_newest):
    states, rows = await _claimed_record_rows(clean_db, ["n1", "n2"])
    async with clean_db.begin() as conn:
        # Same end user and leaf queue for both records: the newer one is the one to append to.
        end_user, queue = states["n1"].end_user_id, states["n1"].queue_id
        await records_repo.remember_records(
            conn, "sandbox", [records_repo.NewRecord("old", None, end_user, queue, "n0"),
                              records_repo.NewRecord("new", "/r/new", end_user, queue, "n1")]
        )
    async with raw.connection(clean_db) as pg:
        context = await records_repo.record_context(pg, "sandbox", "n1", with_newest=with_newest)
        missing = await records_repo.record_context(pg, "sandbox", "nobody", with_newest=with_newest)
    assert missing is None
    assert context is not None and context.state == states["n1"] and context.contact_id is None
    if with_newest:
        assert context.newest == records_repo.KnownRecord("new", "/r/new", "n1")
    else:
        assert context.newest is None


async def test_sandbox_end_of_session_note_is_written_once_per_key(clean_db):
    from app.adapters.crm.base import EndUserInfo, NewRecord, NoteWrite
    from app.adapters.crm.sandbox import SandboxAdapter
    from app.adapters.db import sandbox_repo

    crm = SandboxAdapter(clean_db)
    contact = await crm.find_or_create_end_user(EndUserInfo("eu-n", "Ana", "+5511900000000", None))
    ref = await crm.create_record(NewRecord("note-s", "Call", "desc", contact, [], "call", "q", "record:note-s"))
    note = NoteWrite(ref.record_id, "Session note-s ended.\n\n[ref ended_note:sandbox:note-s]",
                     "[ref ended_note:sandbox:note-s]", "ended_note:sandbox:note-s")
    await crm.write_note(note)
    # A crash between the note and the outbox commit: the retry writes the same key again.
    await crm.write_note(note)
    async with clean_db.connect() as conn:
        notes = await sandbox_repo.notes_for(conn, int(ref.record_id))
    assert [n.body for n in notes] == [note.body]


async def test_a_row_claimed_again_after_its_lease_knows_the_outcome_is_unknown_and_the_old_claim_is_fenced(clean_db):
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [_row("fenced", "ended_note", None)])
        [first] = await outbox_repo.claim(await driver_connection(conn), 1, lease_seconds=0.05)
    assert not first.outcome_unknown  # a first attempt: nothing can exist yet
    await asyncio.sleep(0.2)  # the claimer froze past its lease
    async with clean_db.begin() as conn:
        [second] = await outbox_repo.claim(await driver_connection(conn), 1, lease_seconds=30)
    assert second.id == first.id and second.outcome_unknown and second.claim_id != first.claim_id
    async with clean_db.begin() as conn:
        # The old claimer's heartbeat and bookkeeping no longer hold the row; the new one's do.
        assert await outbox_repo.extend_leases(conn, [Claim(first.id, first.claim_id)], 30) == set()
        assert await outbox_repo.mark_done_claimed(conn, [Claim(first.id, first.claim_id)]) == set()
        assert await outbox_repo.mark_done_claimed(conn, [Claim(second.id, second.claim_id)]) == {second.id}


async def test_note_context_reads_the_record_row_until_there_is_a_record_then_the_transcript(clean_db):
    from app.adapters.db import events_repo
    from app.adapters.db.sessions_repo import SessionRecord
    from app.domain.events import parse_event
    from app.service.consume import apply_batch
    from tests.factories import chat_events

    documents = chat_events("nc-chat", end_user_messages=3) + call_events("nc-call")
    events = [parse_event(orjson.dumps(d)) for d in documents]
    async with raw.transaction(clean_db) as pg:
        await apply_batch(pg, events, "sandbox")
    async with raw.connection(clean_db) as pg:
        waiting = await records_repo.note_context(pg, "nc-chat")
        assert await records_repo.note_context(pg, "nobody") is None
    assert waiting is not None and waiting.record_id is None and waiting.transcript == []
    assert waiting.record_row == records_repo.RecordRowStatus("pending", None)

    async with clean_db.begin() as conn:
        await sessions_repo.set_records(conn, "sandbox", [
            SessionRecord(sid, f"r-{sid}", f"/r/{sid}", RecordAction.CREATED) for sid in ("nc-chat", "nc-call")])
        expected = await events_repo.transcript(conn, "nc-chat")
    async with raw.connection(clean_db) as pg:
        chat = await records_repo.note_context(pg, "nc-chat")
        call = await records_repo.note_context(pg, "nc-call")
    assert chat is not None and (chat.record_id, chat.record_url, chat.record_row) == ("r-nc-chat", "/r/nc-chat", None)
    assert len(expected) == 4 and chat.transcript == expected
    assert call is not None and call.record_id == "r-nc-call" and call.transcript == []
    assert chat.state.session_id == "nc-chat" and chat.state.is_chat


async def test_the_claim_lock_is_held_to_the_end_of_the_callers_transaction_and_no_longer(clean_db):
    """outbox_claim takes the claim lock (CLAIM_LOCK_KEY) before its claim statement: held
    to the end of a caller's transaction, and only for the call without one."""
    lock = f"SELECT pg_try_advisory_xact_lock({outbox_repo.CLAIM_LOCK_KEY})"
    async with raw.connection(clean_db) as pg, raw.connection(clean_db) as other:
        await outbox_repo.claim(pg, 10, lease_seconds=30)  # a transaction of its own
        assert await other.fetchval(lock) is True
        async with pg.transaction():
            await outbox_repo.claim(pg, 10, lease_seconds=30)
            assert await other.fetchval(lock) is False  # another claim waits for this one
        assert await other.fetchval(lock) is True


async def test_marking_published_rows_done_commits_without_waiting_for_the_wal_flush(clean_db):
    # A published outcome row whose mark-done a crash of PostgreSQL loses is still running
    # under its claim: its reclaim after the lease sets outcome_unknown, and the topic is
    # looked up before publishing again (OutboxRunner._published_before). So that commit
    # need not wait for its flush (docs/bench.md); every other mark-done still waits.
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [_row("publish-a", "publish", None), _row("publish-b", "publish", None)])
    ids = {key: (await _id_of(clean_db, key)) for key in ("publish-a", "publish-b")}
    async with clean_db.begin() as conn:
        await outbox_repo.mark_done(conn, [ids["publish-a"]], wait_for_flush=False)
        relaxed = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
    async with clean_db.begin() as conn:
        after = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
        await outbox_repo.mark_done(conn, [ids["publish-b"]])
        waiting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
        done = (await conn.execute(text("SELECT count(*) FROM outbox WHERE status = 'done'"))).scalar()
    assert (relaxed, after, waiting) == ("off", "on", "on")  # for that transaction only
    assert done == 2


async def _id_of(engine, key: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT id FROM outbox WHERE idempotency_key = :key"), {"key": key})
        return found.scalar_one()
