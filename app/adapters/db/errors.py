"""Telling a database error caused by the data from one caused by the database.

Only the first kind may send a message to the dead-letter topic. asyncpg's errors carry
the server's SQLSTATE, but SQLAlchemy's asyncpg dialect wraps several of them (57P03
"the database system is starting up" among them) in a generic `DBAPIError`, so the
exception's class says little: the SQLSTATE is what decides.
"""

from __future__ import annotations

# Classes of SQLSTATE that mean "PostgreSQL refuses this data": 22 data exception (a NUL
# character in text, a number out of range, an invalid date), 23 integrity constraint
# violation; and 54000, a row or index entry too large to store (a huge id or text).
_DATA_CLASSES = ("22", "23")
_DATA_STATES = ("54000",)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE the server answered with, wherever it sits in the wrapping chain."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            return state
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return None


def rejects_the_data(exc: BaseException) -> bool:
    """True when PostgreSQL refused what was written, not when it could not be reached,
    was restarting, ran out of resources or timed out: those are retried, never
    dead-lettered."""
    state = sqlstate(exc)
    return state is not None and (state[:2] in _DATA_CLASSES or state in _DATA_STATES)


def short_description(exc: BaseException) -> str:
    """The error's class, SQLSTATE and first line: never the statement or its parameters,
    which SQLAlchemy's own message carries (they may hold an end user's data)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ""
    state = sqlstate(exc)
    name = type(cause).__name__ + (f" SQLSTATE {state}" if state else "")
    return f"{name}: {text}" if text else name
