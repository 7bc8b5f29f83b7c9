"""Console sign-in: a signed, HttpOnly, SameSite=Strict session cookie with an expiry,
holding the signed-in token's name, role and the session's CSRF token.

The sign-in form is protected too (login CSRF: another site must not sign a browser in
under the attacker's token): the form page sets a short-lived SameSite=Strict cookie with
a random nonce and puts a MAC of that nonce in the form; a sign-in is accepted only with
both, so a cross-site post, which carries neither the cookie nor the MAC, is refused.

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
LOGIN_COOKIE = "crm_console_login"
LOGIN_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    principal: Principal
    csrf_token: str


class SessionSigner:
    def __init__(self, tokens: TokenBook, max_age: int = SESSION_SECONDS) -> None:
        key = hashlib.sha256(b"crm-records console session\x00" + tokens.signing_material()).hexdigest()
        self._serializer = URLSafeTimedSerializer(key, salt="console-session")
        self._login_key = hashlib.sha256(b"crm-records console sign-in\x00" + key.encode()).digest()
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


    def login_nonce(self, cookie: str | None) -> str:
        """The sign-in form's nonce: the browser's own while its cookie is well formed, else a new one."""
        if cookie and len(cookie) == 32 and all(c in "0123456789abcdef" for c in cookie):
            return cookie
        return secrets.token_hex(16)

    def login_token(self, nonce: str) -> str:
        """What the sign-in form carries: a MAC of the nonce the form's cookie holds."""
        return hmac.new(self._login_key, nonce.encode(), hashlib.sha256).hexdigest()

    def login_ok(self, cookie: str | None, presented: str | None) -> bool:
        if not cookie or not presented:
            return False
        return hmac.compare_digest(self.login_token(cookie).encode(), presented.encode())


def csrf_ok(session: ConsoleSession, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), presented.encode())


__all__ = [
    "COOKIE_NAME", "CSRF_FIELD", "CSRF_HEADER", "LOGIN_COOKIE", "LOGIN_SECONDS", "ConsoleSession", "Role",
    "SessionSigner", "csrf_ok",
]
