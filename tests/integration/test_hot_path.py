"""The consumer's batch and the worker's record row on a real database, as the
performance work left them: what they write, and that it still decides the same."""

from __future__ import annotations

from sqlalchemy import text

from app.adapters.crm.sandbox import SandboxAdapter
from app.adapters.db import outbox_repo, raw, settings_repo
from app.adapters.db.outbox_repo import NewOutboxRow
from app.domain.outcome import OutcomeEvent
from app.domain.record_settings import RecordSettings
from app.service.consume import apply_batch
from app.service.outbox import OutboxRunner
from app.settings import Settings
from tests.factories import call_events, to_event
from tests.helpers import driver_connection


async def _save(conn, **document) -> int:
    saved = await settings_repo.insert_version(conn, RecordSettings(**document), {}, "test")
    return saved.version


def _runner(engine) -> tuple[OutboxRunner, list]:
    published: list = []

    async def publish(session_id: str, event: OutcomeEvent) -> None:
        published.append(event.payload())

    return OutboxRunner(engine, SandboxAdapter(engine), publish, Settings(_env_file=None)), published


async def _claim_all(engine):
    async with engine.begin() as conn:
        return await outbox_repo.claim(await driver_connection(conn), 100, lease_seconds=30)


async def _title(engine, session_id: str) -> str:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT title FROM sandbox_records WHERE external_id = :s"),
                                   {"s": session_id})).scalar_one()


async def test_a_record_row_names_its_settings_version_and_is_made_with_that_version(clean_db):
    async with clean_db.begin() as conn:
        first = await _save(conn, record_title_template="First {CALL_ID}")
    async with raw.transaction(clean_db) as pg:
        await apply_batch(pg, [to_event(e) for e in call_events("call-v1", end_user_id="eu-v1")[:2]], "sandbox")
    async with clean_db.connect() as conn:
        payload = (await conn.execute(text("SELECT payload FROM outbox WHERE kind = 'record'"))).scalar_one()
    # A reference, not a copy of the settings document.
    assert set(payload) == {"crm", "settings_version", "settings_digest"}
    assert payload["settings_version"] == first and len(payload["settings_digest"]) == 16
    async with clean_db.begin() as conn:
        await _save(conn, record_title_template="Second {CALL_ID}")  # saved after the record became due
    runner, published = _runner(clean_db)
    [row] = await _claim_all(clean_db)
    assert await runner.run(row) == "done"
    assert await _title(clean_db, "call-v1") == "First call-v1"
    assert [e["event_type"] for e in published] == ["record.created"]


async def test_a_record_due_before_any_save_uses_the_defaults(clean_db):
    async with raw.transaction(clean_db) as pg:
        await apply_batch(pg, [to_event(e) for e in call_events("call-v0", end_user_id="eu-v0")[:2]], "sandbox")
    async with clean_db.begin() as conn:
        await _save(conn, record_title_template="Later {CALL_ID}")
    runner, _ = _runner(clean_db)
    [row] = await _claim_all(clean_db)
    assert row.payload["settings_version"] is None
    assert await runner.run(row) == "done"
    assert await _title(clean_db, "call-v0") == "IVR call call-v0"


async def test_a_row_written_with_a_copy_of_the_settings_still_runs(clean_db):
    # Rows enqueued by an earlier version of the service carry the document itself.
    async with raw.transaction(clean_db) as pg:
        await apply_batch(pg, [to_event(e) for e in call_events("call-old", end_user_id="eu-old")[:1]], "sandbox")
    async with clean_db.begin() as conn:
        await conn.execute(text("UPDATE sessions SET record = 'due'"))
        copy = RecordSettings(record_title_template="Copied {CALL_ID}").model_dump()
        await outbox_repo.enqueue(conn, [NewOutboxRow(
            "record:sandbox:call-old", "record", "call-old", "k", {"crm": "sandbox", "settings_version": 7,
                                                                  "settings": copy})])
    runner, _ = _runner(clean_db)
    [row] = await _claim_all(clean_db)
    assert await runner.run(row) == "done"
    assert await _title(clean_db, "call-old") == "Copied call-old"


async def test_a_known_version_is_not_read_again_and_a_renumbered_one_is_refused(clean_db):
    from sqlalchemy import event

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    async with clean_db.begin() as conn:
        version = await _save(conn, add_platform_tag=True)
        in_force = await settings_repo.in_force(conn)
    assert in_force.version == version and in_force.settings.add_platform_tag
    event.listen(clean_db.sync_engine, "before_cursor_execute", count)
    try:
        async with clean_db.connect() as conn:
            known = await settings_repo.of_version(conn, version, in_force.digest)
            assert statements == [] and known is in_force.settings
            try:
                await settings_repo.of_version(conn, version, "0" * 16)
            except LookupError as exc:
                assert "not the document" in str(exc)
            else:
                raise AssertionError("a digest that does not match was accepted")
    finally:
        event.remove(clean_db.sync_engine, "before_cursor_execute", count)


async def test_a_batch_costs_three_statements_and_writes_every_part(clean_db):
    from tests.factories import chat_events

    statements: list[str] = []

    def count(logged) -> None:
        statements.append(logged.query)

    events = [to_event(e) for e in chat_events("chat-w", end_user_messages=3, end_user_id="eu-w")]
    async with raw.transaction(clean_db) as pg:
        pg.add_query_logger(count)  # inside the transaction: BEGIN and COMMIT are not counted
        try:
            outcome = await apply_batch(pg, events, "sandbox")
        finally:
            pg.remove_query_logger(count)
    # dedup rows with the settings in force, states locked, then everything the batch changed
    assert len(statements) == 3, statements
    async with clean_db.connect() as conn:
        async def rows(table: str) -> int:
            return (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()

        assert await rows("sessions") == 1
        assert await rows("session_messages") == 4  # three from the end user, one from the agent
        assert await rows("decisions") == len(outcome.decisions) >= 2
        assert await rows("outbox") == len(outcome.outbox_rows) == 2  # the record and the summary note
