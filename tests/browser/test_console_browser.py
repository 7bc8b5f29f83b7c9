"""The admin console in a real browser: Debian's Chromium driven by Playwright, against the
service running in-process (real broker, real PostgreSQL, sandbox CRM).

Skipped, saying so, when Chromium is not installed; REQUIRE_BROWSER=1 (set by .ci/run) makes
a missing browser a failure. CONSOLE_SCREENSHOTS=DIR keeps the README's screenshots there
(`make screenshots` writes docs/console/)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from app.adapters.db import outbox_repo, settings_repo
from app.adapters.db.outbox_repo import NewOutboxRow
from app.adapters.db.schema import metadata
from tests.factories import event_doc, header
from tests.helpers import eventually, new_topics, run_in_process, service_settings
from tests.integration.kafka_helpers import publish

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
ADMIN, VIEWER = "ana-console-token-0123456789", "vic-console-token-0123456789"
SCREENSHOTS = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-shots-"))

if not Path(CHROMIUM).exists():
    reason = (f"browser tests skipped: no Chromium at {CHROMIUM} (apt-get install chromium); "
              "REQUIRE_BROWSER=1 makes this a failure")
    if os.environ.get("REQUIRE_BROWSER") == "1":
        raise RuntimeError(reason.replace("skipped", "required"))
    pytest.skip(reason, allow_module_level=True)

from axe_playwright_python.async_playwright import Axe  # noqa: E402
from playwright.async_api import async_playwright, expect  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="session")


def sessions() -> list[dict]:
    """An answered call, a call nobody answered, a chat with a record, a short abandoned chat,
    and a call still waiting in the queue."""
    answered = header("call-1001", end_user_id="eu-maria")
    unanswered = header("call-1002", end_user_id="eu-joao", session_type="voice_inbound_app")
    chat = header("chat-2001", medium="chat", end_user_id="eu-ana")
    abandoned = header("chat-2002", medium="chat", end_user_id="eu-rui")
    waiting = header("call-3003", end_user_id="eu-lia")
    return [
        event_doc(answered, "queued", 0), event_doc(answered, "assigned", 5), event_doc(answered, "connected", 8),
        event_doc(answered, "ended", 120, summary={"duration_seconds": 112, "disposition": "resolved"}),
        event_doc(unanswered, "queued", 0), event_doc(unanswered, "assigned", 5), event_doc(unanswered, "ended", 40),
        event_doc(chat, "queued", 0), event_doc(chat, "message", 2), event_doc(chat, "assigned", 10),
        event_doc(chat, "message", 20), event_doc(chat, "message", 30, sender="agent"),
        event_doc(abandoned, "queued", 0), event_doc(abandoned, "message", 1), event_doc(abandoned, "abandoned", 4),
        event_doc(waiting, "queued", 0),
    ]


@pytest.fixture(scope="module")
async def console_service(engine, database_url, kafka_bootstrap):
    names = ", ".join(table.name for table in metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    topics = await new_topics(kafka_bootstrap)
    settings = service_settings(database_url, kafka_bootstrap, topics, admin_api_token=None,
                                admin_api_tokens=f"ana:{ADMIN}:admin,vic:{VIEWER}:viewer")
    async with run_in_process(settings, wait_ready=True) as service:
        await publish(kafka_bootstrap, topics.events, sessions())

        async def settled():
            async with engine.connect() as conn:
                rows = (await conn.execute(text(
                    "SELECT count(*) FILTER (WHERE s.record <> 'pending'), "
                    "(SELECT count(*) FROM outbox WHERE status IN ('pending', 'in_progress')) FROM sessions s"
                ))).one()
            return rows[0] == 4 and rows[1] == 0

        await eventually(settled, timeout=60)
        async with engine.begin() as conn:  # a row the CRM refused, as the worker parks it
            await outbox_repo.enqueue(conn, [NewOutboxRow("record:sandbox:call-3003", "record", "call-3003",
                                                          "sandbox\x1feu-lia\x1fq-billing", {"crm": "sandbox"})])
            row_id = (await conn.execute(text(
                "SELECT id FROM outbox WHERE session_id = 'call-3003' AND kind = 'record'"))).scalar_one()
            await outbox_repo.park(conn, row_id, "sandbox create_record: HTTP 422: the requester's phone is invalid")
        yield service


@pytest.fixture(scope="module")
async def browser():
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield launched
        await launched.close()


def watch_console(page) -> list[str]:
    """The browser's own errors (a script blocked by the content security policy, a failed
    request): every page test ends with none."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


async def new_page(browser, service, token: str, locale: str = "en-US"):
    context = await browser.new_context(
        base_url=service.base_url, locale=locale, viewport={"width": 1280, "height": 900}
    )
    page = await context.new_page()
    page.errors = watch_console(page)
    await page.goto("/admin")
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="CRM record creation details")).to_be_visible()
    return page


async def assert_accessible(page) -> None:
    results = await Axe().run(page)
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
           for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], f"{page.url}: {bad}"


async def test_sign_in_page_and_panel(browser, console_service):
    context = await browser.new_context(base_url=console_service.base_url)
    page = await context.new_page()
    await page.goto("/admin/settings")
    assert "/admin/sign-in" in page.url
    await assert_accessible(page)
    await page.get_by_label("Admin token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not one of this service's admin tokens")
    await page.get_by_label("Admin token").fill(ADMIN)
    await page.keyboard.press("Enter")  # the keyboard alone signs in
    await expect(page.get_by_text("Signed in as ana (administrator)")).to_be_visible()
    await assert_accessible(page)
    cookie = next(c for c in await context.cookies() if c["name"] == "crm_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    await context.close()


async def test_change_each_setting_watch_the_previews_and_the_what_if(browser, console_service):
    page = await new_page(browser, console_service, ADMIN)
    title = page.get_by_label("Record title", exact=True)
    preview = page.get_by_test_id("title-preview")
    await expect(preview).to_have_text(re.compile(r"^(IVR call|Web chat|Inbound call \(app\)) "))

    # dependent fields show only when their parent is on
    days = page.get_by_label("Also append to a record closed within this many days")
    await expect(days).to_be_hidden()
    await page.get_by_label("Append to the open record in the same leaf queue").check()
    await page.get_by_label("Also append to a recently closed record").check()
    await expect(days).to_be_visible()
    await days.fill("3")
    await page.get_by_label("Delay the call record until the agent is connected").check()
    await page.get_by_label("Create records for abandoned calls").check()
    messages = page.get_by_label("Delay the chat record until the end user has sent this many messages")
    await expect(messages).to_be_hidden()
    await page.get_by_label("Delay the chat record until the end user has written").check()
    await messages.fill("2")
    minimum = page.get_by_label("Messages an abandoned chat needs for a record")
    await expect(minimum).to_be_hidden()
    await page.get_by_label("A record when the end user sent at least a number of messages").check()
    await expect(minimum).to_be_visible()
    await minimum.fill("1")
    await page.get_by_label("Short-abandon threshold, in seconds").fill("3")

    # chips insert at the cursor; the preview follows, in Portuguese when asked
    await title.fill("{CALL_ID}")
    await title.press("Home")
    await page.get_by_role("button", name="{CALL_TYPE}").click()
    await title.press("End")
    await title.type(" - ")
    await page.get_by_role("button", name="{MENU_PATH}").click()
    await expect(title).to_have_value("{CALL_TYPE}{CALL_ID} - {MENU_PATH}")
    await page.get_by_role("button", name="{LANGUAGE}").focus()  # the keyboard alone inserts a chip too
    await page.keyboard.press("Enter")
    await expect(title).to_have_value("{CALL_TYPE}{CALL_ID} - {MENU_PATH}{LANGUAGE}")
    await title.press("Backspace")
    await title.fill("{CALL_TYPE}{CALL_ID} - {MENU_PATH}")
    await page.get_by_label("Language of the session type in titles").select_option("pt-BR")
    await expect(preview).to_have_text(
        re.compile(r"^(Chamada de URA|Chamada recebida \(app\)|Chat na Web)(call|chat)-\d+ - Billing > Refunds$"))
    await title.type(" {AGENT}")
    error = page.locator("#record_title_template-error")
    await expect(error).to_have_text("unknown variable {AGENT}; a title may use only {CALL_TYPE}, {CALL_ID}, "
                                     "{MENU_PATH}, {PHONE_NUMBER}, {LANGUAGE}, {TIMESTAMP}")
    await expect(page.locator("mark.unknown")).to_have_text("{AGENT}")
    await title.fill("{CALL_TYPE} {CALL_ID}")
    await expect(error).to_be_empty()

    tags = page.get_by_test_id("tags-preview")
    await expect(tags).not_to_contain_text("UJET")
    await page.get_by_label("Tag records with the session type").check()
    await page.get_by_label("Tag records with the platform tag UJET").check()
    await expect(tags).to_contain_text(re.compile(r"(Voice|Messaging) Inbound \("))  # the sandbox: display names
    await expect(tags).to_contain_text("UJET")
    await page.screenshot(path=str(SCREENSHOTS / "panel.png"), full_page=True)

    # the what-if: abandoned chats with a message now get a record; the unanswered call loses its record
    await page.get_by_role("button", name="Show the what-if").click()
    await expect(page.get_by_test_id("what-if-summary")).to_contain_text("5 sessions first seen in the last 7 days")
    changed = page.get_by_test_id("what-if-changed")
    await expect(changed).to_have_text("2 sessions would end differently.")
    sample = page.locator("table.sample")
    await expect(sample).to_contain_text("call-1002")
    await expect(sample).to_contain_text("call ended without being connected to an agent")
    await expect(sample).to_contain_text("chat-2002")
    await assert_accessible(page)
    await page.locator("#what-if-title").scroll_into_view_if_needed()
    await page.locator("section.what-if").screenshot(path=str(SCREENSHOTS / "what-if.png"))

    # save shows the diff, then the version is in the history under the token's name
    await page.get_by_role("button", name="Review changes and save").click()
    diff = page.get_by_test_id("diff")
    await expect(diff).to_contain_text("Delay the call record until the agent is connected")
    await expect(diff).to_contain_text("record_title_locale")
    await assert_accessible(page)
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("Saved: version 1 is in force.")
    await expect(page.get_by_test_id("version-1")).to_contain_text("by ana")
    await assert_accessible(page)
    assert page.errors == []
    await page.context.close()


async def test_history_restore_makes_a_new_equal_version(browser, console_service, engine):
    page = await new_page(browser, console_service, ADMIN)
    await page.get_by_label("Create records for abandoned calls").uncheck()
    await page.get_by_role("button", name="Review changes and save").click()
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_test_id("version-2")).to_contain_text("Create records for abandoned calls")
    await page.get_by_role("button", name="Restore version 1").click()
    await expect(page.get_by_role("heading", name="Restore version 1")).to_be_visible()
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_test_id("version-3")).to_contain_text("in force")
    async with engine.connect() as conn:
        versions = await settings_repo.history(conn, limit=3)
    assert [v.version for v in versions] == [3, 2, 1]
    assert versions[0].document == versions[2].document and versions[0].actor == "ana"
    await page.context.close()


async def test_session_trace_and_requeue_a_parked_row(browser, console_service, engine):
    page = await new_page(browser, console_service, ADMIN)
    await page.get_by_role("link", name="Sessions").click()
    await page.get_by_label("Session id or end-user id").fill("eu-maria")
    await page.get_by_label("Session id or end-user id").press("Enter")
    await page.get_by_role("link", name="call-1001").click()
    await expect(page.get_by_test_id("timeline")).to_contain_text("assigned")
    await expect(page.get_by_test_id("timeline").locator("li")).to_have_count(4)  # every event, with its time
    await expect(page.get_by_test_id("decisions")).to_contain_text("call assigned to agent")
    await expect(page.get_by_test_id("crm-calls")).to_contain_text("create_record")
    await expect(page.get_by_test_id("record")).to_contain_text("Sandbox record")
    await assert_accessible(page)
    await page.screenshot(path=str(SCREENSHOTS / "session-trace.png"), full_page=True)

    await page.get_by_role("link", name="Operations").click()
    # the one replica running writes its heartbeat: lag, dead letters and CRM check
    await expect(page.get_by_test_id("replica")).to_have_count(1)
    await expect(page.get_by_test_id("replica")).to_contain_text("this replica")
    parked = page.get_by_test_id("parked")
    await expect(parked).to_contain_text("the requester's phone is invalid")
    await assert_accessible(page)
    await page.get_by_role("button", name=re.compile(r"^Retry row \d+$")).click()
    await expect(page.get_by_role("status")).to_contain_text("will run again")

    async def requeued():
        async with engine.connect() as conn:
            return (
                await conn.execute(text("SELECT status FROM outbox WHERE session_id = 'call-3003' AND kind = 'record'"))
            ).scalar_one() != "parked"

    assert await eventually(requeued)
    assert page.errors == []
    await page.context.close()


async def test_a_viewer_sees_and_cannot_change_in_portuguese(browser, console_service):
    context = await browser.new_context(base_url=console_service.base_url, locale="pt-BR")
    page = await context.new_page()
    await page.goto("/admin")
    await page.get_by_label("Token de administração").fill(VIEWER)
    await page.get_by_role("button", name="Entrar").click()
    await expect(page.get_by_role("heading", name="Detalhes da criação de registros no CRM")).to_be_visible()
    await expect(page.get_by_role("button", name="Revisar as mudanças e salvar")).to_have_count(0)
    await assert_accessible(page)
    await page.screenshot(path=str(SCREENSHOTS / "panel-pt-BR.png"))
    await page.get_by_role("link", name="Operações").click()
    await expect(page.get_by_role("button", name=re.compile("Tentar de novo"))).to_have_count(0)
    await page.get_by_role("link", name="English").click()
    await expect(page.get_by_role("heading", name="Operations")).to_be_visible()
    await context.close()
