"""Use case: the what-if preview. Loads the window's history once (kept for a short while,
since an administrator asks again at every change of the form) and replays it through the
pure policy (app/domain/whatif.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db import history_repo, settings_repo
from app.domain.record_settings import RecordSettings
from app.domain.whatif import HistoricSession, WhatIfReport, replay

DEFAULT_DAYS = 7
MAX_DAYS = 90
HISTORY_KEPT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    days: int
    report: WhatIfReport
    current_version: int | None
    load_seconds: float  # 0 when the history was already loaded
    replay_seconds: float


@dataclass(slots=True)
class _LoadedHistory:
    days: int
    crm: str
    loaded_at: float
    sessions: list[HistoricSession]
    owners_before: list[tuple[str, str]]


class WhatIf:
    """One per process; safe to share between requests (loads are idempotent reads)."""

    def __init__(self, engine: AsyncEngine, crm: str, keep_seconds: float = HISTORY_KEPT_SECONDS) -> None:
        self.engine = engine
        self.crm = crm
        self.keep_seconds = keep_seconds
        self._loaded: _LoadedHistory | None = None

    async def _history(self, days: int) -> tuple[_LoadedHistory, float]:
        loaded = self._loaded
        now = time.monotonic()
        if loaded and loaded.days == days and now - loaded.loaded_at < self.keep_seconds:
            return loaded, 0.0
        async with self.engine.connect() as conn:
            sessions = await history_repo.sessions_since(conn, days)
            owners = await history_repo.owners_with_records_before(conn, self.crm, days)
        loaded = _LoadedHistory(days, self.crm, time.monotonic(), sessions, owners)
        self._loaded = loaded
        return loaded, loaded.loaded_at - now

    async def run(self, proposed: RecordSettings, days: int = DEFAULT_DAYS, *, fresh: bool = False) -> WhatIfResult:
        if not 1 <= days <= MAX_DAYS:
            raise ValueError(f"days must be between 1 and {MAX_DAYS}")
        if fresh:
            self._loaded = None
        async with self.engine.connect() as conn:
            version, current = await settings_repo.current(conn)
        history, load_seconds = await self._history(days)
        started = time.monotonic()
        report = replay(history.sessions, proposed, current, history.owners_before)
        return WhatIfResult(days, report, version, load_seconds, time.monotonic() - started)
