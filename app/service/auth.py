"""Who is calling: named bearer tokens, each with a role.

The JSON API and the admin console sign in through this one module. Tokens come from
`ADMIN_API_TOKENS` (`name:token:role,...`), from `ADMIN_API_TOKENS_FILE` (one
`name:token:role` per line, `#` comments) and from the older `ADMIN_API_TOKEN`, which is
one admin token named `admin`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from app.settings import Settings

LEGACY_TOKEN_NAME = "admin"
# A name is what the settings history shows as the actor: short, plain, no markup.
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
ACTOR_NOTE_MAX_CHARS = 200


class Role(StrEnum):
    ADMIN = "admin"  # reads, changes settings, requeues parked rows
    VIEWER = "viewer"  # reads only


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in caller: the token's name (the actor in the history) and its role."""

    name: str
    role: Role

    @property
    def can_change(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class NamedToken:
    principal: Principal
    digest: bytes  # sha256 of the token: compared in constant time, never the token itself


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """A configured token (`name:token:role`) before it is hashed."""

    principal: Principal
    token: str = field(repr=False)  # never in a repr, a log line or a traceback's locals


class TokenConfigError(ValueError):
    """The token configuration cannot be used; the message names the variable and the entry."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_token_entries(entries: Iterable[str], source: str) -> list[TokenEntry]:
    """`name:token:role` entries; `source` names where they came from, for the error message."""
    parsed = []
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        parts = entry.split(":")
        if len(parts) != 3:
            raise TokenConfigError(f"{source}: entry {number} is not name:token:role")
        name, token, role = (p.strip() for p in parts)
        if not TOKEN_NAME.fullmatch(name):
            raise TokenConfigError(
                f"{source}: entry {number}: the name must be 1-64 letters, digits or . _ @ + - (got {name!r})"
            )
        if not token:
            raise TokenConfigError(f"{source}: entry {number} ({name}): the token is empty")
        try:
            parsed.append(TokenEntry(Principal(name, Role(role)), token))
        except ValueError:
            raise TokenConfigError(f"{source}: entry {number} ({name}): the role must be admin or viewer") from None
    return parsed


class TokenBook:
    """The configured tokens. `authenticate` compares a presented token with every one,
    in constant time, so neither timing nor position reveals how much of it matched."""

    def __init__(self, entries: Iterable[TokenEntry]):
        tokens: list[NamedToken] = []
        names: set[str] = set()
        digests: set[bytes] = set()
        for entry in entries:
            name, digest = entry.principal.name, _digest(entry.token)
            if name in names:
                raise TokenConfigError(f"the token name {name!r} is used twice")
            if digest in digests:
                raise TokenConfigError(f"the token named {name!r} is the same as another token")
            names.add(name)
            digests.add(digest)
            tokens.append(NamedToken(entry.principal, digest))
        self._tokens = tuple(tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenBook:
        entries: list[TokenEntry] = []
        legacy = settings.admin_api_token.get_secret_value() if settings.admin_api_token is not None else ""
        if legacy:
            entries.append(TokenEntry(Principal(LEGACY_TOKEN_NAME, Role.ADMIN), legacy))
        if settings.admin_api_tokens is not None:
            entries += parse_token_entries(settings.admin_api_tokens.get_secret_value().split(","), "ADMIN_API_TOKENS")
        if settings.admin_api_tokens_file is not None:
            path = Path(settings.admin_api_tokens_file)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise TokenConfigError(f"ADMIN_API_TOKENS_FILE: cannot read {path}: {exc.strerror}") from None
            entries += parse_token_entries(lines, "ADMIN_API_TOKENS_FILE")
        return cls(entries)

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    @property
    def principals(self) -> tuple[Principal, ...]:
        return tuple(t.principal for t in self._tokens)

    def signing_material(self) -> bytes:
        """Secret bytes that only holders of the token list know (the tokens' digests), for
        signing what the console hands out; every replica with the same list derives the same."""
        return b"".join(sorted(t.digest + t.principal.name.encode() + str(t.principal.role).encode()
                               for t in self._tokens))

    def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        presented = _digest(token)
        found = None
        for named in self._tokens:  # no early exit: every token is compared
            if hmac.compare_digest(presented, named.digest):
                found = named.principal
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def actor_note(raw: str | None) -> str | None:
    """The caller's own note for the history (`X-Actor`): control and format characters
    dropped, whitespace collapsed. None when nothing is left. Longer than
    ACTOR_NOTE_MAX_CHARS is refused by the caller (ActorNoteTooLong), not cut silently."""
    if raw is None:
        return None
    kept = "".join(" " if ch.isspace() else ch for ch in raw if unicodedata.category(ch)[0] != "C" or ch.isspace())
    note = " ".join(kept.split())
    if len(note) > ACTOR_NOTE_MAX_CHARS:
        raise ActorNoteTooLong(len(note))
    return note or None


class ActorNoteTooLong(ValueError):
    def __init__(self, length: int):
        super().__init__(f"at most {ACTOR_NOTE_MAX_CHARS} characters (got {length})")
