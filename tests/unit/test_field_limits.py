"""Titles and tags cut to each CRM's field limit with an ellipsis; {TIMESTAMP} always
RFC 3339 with a four-digit year (issue 9, item 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.adapters.crm.registry import CRMS, crm_tags
from app.domain import field_limits
from app.domain.field_limits import ELLIPSIS, FIELD_LIMITS, cut, limits_for
from app.domain.rendering import format_timestamp, render_title
from tests.unit.helpers import call, settings
from tests.unit.test_rendering import call_state, state_of


def test_cut_keeps_what_fits_and_ends_what_does_not_with_an_ellipsis():
    assert cut("short", 10) == "short"
    assert cut("exactly10!", 10) == "exactly10!"
    assert cut("eleven char", 10) == "eleven ch" + ELLIPSIS
    assert cut("word  and more", 7) == "word" + ELLIPSIS  # no dangling space before the ellipsis
    assert cut("anything", None) == "anything"


@pytest.mark.parametrize("crm", sorted(FIELD_LIMITS))
def test_a_title_from_a_100k_level_menu_path_fits_every_crm(crm):
    state = state_of(call("queued assigned", session_id="call-1", queue_path=[f"q{n}" for n in range(100_000)]))
    title = render_title("{CALL_TYPE}: {MENU_PATH}", state, max_chars=limits_for(crm).title)
    assert len(title) == limits_for(crm).title
    assert title.startswith("IVR call: q0 > q1 > q2") and title.endswith(ELLIPSIS)


def test_salesforce_case_subject_limit_is_255():
    assert limits_for("salesforce").title == 255 and limits_for("salesforce").tag is None


def test_tags_are_cut_to_the_crms_tag_limit(monkeypatch):
    monkeypatch.setitem(FIELD_LIMITS, "freshdesk", field_limits.FieldLimits(title=255, tag=8))
    both = settings(add_session_type_tags=True, add_platform_tag=True)
    tags = crm_tags("freshdesk", state_of(call("queued", session_id="c-1")), both, creating=True)
    assert tags == ["Voice I" + ELLIPSIS, "UJET"]


def test_every_tag_the_service_makes_fits_the_documented_limits():
    from app.domain.session_types import SESSION_TYPES

    for crm, form in ((spec.name, spec.tag_form) for spec in CRMS.values() if spec.tag_form is not None):
        limit = limits_for(crm).tag
        for kind in SESSION_TYPES.values():
            assert limit is None or len(form(kind.display_name)) <= limit, (crm, kind.display_name)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(1, 1, 1, 0, 0, 10, tzinfo=UTC), "0001-01-01T00:00:10Z"),
        (datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC), "0999-03-04T05:06:07Z"),
        (datetime(1, 1, 1, 7, 0, 10, tzinfo=timezone(timedelta(hours=5))), "0001-01-01T02:00:10Z"),
        # No UTC form (it would fall in year 0): its own offset is kept, still RFC 3339.
        (datetime(1, 1, 1, 0, 0, 10, tzinfo=timezone(timedelta(hours=5))), "0001-01-01T00:00:10+05:00"),
        (datetime(9999, 12, 31, 23, 0, 0, tzinfo=timezone(timedelta(hours=-5))), "9999-12-31T23:00:00-05:00"),
        (datetime(2026, 11, 23, 13, 0, 0, 999999, tzinfo=UTC), "2026-11-23T13:00:00Z"),
    ],
)
def test_timestamp_is_rfc3339_with_a_four_digit_year(moment, expected):
    assert format_timestamp(moment) == expected


def test_a_year_1_session_renders_its_timestamp_in_the_title():
    state = call_state(started_at=datetime(1, 1, 1, 0, 0, 10, tzinfo=UTC))
    assert render_title("{TIMESTAMP}", state) == "0001-01-01T00:00:10Z"
