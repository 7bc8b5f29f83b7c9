"""The oracle: what the pure policy says each session should get, compared with what the
CRM, the output topic and the dead-letter topic show after the faults.

It is not a second implementation of the rules: it folds each session's published events
(each event id once, in publication order, as the consumer does) through the service's
own state machine and `decide`, and asks only two things of the result: is a record due
(or skipped, or still waiting), and is an end-of-session note due.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.domain.events import parse_event
from app.domain.policy import decide
from app.domain.record_settings import RecordSettings
from app.domain.session import SessionState, apply_event


@dataclass(frozen=True, slots=True)
class Expectation:
    record: str  # due | skipped | pending
    note_due: bool


def expected_outcome(documents: Iterable[dict[str, Any]], settings: RecordSettings) -> Expectation:
    state: SessionState | None = None
    seen: set[str] = set()
    for document in documents:
        if document["event_id"] in seen:
            continue
        seen.add(document["event_id"])
        state = decide(apply_event(state, parse_event(orjson.dumps(document))), settings).state
    assert state is not None
    return Expectation(state.record, state.ended_note_due)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A record the CRM holds for a session (found by its external id), with its notes."""

    record_id: str
    notes: tuple[str, ...]


@dataclass
class Observed:
    records: dict[str, list[SessionRecord]]  # session id -> its records in the CRM
    outputs: list[dict[str, Any]]  # the output topic's events
    dead_letters: list[tuple[bytes | None, bytes]]  # (key, value) of the dead-letter topic
    applied_event_ids: set[str]  # the service's processed_events
    parked_rows: int = 0
    replica_exits: int = 0  # replicas that ended without being killed


@dataclass
class Report:
    sessions: int
    due: int
    skipped: int
    waiting: int
    notes_due: int
    columns: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(self.columns.values())

    def count(self, column: str, example: str | None = None) -> None:
        self.columns[column] = self.columns.get(column, 0) + 1
        if example is not None and len(self.examples.setdefault(column, [])) < 5:
            self.examples[column].append(example)


COLUMNS = (
    "records missing",
    "records made twice",
    "records not due",
    "notes missing",
    "notes written twice",
    "valid events dead-lettered",
    "invalid events not dead-lettered",
    "valid events never applied",
    "duplicate output events",
    "output events missing",
    "outbox rows parked",
    "replicas exited on their own",
)


def is_ended_note(session_id: str, note: str) -> bool:
    return note.startswith(f"Session {session_id} ended.")


def judge(sessions: Mapping[str, list[dict[str, Any]]], invalid: set[tuple[bytes | None, bytes]],
          settings: RecordSettings, observed: Observed) -> Report:
    expectations = {sid: expected_outcome(docs, settings) for sid, docs in sessions.items()}
    kinds = Counter(e.record for e in expectations.values())
    report = Report(len(sessions), kinds["due"], kinds["skipped"], kinds["pending"],
                    sum(e.note_due for e in expectations.values()))
    report.columns = dict.fromkeys(COLUMNS, 0)
    _judge_records(expectations, observed, report)
    _judge_dead_letters(sessions, invalid, observed, report)
    _judge_outputs(expectations, observed, report)
    if observed.parked_rows:
        report.columns["outbox rows parked"] = observed.parked_rows
    if observed.replica_exits:
        report.columns["replicas exited on their own"] = observed.replica_exits
    return report


def _judge_records(expectations: Mapping[str, Expectation], observed: Observed, report: Report) -> None:
    for sid, expectation in expectations.items():
        records = observed.records.get(sid, [])
        if expectation.record == "due":
            if not records:
                report.count("records missing", sid)
            elif len(records) > 1:
                report.count("records made twice", f"{sid}: {[r.record_id for r in records]}")
        elif records:
            report.count("records not due", f"{sid} ({expectation.record}): {[r.record_id for r in records]}")
        notes = sum(is_ended_note(sid, note) for record in records for note in record.notes)
        if expectation.note_due and notes == 0:
            report.count("notes missing", sid)
        elif notes > 1 or (notes and not expectation.note_due):
            report.count("notes written twice", f"{sid}: {notes} end-of-session notes")


def _judge_dead_letters(sessions: Mapping[str, list[dict[str, Any]]], invalid: set[tuple[bytes | None, bytes]],
                        observed: Observed, report: Report) -> None:
    valid_ids = {doc["event_id"] for docs in sessions.values() for doc in docs}
    dead_valid: set[str] = set()
    for key, value in observed.dead_letters:
        if (key, value) in invalid:
            continue
        try:
            event_id = orjson.loads(value).get("event_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if event_id in valid_ids and event_id not in dead_valid:
            dead_valid.add(event_id)
            report.count("valid events dead-lettered", event_id)
    lettered = set(observed.dead_letters)
    for _key, value in sorted(invalid - lettered, key=lambda pair: pair[1]):
        report.count("invalid events not dead-lettered", value[:60].decode(errors="replace"))
    for event_id in sorted(valid_ids - observed.applied_event_ids - dead_valid):
        report.count("valid events never applied", event_id)


def _judge_outputs(expectations: Mapping[str, Expectation], observed: Observed, report: Report) -> None:
    per_record: Counter[tuple[str, str]] = Counter()
    created_for: set[str] = set()
    updated_for: set[str] = set()
    skipped_for: Counter[str] = Counter()
    for event in observed.outputs:
        kind, sid = event.get("event_type"), event.get("session_id")
        if kind in ("record.created", "record.updated"):
            per_record[(kind, str(event.get("record_id")))] += 1
            (created_for if kind == "record.created" else updated_for).add(sid)
        elif kind == "record.skipped":
            skipped_for[sid] += 1
    for (kind, record_id), times in per_record.items():
        if times > 1:
            report.columns["duplicate output events"] += times - 1
            report.examples.setdefault("duplicate output events", []).append(f"{kind} {record_id} x{times}")
    for sid, times in skipped_for.items():
        if times > 1:
            report.columns["duplicate output events"] += times - 1
            report.examples.setdefault("duplicate output events", []).append(f"record.skipped {sid} x{times}")
    for sid, expectation in expectations.items():
        if expectation.record == "due" and sid not in created_for:
            report.count("output events missing", f"record.created {sid}")
        if expectation.record == "skipped" and sid not in skipped_for:
            report.count("output events missing", f"record.skipped {sid}")
        if expectation.note_due and sid not in updated_for:
            report.count("output events missing", f"record.updated {sid}")


def render(report: Report, *, seed: int, crm: str, settle_seconds: float | None, finished: bool) -> str:
    lines = [
        f"chaos result ({crm}, seed {seed}): {report.sessions} sessions; the policy says "
        f"{report.due} records due, {report.skipped} skipped, {report.waiting} still waiting; "
        f"{report.notes_due} end-of-session notes due",
    ]
    width = max(len(c) for c in report.columns) + 2
    for column, value in report.columns.items():
        lines.append(f"  {column:<{width}} {value}")
        for example in report.examples.get(column, [])[:5]:
            lines.append(f"  {'':<{width}}   e.g. {example}")
    settled = f"{settle_seconds:.1f} s" if settle_seconds is not None else "n/a"
    lines.append(f"  {'done after last fault':<{width}} {settled}{'' if finished else ' (NOT finished: timed out)'}")
    verdict = "PASS" if report.passed and finished else "FAIL"
    lines.append(f"verdict: {verdict} (replay with --seed {seed})")
    return "\n".join(lines)
