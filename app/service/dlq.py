"""Use case: look at the dead letters by reason, and choose which to re-publish once the
producer that sent them is fixed. Replaying is idempotent: a letter whose event was
applied since (or is replayed twice) carries an event id the service already knows, so
it is counted as a duplicate and changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from app import metrics
from app.adapters.kafka.dlq_reader import StoredLetter
from app.observability.logs import mask_personal_data

SAMPLES_PER_REASON = 3


@dataclass(frozen=True, slots=True)
class LetterSample:
    partition: int
    offset: int
    dead_lettered_at: datetime
    reason: str
    what: str  # event id and session id when the value is a JSON event, else a masked excerpt


@dataclass(slots=True)
class ReasonGroup:
    reason_class: str
    count: int = 0
    stand_ins: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    samples: list[LetterSample] = field(default_factory=list)
    first_at: datetime | None = None
    last_at: datetime | None = None


def describe_value(value: bytes | None) -> str:
    """What a letter is, without an end user's contact: ids when it parses, else a masked excerpt."""
    if not value:
        return "(empty value)"
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        session = found if isinstance(found := document.get("session"), dict) else {}
        parts = [f"{name}={document.get(name)!s:.80}" for name in ("event_id", "event_type") if name in document]
        if "id" in session:
            parts.append(f"session={session['id']!s:.80}")
        if parts:
            return " ".join(parts) + f" ({len(value)} bytes)"
    excerpt = value[:60].decode("utf-8", "replace").replace("\n", " ")
    return f"{mask_personal_data(excerpt)!r}{'…' if len(value) > 60 else ''} ({len(value)} bytes)"


def summarize(letters: Sequence[StoredLetter]) -> list[ReasonGroup]:
    groups: dict[str, ReasonGroup] = {}
    for letter in letters:
        reason = letter.reason
        group = groups.setdefault(metrics.dead_letter_reason_class(reason), ReasonGroup(
            metrics.dead_letter_reason_class(reason)))
        group.count += 1
        group.stand_ins += letter.stand_in
        group.reasons[reason] = group.reasons.get(reason, 0) + 1
        group.first_at = min(filter(None, (group.first_at, letter.dead_lettered_at)))
        group.last_at = max(filter(None, (group.last_at, letter.dead_lettered_at)))
        if len(group.samples) < SAMPLES_PER_REASON:
            group.samples.append(LetterSample(letter.partition, letter.offset, letter.dead_lettered_at, reason,
                                              describe_value(letter.value)))
    return sorted(groups.values(), key=lambda g: -g.count)


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    replay: list[StoredLetter]
    stand_ins: list[StoredLetter]  # matched, but their original bytes are not in the letter


def plan_replay(letters: Sequence[StoredLetter], reason: str | None, since: datetime | None) -> ReplayPlan:
    """Letters whose reason class is `reason`, or whose reason starts with it, dead-lettered at or after `since`."""
    chosen = [
        letter for letter in letters
        if (reason is None or metrics.dead_letter_reason_class(letter.reason) == reason
            or letter.reason.startswith(reason))
        and (since is None or letter.dead_lettered_at >= since)
    ]
    return ReplayPlan(
        [letter for letter in chosen if not letter.stand_in], [letter for letter in chosen if letter.stand_in]
    )
