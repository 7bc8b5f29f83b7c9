"""What the API and the CLI show of the records made: /api/records, the sandbox's records
with their contact and notes, and `python -m app records`. In-process over ASGI on the
real database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime

from app.adapters.db import records_repo, sandbox_repo
from tests.integration.asgi_api import api_settings, asgi_client, build_runtime
from tests.integration.service_process import PROJECT

CLOSED_AT = datetime(2026, 11, 23, 13, 0, 5, 250000, tzinfo=UTC)


async def _a_sandbox_record(engine) -> int:
    async with engine.begin() as conn:
        contact = await sandbox_repo.upsert_contact(conn, external_id="eu-7", name="Maria Souza",
                                                    phone="+5511987654321", email=None)
        record_id = await sandbox_repo.insert_record(conn, session_id="call-7", title="IVR call call-7",
                                                     description="Session call-7", contact_id=contact,
                                                     tags=["voice_inbound_ivr"], medium="call")
        await sandbox_repo.add_note(conn, record_id, "attached: call-8")
        await sandbox_repo.add_note(conn, record_id, "Session call-7 ended.", idempotency_key="ended_note:call-7")
        await sandbox_repo.set_status(conn, record_id, "solved", CLOSED_AT)
        await records_repo.remember_records(conn, "sandbox", [records_repo.NewRecord(
            str(record_id), f"sandbox://records/{record_id}", "eu-7", "q-billing", "call-7")])
    return record_id


async def test_the_sandbox_records_with_their_contact_and_notes(clean_db, database_url):
    record_id = await _a_sandbox_record(clean_db)
    async with asgi_client(build_runtime(api_settings(database_url), clean_db)) as client:
        [listed] = (await client.get("/api/sandbox/records")).json()
        assert (await client.get("/api/sandbox/records", params={"session_id": "call-8"})).json() == [listed]
        assert (await client.get("/api/sandbox/records", params={"session_id": "call-9"})).json() == []
        one = (await client.get(f"/api/sandbox/records/{record_id}")).json()
        made = (await client.get("/api/records")).json()
    shared = {
        "id": record_id, "external_id": "call-7", "title": "IVR call call-7", "description": "Session call-7",
        "status": "solved", "tags": ["voice_inbound_ivr"], "medium": "call",
        "closed_at": "2026-11-23T13:00:05.250000+00:00",
    }
    assert listed | shared == listed and one | shared == one
    assert (listed["contact_name"], listed["contact_phone"], listed["contact_email"]) == (
        "Maria Souza", "+5511987654321", None)
    assert listed["contact_id"] == one["contact_id"] and listed["created_at"] == one["created_at"]
    assert "contact_name" not in one
    assert [(n["record_id"], n["body"], n["private"]) for n in one["notes"]] == [
        (record_id, "attached: call-8", True), (record_id, "Session call-7 ended.", True)]
    assert set(one["notes"][0]) == {"id", "record_id", "body", "private", "created_at"}
    [record] = made
    assert record | {"crm": "sandbox", "record_id": str(record_id), "record_url": f"sandbox://records/{record_id}",
                     "end_user_id": "eu-7", "queue_id": "q-billing", "session_id": "call-7"} == record
    assert set(record) == {"id", "crm", "record_id", "record_url", "end_user_id", "queue_id", "session_id",
                           "created_at"}


def _cli_records(database_url: str, crm: str) -> list[dict]:
    env = {"DATABASE_URL": database_url, "CRM_PROVIDER": crm, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "app", "records"], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return [json.loads(part) for part in done.stdout.replace("}\n{", "}\x00{").split("\x00") if part.strip()]


async def test_the_cli_prints_each_record_with_its_notes(clean_db, database_url):
    record_id = await _a_sandbox_record(clean_db)
    [sandbox] = await asyncio.to_thread(_cli_records, database_url, "sandbox")
    assert sandbox["id"] == record_id and sandbox["contact_name"] == "Maria Souza"
    assert sandbox["notes"] == ["attached: call-8", "Session call-7 ended."]
    assert sandbox["closed_at"] == "2026-11-23T13:00:05.250000+00:00"
    assert list(sandbox)[:3] == ["id", "external_id", "title"] and list(sandbox)[-4:] == [
        "contact_name", "contact_phone", "contact_email", "notes"]
    [made] = await asyncio.to_thread(_cli_records, database_url, "zendesk")
    assert (made["crm"], made["record_id"], made["session_id"]) == ("sandbox", str(record_id), "call-7")


def _cli_session(database_url: str, session_id: str) -> dict:
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "app", "session", session_id], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


async def test_the_cli_prints_a_sessions_trace_as_the_api_answers_it(clean_db, database_url):
    from app.adapters.db import raw
    from app.service.consume import apply_batch
    from tests.factories import event_doc, header, to_event

    session = header("chat-traced", medium="chat")
    documents = [event_doc(session, "queued", 0), event_doc(session, "message", 3), event_doc(session, "abandoned", 9)]
    async with raw.transaction(clean_db) as pg:
        await apply_batch(pg, [to_event(d) for d in documents], "sandbox")
    async with asgi_client(build_runtime(api_settings(database_url), clean_db)) as client:
        answer = (await client.get("/api/sessions/chat-traced")).json()
    assert answer["state"]["end_user_messages"] == 1 and answer["state"]["abandoned_at"].endswith("+00:00")
    assert answer["record"]["progress"] == "skipped" and answer["decisions"][-1]["kind"] == "skipped"
    assert answer["outbox"][0]["kind"] == "publish" and answer["crm_calls"] == []
    assert await asyncio.to_thread(_cli_session, database_url, "chat-traced") == answer
