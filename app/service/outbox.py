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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.adapters.crm.base import (
    CallLog,
    CrmAdapter,
    CrmEndUserGone,
    CrmError,
    CrmRateLimited,
    LogsSessionActivities,
    NewRecord,
    NoteWrite,
    RecordRef,
    crm_account,
    current_call_log,
)
from app.adapters.crm.budget import Priority, current_priority
from app.adapters.crm.registry import crm_tags
from app.adapters.db import (
    crm_attempts_repo,
    decisions_repo,
    end_users_repo,
    outbox_repo,
    raw,
    records_repo,
)
from app.adapters.db.crm_attempts_repo import Attempt
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.outbox_repo import ClaimedRow
from app.adapters.db.records_repo import NoteContext, RecordContext
from app.domain.field_limits import limits_for
from app.domain.kinds import (
    PARKED_DECISION,
    RECORD_DECISION,
    RECORD_EVENT,
    DecisionKind,
    OutboxKind,
    OutboxStatus,
    OutcomeEventType,
    RecordAction,
)
from app.domain.outcome import OutcomeEvent
from app.domain.policy import ExistingRecord, Target, choose_target
from app.domain.record_settings import RecordSettings
from app.domain.rendering import (
    render_attach_note,
    render_description,
    render_ended_note,
    render_title,
)
from app.domain.session import SessionState
from app.observability import tracing
from app.observability.logs import log_context
from app.service.outbox_bookkeeping import Completion, CompletionWriter, Finished, LeaseLost, MadeRecord
from app.service.outbox_work import (
    NoRecord,
    RowBlocked,
    WaitForRecord,
    activity,
    describe_cost,
    end_user,
    note_marker,
    retry_delay,
    settings_of_row,
    with_contact,
    wrote,
)
from app.settings import Settings

log = logging.getLogger(__name__)

Publisher = Callable[[str, OutcomeEvent], Awaitable[None]]

__all__ = ["Completion", "CompletionWriter", "Finished", "LeaseLost", "MadeRecord", "OutboxRunner", "note_marker"]


@dataclass(slots=True)
class OutboxRunner:
    engine: AsyncEngine
    crm: CrmAdapter
    publish: Publisher
    settings: Settings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Whether an outcome event is already on the topic (session id, event, written since):
    # asked before publishing again an event an earlier attempt may have published.
    published_since: Callable[[str, OutcomeEvent, datetime], Awaitable[bool]] | None = None
    completions: CompletionWriter = field(init=False)
    account: str = field(init=False)
    # Reads outside a transaction: each statement has its own snapshot, as it would in a
    # READ COMMITTED transaction, without a BEGIN and a ROLLBACK (two round trips) around it.
    reads: AsyncEngine = field(init=False)
    # The CRM as one that logs each session as an activity (Salesforce), else None; asked
    # once: an isinstance check against a runtime Protocol costs about 55 µs per row.
    activities: LogsSessionActivities | None = field(init=False)

    def __post_init__(self) -> None:
        self.account = crm_account(self.crm)
        self.activities = self.crm if isinstance(self.crm, LogsSessionActivities) else None
        self.reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.completions = CompletionWriter(
            self.engine, self.crm.name, account=self.account, lease_seconds=self.settings.outbox_lease_seconds
        )

    async def run(self, row: ClaimedRow, crm_done: Callable[[], None] = lambda: None) -> OutboxStatus | None:
        """Carry out `row`; returns its new status (done, pending, parked), or None when
        another worker holds it now (this claim's lease ran out). `crm_done` is called once
        the row's CRM work is over, before its bookkeeping and outcome events: the worker
        bounds the CRM work in flight, not the rows still finishing."""
        calls = CallLog()
        token = current_call_log.set(calls)
        priority = current_priority.set(Priority.NOTE if row.kind == OutboxKind.ENDED_NOTE else Priority.RECORD)
        try:
            with (log_context(outbox_id=row.id, session_id=row.session_id, crm=self.crm.name, outbox_kind=row.kind),
                  tracing.outbox_span(row, self.crm.name)):
                return await self._run(row, calls, crm_done)
        finally:
            current_priority.reset(priority)
            current_call_log.reset(token)

    async def _run(self, row: ClaimedRow, calls: CallLog, crm_done: Callable[[], None]) -> OutboxStatus | None:
        try:
            completion = await self._perform(row)
        except (CrmError, RowBlocked) as exc:
            crm_done()
            return await self._failed(row, exc, calls)
        except Exception as exc:  # a bug or an unexpected answer: retried, and visible
            crm_done()
            log.exception("outbox row failed unexpectedly")
            return await self._failed(row, CrmError(f"unexpected error: {exc!r}"), calls, outcome_unknown=True)
        crm_done()
        status = await self._finish(row, completion, calls)
        if status == OutboxStatus.DONE:
            self._log_done(row, completion)
        return status

    @staticmethod
    def _log_done(row: ClaimedRow, completion: Completion) -> None:
        made = completion.session_record
        if made is not None:
            log.info("record %s", made.action, extra={"record_id": made.record_id, "action": made.action})
        elif row.kind == OutboxKind.ENDED_NOTE:
            log.info("summary note added")

    async def _finish(self, row: ClaimedRow, completion: Completion, calls: CallLog) -> OutboxStatus | None:
        if row.kind == OutboxKind.PUBLISH:
            # An outcome event whose first publisher died: published, then marked done. If
            # it died (or lost the database) after publishing, the event is on the topic.
            for event in completion.output:
                if await self._published_before(row, event):
                    log.info("outcome event already published by an earlier attempt; not again")
                    continue
                await self.publish(row.session_id, event)
            await self.completions.write(Finished(row, completion, calls))
            return OutboxStatus.DONE
        self._cost(row, completion, calls)
        try:
            event_rows = await self.completions.write(Finished(row, completion, calls))
        except LeaseLost as exc:
            log.warning("outbox row %s (%s): %s; its outcome is left to that worker", row.id, row.kind, exc)
            return None
        for event in completion.output:
            await self.publish(row.session_id, event)
        await self.completions.published(event_rows)
        return OutboxStatus.DONE

    async def _published_before(self, row: ClaimedRow, event: OutcomeEvent) -> bool:
        if not (row.outcome_unknown and self.published_since and row.created_at):
            return False
        # A minute's margin for the broker's clock running behind the database's.
        return await self.published_since(row.session_id, event, row.created_at - timedelta(minutes=1))

    def _cost(self, row: ClaimedRow, completion: Completion, calls: CallLog) -> None:
        """Count this row's CRM requests (metrics) and say them in its decisions."""
        crm = self.crm.name
        for call in calls.calls:
            metrics.crm_requests.labels(crm, row.kind, call.operation).inc()
        action = completion.session_record.action if completion.session_record else "note"
        metrics.crm_work_done.labels(crm, row.kind, action).inc()
        cost = describe_cost(calls)
        completion.decisions = [
            DecisionRow(d.session_id, d.kind, f"{d.reason} ({cost})", d.event_at, d.settings_version, d.record_id)
            for d in completion.decisions
        ]

    # --- the three kinds of work -------------------------------------------------------------

    async def _perform(self, row: ClaimedRow) -> Completion:
        if row.kind == OutboxKind.PUBLISH:
            return Completion(output=[OutcomeEvent.from_payload(row.payload)])
        if row.kind == OutboxKind.RECORD:
            return await self._record(row)
        if row.kind == OutboxKind.ENDED_NOTE:
            return await self._ended_note(row)
        raise NoRecord(f"unknown outbox kind {row.kind!r}")

    async def _record(self, row: ClaimedRow) -> Completion:
        version = row.payload.get("settings_version")
        crm = self.crm.name
        # Read what is needed, then let the connection go: none is held across CRM calls.
        settings = await settings_of_row(self.reads, row.payload)
        context = await self._record_context(row, settings.append_to_open_record_in_leaf_queue)
        if context is None:
            raise NoRecord(f"session {row.session_id} is unknown")
        state = context.state
        completion = Completion(state=state)
        existing: ExistingRecord | None = None
        if context.newest is not None:
            existing = await self.crm.get_record(context.newest.record_id)
        target = choose_target(existing, settings, self.clock(), state.record_decided_at)
        made = await self._apply_target(row, state, settings, target, context.contact_id, completion)
        metrics.records.labels(crm, made.action).inc()
        if made.action == RecordAction.CREATED:
            completion.new_record = RecordRef(made.record_id, made.url)
        completion.session_record = made
        completion.decisions.append(
            DecisionRow(state.session_id, RECORD_DECISION[made.action],
                        f"{made.action} record {made.record_id}: {target.reason}", None, version, made.record_id)
        )
        completion.output.append(
            self._output(RECORD_EVENT[made.action], state.session_id, made.record_id, made.url, target.reason)
        )
        return completion

    async def _record_context(self, row: ClaimedRow, with_newest: bool) -> RecordContext | None:
        if isinstance(row.context, RecordContext):
            return row.context if with_newest else replace(row.context, newest=None)
        async with raw.connection(self.engine) as pg:
            return await records_repo.record_context(pg, self.crm.name, row.session_id, with_newest=with_newest,
                                                     account=self.account)

    async def _apply_target(
        self, row: ClaimedRow, state: SessionState, settings: RecordSettings, target: Target,
        known_user: str | None, completion: Completion,
    ) -> MadeRecord:
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
                tags=crm_tags(crm, state, settings, creating=True),
                medium=state.medium,
                queue_id=state.queue_id,
                idempotency_key=row.idempotency_key,
                end_user=end_user(state),
                session=activity(state, title, known_user),
                retrying_unknown_outcome=row.outcome_unknown,
            )
            ref = await self._create(new, completion)
            return MadeRecord(ref.record_id, ref.url, RecordAction.CREATED)
        assert target.record is not None
        existing = target.record
        reopened = target.action == "reopen"
        made = MadeRecord(existing.record_id, existing.url or "",
                          RecordAction.REOPENED if reopened else RecordAction.ATTACHED)
        if self.activities is not None:
            # The session is an activity of its own on the record; the reopen rides along.
            await self.activities.attach_session_activity(
                existing.record_id, activity(state, title, known_user), render_attach_note(state, reopened),
                reopen=reopened,
            )
            return made
        if reopened:
            await self.crm.reopen_record(existing.record_id)
        await self.crm.attach_session(
            existing.record_id,
            render_attach_note(state, reopened),
            crm_tags(crm, state, settings, creating=False),
        )
        return made

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
                ref = await self.crm.create_record(with_contact(new, known))
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
        context = row.context if isinstance(row.context, NoteContext) else None  # read with the claim
        if context is None:
            async with raw.connection(self.engine) as pg:
                context = await records_repo.note_context(pg, row.session_id)
        if context is None:
            raise NoRecord(f"session {row.session_id} is unknown")
        state, record_id, lines = context.state, context.record_id, context.transcript
        if record_id is None:
            record_row = context.record_row
            if record_row is None or record_row.status in (OutboxStatus.PARKED, OutboxStatus.DONE):
                why = f": {record_row.last_error}" if record_row and record_row.last_error else ""
                raise NoRecord(f"the session has no record to add the summary note to{why}")
            raise WaitForRecord("the session's record is not made yet")
        note = render_ended_note(state, lines)
        marker = note_marker(row.idempotency_key)
        body = f"{note}\n\n{marker}"
        write_note = getattr(self.crm, "write_note", None)
        if self.activities is not None:
            # The session's Task already names the Contact and the title: only the outcome is new.
            await self.activities.complete_session_activity(
                record_id, activity(state, "", None), note, key=row.idempotency_key,
                outcome_unknown=row.outcome_unknown,
            )
        elif write_note is not None:
            await write_note(NoteWrite(record_id, body, marker, row.idempotency_key, row.outcome_unknown))
        else:
            await self.crm.add_note(record_id, body)
        reason = "session ended: summary note added"
        return Completion(
            decisions=[DecisionRow(state.session_id, DecisionKind.ENDED_NOTE_ADDED,
                                   f"{reason} to record {record_id}", state.ended_at, None, record_id)],
            output=[self._output(OutcomeEventType.RECORD_UPDATED, state.session_id, record_id,
                                 context.record_url, reason)],
        )

    def _output(
        self, event_type: OutcomeEventType, session_id: str, record_id: str, url: str | None, reason: str
    ) -> OutcomeEvent:
        return OutcomeEvent(event_type, session_id, self.crm.name, record_id, url, reason, self.clock())

    # --- bookkeeping ---------------------------------------------------------------------------

    async def _failed(
        self, row: ClaimedRow, exc: CrmError | RowBlocked, calls: CallLog, *, outcome_unknown: bool = False
    ) -> OutboxStatus | None:
        crm = self.crm.name
        message = str(exc) or type(exc).__name__
        unknown = outcome_unknown or bool(getattr(exc, "outcome_unknown", False)) or wrote(calls)
        held = {"claim_id": row.claim_id}
        async with self.engine.begin() as conn:
            attempt = Attempt(row.id, row.session_id, row.attempts, calls.calls)
            await crm_attempts_repo.record_attempts(conn, crm, [attempt])
            if isinstance(exc, (CrmRateLimited, WaitForRecord)):
                # Being told to wait is not a failure: it does not use up an attempt.
                delay = exc.retry_after if isinstance(exc, CrmRateLimited) else 1.0
                if isinstance(exc, CrmRateLimited):
                    log.info("CRM asked to slow down; retrying in %.1f s", exc.retry_after)
                await outbox_repo.reschedule(conn, row.id, delay_seconds=delay, error=message, count_attempt=False,
                                             outcome_unknown=unknown, **held)
                return OutboxStatus.PENDING
            if exc.retryable and row.attempts < self.settings.outbox_max_attempts:
                delay = retry_delay(self.settings, row.attempts, calls)
                log.warning("attempt %d failed, retrying in %.1f s: %s", row.attempts, delay, message)
                await outbox_repo.reschedule(conn, row.id, delay_seconds=delay, error=message,
                                             count_attempt=True, outcome_unknown=unknown, **held)
                return OutboxStatus.PENDING
            reason = message if not exc.retryable else f"gave up after {row.attempts} attempts: {message}"
            if not await outbox_repo.park(conn, row.id, reason, **held):
                return None
            await decisions_repo.insert_decision(
                conn, DecisionRow(row.session_id, PARKED_DECISION[row.kind], f"parked, will not be retried: {reason}",
                                  None, row.payload.get("settings_version"))
            )
        metrics.outbox_parked.labels(crm, row.kind).inc()
        log.error("outbox row parked, will not be retried: %s", reason)
        return OutboxStatus.PARKED

