"""`python -m app dlq list` and `python -m app dlq replay`: the dead-letter topic for
operators. Output names event and session ids, never an end user's contact."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta

from app.adapters.kafka.dlq_reader import read_letters, republish
from app.service.dlq import plan_replay, summarize
from app.settings import Settings

_RELATIVE = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str) -> datetime:
    """An RFC 3339 time (`2026-12-01T10:00:00Z`) or an age (`90m`, `6h`, `2d`)."""
    match = _RELATIVE.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since: {text!r} is neither RFC 3339 nor an age like 6h") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _list(settings: Settings, since: datetime | None) -> int:
    letters = await read_letters(settings, since)
    print(
        f"{len(letters)} dead letter(s) in {settings.kafka_dlq_topic}"
        + (f" since {since.isoformat()}" if since else "")
    )
    for group in summarize(letters):
        span = f"{group.first_at:%Y-%m-%d %H:%M:%S} .. {group.last_at:%Y-%m-%d %H:%M:%S} UTC"
        stand_ins = f", {group.stand_ins} stand-in(s) without the original bytes" if group.stand_ins else ""
        print(f"\n{group.reason_class}: {group.count}{stand_ins}  ({span})")
        for reason, count in sorted(group.reasons.items(), key=lambda item: -item[1])[:5]:
            print(f"  {count:>6}  {reason[:160]}")
        print("  samples:")
        for sample in group.samples:
            print(
                f"    {sample.partition}/{sample.offset} at {sample.dead_lettered_at:%Y-%m-%d %H:%M:%S}: {sample.what}"
            )
    return 0


async def _replay(settings: Settings, reason: str | None, since: datetime | None, dry_run: bool) -> int:
    letters = await read_letters(settings, since)
    plan = plan_replay(letters, reason, since)
    what = f"reason {reason!r}" if reason else "every reason"
    if plan.stand_ins:
        print(f"{len(plan.stand_ins)} stand-in letter(s) match but hold no original message; not replayed "
              "(the stand-in names the original topic, partition and offset)", file=sys.stderr)
    if dry_run:
        print(f"dry run: would re-publish {len(plan.replay)} of {len(letters)} letter(s) ({what}) "
              f"to {settings.kafka_topic}")
        return 0
    count = await republish(settings, plan.replay)
    print(f"re-published {count} letter(s) ({what}) to {settings.kafka_topic}; events already applied are "
          "counted as duplicates and change nothing")
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        return asyncio.run(_list(settings, args.since))
    return asyncio.run(_replay(settings, args.reason, args.since, args.dry_run))


def add_dlq_parser(commands: argparse._SubParsersAction) -> None:
    dlq = commands.add_parser("dlq", help="dead letters: list them by reason, replay them to the input topic")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = actions.add_parser("list", help="dead letters by reason, with counts and samples")
    listing.add_argument("--since", type=parse_since, default=None, help="RFC 3339 time or age (6h, 2d)")
    replay = actions.add_parser("replay", help="re-publish dead letters to the input topic (idempotent)")
    replay.add_argument("--reason", default=None,
                        help="a reason class (schema, invalid JSON, ...) or the start of the reason text")
    replay.add_argument("--since", type=parse_since, default=None, help="RFC 3339 time or age (6h, 2d)")
    replay.add_argument("--dry-run", action="store_true", help="say what would be re-published, publish nothing")
    dlq.set_defaults(handler=cmd_dlq)
