"""`python -m app migrate` run by several processes at once (a Job and starting
replicas): the advisory lock makes one migrate and the others find the work done."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg

from app.adapters.db.engine import asyncpg_dsn
from tests.helpers import with_database
from tests.integration.service_process import PROJECT


async def test_concurrent_migrators_leave_one_schema_at_head(postgres_server_url):
    server = postgres_server_url
    name = f"crm_records_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(server, name)
        env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
        processes = [
            subprocess.Popen([sys.executable, "-m", "app", "migrate"], cwd=PROJECT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(3)
        ]
        outputs = [await asyncio.to_thread(p.communicate, timeout=120) for p in processes]
        for process, (output, _) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, output.decode()[-3000:]
        heads = subprocess.run([sys.executable, "-m", "alembic", "heads"], cwd=PROJECT, capture_output=True,
                               text=True, timeout=60).stdout.split()
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            versions = [r["version_num"] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
        finally:
            await conn.close()
        assert versions == [heads[0]]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
