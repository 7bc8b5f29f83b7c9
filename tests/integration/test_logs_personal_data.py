"""No end user's phone number, email address or name reaches the log at the default
level: sessions run end to end against the Zendesk and Freshdesk fakes in a real
service process, and everything it writes (every logger) is searched for them."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.factories import call_events, chat_events
from tests.helpers import eventually
from tests.integration.crm_backends import FreshdeskBackend, ZendeskBackend
from tests.integration.kafka_helpers import publish
from tests.integration.service_process import ServiceProcess


def _people(crm: str) -> list[dict]:
    """End users with distinct contacts: some found or created by phone, some by email."""
    people = []
    for n in range(4):
        people.append({
            "end_user_id": f"eu-{crm}-{n}",
            "end_user_phone": f"+1555730{n:04d}" if n % 2 == 0 else None,
            "end_user_email": f"private.person{n}@{crm}-customer.example.org",
            "end_user_name": f"Quintessa Vandermolen{n}",
        })
    return people


def _forms(value: str) -> set[str]:
    """How a value can show up in a line: as is, URL-encoded, or the digits of a phone."""
    forms = {value, urllib.parse.quote(value), urllib.parse.quote_plus(value), urllib.parse.quote(value, safe="")}
    if value.startswith("+"):
        forms.add(value[1:])
    return forms


@pytest.mark.parametrize("backend_class", [ZendeskBackend, FreshdeskBackend], ids=["zendesk", "freshdesk"])
async def test_no_end_user_contact_in_any_log_line(backend_class, make_settings, kafka_bootstrap, topics, clean_db,
                                                   tmp_path):
    backend = backend_class()
    backend.start()
    people = _people(backend.name)
    sessions = []
    documents = []
    for n, person in enumerate(people):
        session_id = f"pii-{backend.name}-{n}"
        sessions.append(session_id)
        builder = call_events if n < 2 else chat_events
        documents += builder(session_id, **person)
    settings = make_settings(**backend.settings(), log_level="INFO")
    log_path = tmp_path / "service.log"
    service = ServiceProcess(settings, log_path).start()
    try:
        await service.wait_ready()
        await publish(kafka_bootstrap, topics.events, documents)

        async def all_records_with_notes():
            records = [await backend.record_of(s) for s in sessions]
            return all(r is not None and r.notes for r in records)

        await eventually(all_records_with_notes, timeout=60)
    finally:
        service.stop()
        backend.stop()
    logged = log_path.read_text(errors="replace")
    assert logged.strip(), "the service logged nothing at all: the test would prove nothing"
    leaked = []
    for person in people:
        for field in ("end_user_phone", "end_user_email", "end_user_name"):
            if person[field]:
                leaked += [(field, form) for form in _forms(person[field]) if form in logged]
    assert not leaked, f"personal data in the log: {leaked}\n{logged[-4000:]}"
    # Not a terminal: one JSON object per line, and each record creation is an info line
    # naming the session, the CRM, the record and the outbox row (but no contact).
    lines = _json_lines(logged)
    assert lines and len(lines) == len([raw for raw in logged.splitlines() if raw.strip()]), logged[-3000:]
    created = {line["session_id"]: line for line in lines if line["event"] == "record created"}
    assert set(created) == set(sessions), created
    for line in created.values():
        assert line["level"] == "info" and line["crm"] == backend.name
        assert line["record_id"] and line["outbox_id"] and line["timestamp"]


def _json_lines(text: str) -> list[dict]:
    import json

    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_database_errors_never_list_statement_parameters(engine):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT CAST(:contact AS integer)"), {"contact": "maria.souza@example.org"})
    # asyncpg's own message may quote the refused value (the log's masking covers an
    # email or phone there); SQLAlchemy must not add every parameter of the statement.
    assert "[parameters:" not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)
