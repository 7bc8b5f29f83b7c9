"""Which database errors are the message's fault (dead-lettered) and which are the
database's (retried): decided by SQLSTATE, wherever the driver's wrapping put it."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError

from app.adapters.db.errors import rejects_the_data, short_description, sqlstate


def wrapped(error: Exception) -> DBAPIError:
    """What SQLAlchemy's asyncpg dialect raises: a generic DBAPIError around an adapter
    error around asyncpg's own exception."""
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)
    adapted.__cause__ = error
    return DBAPIError("INSERT INTO sessions ... [parameters: ('+15550001111',)]", {"p": "+15550001111"}, adapted)


@pytest.mark.parametrize("error, data_fault", [
    (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), False),  # 57P03
    (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), False),
    (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), False),  # 53300
    (asyncpg.exceptions.ConnectionFailureError("connection failure"), False),  # 08006
    (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), False),  # 57014
    (asyncpg.exceptions.SerializationError("could not serialize access"), False),  # 40001
    (asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding"), True),  # 22021
    (asyncpg.exceptions.NumericValueOutOfRangeError("value out of range"), True),  # 22003
    (asyncpg.exceptions.NotNullViolationError("null value in column"), True),  # 23502
    (asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds maximum"), True),  # 54000
])
def test_only_data_and_integrity_errors_are_the_message_fault(error, data_fault):
    assert rejects_the_data(wrapped(error)) is data_fault
    assert sqlstate(wrapped(error)) == error.sqlstate


def test_errors_without_sqlstate_are_infrastructure():
    assert not rejects_the_data(ConnectionRefusedError(111, "Connect call failed"))
    assert not rejects_the_data(TimeoutError())
    assert not rejects_the_data(OSError("no route to host"))


def test_the_description_never_carries_the_statement_or_its_parameters():
    text = short_description(wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")))
    assert "57P03" in text and "starting up" in text
    assert "+1555" not in text and "INSERT" not in text
