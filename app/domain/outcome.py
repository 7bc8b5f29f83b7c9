"""The outcome event: what the service publishes to the output topic after it made, or
decided not to make, a session's record. Built here only, by the consumer (a skip) and
by the outbox worker (a record made, attached, reopened, or its summary note added)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.domain.kinds import OutcomeEventType


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    event_type: OutcomeEventType
    session_id: str
    crm: str
    record_id: str | None
    record_url: str | None
    reason: str
    occurred_at: datetime | None

    def payload(self) -> dict[str, Any]:
        """The event as published (JSON object; the contract names these fields)."""
        return {
            "event_type": str(self.event_type),
            "session_id": self.session_id,
            "crm": self.crm,
            "record_id": self.record_id,
            "record_url": self.record_url,
            "reason": self.reason,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at is not None else None,
        }

    @classmethod
    def from_payload(cls, document: Mapping[str, Any]) -> OutcomeEvent:
        """The event again from its document (an outbox row's payload)."""
        occurred_at = document.get("occurred_at")
        return cls(
            event_type=OutcomeEventType(document["event_type"]),
            session_id=document["session_id"],
            crm=document["crm"],
            record_id=document.get("record_id"),
            record_url=document.get("record_url"),
            reason=document["reason"],
            occurred_at=datetime.fromisoformat(occurred_at) if occurred_at is not None else None,
        )
