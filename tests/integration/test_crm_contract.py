"""The behaviour every CRM shows through the CrmAdapter protocol (issue 13.6), run for every
CRM in the registry: the four vendors against their fakes, and the sandbox in the
service's database. The vendor-specific details (request shapes, error words, quirks)
stay in each CRM's own test module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from app.adapters.crm.base import (
    CrmRateLimited,
    CrmTransientError,
    EndUserInfo,
    NewRecord,
    SessionActivity,
)
from app.adapters.crm.registry import CRMS, crm_spec
from app.settings import Settings
from tests.integration import crm_contract
from tests.integration.crm_backends import Backend, SandboxBackend

CLOSED_AT = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
VENDORS = sorted(name for name, spec in CRMS.items() if not spec.in_database)


@dataclass
class Crm:
    name: str
    backend: Backend
    adapter: Any


@pytest.fixture(scope="module")
def vendor_backends() -> Iterator[dict[str, Backend]]:
    """One running fake per vendor for the whole module (each test uses fresh session ids)."""
    started: dict[str, Backend] = {}
    yield started
    for backend in started.values():
        backend.stop()


@pytest.fixture(params=sorted(CRMS))
async def crm(request, vendor_backends, clean_db) -> AsyncIterator[Crm]:
    name = request.param
    spec = crm_spec(name)
    if spec.in_database:
        backend: Backend = SandboxBackend(clean_db)
        adapter = spec.adapter_class().from_settings(Settings(_env_file=None, crm_provider=name), engine=clean_db)
    else:
        if name not in vendor_backends:
            vendor_backends[name] = crm_contract.backend_class(name)()
            vendor_backends[name].start()
        backend = vendor_backends[name]
        backend.fake.set_faults(rate_limit_next=0, server_error_next=0, delay_seconds=0.0)
        adapter = spec.adapter_class().from_settings(crm_contract.settings_for(backend.fake, crm_timeout_seconds=3.0))
    yield Crm(name, backend, adapter)
    await adapter.aclose()


def new_record(session_id: str, contact_id: str | None) -> NewRecord:
    user = EndUserInfo(f"eu-{session_id}", "Ada Caller", f"+1555{uuid.uuid4().int % 10**7:07d}",
                       f"{session_id}@example.com")
    title = f"Voice Inbound call {session_id}"
    return NewRecord(
        session_id=session_id, title=title, description=f"Session: {session_id}", contact_id=contact_id,
        tags=["voice_inbound", "UJET"], medium="call", queue_id="q-1", idempotency_key=f"record-{session_id}",
        end_user=user,
        session=SessionActivity(session_id, title, "call", "voice_inbound", datetime.now(UTC), contact_id),
    )


async def made(crm: Crm) -> tuple[str, NewRecord]:
    """A record for a new session, made as the worker makes it; its id and what was sent."""
    session_id = f"contract-{uuid.uuid4().hex[:10]}"
    record = new_record(session_id, None)
    if not getattr(crm.adapter, "resolves_end_user", False):
        assert record.end_user is not None
        record = replace(record, contact_id=await crm.adapter.find_or_create_end_user(record.end_user))
    ref = await crm.adapter.create_record(record)
    return ref.record_id, record


async def test_the_credentials_are_accepted(crm):
    await crm.adapter.check_credentials()


async def test_a_record_is_made_once_and_found_by_its_session(crm):
    record_id, record = await made(crm)
    again = await crm.adapter.create_record(replace(record, retrying_unknown_outcome=True))
    assert again.record_id == record_id
    assert [r.record_id for r in await crm.backend.records() if r.session_id == record.session_id] == [record_id]
    found = await crm.adapter.find_record_by_session(record.session_id)
    assert found is not None and found.record_id == record_id
    assert await crm.adapter.find_record_by_session(f"contract-none-{uuid.uuid4().hex[:8]}") is None


async def test_a_new_record_is_open_a_closed_one_closed_and_it_reopens(crm):
    record_id, _ = await made(crm)
    current = await crm.adapter.get_record(record_id)
    assert current is not None and not current.is_closed and current.record_id == record_id
    await crm.backend.close(record_id, CLOSED_AT)
    closed = await crm.adapter.get_record(record_id)
    assert closed is not None and closed.is_closed and closed.closed_at is not None and closed.can_reopen
    await crm.adapter.reopen_record(record_id)
    reopened = await crm.adapter.get_record(record_id)
    assert reopened is not None and not reopened.is_closed


async def test_an_attached_session_adds_its_note_and_tags_and_a_note_is_added(crm):
    record_id, record = await made(crm)
    await crm.adapter.attach_session(record_id, "Attached session contract-2", ["voice_outbound"])
    await crm.adapter.add_note(record_id, "Summary of the session")
    view = await crm.backend.record_of(record.session_id)
    assert view is not None
    assert any("Attached session contract-2" in note for note in view.notes)
    assert any("Summary of the session" in note for note in view.notes)
    if crm.backend.has_tags:
        assert {t.casefold() for t in view.tags} >= {"voice_outbound", "ujet"}


@pytest.mark.parametrize("crm", VENDORS, indirect=True)
async def test_a_refusal_for_the_rate_limit_asks_to_wait(crm):
    record_id, _ = await made(crm)
    crm.backend.fake.set_faults(rate_limit_next=1)
    with pytest.raises(CrmRateLimited) as refused:
        await crm.adapter.get_record(record_id)
    assert refused.value.retry_after > 0


@pytest.mark.parametrize("crm", VENDORS, indirect=True)
async def test_a_server_error_is_transient(crm):
    record_id, _ = await made(crm)
    crm.backend.fake.set_faults(server_error_next=1)
    with pytest.raises(CrmTransientError) as failed:
        await crm.adapter.get_record(record_id)
    assert not isinstance(failed.value, CrmRateLimited)
