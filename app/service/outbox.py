"""Use case: carry out one claimed outbox row against the CRM, then record the outcome.

The CRM call happens outside any database transaction; its outcome (done, retry
later, or parked with the CRM's reason), every HTTP attempt it took, the decision
trace and the record bookkeeping commit together afterwards. If the process dies in
between, the row's lease runs out and another worker repeats it: creation is
idempotent in the CRM (its own mechanism, and a look-up by session id on retries),
so the session still ends with exactly one record.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.adapters.crm.base import (
    CallLog,
    CrmAdapter,
    CrmError,
    CrmRateLimited,
    EndUserInfo,
    LogsSessionActivities,
    NewRecord,
    RecordRef,
    SessionActivity,
    current_call_log,
)
from app.adapters.db import decisions_repo, events_repo, outbox_repo, records_repo, sessions_repo
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.outbox_repo import Attempt, ClaimedRow
from app.domain.policy import ExistingRecord, Target, choose_target
from app.domain.record_settings import RecordSettings
from app.domain.rendering import (
    TranscriptLine,
    record_tags,
    render_attach_note,
    render_description,
    render_ended_note,
    render_title,
)
from app.domain.session import SessionState
from app.observability import tracing
from app.observability.logs import log_context
from app.settings import Settings

log = logging.getLogger(__name__)

Publisher = Callable[[str, dict[str, Any]], Awaitable[None]]


class WaitForRecord(CrmError):
    """The session's record is still being made: try the note again shortly."""


class NoRecord(CrmError):
    retryable = False


@dataclass(slots=True)
class Completion:
    """What a successful run leaves behind, written in one transaction."""

    decisions: list[DecisionRow] = field(default_factory=list)
    output: list[dict[str, Any]] = field(default_factory=list)
    session_record: tuple[str, str, str] | None = None  # record_id, url, action
    new_record: RecordRef | None = None
    contact: str | None = None
    state: SessionState | None = None  # as read before the CRM calls, for the bookkeeping


@dataclass(frozen=True, slots=True)
class Finished:
    row: ClaimedRow
    completion: Completion
    calls: CallLog


class CompletionWriter:
    """Writes the bookkeeping of rows that finish at about the same time in one transaction.

    At a hundred rows a second, a commit per row is a large share of the worker's cost;
    here a row that finishes while a write is under way joins the next one. A row is
    reported done only once its transaction has committed."""

    def __init__(self, engine: AsyncEngine, crm: str):
        self.engine = engine
        self.crm = crm
        self._queue: list[tuple[Finished, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, finished: Finished) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((finished, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            outcomes = await self._write_batch([finished for finished, _ in batch])
            for (_, future), error in zip(batch, outcomes):
                if future.done():  # its waiter was cancelled (shutdown)
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    async def _write_batch(self, batch: list[Finished]) -> list[BaseException | None]:
        """Write `batch` together; if the database refuses it, each row alone, so one
        row it refuses does not hold back the others. Returns each row's error or None."""
        try:
            await self._write(batch)
            return [None] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
        outcomes: list[BaseException | None] = []
        for finished in batch:
            try:
                await self._write([finished])
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def _write(self, batch: list[Finished]) -> None:
        contacts: dict[str, str] = {}
        new_records: list[tuple[str, str | None, str, str, str]] = []
        session_records: list[tuple[str, str, str | None, str]] = []
        decisions: list[DecisionRow] = []
        for finished in batch:
            completion, session_id = finished.completion, finished.row.session_id
            state = completion.state
            if completion.contact is not None and state is not None:
                contacts[state.end_user_id] = completion.contact
            if completion.new_record is not None and state is not None:
                ref = completion.new_record
                new_records.append((ref.record_id, ref.url, state.end_user_id, state.queue_id, session_id))
            if completion.session_record is not None:
                session_records.append((session_id, *completion.session_record))
            decisions.extend(completion.decisions)
        async with self.engine.begin() as conn:
            await records_repo.remember_contacts(conn, self.crm, contacts)
            await records_repo.remember_records(conn, self.crm, new_records)
            await sessions_repo.set_records(conn, self.crm, session_records)
            await decisions_repo.insert_decisions(conn, decisions)
            await outbox_repo.record_attempts(
                conn, self.crm,
                [Attempt(f.row.id, f.row.session_id, f.row.attempts, f.calls.calls) for f in batch],
            )
            await outbox_repo.mark_done(conn, [f.row.id for f in batch])


def _end_user(state: SessionState) -> EndUserInfo:
    return EndUserInfo(state.end_user_id, state.end_user_name, state.end_user_phone, state.end_user_email)


def _activity(state: SessionState, title: str, contact: str | None) -> SessionActivity:
    return SessionActivity(
        session_id=state.session_id, title=title, medium=state.medium, session_type=state.session_type,
        started_at=state.timestamp, contact_id=contact or None, duration_seconds=state.duration_seconds,
        disposition=state.disposition,
    )


@dataclass(slots=True)
class OutboxRunner:
    engine: AsyncEngine
    crm: CrmAdapter
    publish: Publisher
    settings: Settings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    completions: CompletionWriter = field(init=False)

    def __post_init__(self) -> None:
        self.completions = CompletionWriter(self.engine, self.crm.name)

    async def run(self, row: ClaimedRow) -> str:
        """Carry out `row`; returns its new status (done, pending, parked)."""
        calls = CallLog()
        token = current_call_log.set(calls)
        try:
            with (log_context(outbox_id=row.id, session_id=row.session_id, crm=self.crm.name, outbox_kind=row.kind),
                  tracing.outbox_span(row, self.crm.name)):
                return await self._run(row, calls)
        finally:
            current_call_log.reset(token)

    async def _run(self, row: ClaimedRow, calls: CallLog) -> str:
        try:
            completion = await self._perform(row)
        except CrmError as exc:
            return await self._failed(row, exc, calls)
        except Exception as exc:  # a bug or an unexpected answer: retried, and visible
            log.exception("outbox row failed unexpectedly")
            return await self._failed(row, CrmError(f"unexpected error: {exc!r}"), calls)
        for event in completion.output:
            await self.publish(row.session_id, event)
        await self.completions.write(Finished(row, completion, calls))
        self._log_done(row, completion)
        return "done"

    @staticmethod
    def _log_done(row: ClaimedRow, completion: Completion) -> None:
        if completion.session_record is not None:
            record_id, _url, action = completion.session_record
            log.info("record %s", action, extra={"record_id": record_id, "action": action})
        elif row.kind == "ended_note":
            log.info("summary note added")

    # --- the three kinds of work -------------------------------------------------------------

    async def _perform(self, row: ClaimedRow) -> Completion:
        if row.kind == "publish":
            return Completion(output=[row.payload])
        if row.kind == "record":
            return await self._record(row)
        if row.kind == "ended_note":
            return await self._ended_note(row)
        raise NoRecord(f"unknown outbox kind {row.kind!r}")

    async def _record(self, row: ClaimedRow) -> Completion:
        settings = RecordSettings.model_validate(row.payload["settings"])
        version = row.payload.get("settings_version")
        crm = self.crm.name
        # Read what is needed in one round trip, then let the connection go: none is held
        # across CRM calls.
        async with self.engine.connect() as conn:
            context = await records_repo.record_context(
                conn, crm, row.session_id, with_newest=settings.append_to_open_record_in_leaf_queue
            )
        if context is None:
            raise NoRecord(f"session {row.session_id} is unknown")
        state = SessionState.from_document(context.state)
        contact, newest = context.contact_id, context.newest

        completion = Completion(state=state)
        if contact is None and not getattr(self.crm, "resolves_end_user", False):
            contact = await self.crm.find_or_create_end_user(_end_user(state))
            completion.contact = contact
        existing: ExistingRecord | None = None
        if newest is not None:
            existing = await self.crm.get_record(newest.record_id)
        target = choose_target(existing, settings, self.clock(), state.record_decided_at)
        record_id, url, action = await self._apply_target(row, state, settings, target, contact, completion)
        metrics.records.labels(crm, action).inc()
        if action == "created":
            completion.new_record = RecordRef(record_id, url)
        completion.session_record = (record_id, url, action)
        completion.decisions.append(
            DecisionRow(state.session_id, f"record_{action}", f"{action} record {record_id}: {target.reason}",
                        None, version, record_id)
        )
        completion.output.append(self._output(f"record.{action}", state.session_id, record_id, url, target.reason))
        return completion

    async def _apply_target(
        self, row: ClaimedRow, state: SessionState, settings: RecordSettings, target: Target, contact: str | None,
        completion: Completion,
    ) -> tuple[str, str, str]:
        crm = self.crm.name
        title = render_title(settings.record_title_template, state, settings.record_title_locale)
        if target.action == "create":
            ref = None
            if row.attempts > 1:
                # An earlier attempt may have created it and died before hearing back.
                ref = await self.crm.find_record_by_session(state.session_id)
            if ref is None:
                ref = await self.crm.create_record(
                    NewRecord(
                        session_id=state.session_id,
                        title=title,
                        description=render_description(state),
                        contact_id=contact or "",
                        tags=record_tags(crm, state, settings, creating=True),
                        medium=state.medium,
                        queue_id=state.queue_id,
                        idempotency_key=row.idempotency_key,
                        end_user=_end_user(state),
                        session=_activity(state, title, contact),
                    )
                )
            if ref.contact_id and ref.contact_id != contact:
                completion.contact = ref.contact_id
            return ref.record_id, ref.url, "created"
        assert target.record is not None
        existing = target.record
        reopened = target.action == "reopen"
        if isinstance(self.crm, LogsSessionActivities):
            # The session is an activity of its own on the record; the reopen rides along.
            await self.crm.attach_session_activity(
                existing.record_id, _activity(state, title, contact), render_attach_note(state, reopened),
                reopen=reopened,
            )
            return existing.record_id, existing.url or "", "reopened" if reopened else "attached"
        if reopened:
            await self.crm.reopen_record(existing.record_id)
        await self.crm.attach_session(
            existing.record_id,
            render_attach_note(state, reopened),
            record_tags(crm, state, settings, creating=False),
        )
        return existing.record_id, existing.url or "", "reopened" if reopened else "attached"

    async def _ended_note(self, row: ClaimedRow) -> Completion:
        async with self.engine.connect() as conn:
            session = await sessions_repo.get_session(conn, row.session_id)
            if session is None:
                raise NoRecord(f"session {row.session_id} is unknown")
            state = SessionState.from_document(session["state"])
            record_id = session["record_id"]
            if record_id is None:
                record_row = await outbox_repo.record_row_status(conn, row.session_id)
                if record_row is None or record_row[0] in ("parked", "done"):
                    why = f": {record_row[1]}" if record_row and record_row[1] else ""
                    raise NoRecord(f"the session has no record to add the summary note to{why}")
                raise WaitForRecord("the session's record is not made yet")
            lines = []
            if state.is_chat:
                lines = [TranscriptLine(*line) for line in await events_repo.transcript(conn, row.session_id)]
        note = render_ended_note(state, lines)
        if isinstance(self.crm, LogsSessionActivities):
            # The session's Task already names the Contact and the title: only the outcome is new.
            await self.crm.complete_session_activity(
                record_id, _activity(state, "", None), note, key=row.idempotency_key,
                outcome_unknown=row.attempts > 1,
            )
        else:
            await self.crm.add_note(record_id, note)
        reason = "session ended: summary note added"
        return Completion(
            decisions=[DecisionRow(state.session_id, "ended_note_added", f"{reason} to record {record_id}",
                                   state.ended_at, None, record_id)],
            output=[self._output("record.updated", state.session_id, record_id, session["record_url"], reason)],
        )

    def _output(self, event_type: str, session_id: str, record_id: str, url: str | None, reason: str) -> dict:
        return {
            "event_type": event_type,
            "session_id": session_id,
            "crm": self.crm.name,
            "record_id": record_id,
            "record_url": url,
            "reason": reason,
            "occurred_at": self.clock().isoformat(),
        }

    # --- bookkeeping ---------------------------------------------------------------------------

    def _backoff(self, attempts: int) -> float:
        base = self.settings.outbox_backoff_base_seconds * (2 ** max(0, attempts - 1))
        return min(self.settings.outbox_backoff_max_seconds, base) * random.uniform(0.5, 1.0)

    async def _failed(self, row: ClaimedRow, exc: CrmError, calls: CallLog) -> str:
        crm = self.crm.name
        message = str(exc) or type(exc).__name__
        async with self.engine.begin() as conn:
            await outbox_repo.record_attempts(conn, crm, [Attempt(row.id, row.session_id, row.attempts, calls.calls)])
            if isinstance(exc, CrmRateLimited):
                log.info("CRM asked to slow down; retrying in %.1f s", exc.retry_after)
                await outbox_repo.reschedule(
                    conn, row.id, delay_seconds=exc.retry_after, error=message, count_attempt=False
                )
                return "pending"
            if isinstance(exc, WaitForRecord):
                await outbox_repo.reschedule(conn, row.id, delay_seconds=1.0, error=message, count_attempt=False)
                return "pending"
            if exc.retryable and row.attempts < self.settings.outbox_max_attempts:
                delay = self._backoff(row.attempts)
                log.warning("attempt %d failed, retrying in %.1f s: %s", row.attempts, delay, message)
                await outbox_repo.reschedule(conn, row.id, delay_seconds=delay, error=message, count_attempt=True)
                return "pending"
            reason = message if not exc.retryable else f"gave up after {row.attempts} attempts: {message}"
            await outbox_repo.park(conn, row.id, reason)
            await decisions_repo.insert_decision(
                conn, DecisionRow(row.session_id, f"{row.kind}_parked", f"parked, will not be retried: {reason}",
                                  None, row.payload.get("settings_version"))
            )
        metrics.outbox_parked.labels(crm, row.kind).inc()
        log.error("outbox row parked, will not be retried: %s", reason)
        return "parked"
