"""The sandbox CRM: records kept in the service's own database, for trying the service
out with no CRM account. It behaves like a real one where the policy cares: statuses
(open, pending, solved, closed; `closed` cannot be reopened, like a Zendesk ticket),
closing times, idempotent creation by session id, notes and tags. Each call runs in its
own transaction, as a remote CRM's would: the worker's bookkeeping is separate."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.crm.base import (
    CrmCall,
    CrmPermanentError,
    EndUserInfo,
    NewRecord,
    NoteWrite,
    RecordRef,
    log_call,
)
from app.adapters.db import raw, sandbox_repo
from app.adapters.db.engine import build_engine
from app.domain.policy import ExistingRecord
from app.settings import Settings

# The sandbox's own pool (see SandboxAdapter.from_settings).
SANDBOX_CONNECTIONS = 16


def sandbox_record_url(record_id: int | str) -> str:
    return f"/api/sandbox/records/{record_id}"


class SandboxAdapter:
    name = "sandbox"

    def __init__(self, engine: AsyncEngine, *, latency_ms: int = 0, owns_engine: bool = False):
        self.engine = engine
        self.owns_engine = owns_engine
        # A call of one statement needs no BEGIN and COMMIT around it (two round trips).
        self._one_statement = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.latency = latency_ms / 1000

    @classmethod
    def from_settings(cls, settings: Settings, *, engine: AsyncEngine) -> SandboxAdapter:
        """A pool of its own on the service's database, as a remote CRM is a system of its
        own: its statements are planned each for its own parameters. Its find-or-create
        contact looks a phone or an email up among contacts that grow by one per new end
        user, and a generic plan cached while the table was small read every contact
        (test_cached_plans); the service's own statements keep PostgreSQL's default. At
        most SANDBOX_CONNECTIONS, opened when first needed and never more: a row waits for
        one (a call holds it for a statement or two), so a replica's connections stay
        bounded (README: DATABASE_POOL_SIZE).

        Its commits do not wait for their WAL flush: a remote CRM's write costs the
        service's database nothing, and these flushes were most of what PostgreSQL waited
        on at 1,000 events/s (docs/bench.md). Nothing is lost by it: the worker's
        bookkeeping, which commits after the call and waits for its flush, flushes the
        sandbox's write with it; a crash before that loses both, the claim (which does
        wait) keeps the row running until its lease runs out, and the retry makes the
        record again, as after a crash between a CRM's answer and the bookkeeping."""
        own = build_engine(settings, url=engine.url.render_as_string(hide_password=False),
                           pool_size=SANDBOX_CONNECTIONS, max_overflow=0, plan_every_statement=True,
                           commits_wait_for_flush=False)
        return cls(own, latency_ms=settings.sandbox_latency_ms, owns_engine=True)

    async def _call(self, operation: str, work, *, one_statement: bool = False, on_asyncpg: bool = False):
        """Run `work(conn)` in its own transaction, with the configured answer time, and log it.
        `one_statement`: work is one statement, atomic alone (no BEGIN and COMMIT);
        `on_asyncpg`: that, and work takes asyncpg's connection (adapters/db/raw.py)."""
        started = time.perf_counter()
        error = None
        try:
            if self.latency:
                await asyncio.sleep(self.latency / 2)
            if on_asyncpg:
                async with raw.connection(self.engine) as pg:
                    result = await work(pg)
            else:
                async with (self._one_statement if one_statement else self.engine).begin() as conn:
                    result = await work(conn)
            if self.latency:
                # Half the latency after the write: a crash here leaves a record the worker
                # has not marked done, which is the case idempotent creation must survive.
                await asyncio.sleep(self.latency / 2)
            return result
        except Exception as exc:  # logged, then re-raised for the worker to classify
            error = str(exc)
            raise
        finally:
            log_call(CrmCall(operation, "SQL", "sandbox", None if error else 200,
                             round((time.perf_counter() - started) * 1000, 2), error))

    async def check_credentials(self) -> None:
        async def work(conn: AsyncConnection):
            await conn.execute(text("SELECT 1"))

        await self._call("check_credentials", work)

    async def find_or_create_end_user(self, user: EndUserInfo) -> str:
        async def work(conn: AsyncConnection) -> int:
            return await sandbox_repo.find_or_create_contact(
                conn, external_id=user.id, name=user.name, phone=user.phone, email=user.email
            )

        return str(await self._call("find_or_create_end_user", work, one_statement=True))

    async def find_record_by_session(self, session_id: str) -> RecordRef | None:
        async def work(conn: AsyncConnection):
            return await sandbox_repo.record_id_for_session(conn, session_id)

        found = await self._call("find_record_by_session", work)
        return RecordRef(str(found), sandbox_record_url(found)) if found is not None else None

    # The end user's contact is found or made with the record, in one statement, when the
    # worker knows no contact for it yet (RecordRef.contact_id tells the worker which).
    resolves_end_user = True

    async def create_record(self, record: NewRecord) -> RecordRef:
        contact_id = record.contact_id
        if contact_id is None:
            user = record.end_user
            assert user is not None, "the sandbox's records always name a contact"

            async def with_contact(pg: asyncpg.Connection) -> sandbox_repo.RecordWithContact:
                return await sandbox_repo.insert_record_for_end_user(
                    pg, session_id=record.session_id, title=record.title, description=record.description,
                    tags=list(dict.fromkeys(record.tags)), medium=record.medium,
                    external_id=user.id, name=user.name, phone=user.phone, email=user.email,
                )

            made = await self._call("create_record", with_contact, on_asyncpg=True)
            return RecordRef(str(made.record_id), sandbox_record_url(made.record_id), str(made.contact_id))

        async def work(conn: AsyncConnection) -> int:
            return await sandbox_repo.insert_record(
                conn, session_id=record.session_id, title=record.title, description=record.description,
                contact_id=int(contact_id), tags=list(dict.fromkeys(record.tags)), medium=record.medium,
            )

        record_id = await self._call("create_record", work, one_statement=True)
        return RecordRef(str(record_id), sandbox_record_url(record_id))

    async def get_record(self, record_id: str) -> ExistingRecord | None:
        async def work(conn: AsyncConnection):
            return await sandbox_repo.get_record(conn, int(record_id))

        row = await self._call("get_record", work, one_statement=True)
        if row is None:
            return None
        return ExistingRecord(
            record_id=str(row.id),
            status=row.status,
            is_closed=row.status in sandbox_repo.CLOSED_STATUSES,
            closed_at=row.closed_at,
            can_reopen=row.status != "closed",
            url=sandbox_record_url(row.id),
        )

    async def reopen_record(self, record_id: str) -> None:
        async def work(conn: AsyncConnection):
            row = await sandbox_repo.get_record(conn, int(record_id))
            if row is None:
                raise CrmPermanentError(f"sandbox: record {record_id} does not exist")
            if row.status == "closed":
                raise CrmPermanentError(f"sandbox: record {record_id} is closed and cannot be reopened")
            await sandbox_repo.set_status(conn, int(record_id), "open", None)

        await self._call("reopen_record", work)

    async def attach_session(self, record_id: str, note: str, tags: list[str]) -> None:
        async def work(conn: AsyncConnection):
            await sandbox_repo.add_note(conn, int(record_id), note)
            await sandbox_repo.add_tags(conn, int(record_id), tags)

        await self._call("attach_session", work)

    async def add_note(self, record_id: str, note: str) -> None:
        async def work(conn: AsyncConnection):
            await sandbox_repo.add_note(conn, int(record_id), note)

        await self._call("add_note", work)

    async def write_note(self, note: NoteWrite) -> None:
        """An end-of-session note, exactly once: the note row carries the outbox row's
        key under a unique constraint, so a retry after a crash between this write and
        the worker's bookkeeping adds nothing."""

        async def work(pg: asyncpg.Connection):
            await sandbox_repo.add_note_once(pg, int(note.record_id), note.body, note.idempotency_key)

        await self._call("add_note", work, on_asyncpg=True)

    async def aclose(self) -> None:
        if self.owns_engine:
            await self.engine.dispose()


async def close_sandbox_record(engine: AsyncEngine, record_id: int, status: str, closed_at: datetime | None) -> bool:
    """What an agent does in the sandbox's UI: change a record's status (used by the API)."""
    async with engine.begin() as conn:
        return await sandbox_repo.set_status(conn, record_id, status, closed_at)
