"""Structured logs: formats, bound context, masking of contacts that slip through."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC

import pytest

from app.observability.logs import configure_logging, log_context, mask_personal_data, resolve_format


@pytest.fixture
def captured():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_json_lines_carry_the_bound_context_for_stdlib_loggers(captured):
    configure_logging("INFO", "json", captured)
    log = logging.getLogger("app.service.outbox")
    with log_context(session_id="call-1", outbox_id=7, crm="zendesk", record_id=None):
        log.info("record %s", "created", extra={"record_id": "4812"})
    log.info("outside")
    first, second = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert first["event"] == "record created" and first["level"] == "info"
    assert first["session_id"] == "call-1" and first["outbox_id"] == 7 and first["crm"] == "zendesk"
    assert first["record_id"] == "4812" and first["logger"] == "app.service.outbox"
    assert "session_id" not in second


def test_text_format_is_one_readable_line(captured):
    configure_logging("INFO", "text", captured)
    with log_context(session_id="chat-9"):
        logging.getLogger("app").warning("attempt %d failed", 2)
    line = captured.getvalue().strip()
    assert "attempt 2 failed" in line and "session_id=chat-9" in line and "warn" in line
    assert not line.startswith("{")


def test_default_level_hides_httpx_request_lines(captured):
    configure_logging("INFO", "json", captured)
    logging.getLogger("httpx").info("HTTP Request: GET https://x.example/users/search?query=%2B15550000001")
    assert captured.getvalue() == ""


def test_contacts_that_reach_a_line_are_masked(captured):
    configure_logging("DEBUG", "json", captured)
    logging.getLogger("app").info("refused: Email maria.souza@example.org or +1 555 000 0001 taken")
    line = json.loads(captured.getvalue())["event"]
    assert "maria.souza" not in line and "000 0001" not in line
    assert "•••@example.org" in line and "+1555•••0001" in line


def test_masking_covers_url_encoded_forms():
    masked = mask_personal_data("contacts?phone=%2B15557300000&email=p.q%40acme.example.org")
    assert "7300000" not in masked and "p.q" not in masked
    assert mask_personal_data("session call-1001 record 4812") == "session call-1001 record 4812"


def test_format_defaults_to_text_on_a_terminal_and_json_elsewhere():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert resolve_format(None, Tty()) == "text"
    assert resolve_format(None, io.StringIO()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"


def test_make_run_banner_says_the_broker_forgets_and_how_to_publish():
    from app.settings import Settings
    from tools.dev.banner import dev_banner

    text = dev_banner(Settings(_env_file=None), embedded_broker=True, embedded_database=True, data_dir=".data")
    assert "IN MEMORY ONLY" in text and "no second record" in text
    assert "python -m app publish" in text and "kcat" in text and "KAFKA_BOOTSTRAP_SERVERS" in text


def test_dlq_since_accepts_times_and_ages_and_names_a_bad_value():
    import argparse
    from datetime import datetime

    from app.entrypoints.dlq_cli import parse_since

    assert parse_since("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert (datetime.now(UTC) - parse_since("6h")).total_seconds() == pytest.approx(21600, abs=5)
    with pytest.raises(argparse.ArgumentTypeError, match="--since"):
        parse_since("yesterday")
