"""The session trace's API view of the state: every field of the domain's SessionState,
written as the stored state document writes it."""

from __future__ import annotations

from dataclasses import asdict, fields

from app.domain.session import SessionState
from app.entrypoints.http.models import SessionStateView
from tests.unit.helpers import replay, script, settings


def test_the_view_names_every_field_of_the_state_in_order():
    assert list(SessionStateView.model_fields) == [f.name for f in fields(SessionState)]


def test_the_view_writes_the_state_as_its_stored_document():
    state, _ = replay(script("queued assigned connected eu ag ended", medium="chat"), settings())
    assert state.connected_at is not None and state.queue_path
    assert SessionStateView.model_validate(asdict(state)).model_dump(mode="json") == state.to_document()
