"""What a consumer saved last: each live session's state with its version, and the
settings in force it read. With them a steady stream's batch is folded without reading
the states and the settings again (a round trip per poll, on the screen pop's path).

Nothing here is trusted on its own: the batch's write checks each state over the version
remembered and the settings version folded with, and fails whole when either moved (a
rebalance, a restart of another replica, a settings change, tables emptied), and the
batch is applied again the locked way, which reads them afresh. So an entry may be
stale, but only ever one this consumer saw committed: a state is remembered only after
the statement or transaction that saved it committed.

A session that is not remembered is read, unless the batch begins it: its first event
in the batch is `queued`, the first event of a session. Then it is presumed new (no row,
version 0), which the write checks like any other version (a re-queued session this
consumer has forgotten conflicts, and is read the locked way).

Bounded: ended sessions are dropped (a late event reads them again) and the least
recently used are dropped beyond `capacity`, so memory stays flat in the number of
sessions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from app.adapters.db.batch_reads import BatchSnapshot
from app.adapters.db.sessions_repo import VersionedStates
from app.adapters.db.settings_repo import SettingsInForce
from app.domain.events import SessionEvent
from app.domain.session import SessionState

# About 1 KiB a state: 10 MiB at most, for more sessions in progress at once than one
# consumer's partitions hold at the contract's rates.
DEFAULT_CAPACITY = 10_000
_BEGINS_A_SESSION = "queued"


class SavedStates:
    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = capacity
        self._states: OrderedDict[str, tuple[SessionState, int]] = OrderedDict()
        self.settings: SettingsInForce | None = None

    def __len__(self) -> int:
        return len(self._states)

    def snapshot_for(self, events: Sequence[SessionEvent]) -> BatchSnapshot | None:
        """What the batch's read would give, as remembered: the settings, and its sessions
        (a session the batch begins, if not remembered, as new); None when one must be
        read, or no settings are known."""
        settings = self.settings
        if settings is None:
            return None
        states: dict[str, SessionState] = {}
        versions: dict[str, int] = {}
        seen: set[str] = set()
        for event in events:
            session_id = event.session.id
            if session_id in seen:
                continue
            seen.add(session_id)
            remembered = self._states.get(session_id)
            if remembered is not None:
                self._states.move_to_end(session_id)
                states[session_id], versions[session_id] = remembered
            elif event.event_type != _BEGINS_A_SESSION:
                return None
        return BatchSnapshot(settings, VersionedStates(states, versions))

    def remember(self, saved: VersionedStates, settings: SettingsInForce) -> None:
        """States committed at the versions given, folded with `settings`."""
        self.settings = settings
        for session_id, state in saved.states.items():
            if state.ended_at is not None:
                self._states.pop(session_id, None)
                continue
            self._states[session_id] = (state, saved.versions[session_id])
            self._states.move_to_end(session_id)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def forget(self, session_ids: Iterable[str]) -> None:
        """Drop these sessions and the settings: read them again next time."""
        self.settings = None
        for session_id in session_ids:
            self._states.pop(session_id, None)

    def clear(self) -> None:
        self.settings = None
        self._states.clear()
