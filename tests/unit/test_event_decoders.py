"""The consumer's decoder (msgspec structs, events.py) against the reference (the pydantic
models, event_schema.py): on valid events and on thousands of mutations of them, the two
take and refuse the same messages, and read the same values from what they take. A
message the decoder took and the reference refused would be applied instead of
dead-lettered; one it refused and the reference took would be dead-lettered wrongly."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson
import pytest
from pydantic import ValidationError

from app.domain import event_schema
from app.domain.events import InvalidEvent, decode_event, parse_event
from tests.unit.test_events import ABANDONED, ASSIGNED, CONNECTED, ENDED, MESSAGE, QUEUED

VALID = [orjson.loads(line) for line in (QUEUED, ASSIGNED, CONNECTED, ENDED, MESSAGE, ABANDONED)]

REPLACEMENTS: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 1.5, -0.5, 10**30, "", "x", "x" * 128, "x" * 129, [], ["a"], [1], {}, {"id": "a"},
    "2026-11-23T13:00:00Z", "NaN",
]
TIMESTAMPS = [
    "2026-11-23T13:00:00Z", "2026-11-23t13:00:00z", "2026-11-23 13:00:00Z", "2026-11-23T13:00Z",
    "2026-11-23T13:00:00.1234567Z", "2026-11-23T13:00:00+0000", "2026-11-23T13:00:00-00:00",
    "2026-11-23T23:59:60Z", "2026-11-23T24:00:00Z", "2026-02-30T13:00:00Z", "2026-02-29T13:00:00Z",
    "2024-02-29T13:00:00Z", "2026-11-23T13:00:00", "2026-11-23", "2026-11-23T13:00:00.Z", "2026-11-23T13:00:00,5Z",
    "+2026-11-23T13:00:00Z", "2026-11-23T13:00:00+24:00", "2026-11-23T13:00:00+23:59", "1795438800",
    "2026-11-23T13:00:00 Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59",
    "2026-11-23T13:00:00+05:30", "2026-11-23T13:00:00.000001Z", "2026-11-23T13:00:00Z\n", " 2026-11-23T13:00:00Z",
    "２０２６-11-23T13:00:00Z", "2026-11-23T13:60:00Z", "2026-13-23T13:00:00Z", "2026-11-23T13:00:00+05:60",
]
NUMBERS = [0, 396, 396.5, -1, -0.0, 1e308, 10**400, "396", True, None]
TEXTS = ["", "a", "Olá", "😀" * 20000, "😀" * 20001, "a" * 20000, "a" * 20001, "\u0000", "x\ud800"]


def _paths(document: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(document, dict):
        for key, value in document.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


def _with(document: Any, path: tuple, value: Any, *, delete: bool = False) -> Any:
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


def _dumps(document: Any, *, ensure_ascii: bool = True) -> bytes:
    # The standard library's: it writes integers beyond 64 bits and lone surrogates (escaped).
    return json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


def _mutations() -> Iterator[bytes]:
    for document in VALID:
        yield _dumps(document)
        for path in _paths(document):
            yield _dumps(_with(document, path, None, delete=True))
            for value in REPLACEMENTS:
                yield _dumps(_with(document, path, value))
        for key, value in itertools.product(("agent", "message", "summary", "extra"), [None, {}, {"id": "x"}]):
            yield _dumps({**document, key: value})
        for timestamp in TIMESTAMPS:
            yield _dumps({**document, "occurred_at": timestamp})
            yield _dumps({**document, "session": {**document["session"], "started_at": timestamp}})
        for number in NUMBERS:
            yield _dumps({**document, "summary": {"duration_seconds": number}})
            yield _dumps({**document, "schema_version": number})
        for text in TEXTS:
            yield _dumps({**document, "message": {"id": "m", "sender": "agent", "text": text}})
            yield _dumps({**document, "message": {"id": "m", "sender": "agent", "text": text}}, ensure_ascii=False)
    raw = QUEUED.encode()
    yield from (b"", b"null", b"[]", b"1", b'"x"', raw[:-1], raw + b"x", raw + b" \n", b" " + raw,
                b"\xef\xbb\xbf" + raw,
                raw.replace(b'"schema_version": 1', b'"schema_version": 1, "schema_version": 2'),
                raw.replace(b'"schema_version": 1', b'"schema_version": 2, "schema_version": 1'),
                raw.replace(b'"event_type": "queued"', b'"event_type": "queued", "event_type": "nope"'),
                raw.replace(b'"queued"', b'"\\u0071ueued"'), raw.replace(b'"event_id"', b'"event\\u005fid"'),
                raw.replace(b'"schema_version": 1', b'"schema_version": 1.0'),
                raw.replace(b'"schema_version": 1', b'"schema_version": 1e0'))


def _reference(value: bytes) -> dict[str, Any] | None:
    try:
        return event_schema.SessionEvent.model_validate_json(value).model_dump()
    except ValidationError:
        return None


def _decoded(value: bytes) -> dict[str, Any] | None:
    try:
        event = decode_event(value)
    except InvalidEvent:
        return None
    return msgspec.structs.asdict(event) | {
        "session": msgspec.structs.asdict(event.session) | {
            "queue": msgspec.structs.asdict(event.session.queue),
            "end_user": msgspec.structs.asdict(event.session.end_user)},
        "agent": msgspec.structs.asdict(event.agent) if event.agent else None,
        "message": msgspec.structs.asdict(event.message) if event.message else None,
        "summary": msgspec.structs.asdict(event.summary) if event.summary else None,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) if a == 0 else a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


CASES = list(dict.fromkeys(_mutations()))


def test_there_are_thousands_of_cases_of_both_verdicts():
    verdicts = [_reference(value) is not None for value in CASES]
    assert len(CASES) > 3000
    assert sum(verdicts) > 500 and verdicts.count(False) > 2000


@pytest.mark.parametrize("chunk", range(8))
def test_the_decoder_takes_what_the_reference_takes_and_reads_the_same_values(chunk):
    for value in CASES[chunk::8]:
        expected, got = _reference(value), _decoded(value)
        assert (got is None) == (expected is None), (value, expected, got)
        if expected is not None:
            assert _same(got, expected), (value, expected, got)


def test_a_refused_message_gets_the_references_words():
    value = orjson.dumps({**VALID[0], "occurred_at": "2026-11-23 13:00:00Z", "event_id": ""})
    with pytest.raises(InvalidEvent) as refused:
        parse_event(value)
    assert refused.value.reason == event_schema.validate(value).reason
    assert refused.value.reason.startswith("schema: event_id:")
