"""The CRM access token shared by the replicas (app.adapters.crm.salesforce.client's
TokenStore): read it, and replace it only while it is still the one a caller found
refused, so two replicas renewing at once keep the same (newest) token."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_LOAD = text("SELECT access_token, instance_url FROM crm_tokens WHERE account = :account")
# Insert, or replace the stored token when it is the stale one (or when no stale one is
# named): a replica that renewed first wins, and the other adopts its token.
_SAVE = text(
    """
    INSERT INTO crm_tokens AS t (account, access_token, instance_url) VALUES (:account, :token, :url)
    ON CONFLICT (account) DO UPDATE SET access_token = EXCLUDED.access_token,
                                        instance_url = EXCLUDED.instance_url, updated_at = now()
        WHERE CAST(:stale AS text) IS NULL OR t.access_token = CAST(:stale AS text)
    """
)


@dataclass(frozen=True, slots=True)
class StoredToken:
    access_token: str
    instance_url: str


class PostgresTokenStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def load(self, account: str) -> StoredToken | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(_LOAD, {"account": account})).first()
        return StoredToken(row.access_token, row.instance_url) if row else None

    async def save(self, account: str, token: StoredToken, *, replacing: str | None) -> None:
        """Store `token` unless another replica already replaced `replacing` (the refused token)."""
        async with self.engine.begin() as conn:
            await conn.execute(_SAVE, {"account": account, "token": token.access_token,
                                       "url": token.instance_url, "stale": replacing})
