"""Use case: carry out one claimed outbox row against the CRM, then record the outcome.

The CRM call happens outside any database transaction; its outcome (done, retry
later, or parked with the CRM's reason), every HTTP attempt it took, the decision
trace and the record bookkeeping commit together afterwards (outbox_bookkeeping), and
only then are the outcome events published. If the process dies in between, the row's
lease runs out and another worker repeats it, knowing the earlier attempt's outcome is
unknown: it looks for what that attempt may have made (the record by session id, the
note by its marker) before writing, and the CRM's own idempotency covers the rest.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.adapters.crm.base import (
    CallLog,
    CrmAdapter,
    CrmEndUserGone,
    CrmError,
    CrmRateLimited,
    EndUserInfo,
    LogsSessionActivities,
    NewRecord,
    NoteWrite,
    RecordRef,
    SessionActivity,
    crm_account,
    current_call_log,
)
from app.adapters.crm.budget import Priority, current_priority
from app.adapters.db import (
    decisions_repo,
    end_users_repo,
    events_repo,
    outbox_repo,
    records_repo,
    sessions_repo,
    settings_repo,
)
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.outbox_repo import Attempt, ClaimedRow
from app.domain.field_limits import limits_for
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
from app.service.outbox_bookkeeping import Completion, CompletionWriter, Finished, LeaseLost
from app.settings import Settings

log = logging.getLogger(__name__)

Publisher = Callable[[str, dict[str, Any]], Awaitable[None]]

__all__ = ["Completion", "CompletionWriter", "Finished", "LeaseLost", "OutboxRunner", "note_marker"]


class WaitForRecord(CrmError):
    """The session's record is still being made: try the note again shortly."""


class NoRecord(CrmError):
    retryable = False


def note_marker(idempotency_key: str) -> str:
    """The line that ends every end-of-session note: the outbox row's key, by which a
    retry finds a note an earlier attempt wrote without hearing back."""
    return f"[ref {idempotency_key}]"


def _end_user(state: SessionState) -> EndUserInfo:
    return EndUserInfo(state.end_user_id, state.end_user_name, state.end_user_phone, state.end_user_email)


def _activity(state: SessionState, title: str, contact: str | None) -> SessionActivity:
    return SessionActivity(
        session_id=state.session_id, title=title, medium=state.medium, session_type=state.session_type,
        started_at=state.timestamp, contact_id=contact or None, duration_seconds=state.duration_seconds,
        disposition=state.disposition, over=state.ended_at is not None or state.abandoned_at is not None,
    )


@dataclass(slots=True)
class OutboxRunner:
    engine: AsyncEngine
    crm: CrmAdapter
    publish: Publisher
    settings: Settings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Whether an outcome event is already on the topic (session id, event, written since):
    # asked before publishing again an event an earlier attempt may have published.
    published_since: Callable[[str, dict[str, Any], datetime], Awaitable[bool]] | None = None
    completions: CompletionWriter = field(init=False)
    account: str = field(init=False)

    def __post_init__(self) -> None:
        self.account = crm_account(self.crm)
        self.completions = CompletionWriter(
            self.engine, self.crm.name, account=self.account, lease_seconds=self.settings.outbox_lease_seconds
        )

    async def run(self, row: ClaimedRow) -> str:
        """Carry out `row`; returns its new status (done, pending, parked, or lost when
        another worker holds it now)."""
        calls = CallLog()
        token = current_call_log.set(calls)
        priority = current_priority.set(Priority.NOTE if row.kind == "ended_note" else Priority.RECORD)
        try:
            with (log_context(outbox_id=row.id, session_id=row.session_id, crm=self.crm.name, outbox_kind=row.kind),
                  tracing.outbox_span(row, self.crm.name)):
                return await self._run(row, calls)
        finally:
            current_priority.reset(priority)
            current_call_log.reset(token)

    async def _run(self, row: ClaimedRow, calls: CallLog) -> str:
        try:
            completion = await self._perform(row)
        except CrmError as exc:
            return await self._failed(row, exc, calls)
        except Exception as exc:  # a bug or an unexpected answer: retried, and visible
            log.exception("outbox row failed unexpectedly")
            return await self._failed(row, CrmError(f"unexpected error: {exc!r}"), calls, outcome_unknown=True)
        status = await self._finish(row, completion, calls)
        if status == "done":
            self._log_done(row, completion)
        return status

    @staticmethod
    def _log_done(row: ClaimedRow, completion: Completion) -> None:
        if completion.session_record is not None:
            record_id, _url, action = completion.session_record
            log.info("record %s", action, extra={"record_id": record_id, "action": action})
        elif row.kind == "ended_note":
            log.info("summary note added")

    async def _finish(self, row: ClaimedRow, completion: Completion, calls: CallLog) -> str:
        if row.kind == "publish":
            # An outcome event whose first publisher died: published, then marked done. If
            # it died (or lost the database) after publishing, the event is on the topic.
            for event in completion.output:
                if await self._published_before(row, event):
                    log.info("outcome event already published by an earlier attempt; not again")
                    continue
                await self.publish(row.session_id, event)
            await self.completions.write(Finished(row, completion, calls))
            return "done"
        self._cost(row, completion, calls)
        try:
            event_rows = await self.completions.write(Finished(row, completion, calls))
        except LeaseLost as exc:
            log.warning("outbox row %s (%s): %s; its outcome is left to that worker", row.id, row.kind, exc)
            return "lost"
        for event in completion.output:
            await self.publish(row.session_id, event)
        await self.completions.published(event_rows)
        return "done"

    async def _published_before(self, row: ClaimedRow, event: dict[str, Any]) -> bool:
        if not (row.outcome_unknown and self.published_since and row.created_at):
            return False
        # A minute's margin for the broker's clock running behind the database's.
        return await self.published_since(row.session_id, event, row.created_at - timedelta(minutes=1))

    def _cost(self, row: ClaimedRow, completion: Completion, calls: CallLog) -> None:
        """Count this row's CRM requests (metrics) and say them in its decisions."""
        crm = self.crm.name
        for call in calls.calls:
            metrics.crm_requests.labels(crm, row.kind, call.operation).inc()
        action = completion.session_record[2] if completion.session_record else "note"
        metrics.crm_work_done.labels(crm, row.kind, action).inc()
        cost = describe_cost(calls)
        completion.decisions = [
            DecisionRow(d.session_id, d.kind, f"{d.reason} ({cost})", d.event_at, d.settings_version, d.record_id)
            for d in completion.decisions
        ]

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
        version = row.payload.get("settings_version")
        crm = self.crm.name
        # Read what is needed, then let the connection go: none is held across CRM calls.
        async with self.engine.connect() as conn:
            if "settings" in row.payload:  # a row written before payloads named only the version
                settings = RecordSettings.model_validate(row.payload["settings"])
            else:
                settings = await settings_repo.of_version(conn, version, row.payload.get("settings_digest"))
            context = await records_repo.record_context(
                conn, crm, row.session_id, with_newest=settings.append_to_open_record_in_leaf_queue,
                account=self.account,
            )
        if context is None:
            raise NoRecord(f"session {row.session_id} is unknown")
        state = SessionState.from_document(context.state)
        completion = Completion(state=state)
        existing: ExistingRecord | None = None
        if context.newest is not None:
            existing = await self.crm.get_record(context.newest.record_id)
        target = choose_target(existing, settings, self.clock(), state.record_decided_at)
        record_id, url, action = await self._apply_target(row, state, settings, target, context.contact_id, completion)
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
        self, row: ClaimedRow, state: SessionState, settings: RecordSettings, target: Target,
        known_user: str | None, completion: Completion,
    ) -> tuple[str, str, str]:
        crm = self.crm.name
        title = render_title(
            settings.record_title_template, state, settings.record_title_locale, max_chars=limits_for(crm).title
        )
        if target.action == "create":
            new = NewRecord(
                session_id=state.session_id,
                title=title,
                description=render_description(state),
                contact_id=known_user,
                tags=record_tags(crm, state, settings, creating=True),
                medium=state.medium,
                queue_id=state.queue_id,
                idempotency_key=row.idempotency_key,
                end_user=_end_user(state),
                session=_activity(state, title, known_user),
                retrying_unknown_outcome=row.outcome_unknown,
            )
            ref = await self._create(new, completion)
            return ref.record_id, ref.url, "created"
        assert target.record is not None
        existing = target.record
        reopened = target.action == "reopen"
        if isinstance(self.crm, LogsSessionActivities):
            # The session is an activity of its own on the record; the reopen rides along.
            await self.crm.attach_session_activity(
                existing.record_id, _activity(state, title, known_user), render_attach_note(state, reopened),
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

    async def _create(self, new: NewRecord, completion: Completion) -> RecordRef:
        """Create the record with the end user's remembered CRM id; if the CRM says that
        user is gone (deleted, merged), forget it and find the end user again, once."""
        assert new.end_user is not None
        resolves = getattr(self.crm, "resolves_end_user", False)
        for remembered in (True, False):
            known = new.contact_id if remembered else None
            if known is None and not resolves:
                known = await self.crm.find_or_create_end_user(new.end_user)
                completion.contact = known
            try:
                ref = await self.crm.create_record(
                    NewRecord(**{**_fields(new), "contact_id": known})
                )
            except CrmEndUserGone:
                if not remembered or new.contact_id is None:
                    raise
                async with self.engine.begin() as conn:
                    await end_users_repo.forget(conn, self.account, new.end_user.id, new.contact_id)
                continue
            if ref.contact_id and ref.contact_id != new.contact_id:
                completion.contact = ref.contact_id
            return ref
        raise AssertionError("unreachable")

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
        marker = note_marker(row.idempotency_key)
        body = f"{note}\n\n{marker}"
        write_note = getattr(self.crm, "write_note", None)
        if isinstance(self.crm, LogsSessionActivities):
            # The session's Task already names the Contact and the title: only the outcome is new.
            await self.crm.complete_session_activity(
                record_id, _activity(state, "", None), note, key=row.idempotency_key,
                outcome_unknown=row.outcome_unknown,
            )
        elif write_note is not None:
            await write_note(NoteWrite(record_id, body, marker, row.idempotency_key, row.outcome_unknown))
        else:
            await self.crm.add_note(record_id, body)
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

    async def _failed(self, row: ClaimedRow, exc: CrmError, calls: CallLog, *, outcome_unknown: bool = False) -> str:
        crm = self.crm.name
        message = str(exc) or type(exc).__name__
        unknown = outcome_unknown or bool(getattr(exc, "outcome_unknown", False)) or _wrote(calls)
        held = {"claim_id": row.claim_id}
        async with self.engine.begin() as conn:
            await outbox_repo.record_attempts(conn, crm, [Attempt(row.id, row.session_id, row.attempts, calls.calls)])
            if isinstance(exc, (CrmRateLimited, WaitForRecord)):
                # Being told to wait is not a failure: it does not use up an attempt.
                delay = exc.retry_after if isinstance(exc, CrmRateLimited) else 1.0
                if isinstance(exc, CrmRateLimited):
                    log.info("CRM asked to slow down; retrying in %.1f s", exc.retry_after)
                await outbox_repo.reschedule(conn, row.id, delay_seconds=delay, error=message, count_attempt=False,
                                             outcome_unknown=unknown, **held)
                return "pending"
            if exc.retryable and row.attempts < self.settings.outbox_max_attempts:
                delay = self._backoff(row.attempts)
                log.warning("attempt %d failed, retrying in %.1f s: %s", row.attempts, delay, message)
                await outbox_repo.reschedule(conn, row.id, delay_seconds=delay, error=message,
                                             count_attempt=True, outcome_unknown=unknown, **held)
                return "pending"
            reason = message if not exc.retryable else f"gave up after {row.attempts} attempts: {message}"
            if not await outbox_repo.park(conn, row.id, reason, **held):
                return "lost"
            await decisions_repo.insert_decision(
                conn, DecisionRow(row.session_id, f"{row.kind}_parked", f"parked, will not be retried: {reason}",
                                  None, row.payload.get("settings_version"))
            )
        metrics.outbox_parked.labels(crm, row.kind).inc()
        log.error("outbox row parked, will not be retried: %s", reason)
        return "parked"


def _wrote(calls: CallLog) -> bool:
    """Whether a failed attempt made a write that may have taken effect (answered 2xx, a
    5xx, or no answer): e.g. the conversation was created and its tags were refused. The
    retry must then look for what it made before writing again."""
    return any(
        c.method not in ("GET", "HEAD") and (c.status is None or c.status < 300 or c.status >= 500)
        for c in calls.calls
    )


def _fields(record: NewRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in NewRecord.__dataclass_fields__}


def describe_cost(calls: CallLog) -> str:
    """`2 CRM requests: find_or_create_end_user GET /users/search, create_record POST /tickets`."""
    count = len(calls.calls)
    if not count:
        return "no CRM request"
    listed = ", ".join(f"{c.operation} {c.method} {c.path}" for c in calls.calls[:8])
    more = f", +{count - 8} more" if count > 8 else ""
    return f"{count} CRM request{'s' if count != 1 else ''}: {listed}{more}"
