"""Console sign-in: a signed, HttpOnly, SameSite=Strict session cookie with an expiry,
holding the signed-in token's name, role and the session's CSRF token.

The signing key is derived from the configured tokens, so every replica with the same
token list accepts the same cookie, and changing the tokens signs everyone out. A cookie
whose name no longer has a token, or whose role changed, is refused."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from app.service.auth import Principal, Role, TokenBook

COOKIE_NAME = "crm_console"
SESSION_SECONDS = 8 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    principal: Principal
    csrf_token: str


class SessionSigner:
    def __init__(self, tokens: TokenBook, max_age: int = SESSION_SECONDS) -> None:
        key = hashlib.sha256(b"crm-records console session\x00" + tokens.signing_material()).hexdigest()
        self._serializer = URLSafeTimedSerializer(key, salt="console-session")
        self._tokens = tokens
        self.max_age = max_age

    def issue(self, principal: Principal) -> tuple[str, ConsoleSession]:
        session = ConsoleSession(principal, secrets.token_urlsafe(24))
        value = self._serializer.dumps({"n": principal.name, "r": str(principal.role), "c": session.csrf_token})
        return value, session

    def read(self, cookie: str | None) -> ConsoleSession | None:
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
        except (BadSignature, SignatureExpired):
            return None
        known = {p.name: p for p in self._tokens.principals}
        principal = known.get(data.get("n"))
        if principal is None or str(principal.role) != data.get("r"):
            return None
        return ConsoleSession(principal, str(data.get("c")))


def csrf_ok(session: ConsoleSession, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), presented.encode())


__all__ = ["COOKIE_NAME", "CSRF_FIELD", "CSRF_HEADER", "ConsoleSession", "Role", "SessionSigner", "csrf_ok"]
