"""The admin console over HTTP (in-process ASGI, real database): sign-in, the session
cookie, CSRF, roles, the panel's previews and validation, save, history and restore, the
session explorer and the operations view. The browser tests (tests/browser) drive the same
pages in Chromium."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from app.adapters.db import settings_repo
from app.entrypoints.http import create_app
from tests.integration.asgi_api import ADMIN, VIEWER, api_settings, build_runtime

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def browser_like(runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
        yield client


async def sign_in_form(client: httpx.AsyncClient, token: str, next_path: str = "/admin/settings") -> dict[str, str]:
    """The sign-in form as the browser posts it: with the token of the form's login cookie."""
    page = await client.get("/admin/sign-in")
    login = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return {"token": token, "next": next_path, "csrf_token": login}


async def signed_in(client: httpx.AsyncClient, token: str) -> str:
    response = await client.post("/admin/sign-in", data=await sign_in_form(client, token))
    assert response.status_code == 303, response.text
    page = await client.get("/admin/settings")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def panel_form(csrf: str, **changes) -> dict[str, str]:
    form = {"csrf_token": csrf, "record_title_template": "{CALL_TYPE} {CALL_ID}", "record_title_locale": "en",
            "create_records_for_abandoned_chats": "off", "abandoned_chat_min_messages": "1",
            "chat_short_abandon_seconds": "10"}
    form.update(changes)
    return form


@pytest.fixture
async def runtime(clean_db, database_url):
    return build_runtime(api_settings(database_url), clean_db)


async def test_pages_need_a_sign_in_and_the_cookie_is_signed_httponly_strict(runtime):
    async with browser_like(runtime) as client:
        first = await client.get("/admin/settings")
        assert first.status_code == 303 and first.headers["location"].startswith("/admin/sign-in")
        page = await client.get("/admin/sign-in")
        assert 'type="password"' in page.text and ">Admin token</label>" in page.text
        wrong = await client.post("/admin/sign-in", data=await sign_in_form(client, "nope"))
        assert wrong.status_code == 401
        right = await client.post("/admin/sign-in", data=await sign_in_form(client, ADMIN, "/admin/operations"))
        assert right.headers["location"] == "/admin/operations"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
        assert ADMIN not in cookie
        assert (await client.get("/admin/operations")).status_code == 200
        # a tampered cookie is refused
        client.cookies.set("crm_console", client.cookies.get("crm_console") + "x", path="/admin")
        assert (await client.get("/admin/operations")).status_code == 303


async def test_an_open_redirect_is_refused(runtime):
    async with browser_like(runtime) as client:
        response = await client.post("/admin/sign-in",
                                     data=await sign_in_form(client, ADMIN, "//evil.example/admin"))
        assert response.headers["location"] == "/admin/settings"


async def test_a_cross_site_sign_in_without_the_forms_token_is_refused(runtime):
    """Login CSRF: another site's form can post a valid token, but not the sign-in form's own
    token, and SameSite=Strict keeps the login cookie off its post."""
    async with browser_like(runtime) as client:
        cross_site = await client.post("/admin/sign-in", data={"token": ADMIN, "next": "/admin/settings"})
        assert cross_site.status_code == 403 and "crm_console" not in client.cookies
        form = await sign_in_form(client, ADMIN)  # the browser has our login cookie now
        forged = await client.post("/admin/sign-in", data={**form, "csrf_token": "f" * 64})
        assert forged.status_code == 403 and "crm_console" not in client.cookies
        nonce = client.cookies.get("crm_console_login")
        client.cookies.delete("crm_console_login")  # a cross-site post carries no Strict cookie
        assert (await client.post("/admin/sign-in", data=form)).status_code == 403
        client.cookies.set("crm_console_login", nonce, path="/admin")
        signed = await client.post("/admin/sign-in", data=form)
        assert signed.status_code == 303 and client.cookies.get("crm_console")


async def test_every_change_needs_the_csrf_token(runtime, clean_db):
    async with browser_like(runtime) as client:
        csrf = await signed_in(client, ADMIN)
        form = panel_form("forged", add_platform_tag="on")
        assert (await client.post("/admin/settings/review", data=form)).status_code == 403
        assert (await client.post("/admin/operations/parked/1/retry", data={})).status_code == 403
        assert (await client.post("/admin/settings/history/1/restore", data={"csrf_token": "x"})).status_code == 403
        review = await client.post("/admin/settings/review", data=panel_form(csrf, add_platform_tag="on"))
        assert review.status_code == 200 and "add_platform_tag" in review.text
        document = re.search(r'name="document" value="([^"]+)"', review.text).group(1)
        forged = await client.post("/admin/settings/save", data={"document": document.replace("&#34;", '"'),
                                                                  "base_version": "0"})
        assert forged.status_code == 403
    async with clean_db.connect() as conn:
        assert (await settings_repo.in_force(conn)).version is None  # nothing was saved


async def test_save_records_the_token_name_and_restore_makes_a_new_equal_version(runtime, clean_db):
    async with browser_like(runtime) as client:
        csrf = await signed_in(client, ADMIN)
        review = await client.post("/admin/settings/review", data=panel_form(
            csrf, add_platform_tag="on", record_title_locale="pt-BR"))
        assert "Tag records with the platform tag UJET" in review.text
        document = re.search(r'name="document" value="([^"]+)"', review.text).group(1).replace("&#34;", '"')
        saved = await client.post("/admin/settings/save",
                                  data={"csrf_token": csrf, "document": document, "base_version": "0"})
        assert saved.headers["location"] == "/admin/settings/history?saved=1"
        second = await client.post("/admin/settings/review", data=panel_form(csrf))
        document = re.search(r'name="document" value="([^"]+)"', second.text).group(1).replace("&#34;", '"')
        await client.post("/admin/settings/save", data={"csrf_token": csrf, "document": document, "base_version": "1"})
        history = await client.get("/admin/settings/history")
        assert "Version 2" in history.text and "by ana" in history.text
        version_2 = history.text[history.text.index('data-testid="version-2"'):history.text.index('id="version-1"')]
        assert "<td>on</td><td>off</td>" in version_2 and "<td>pt-BR</td><td>en</td>" in version_2  # before, after
        restore = await client.post("/admin/settings/history/1/restore", data={"csrf_token": csrf})
        assert "Restore version 1" in restore.text
        document = re.search(r'name="document" value="([^"]+)"', restore.text).group(1).replace("&#34;", '"')
        await client.post("/admin/settings/save", data={"csrf_token": csrf, "document": document, "base_version": "2"})
    async with clean_db.connect() as conn:
        versions = await settings_repo.history(conn, limit=5)
    assert [v.version for v in versions] == [3, 2, 1]
    assert versions[0].document == versions[2].document and versions[0].actor == "ana"
    assert versions[0].document["record_title_locale"] == "pt-BR"


async def test_a_viewer_sees_everything_and_changes_nothing(runtime):
    async with browser_like(runtime) as client:
        csrf = await signed_in(client, VIEWER)
        panel = await client.get("/admin/settings")
        assert "viewer token" in panel.text and "Review changes and save" not in panel.text
        for path in ("/admin/settings/history", "/admin/sessions", "/admin/operations"):
            assert (await client.get(path)).status_code == 200, path
        refused = await client.post("/admin/settings/review", data=panel_form(csrf, add_platform_tag="on"))
        assert refused.status_code == 403 and "viewer role" in refused.text
        assert (await client.post("/admin/operations/parked/1/retry", data={"csrf_token": csrf})).status_code == 403


async def test_validation_errors_appear_beside_their_field_in_the_apis_words(runtime):
    async with browser_like(runtime) as client:
        csrf = await signed_in(client, ADMIN)
        response = await client.post("/admin/settings/review", data=panel_form(
            csrf, record_title_template="{CALL_TYPE} {AGENT}", chat_short_abandon_seconds="-1"))
        assert response.status_code == 422
        api = "unknown variable {AGENT}; a title may use only {CALL_TYPE}, {CALL_ID}, {MENU_PATH}, " \
              "{PHONE_NUMBER}, {LANGUAGE}, {TIMESTAMP}"
        assert re.search(r'id="record_title_template-error"[^>]*>' + re.escape(api), response.text)
        assert re.search(r'id="chat_short_abandon_seconds-error"[^>]*>Input should be greater than or equal to 0',
                         response.text)


async def test_previews_mark_an_unknown_variable_and_show_the_crm_tag_form(runtime):
    async with browser_like(runtime) as client:
        csrf = await signed_in(client, ADMIN)
        preview = await client.post("/admin/settings/preview", data=panel_form(
            csrf, record_title_template="{CALL_TYPE} {AGENT}", record_title_locale="pt-BR",
            add_session_type_tags="on", add_platform_tag="on"))
        assert '<mark class="unknown"' in preview.text and "{AGENT}</mark>" in preview.text
        assert "unknown variable {AGENT}" in preview.text
        assert "Chamada de URA" in preview.text  # the example session is an IVR call
        assert "Voice Inbound (IVR)" in preview.text and "UJET" in preview.text  # sandbox: display names


async def test_portuguese_from_accept_language_and_the_switch(runtime):
    async with browser_like(runtime) as client:
        page = await client.get("/admin/sign-in", headers={"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.5"})
        assert 'lang="pt-BR"' in page.text and "Entrar" in page.text
        switched = await client.get("/admin/language?lang=en&next=/admin/sign-in")
        assert switched.status_code == 303
        page = await client.get("/admin/sign-in", headers={"Accept-Language": "pt-BR"})
        assert 'lang="en"' in page.text and "Sign in" in page.text


async def test_the_panel_shows_the_salesforce_object_and_its_rule_through_the_service(clean_db, database_url):
    from markupsafe import escape

    from app.adapters.crm.factory import build_crm_adapter
    from app.entrypoints.http import Runtime
    from app.service.crm_setup import crm_setup

    settings = api_settings(database_url, crm_provider="salesforce", salesforce_client_id="client-id",
                            salesforce_client_secret="client-secret", salesforce_record_object="Opportunity")
    expected = crm_setup(settings)
    runtime = Runtime(settings, clean_db, build_crm_adapter(settings, engine=clean_db))
    async with browser_like(runtime) as client:
        await signed_in(client, ADMIN)
        page = (await client.get("/admin/settings")).text
        assert ">Salesforce object of each record</dt>" in page
        assert '<dd data-testid="crm-record-object">Opportunity</dd>' in page
        rule = str(escape(expected.open_closed_rule))  # the page escapes its quotes
        assert "IsClosed" in rule and rule in page and str(escape(expected.session_log)) in page
        assert "Salesforce has no tags" in page
        client.cookies.set("lang", "pt_BR", path="/admin")
        portuguese = (await client.get("/admin/settings")).text
        assert ">Objeto do Salesforce de cada registro</dt>" in portuguese and rule in portuguese


async def test_the_sandbox_panel_has_no_salesforce_block(runtime):
    async with browser_like(runtime) as client:
        await signed_in(client, ADMIN)
        page = (await client.get("/admin/settings")).text
        assert 'data-testid="crm-setup"' not in page and "Salesforce object" not in page
        assert 'data-testid="tags-preview"' in page


async def test_a_sessions_timeline_lists_every_event_with_its_time(runtime, clean_db):
    from app.adapters.db import raw
    from app.service.consume import apply_batch
    from tests.factories import event_doc, header, to_event

    session = header("chat-timeline", medium="chat")
    documents = [event_doc(session, "queued", 0), event_doc(session, "message", 3),
                 event_doc(session, "assigned", 10), event_doc(session, "message", 15),
                 event_doc(session, "message", 20, sender="agent"), event_doc(session, "assigned", 40),
                 event_doc(session, "ended", 90)]
    async with raw.transaction(clean_db) as pg:
        await apply_batch(pg, [to_event(d) for d in documents], "sandbox")
    async with browser_like(runtime) as client:
        await signed_in(client, VIEWER)
        page = (await client.get("/admin/sessions/chat-timeline")).text
    timeline = page[page.index('data-testid="timeline"'):]
    timeline = timeline[:timeline.index("</ol>")]
    kinds = re.findall(r"<strong>(\w+)</strong>", timeline)
    assert kinds == ["queued", "message", "assigned", "message", "message", "assigned", "ended"]
    times = re.findall(r'<time datetime="([^"]+)"', timeline)
    assert times == [to_event(d).occurred_at.isoformat() for d in documents]  # each event's own time
    assert "end_user" in timeline and "agent" in timeline


async def test_the_operations_view_shows_every_replica_adds_them_up_and_marks_the_stale(runtime, clean_db):
    from sqlalchemy import text

    from app.adapters.db import replicas_repo
    from app.service.replicas import metric_samples, replica_id

    own_lag = metric_samples("crm_records_consumer_lag_messages", "partition")  # this process's, if any
    own_schema = int(metric_samples("crm_records_events_dead_lettered_total", "reason").get("schema", 0))
    async with clean_db.begin() as conn:
        await replicas_repo.beat(conn, "replica-b", {"1": 7.0}, {"schema": 2.0},
                                 replicas_repo.ReplicaCrmHealth("zendesk", ok=False, detail="401 from the CRM"))
        await replicas_repo.beat(conn, "replica-c", {"2": 99.0}, {"schema": 1.0},
                                 replicas_repo.ReplicaCrmHealth("zendesk", ok=True, detail=""))
        await conn.execute(text("UPDATE replica_heartbeats SET seen_at = now() - interval '5 minutes' "
                                "WHERE replica_id = 'replica-c'"))
    async with browser_like(runtime) as client:
        await signed_in(client, VIEWER)
        page = (await client.get("/admin/operations")).text
    rows = re.findall(r'<tr data-testid="replica"( class="stale")?>\s*<td>([^<]+)', page)
    assert sorted((name.strip(), bool(stale)) for stale, name in rows) == sorted(
        [(replica_id(), False), ("replica-b", False), ("replica-c", True)])
    assert "401 from the CRM" in page  # another replica's CRM health
    lag = dict(re.findall(r"<tr><td>(\w+)</td><td>([\d,.]+)</td></tr>",
                          page[page.index('data-testid="consumer-lag"'):page.index('id="dlq-title"')]))
    assert lag["1"] == str(int(7 + own_lag.get("1", 0)))
    assert int(lag.get("2", "0")) == int(own_lag.get("2", 0))  # the stale replica's partition is not counted
    dead = page[page.index('data-testid="dead-letters"'):]
    assert re.search(rf"<td>schema</td><td>{3 + own_schema}</td>", dead)  # 2 + 1 (+ ours): what each counted


async def test_a_long_timeline_says_it_shows_the_first_events(runtime, clean_db, monkeypatch):
    from app.adapters.db import raw
    from app.service import operations
    from app.service.consume import apply_batch
    from tests.factories import event_doc, header, to_event

    monkeypatch.setattr(operations, "TIMELINE_LIMIT", 3)
    session = header("chat-long", medium="chat")
    documents = [event_doc(session, "queued", 0)] + [event_doc(session, "message", n) for n in range(1, 6)]
    async with raw.transaction(clean_db) as pg:
        await apply_batch(pg, [to_event(d) for d in documents], "sandbox")
    async with browser_like(runtime) as client:
        await signed_in(client, VIEWER)
        page = (await client.get("/admin/sessions/chat-long")).text
    timeline = page[page.index('id="timeline-title"'):page.index("</ol>")]
    assert "The first 3 events, in the order they occurred." in timeline
    assert timeline.count("<li>") == 3
