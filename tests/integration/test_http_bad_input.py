"""Bad input answers 422 naming the field and the reason, never 500 (issue 9, item 3):
each case the fuzzing run found, in-process over ASGI against the real database."""

from __future__ import annotations

import pytest

from tests.integration.asgi_api import api_settings, asgi_client, build_runtime


@pytest.fixture
async def runtime(clean_db, database_url):
    return build_runtime(api_settings(database_url), clean_db)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field", "reason"),
    [
        ("GET", "/api/records?limit=-647", {}, "limit", "greater than or equal to 1"),
        ("GET", "/api/records?limit=1000000", {}, "limit", "less than or equal to 1000"),
        ("GET", "/api/sandbox/records?limit=0", {}, "limit", "greater than or equal to 1"),
        ("GET", "/api/sandbox/records/9223372036854775808", {}, "record_id", "less than or equal to"),
        ("GET", "/api/sandbox/records/0", {}, "record_id", "greater than or equal to 1"),
        ("GET", "/api/sessions/%00", {}, "session_id", "should match pattern"),
        ("GET", "/api/sandbox/records?session_id=%00", {}, "session_id", "should match pattern"),
        ("POST", "/api/outbox/requeue-parked?session_id=%00", {}, "session_id", "should match pattern"),
        ("GET", "/api/settings/history?before_version=99999999999", {}, "before_version", "less than or equal"),
        ("PUT", "/api/settings", {"json": {"record_title_template": "{CALL_TYPE}\u0000"}},
         "record_title_template", "U+0000"),
        ("PUT", "/api/settings", {"content": b'{"record_title_template": "\\ud800"}'}, "(body)", "surrogate"),
        ("POST", "/api/sandbox/records/1/status",
         {"json": {"status": "solved", "closed_at": "0001-01-01T00:00:10+05:00"}}, "closed_at", "out of range"),
        ("POST", "/api/sandbox/records/1/status", {"json": {"status": "reopened"}}, "status", "'solved'"),
        ("POST", "/api/sandbox/records/1/status", {"json": {"status": "solved", "closed_at": "yesterday"}},
         "closed_at", "datetime"),
        ("POST", "/api/sandbox/records/1/status",
         {"content": b"{nope", "headers": {"Content-Type": "application/json"}}, "(body)", "invalid JSON"),
        ("POST", "/api/sandbox/records/1/status",
         {"content": b'{"status": "\xff"}', "headers": {"Content-Type": "application/json"}}, "(body)", "UTF-8"),
    ],
)
async def test_bad_input_is_422_with_field_and_reason(runtime, method, path, kwargs, field, reason):
    async with asgi_client(runtime) as client:
        response = await client.request(method, path, **kwargs)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["field"] == field and reason in e["reason"] for e in errors), errors


async def test_nothing_is_saved_for_a_refused_title(runtime):
    async with asgi_client(runtime) as client:
        await client.put("/api/settings", json={"record_title_template": "a\u0000b"})
        assert (await client.get("/api/settings/history")).json() == []


async def test_a_body_over_the_cap_is_413(clean_db, database_url):
    runtime = build_runtime(api_settings(database_url, http_max_body_bytes=4096), clean_db)
    big = {"record_title_template": "{CALL_ID}", "padding": "x" * 5000}
    async with asgi_client(runtime) as client:
        declared = await client.put("/api/settings", json=big)

        async def chunks():
            for _ in range(5):
                yield b" " * 1000  # streamed without a Content-Length

        streamed = await client.put("/api/settings", content=chunks(), headers={"Content-Type": "application/json"})
        # A body FastAPI parses itself (a typed parameter) is cut off the same way.
        parsed = await client.post(
            "/api/sandbox/records/1/status", content=chunks(), headers={"Content-Type": "application/json"}
        )
        history = (await client.get("/api/settings/history")).json()
    assert declared.status_code == 413 and "4096" in declared.json()["detail"]
    assert streamed.status_code == 413 and parsed.status_code == 413
    assert history == []


async def test_an_unexpected_error_is_a_json_500_and_one_log_line(runtime, caplog, monkeypatch):
    from app.service import admin

    async def broken(engine, limit):
        raise RuntimeError("a bug")

    monkeypatch.setattr(admin, "recent_records", broken)
    async with asgi_client(runtime) as client:
        response = await client.get("/api/records")
    assert response.status_code == 500 and response.json() == {"detail": "internal error"}
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == ["GET /api/records failed: RuntimeError"]
    assert all(r.exc_info is None for r in errors)
