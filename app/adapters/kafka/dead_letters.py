"""The dead-letter topic: every letter is delivered, as a copy or as a stand-in.

A copy keeps the message's key, value and headers and adds an `error` header. When the
broker refuses the copy (too large for the dead-letter topic, or refused in any other
way that retrying does not fix), or the copy fails the same way on every attempt, a
small stand-in letter is published instead: JSON naming the message's topic, partition,
offset, size and SHA-256, its key, and the same `error` header. A batch the consumer
cannot decode gets one stand-in naming the partition and offset range. Only when the
stand-in cannot be delivered either is the broker considered unreachable, and the
caller retries its batch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import BrokerResponseError, KafkaError

from app import metrics

log = logging.getLogger(__name__)

# A key longer than this is named in the stand-in's body but not used as its Kafka key.
_STAND_IN_KEY_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message that cannot be applied, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str


@dataclass(frozen=True, slots=True)
class UndecodableBatch:
    """Offsets of one partition the consumer could not decode (e.g. an unknown codec)."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    reason: str


class DeadLetterUndeliverable(Exception):
    """Not even a stand-in reached the dead-letter topic: the broker is unreachable."""


def _refused(exc: BaseException) -> bool:
    """The broker (or the client's own size check) answered that it will never take this
    message. A timeout or a lost connection says nothing about the message."""
    return isinstance(exc, BrokerResponseError) and not exc.retriable


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def stand_in_document(letter: DeadLetter, copy_error: BaseException) -> dict:
    value = letter.value or b""
    key_text = None
    if letter.key is not None:
        try:
            key_text = letter.key.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {
        "stand_in": True,
        "why": f"the copy could not be delivered: {_describe(copy_error)}",
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "size": len(value),
        "sha256": hashlib.sha256(value).hexdigest(),
        "key": key_text,
        "key_base64": base64.b64encode(letter.key).decode() if letter.key is not None else None,
        "error": letter.reason,
    }


class DeadLetterQueue:
    def __init__(
        self, producer: AIOKafkaProducer, topic: str, *, copy_attempts: int = 3, retry_delay_seconds: float = 0.5
    ):
        self.producer = producer
        self.topic = topic
        self.copy_attempts = copy_attempts
        self.retry_delay_seconds = retry_delay_seconds

    async def deliver(self, letters: Sequence[DeadLetter]) -> None:
        """Deliver every letter (copies queued together, then awaited together)."""
        pending = list(letters)
        attempt = 0
        while pending:
            attempt += 1
            outcomes = await asyncio.gather(*(self._copy(letter) for letter in pending), return_exceptions=True)
            retry = []
            for letter, outcome in zip(pending, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    self._delivered(letter.reason)
                elif _refused(outcome) or attempt >= self.copy_attempts:
                    await self._stand_in(letter, outcome)
                else:
                    retry.append(letter)
            pending = retry
            if pending:
                await asyncio.sleep(self.retry_delay_seconds * attempt)

    async def deliver_undecodable(self, batch: UndecodableBatch) -> None:
        document = {
            "stand_in": True,
            "why": "the consumer could not decode these messages",
            "topic": batch.topic,
            "partition": batch.partition,
            "first_offset": batch.first_offset,
            "last_offset": batch.last_offset,
            "error": batch.reason,
        }
        await self._send_stand_in(None, document, batch.reason)
        self._delivered(batch.reason)

    async def _copy(self, letter: DeadLetter) -> None:
        kept = [(k, v) for k, v in letter.headers if k != "error"]
        delivery = await self.producer.send(
            self.topic, key=letter.key, value=letter.value,
            headers=kept + [("error", letter.reason.encode("utf-8", "replace"))],
        )
        await delivery

    async def _stand_in(self, letter: DeadLetter, copy_error: BaseException) -> None:
        log.warning(
            "dead letter %s/%d@%d (%d bytes) sent as a stand-in: the copy failed with %s",
            letter.topic, letter.partition, letter.offset, len(letter.value or b""), _describe(copy_error),
        )
        key = letter.key if letter.key is not None and len(letter.key) <= _STAND_IN_KEY_LIMIT else None
        await self._send_stand_in(key, stand_in_document(letter, copy_error), letter.reason)
        self._delivered(letter.reason)

    async def _send_stand_in(self, key: bytes | None, document: dict, reason: str) -> None:
        headers = [("error", reason.encode("utf-8", "replace")), ("stand_in", b"true")]
        try:
            delivery = await self.producer.send(self.topic, key=key, value=orjson.dumps(document), headers=headers)
            await delivery
        except KafkaError as exc:
            raise DeadLetterUndeliverable(
                f"the dead-letter topic {self.topic} is unreachable: {_describe(exc)}"
            ) from exc

    @staticmethod
    def _delivered(reason: str) -> None:
        metrics.events_dead_lettered.labels(metrics.dead_letter_reason_class(reason)).inc()
