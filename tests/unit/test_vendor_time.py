"""The vendors' times as the adapters read them (Zendesk, Freshdesk and Kustomer answers)."""

from datetime import UTC, datetime, timedelta, timezone

from app.adapters.crm.http import parse_vendor_time


def test_reads_z_an_offset_and_no_zone_as_utc():
    expected = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert parse_vendor_time("2026-03-01T12:30:00Z") == expected
    assert parse_vendor_time("2026-03-01T09:30:00-03:00") == expected
    assert parse_vendor_time("2026-03-01T12:30:00") == expected
    assert parse_vendor_time("2026-03-01T12:30:00.000Z").tzinfo == UTC
    assert parse_vendor_time("2026-03-01T14:30:00+02:00") == expected.astimezone(timezone(timedelta(hours=2)))


def test_absent_or_empty_is_none():
    assert parse_vendor_time(None) is None
    assert parse_vendor_time("") is None
    assert parse_vendor_time(1714557000) is None
