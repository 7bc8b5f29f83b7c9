"""Use case: the what-if preview. Replays the sessions of the last N days through the pure
policy (app/domain/whatif.py).

What the replay needs is kept in PostgreSQL as one compact row per session
(history_repo: brought up to date with the sessions before each read). The history is
loaded from there once and then kept up to date: each later request reads only the rows
that changed, so an administrator who tries setting after setting waits for the replay
alone. The service loads the 7-day history in the background after a start, a chunk per
turn of the event loop, and keeps it (`keep_warm`, WHATIF_KEEP_WARM); otherwise the console
starts the first load when the panel opens. Any other unused history is dropped after a while."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db import history_repo, settings_repo
from app.domain.record_settings import RecordSettings
from app.domain.whatif import HistoricSession, RecordOwner, WhatIfReport, replay

log = logging.getLogger(__name__)

DEFAULT_DAYS = 7
MAX_DAYS = 90
DROP_UNUSED_AFTER_SECONDS = 600.0
# How often the service brings the replay inputs up to date in the background, so that a
# what-if (the first after a start included) finds at most this much to work out.
REFRESH_EVERY_SECONDS = 60.0
# Rows decoded and built per turn of the event loop when the history is loaded in the
# background: a few milliseconds of CPU each (docs/bench-whatif.md).
WARM_ROWS_PER_CHUNK = 200


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    days: int
    report: WhatIfReport
    current_version: int | None
    load_seconds: float  # reading the history (all of it, or what changed since the last read)
    replay_seconds: float


@dataclass(slots=True)
class _History:
    days: int
    read_at: datetime  # the database's clock when the last read began
    newest_source: datetime | None  # when the newest session of the replay inputs changed, at that read
    sessions: dict[str, history_repo.WindowSession] = field(default_factory=dict)
    owners_before: list[RecordOwner] = field(default_factory=list)
    last_used: float = 0.0
    generation: int = 0  # grows whenever a read brings changed sessions
    ordered: list[HistoricSession] | None = None  # the window's sessions, oldest first, for this generation


class WhatIf:
    """One per process, shared by requests."""

    def __init__(self, engine: AsyncEngine, crm: str) -> None:
        self.engine = engine
        self.crm = crm
        self._history: _History | None = None
        self._keep_days: int | None = None  # the window keep_warm holds
        self._lock = asyncio.Lock()
        # The last answer: a change of the title or the tags decides nothing, so the same
        # history under the same deciding settings gives the same report.
        self._last: tuple[tuple, WhatIfReport] | None = None

    async def _read(self, days: int, rows_per_chunk: int | None = None, *, owners: bool = True) -> float:
        started = time.monotonic()
        if self._history is not None and self._history.days == days:
            # The rows changed since the last read.
            await self._load(days, full=False, rows_per_chunk=rows_per_chunk, owners=owners)
            return time.monotonic() - started
        gc.collect()  # what is cyclic garbage now would otherwise be frozen with the new history
        with history_repo.gc_paused():
            await self._load(days, full=True, rows_per_chunk=rows_per_chunk, owners=owners)
            # Out of the collector's sight, before it is back on (it would walk the new history
            # at once): some 700,000 objects for 100,000 sessions, none in a cycle, which every
            # full collection would otherwise walk, holding up the process's event loop
            # (measured: 0.6 s per collection). Frozen objects are still freed by reference
            # counting when the history is dropped; never unfrozen, since the service also
            # keeps its start-up heap frozen (app/entrypoints/service.py).
            gc.freeze()
        return time.monotonic() - started

    async def _load(self, days: int, full: bool, rows_per_chunk: int | None = None, *, owners: bool = True) -> None:
        history = self._history
        async with self.engine.begin() as conn:  # the refreshed rows are committed for every replica
            now = await history_repo.database_now(conn)
            await history_repo.refresh(conn, changed=False)
            newest = await history_repo.newest_source(conn)
            if full or history is None:
                history = _History(days, now, newest)
                if rows_per_chunk is None:
                    for row in await history_repo.sessions_since(conn, days):
                        history.sessions[row.session.session_id] = row
                else:  # in the background: the event loop runs other tasks between two chunks
                    ordered: list[HistoricSession] = []  # the rows come oldest first
                    async for chunk in history_repo.sessions_since_in_chunks(conn, days, rows_per_chunk):
                        for row in chunk:
                            history.sessions[row.session.session_id] = row
                            ordered.append(row.session)
                    history.ordered = ordered
            else:
                changed = False
                async for rows in self._changed_rows(conn, history, rows_per_chunk):
                    for row in rows:
                        if history.sessions.get(row.session.session_id) != row:
                            history.sessions[row.session.session_id] = row
                            changed = True
                history.read_at = now
                history.newest_source = newest
                if changed:
                    history.generation += 1
                    history.ordered = None
            if owners:  # a request reads them again: the background rounds leave them (a scan of crm_records)
                history.owners_before = await history_repo.owners_with_records_before(conn, self.crm, history.days)
        window_start = now - timedelta(days=history.days)
        if not full and any(v.created_at < window_start for v in history.sessions.values()):
            history.sessions = {k: v for k, v in history.sessions.items() if v.created_at >= window_start}
            history.ordered = None
        if history.ordered is None and rows_per_chunk is None:
            history.ordered = _ordered(history)  # else by the request that needs it (`run`)
        history.last_used = time.monotonic()
        self._history = history

    @staticmethod
    async def _changed_rows(conn, history: _History,
                            rows_per_chunk: int | None) -> AsyncIterator[list[history_repo.WindowSession]]:
        """Whichever refresh brought them in (this one, the background one, another
        replica's): every row whose session changed since the newest one held; in chunks
        in the background, where the event loop runs other tasks between two."""
        days, since = history.days, history.newest_source
        if rows_per_chunk is None:
            if since is not None:
                yield await history_repo.sessions_changed_since(conn, days, since)
            else:
                yield await history_repo.sessions_since(conn, days)
        elif since is not None:
            async for chunk in history_repo.sessions_changed_since_in_chunks(conn, days, since, rows_per_chunk):
                yield chunk
        else:
            async for chunk in history_repo.sessions_since_in_chunks(conn, days, rows_per_chunk):
                yield chunk

    async def warm(self, days: int = DEFAULT_DAYS) -> None:
        """Load the history ahead of the first request (the panel calls this when it opens)."""
        async with self._lock:
            if self._history is None or self._history.days != days:
                await self._read(days)
                asyncio.get_running_loop().call_later(DROP_UNUSED_AFTER_SECONDS, self._drop_if_unused)

    async def keep_warm(self, rows_per_chunk: int = WARM_ROWS_PER_CHUNK, max_sessions: int | None = None) -> None:
        """What the service's background task does every round: load the default window's
        history when none is held, `rows_per_chunk` rows at a time so that the consumer and
        the worker run between two chunks, and bring a held history up to date; the default
        window is then never dropped, so an administrator's first what-if after a start finds
        it ready (memory: see docs/bench-whatif.md). A window of more than `max_sessions`
        sessions is not kept: about 1 KiB each, every replica would hold it for good."""
        async with self._lock:
            history = self._history
            if history is None:
                if max_sessions is not None:
                    async with self.engine.begin() as conn:  # counted once brought up to date
                        await history_repo.refresh(conn, changed=False)
                        if await history_repo.count_in_window(conn, DEFAULT_DAYS) > max_sessions:
                            self._keep_days = None
                            return
                self._keep_days = DEFAULT_DAYS
                await self._read(DEFAULT_DAYS, rows_per_chunk, owners=False)
                asyncio.get_running_loop().call_later(DROP_UNUSED_AFTER_SECONDS, self._drop_if_unused)
            else:
                last_used = history.last_used
                await self._read(history.days, rows_per_chunk, owners=False)
                history.last_used = last_used  # kept current, not used
                if max_sessions is not None and len(history.sessions) > max_sessions:
                    self._keep_days = None  # grown past the cap: dropped once unused, like any other
                    log.info("what-if: the %d-day window outgrew WHATIF_KEEP_WARM_MAX_SESSIONS; "
                             "it is no longer kept warm", history.days)

    def keeps(self) -> bool:
        """Whether a held history is kept for good (keep_warm), not dropped when unused."""
        return self._history is not None and self._history.days == self._keep_days

    def holds(self, days: int = DEFAULT_DAYS) -> bool:
        """Whether the history of the last `days` days is in memory (a what-if reads only what changed)."""
        return self._history is not None and self._history.days == days

    def _drop_if_unused(self) -> None:
        history = self._history
        if history is None:
            return
        kept = history.days == self._keep_days  # keep_warm holds it for good
        if not kept and time.monotonic() - history.last_used >= DROP_UNUSED_AFTER_SECONDS:
            self._history = None
        else:
            asyncio.get_running_loop().call_later(DROP_UNUSED_AFTER_SECONDS, self._drop_if_unused)

    async def run(self, proposed: RecordSettings, days: int = DEFAULT_DAYS, *, fresh: bool = False) -> WhatIfResult:
        if not 1 <= days <= MAX_DAYS:
            raise ValueError(f"days must be between 1 and {MAX_DAYS}")
        async with self._lock:
            if fresh:
                self._history = None
            new = self._history is None
            load_seconds = await self._read(days)
            if new:
                asyncio.get_running_loop().call_later(DROP_UNUSED_AFTER_SECONDS, self._drop_if_unused)
            history = self._history
            assert history is not None
            async with self.engine.connect() as conn:
                in_force = await settings_repo.in_force(conn)
            version, current = in_force.version, in_force.settings
            if history.ordered is None:  # a background round brought changes
                history.ordered = _ordered(history)
            sessions = history.ordered
            started = time.monotonic()
            key = (id(history), history.generation, days, version, _deciding(proposed))
            if self._last is not None and self._last[0] == key:
                report = self._last[1]
            else:
                with history_repo.gc_paused():  # the replay's tuples and strings hold no cycles either
                    report = replay(sessions, proposed, current, history.owners_before)
                self._last = (key, report)
            return WhatIfResult(days, report, version, load_seconds, time.monotonic() - started)


async def refresh_periodically(engine: AsyncEngine, stop: asyncio.Event, every: float = REFRESH_EVERY_SECONDS,
                               what_if: WhatIf | None = None, max_sessions: int | None = None) -> None:
    """Keep `whatif_inputs` within `every` seconds of the sessions (each replica does; a
    refresh that finds nothing changed costs a scan of the sessions' `updated_at`). With
    `what_if`, also load its default window's history in the background and keep it
    current (`WhatIf.keep_warm`)."""
    while not stop.is_set():
        try:
            if what_if is not None:
                await what_if.keep_warm(max_sessions=max_sessions)
            else:
                async with engine.begin() as conn:
                    await history_repo.refresh(conn, changed=False)
        except Exception as exc:  # the database may be away for a moment: the next round tries again
            log.warning("what-if inputs not refreshed: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


def _first_event_at(session: HistoricSession) -> datetime:
    return session.first_event_at


def _ordered(history: _History) -> list[HistoricSession]:
    """The window's sessions, oldest first."""
    return sorted((row.session for row in history.sessions.values()), key=_first_event_at)


# Settings that only shape what a record says: they change no outcome.
_WORDING = ("record_title_template", "record_title_locale", "add_session_type_tags", "add_platform_tag")


def _deciding(settings: RecordSettings) -> tuple:
    return tuple(v for k, v in settings.model_dump().items() if k not in _WORDING)
