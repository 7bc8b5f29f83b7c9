"""How a session is logged on its record (SALESFORCE_SESSION_LOG).

`task` (default): every session, the one that made the record and each one appended to
it, is a Task on the record: WhatId the record, WhoId the Contact, Subject the rendered
title, TaskSubtype Call (calls) or Task (chats), CallType the call's direction. When the
session ends, the same Task becomes Completed with the end-of-session note in
Description. The Task carries the session id in the external-id field and is written
by upsert on it, so a retry updates the Task the first attempt made.

`case_comment` (Cases only): private CaseComments, as before. CaseComment has no
external id; an end-of-session note carries a marker (its outbox key) and is looked up
by it before a retry whose first attempt's outcome is unknown.
"""

from __future__ import annotations

from typing import Any

from app.adapters.crm.base import SessionActivity
from app.adapters.crm.salesforce.objects import DESCRIPTION_MAX, SUBJECT_MAX, quoted
from app.domain.field_limits import cut

# CaseComment.CommentBody holds at most 4,000 bytes.
COMMENT_MAX_BYTES = 4000

# Fields Salesforce accepts on a Task's create only.
TASK_CREATE_ONLY = frozenset({"TaskSubtype"})

# Calls the agent places (to the end user) rather than answers.
OUTBOUND_CALL_TYPES = frozenset({
    "voice_outbound", "voice_outbound_api", "voice_campaign",
    "voice_callback_web", "voice_scheduled_app", "voice_scheduled_web",
})
COMPLETED = "Completed"


def call_type(session: SessionActivity) -> str | None:
    """Task.CallType: Inbound or Outbound for calls, none for chats."""
    if session.medium != "call":
        return None
    return "Outbound" if session.session_type in OUTBOUND_CALL_TYPES else "Inbound"


def task_path(external_id_field: str, session_id: str) -> str:
    return f"sobjects/Task/{quoted(external_id_field)}/{quoted(session_id)}"


def task_body(record_ref: str, contact_ref: str | None, session: SessionActivity, note: str) -> dict[str, Any]:
    """A session's Task as first written (TaskSubtype is create-only)."""
    body: dict[str, Any] = {
        "WhatId": record_ref,
        "Subject": cut(session.title, SUBJECT_MAX),
        "TaskSubtype": "Call" if session.medium == "call" else "Task",
        "Description": note[:DESCRIPTION_MAX],
    }
    if contact_ref:
        body["WhoId"] = contact_ref
    direction = call_type(session)
    if direction:
        body["CallType"] = direction
    if session.started_at is not None:
        body["ActivityDate"] = session.started_at.date().isoformat()
    if session.over:
        # An abandoned session's record (or one made late) must not leave an open Task in
        # agents' lists; the end-of-session note, if one comes, fills in the rest.
        body["Status"] = COMPLETED
    return body


def completed_task_body(record_id: str, session: SessionActivity, note: str) -> dict[str, Any]:
    """The Task once the session ended. No create-only field, so it can update the Task
    made with the record (or make it, for a record made before Tasks were logged)."""
    body: dict[str, Any] = {"WhatId": record_id, "Status": COMPLETED, "Description": truncate(note, DESCRIPTION_MAX)}
    if session.title:
        body["Subject"] = cut(session.title, SUBJECT_MAX)
    if session.contact_id:
        body["WhoId"] = session.contact_id
    direction = call_type(session)
    if direction:
        body["CallType"] = direction
        if session.duration_seconds is not None:
            body["CallDurationInSeconds"] = int(round(session.duration_seconds))
        if session.disposition:
            body["CallDisposition"] = session.disposition[:255]
    return body


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    tail = f"\n[… {len(text) - limit + 60} more characters not shown]"
    return text[: limit - len(tail)] + tail


def without(body: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in fields}


# --- CaseComment ----------------------------------------------------------------------------


def split_comment(note: str, limit: int = COMMENT_MAX_BYTES) -> list[str]:
    """The note as CaseComment bodies of at most `limit` UTF-8 bytes each, split at line
    ends where possible (a chat transcript easily exceeds one comment)."""
    chunks: list[str] = []
    current = ""
    for line in note.splitlines(keepends=True):
        while len(line.encode()) > limit:  # a single overlong line: cut it by bytes
            head = line.encode()[:limit].decode(errors="ignore")
            if current:
                chunks.append(current)
                current = ""
            chunks.append(head)
            line = line[len(head):]
        if len((current + line).encode()) > limit:
            chunks.append(current)
            current = ""
        current += line
    if current or not chunks:
        chunks.append(current)
    return chunks


def marked_comments(note: str, marker: str) -> list[str]:
    """The note's CaseComment bodies, each ending with `[marker i/n]` so a retry can tell
    which parts Salesforce already has."""
    room = COMMENT_MAX_BYTES - len(f"\n[{marker} 999/999]".encode())
    parts = split_comment(note, room)
    return [f"{part}\n[{marker} {i}/{len(parts)}]" for i, part in enumerate(parts, 1)]
