"""Named tokens and roles over the API; who saved what; no-op saves; history pages."""

from __future__ import annotations

import pytest

from app.domain.record_settings import RecordSettings
from tests.integration.asgi_api import ADMIN, VIEWER, api_settings, asgi_client, build_runtime


@pytest.fixture
async def runtime(clean_db, database_url):
    return build_runtime(api_settings(database_url), clean_db)


async def test_a_viewer_reads_everything_and_changes_nothing(runtime):
    async with asgi_client(runtime, VIEWER) as viewer:
        for path in ("/api/settings", "/api/settings/history", "/api/records", "/api/sandbox/records"):
            assert (await viewer.get(path)).status_code == 200, path
        assert (await viewer.get("/api/sessions/never-seen")).status_code == 404
        refused = [
            await viewer.put("/api/settings", json={"add_platform_tag": True}),
            await viewer.post("/api/outbox/requeue-parked"),
            await viewer.post("/api/sandbox/records/1/status", json={"status": "solved"}),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403]
        assert "viewer" in refused[0].json()["detail"]
        assert (await viewer.get("/api/settings/history")).json() == []
    async with asgi_client(runtime, ADMIN) as admin:
        assert (await admin.put("/api/settings", json={"add_platform_tag": True})).status_code == 200
        assert (await admin.post("/api/outbox/requeue-parked")).json() == {"requeued": 0}


async def test_wrong_or_missing_token_is_401(runtime):
    for token in (None, "nope", ADMIN + "x"):
        async with asgi_client(runtime, token) as client:
            response = await client.get("/api/settings")
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_history_names_the_token_and_keeps_the_callers_note_sanitized(runtime):
    async with asgi_client(runtime, ADMIN) as admin:
        saved = await admin.put(
            "/api/settings", json={"add_platform_tag": True},
            headers={"X-Actor": "  ceo@victim.example\t(on behalf of) "},
        )
        assert saved.status_code == 200
        history = (await admin.get("/api/settings/history")).json()
    assert history[0]["actor"] == "ana"
    assert history[0]["note"] == "ceo@victim.example (on behalf of)"


async def test_an_overlong_actor_note_is_refused_and_nothing_saved(runtime):
    async with asgi_client(runtime, ADMIN) as admin:
        response = await admin.put("/api/settings", json={"add_platform_tag": True}, headers={"X-Actor": "x" * 60000})
        assert response.status_code == 422
        assert response.json()["detail"][0]["field"] == "X-Actor"
        assert (await admin.get("/api/settings/history")).json() == []


async def test_a_put_that_changes_nothing_saves_no_version(runtime):
    async with asgi_client(runtime, ADMIN) as admin:
        defaults = await admin.put("/api/settings", json=RecordSettings().model_dump())
        assert defaults.status_code == 200 and defaults.headers["X-Settings-Version"] == "0"
        first = await admin.put("/api/settings", json={"add_platform_tag": True})
        again = await admin.put("/api/settings", json={"add_platform_tag": True})
        assert first.headers["X-Settings-Version"] == again.headers["X-Settings-Version"] == "1"
        history = (await admin.get("/api/settings/history")).json()
    assert [h["version"] for h in history] == [1]


async def test_history_is_paginated_newest_first(runtime):
    async with asgi_client(runtime, ADMIN) as admin:
        for seconds in range(1, 6):
            response = await admin.put("/api/settings", json={"chat_short_abandon_seconds": seconds})
            assert response.status_code == 200
        first = await admin.get("/api/settings/history", params={"limit": 2})
        assert [h["version"] for h in first.json()] == [5, 4]
        assert 'rel="next"' in first.headers["Link"]
        second = await admin.get("/api/settings/history", params={"limit": 2, "before_version": 4})
        assert [h["version"] for h in second.json()] == [3, 2]
        last = await admin.get("/api/settings/history", params={"limit": 2, "before_version": 2})
        assert [h["version"] for h in last.json()] == [1]
        assert "Link" not in last.headers
        assert (await admin.get("/api/settings/history", params={"limit": 0})).status_code == 422
