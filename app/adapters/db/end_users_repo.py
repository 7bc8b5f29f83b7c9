"""The end-user mapping: (CRM account, platform end-user id) -> the CRM's user id.

Used until the CRM says that user is gone (404, merged); then forgotten, and the next
record of that end user looks the user up again. The worker reads it together with the
session (records_repo.record_context) and writes it in its bookkeeping transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_REMEMBER = text(
    """
    INSERT INTO crm_end_users (crm_account, end_user_id, crm_user_id)
    SELECT :account, m.end_user_id, m.crm_user_id
    FROM unnest(CAST(:end_user_ids AS text[]), CAST(:crm_user_ids AS text[])) AS m(end_user_id, crm_user_id)
    ON CONFLICT (crm_account, end_user_id) DO UPDATE
        SET crm_user_id = EXCLUDED.crm_user_id, updated_at = now()
        WHERE crm_end_users.crm_user_id IS DISTINCT FROM EXCLUDED.crm_user_id
    """
)
_FORGET = text(
    "DELETE FROM crm_end_users WHERE crm_account = :account AND end_user_id = :end_user_id "
    "AND crm_user_id = :crm_user_id"
)
_LOOKUP = text("SELECT crm_user_id FROM crm_end_users WHERE crm_account = :account AND end_user_id = :end_user_id")


async def remember(conn: AsyncConnection, account: str, users: dict[str, str]) -> None:
    """Remember CRM user ids by end-user id; sorted, so concurrent writers lock in one order."""
    if not users:
        return
    await conn.execute(_REMEMBER, remember_parameters(account, users))


REMEMBER = _REMEMBER  # for outbox_writes


def remember_parameters(account: str, users: dict[str, str]) -> dict[str, Any]:
    ordered = sorted(users.items())
    return {"account": account, "end_user_ids": [k for k, _ in ordered], "crm_user_ids": [v for _, v in ordered]}


async def forget(conn: AsyncConnection, account: str, end_user_id: str, crm_user_id: str) -> None:
    """Forget the mapping the CRM refused, unless another worker has replaced it since."""
    await conn.execute(_FORGET, {"account": account, "end_user_id": end_user_id, "crm_user_id": crm_user_id})


async def lookup(conn: AsyncConnection, account: str, end_user_id: str) -> str | None:
    return (await conn.execute(_LOOKUP, {"account": account, "end_user_id": end_user_id})).scalar()
