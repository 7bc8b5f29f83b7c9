"""`python -m app COMMAND`: run the service, publish example sessions, look at records."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict
from pathlib import Path

import orjson

from app.settings import Settings


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from app.entrypoints.service import configure_logging, run_service, run_until_complete, tune_garbage_collector

    configure_logging(settings)
    tune_garbage_collector()
    run_until_complete(run_service(settings))
    return 0


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from app.entrypoints.service import configure_logging, migrate

    configure_logging(settings)
    migrate(settings)
    return 0


def _session_key(line: bytes) -> bytes | None:
    try:
        document = orjson.loads(line)
        return str(document["session"]["id"]).encode()
    except Exception:
        return None  # an invalid line is still published: the service dead-letters it


async def _publish(settings: Settings, files: list[Path], rate: float | None) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.resolved_bootstrap_servers(), linger_ms=5)
    await producer.start()
    count = 0
    try:
        for path in files:
            for line in path.read_bytes().splitlines():
                if not line.strip():
                    continue
                await producer.send(settings.kafka_topic, key=_session_key(line), value=line.strip())
                count += 1
                if rate:
                    await asyncio.sleep(1 / rate)
        await producer.flush()
    finally:
        await producer.stop()
    print(f"published {count} events to {settings.kafka_topic} at {settings.resolved_bootstrap_servers()}")
    return 0


def _cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_publish(settings, args.files, args.rate))


async def _records(settings: Settings, session_id: str | None, limit: int) -> int:
    from app.adapters.db import records_repo, sandbox_repo
    from app.adapters.db.engine import build_engine

    engine = build_engine(settings)
    try:
        async with engine.connect() as conn:
            rows: list[dict[str, object]] = []  # printed as JSON, one object per record
            if settings.crm_provider == "sandbox":
                for record in await sandbox_repo.list_records(conn, limit, session_id):
                    notes = [n.body for n in await sandbox_repo.notes_for(conn, record.id)]
                    rows.append(asdict(record) | {"notes": notes})
            else:
                rows = [asdict(record) for record in await records_repo.list_records(conn, limit)]
    finally:
        await engine.dispose()
    for row in reversed(rows):
        print(orjson.dumps(row, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    print(f"{len(rows)} record(s) in {settings.crm_provider}", file=sys.stderr)
    return 0


def _cmd_records(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_records(settings, args.session, args.limit))


async def _trace(settings: Settings, session_id: str) -> int:
    from app.adapters.db.engine import build_engine
    from app.service.trace import session_trace

    engine = build_engine(settings)
    try:
        async with engine.connect() as conn:
            trace = await session_trace(conn, session_id)
    finally:
        await engine.dispose()
    if trace is None:
        print(f"no events seen for session {session_id!r}", file=sys.stderr)
        return 1
    print(orjson.dumps(trace, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    return 0


def _cmd_session(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_trace(settings, args.session_id))


async def _what_if(settings: Settings, settings_file: Path, days: int, as_json: bool) -> int:
    from pydantic import ValidationError

    from app.adapters.db.engine import build_engine
    from app.domain.record_settings import RecordSettings
    from app.entrypoints.what_if_text import report_lines
    from app.service.whatif import WhatIf

    try:
        proposed = RecordSettings.model_validate_json(settings_file.read_bytes())
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(p) for p in error["loc"]) or "(document)"
            print(f"{settings_file}: {field}: {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    engine = build_engine(settings)
    try:
        result = await WhatIf(engine, settings.crm_provider).run(proposed, days)
    finally:
        await engine.dispose()
    if as_json:
        print(orjson.dumps(result, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    else:
        print("\n".join(report_lines(result)))
    return 0


def _cmd_what_if(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_what_if(settings, args.settings, args.days, args.json))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the service (broker and database from the environment)").set_defaults(
        handler=_cmd_run
    )
    commands.add_parser("migrate", help="apply database migrations").set_defaults(handler=_cmd_migrate)
    publish = commands.add_parser("publish", help="publish session events from JSON-lines files")
    publish.add_argument("files", nargs="+", type=Path)
    publish.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    publish.set_defaults(handler=_cmd_publish)
    records = commands.add_parser("records", help="show the records the service made")
    records.add_argument("--session", default=None, help="only the record of this session")
    records.add_argument("--limit", type=int, default=50)
    records.set_defaults(handler=_cmd_records)
    session = commands.add_parser("session", help="show a session's state, decisions and CRM calls")
    session.add_argument("session_id")
    session.set_defaults(handler=_cmd_session)
    from app.entrypoints.dlq_cli import add_dlq_parser

    add_dlq_parser(commands)
    what_if = commands.add_parser(
        "what-if", help="what a settings document would have done to the sessions of the last N days")
    what_if.add_argument(
        "--settings", type=Path, required=True, help="a settings document (JSON), as PUT /api/settings"
    )
    what_if.add_argument("--days", type=int, default=7)
    what_if.add_argument("--json", action="store_true", help="the full report as JSON")
    what_if.set_defaults(handler=_cmd_what_if)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    return args.handler(settings, args)
