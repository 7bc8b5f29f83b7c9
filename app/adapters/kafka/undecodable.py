"""Finding, and stepping over, record batches the consumer cannot decode.

aiokafka decodes a fetched batch while handing out its records. If it cannot (a codec
whose library is missing, a corrupt batch), `getmany()` raises without saying which
partition failed, and it may already have moved other partitions' positions past
records it then dropped. So after such an error the consumer:

1. rewinds every assigned partition to its committed offset (`rewind_to_committed`):
   what was dropped is read again, and the dedup rows make any replay a no-op;
2. reads each partition on its own, one record at a time (`read_until_undecodable`),
   which names the partition and the first offset that cannot be decoded;
3. finds where the undecodable range ends (`undecodable_end`): the broker answers a
   fetch at any offset inside a batch with the whole batch, so a fetch fails exactly
   while the offset is inside it; an exponential then binary search finds its end,
   never fetching past the partition's real end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CorruptRecordException, KafkaError, UnsupportedCodecError

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_MS = 1000


@dataclass(frozen=True, slots=True)
class DecodedRun:
    """What `read_until_undecodable` read of one partition: the records that decode, and
    the decode error that stopped the reading (None when nothing failed)."""

    records: list[ConsumerRecord]
    error: BaseException | None


def is_decode_error(exc: BaseException) -> bool:
    """Raised while turning fetched bytes into records, not by the broker or the network.
    Codec libraries raise their own types (zlib.error, gzip.BadGzipFile, cramjam's errors,
    EOFError, ...); aiokafka wraps network failures in its own KafkaError types."""
    if isinstance(exc, (UnsupportedCodecError, CorruptRecordException)):
        return True
    return not isinstance(exc, (KafkaError, TimeoutError))


async def rewind_to_committed(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
    if not partitions:
        return
    committed = await consumer.seek_to_committed(*partitions)
    never = [tp for tp, offset in committed.items() if not offset]
    if never:
        await consumer.seek_to_beginning(*never)


async def read_until_undecodable(
    consumer: AIOKafkaConsumer, tp: TopicPartition, limit: int
) -> DecodedRun:
    """The records of `tp` that decode, up to `limit`, and the decode error that stopped
    the reading. The partition's position is left at the first record not returned."""
    records: list[ConsumerRecord] = []
    while len(records) < limit:
        try:
            got = await consumer.getmany(tp, timeout_ms=_PROBE_TIMEOUT_MS if not records else 0, max_records=1)
        except Exception as exc:
            if is_decode_error(exc):
                return DecodedRun(records, exc)
            raise
        if not got.get(tp):
            break
        records.extend(got[tp])
    return DecodedRun(records, None)


async def undecodable_end(consumer: AIOKafkaConsumer, tp: TopicPartition, first: int) -> int:
    """The last offset of the undecodable range that starts at `first`. Leaves the
    partition positioned just after it.

    Offsets below the partition's end as the broker reports it are searched by halving;
    past that report the search goes one offset at a time, because a fetch beyond the
    real end is out of range (the consumer would jump to the earliest offset) and some
    brokers (Tansu) report the end of a partition as its last batch's base offset + 1."""
    reported = (await consumer.end_offsets([tp]))[tp]
    bound = max(reported, consumer.highwater(tp) or 0)

    async def fails_at(offset: int) -> bool:
        consumer.seek(tp, offset)
        try:
            got = await consumer.getmany(tp, timeout_ms=_PROBE_TIMEOUT_MS, max_records=1)
        except Exception as exc:
            if is_decode_error(exc):
                return True
            raise
        # Decoded, or nothing fetched in time: then assume it decodes; if it does not,
        # the next poll fails again there and the rest is stepped over the same way.
        del got
        return False

    bad, good = first, None  # fails at `bad`; decodes at `good`
    step = 1
    while good is None and first + step < bound:
        if await fails_at(first + step):
            bad, step = first + step, step * 2
        else:
            good = first + step
    while good is None:  # at or past the reported end: one offset at a time
        if await fails_at(bad + 1):
            bad += 1
        else:
            good = bad + 1
    while good - bad > 1:
        middle = (bad + good) // 2
        if await fails_at(middle):
            bad = middle
        else:
            good = middle
    consumer.seek(tp, good)
    log.debug("undecodable range of %s: %d..%d", tp, first, good - 1)
    return good - 1
