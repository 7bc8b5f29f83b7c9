"""The outcome event's bytes on the output topic: the contract's JSON object, field for
field in this order, as the service published it when it handed the producer a dict."""

from __future__ import annotations

from datetime import UTC, datetime

from app.adapters.kafka.producer import outcome_message
from app.domain.kinds import OutcomeEventType
from app.domain.outcome import OutcomeEvent


def test_a_record_event_is_published_as_these_bytes():
    event = OutcomeEvent(OutcomeEventType.RECORD_CREATED, "s-1", "zendesk", "42", "https://crm.test/r/42",
                         "new contact", datetime(2026, 12, 4, 18, 0, 1, 250000, tzinfo=UTC))
    assert outcome_message(event) == (
        b'{"event_type":"record.created","session_id":"s-1","crm":"zendesk","record_id":"42",'
        b'"record_url":"https://crm.test/r/42","reason":"new contact","occurred_at":"2026-12-04T18:00:01.250000+00:00"}'
    )


def test_a_skip_without_a_record_or_a_time_is_published_with_nulls():
    event = OutcomeEvent(OutcomeEventType.RECORD_SKIPPED, "s-2", "sandbox", None, None, "no contact", None)
    assert outcome_message(event) == (
        b'{"event_type":"record.skipped","session_id":"s-2","crm":"sandbox","record_id":null,'
        b'"record_url":null,"reason":"no contact","occurred_at":null}'
    )


def test_an_event_read_back_from_its_outbox_row_is_the_same_event():
    event = OutcomeEvent(OutcomeEventType.RECORD_UPDATED, "s-3", "kustomer", "7", None, "summary note added",
                         datetime(2026, 12, 4, 18, 0, 0, tzinfo=UTC))
    assert OutcomeEvent.from_payload(event.payload()) == event
    assert outcome_message(OutcomeEvent.from_payload(event.payload())) == outcome_message(event)
