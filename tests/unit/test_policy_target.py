"""choose_target: create a record, attach to the end user's open one, or reopen a recently closed one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.policy import ExistingRecord, choose_target
from tests.unit.helpers import settings

NOW = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)


def open_record(status="open", can_reopen=True):
    return ExistingRecord("R-1", status, is_closed=False, closed_at=None, can_reopen=can_reopen)


def closed(days_ago, *, status="solved", can_reopen=True):
    closed_at = None if days_ago is None else NOW - timedelta(days=days_ago)
    return ExistingRecord("R-1", status, is_closed=True, closed_at=closed_at, can_reopen=can_reopen)


APPEND = {"append_to_open_record_in_leaf_queue": True}


def within(days):
    return {**APPEND, "append_to_closed_record_within_days": days}


TARGET_ROWS = [
    pytest.param(
        {}, open_record(), "create", ["appending to open records is off"], id="append off + open record -> create"
    ),
    pytest.param(
        within(30) | {"append_to_open_record_in_leaf_queue": False},
        closed(1),
        "create",
        ["off"],
        id="append off: the closed-record window alone does nothing",
    ),
    pytest.param(APPEND, None, "create", ["no earlier record"], id="append on + no earlier record -> create"),
    pytest.param(APPEND, open_record(), "attach", ["R-1", "still open"], id="append on + open record -> attach"),
    pytest.param(
        APPEND,
        open_record(status="pending"),
        "attach",
        ["status pending", "still open"],
        id="append on + any not-closed status (pending) -> attach",
    ),
    pytest.param(
        APPEND,
        open_record(status="new", can_reopen=False),
        "attach",
        ["still open"],
        id="open record is attached even where the CRM could not reopen it",
    ),
    pytest.param(
        APPEND,
        closed(1),
        "create",
        ["closed", "reopening closed records is off"],
        id="closed + within_days null -> create",
    ),
    pytest.param(
        within(7),
        closed(3),
        "reopen",
        ["closed 3.0 days before this session", "within 7"],
        id="closed 3 days ago, within 7 -> reopen",
    ),
    pytest.param(
        within(7), closed(7), "reopen", ["7.0 days before"], id="closed exactly N days ago -> reopen (no more than N)"
    ),
    pytest.param(
        within(7),
        closed(7.5),
        "create",
        ["7.5 days before", "more than the 7 allowed"],
        id="closed more than N days ago -> create",
    ),
    pytest.param(
        within(0), closed(0), "reopen", ["0.0 days before"], id="within 0 days: closed this instant -> reopen"
    ),
    pytest.param(
        within(0),
        closed(0.01),
        "create",
        ["more than the 0 allowed"],
        id="within 0 days: closed a moment ago -> create",
    ),
    pytest.param(
        within(7),
        closed(2, status="closed", can_reopen=False),
        "create",
        ["cannot reopen"],
        id="closed within N but the CRM cannot reopen it (Zendesk closed) -> create",
    ),
    pytest.param(within(7), closed(None), "create", ["no closing time"], id="closing time unknown -> create"),
]


@pytest.mark.parametrize(("overrides", "existing", "action", "phrases"), TARGET_ROWS)
def test_choose_target_table(overrides, existing, action, phrases):
    target = choose_target(existing, settings(**overrides), NOW)
    assert target.action == action
    for phrase in phrases:
        assert phrase in target.reason, target.reason
    if action == "create":
        assert target.record is None
    else:
        assert target.record is existing


def test_choose_target_is_pure_in_now():
    """The same record, asked about later, falls out of the window: only `now` moved."""
    record = closed(6)
    assert choose_target(record, settings(**within(7)), NOW).action == "reopen"
    assert choose_target(record, settings(**within(7)), NOW + timedelta(days=2)).action == "create"


SESSION_AT = NOW - timedelta(days=10)


@pytest.mark.parametrize(
    ("closed_at", "action"),
    [
        pytest.param(SESSION_AT - timedelta(days=2), "reopen",
                     id="closed 2 days before the session, decided 10 days later -> still within 3"),
        pytest.param(SESSION_AT - timedelta(days=4), "create", id="closed 4 days before the session -> outside 3"),
        pytest.param(SESSION_AT + timedelta(days=8), "reopen",
                     id="closed after the session (replayed events): 2 days before now -> within 3"),
        pytest.param(SESSION_AT + timedelta(days=5), "create",
                     id="closed after the session: 5 days before now -> outside 3"),
    ],
)
def test_the_window_is_measured_to_the_session_not_to_when_it_is_processed(closed_at, action):
    record = ExistingRecord("R-1", "solved", is_closed=True, closed_at=closed_at, can_reopen=True)
    assert choose_target(record, settings(**within(3)), NOW, SESSION_AT).action == action
