"""Versions of the administrator's record-creation settings; the newest is in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from hashlib import blake2b
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db.schema import settings_versions
from app.domain.record_settings import DEFAULT_RECORD_SETTINGS, RecordSettings, SettingChange

# The document as text: a version's text is its cache key below, so a document is
# validated once per process, not once per consumer batch or outbox row.
_CURRENT = text("SELECT version, CAST(document AS text) FROM settings_versions ORDER BY version DESC LIMIT 1")
_OF_VERSION = text("SELECT CAST(document AS text) FROM settings_versions WHERE version = :version")


@dataclass(frozen=True, slots=True)
class SettingsVersion:
    version: int
    saved_at: datetime
    actor: str | None  # the name of the token that saved it
    actor_note: str | None  # what the caller added in X-Actor
    changes: dict[str, SettingChange]
    document: dict[str, Any]  # the whole settings document, as it was saved


@dataclass(frozen=True, slots=True)
class SettingsInForce:
    version: int | None  # None: nothing saved yet, the defaults apply
    # A digest of the version's document: with the version, what a record row names, so a
    # worker that knows the pair needs no read (and a renumbered database is never trusted).
    digest: str | None
    settings: RecordSettings


@lru_cache(maxsize=64)
def _parsed(document: str) -> tuple[str, RecordSettings]:
    # Keyed by the content, not the version number: a database whose versions were
    # truncated and numbered again (tests) can never get another version's settings.
    return blake2b(document.encode(), digest_size=8).hexdigest(), RecordSettings.model_validate_json(document)


# (version, digest) -> settings, for the versions this process has seen: immutable once saved.
_known: dict[tuple[int, str], RecordSettings] = {}


def _remember(version: int, document: str) -> tuple[str, RecordSettings]:
    digest, settings = _parsed(document)
    if len(_known) > 256:
        _known.clear()
    _known[(version, digest)] = settings
    return digest, settings


async def in_force(conn: AsyncConnection) -> SettingsInForce:
    """The settings in force: one small read, validated only when the version is new."""
    row = (await conn.execute(_CURRENT)).first()
    return in_force_of(row[0], row[1]) if row is not None else in_force_of(None, None)


# For the consumer, which reads it in the same statement as its dedup rows (batch_reads).
CURRENT_SQL = _CURRENT.text


def in_force_of(version: int | None, document: str | None) -> SettingsInForce:
    """What CURRENT_SQL's row (version, document text) means; (None, None): nothing saved yet."""
    if version is None or document is None:
        return SettingsInForce(None, None, DEFAULT_RECORD_SETTINGS)
    digest, settings = _remember(version, document)
    return SettingsInForce(version, digest, settings)


def known_version(version: int | None, digest: str | None) -> RecordSettings | None:
    """The settings of a version this process already knows (None: it must read them)."""
    if version is None:
        return DEFAULT_RECORD_SETTINGS
    return _known.get((version, digest)) if digest is not None else None


async def of_version(conn: AsyncConnection, version: int | None, digest: str | None = None) -> RecordSettings:
    """The settings of one saved version (None: the defaults, in force before any save);
    no read when this process already knows (version, digest)."""
    if (known := known_version(version, digest)) is not None:
        return known
    assert version is not None  # known_version answers for the defaults
    document = (await conn.execute(_OF_VERSION, {"version": version})).scalar_one_or_none()
    if document is None:
        raise LookupError(f"settings version {version} does not exist")
    found_digest, settings = _remember(version, document)
    if digest is not None and found_digest != digest:
        raise LookupError(f"settings version {version} is not the document the row was decided under")
    return settings


async def lock_for_save(conn: AsyncConnection) -> None:
    """Serialise saves, so that each version's "what changed" is against its predecessor."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(727274002)"))


def _version(row: Any) -> SettingsVersion:
    return SettingsVersion(
        version=row["version"], saved_at=row["saved_at"], actor=row["actor"], actor_note=row["actor_note"],
        changes={name: SettingChange.from_document(change) for name, change in row["changes"].items()},
        document=row["document"],
    )


async def insert_version(
    conn: AsyncConnection, document: RecordSettings, changes: dict[str, SettingChange], actor: str | None,
    actor_note: str | None = None,
) -> SettingsVersion:
    row = (
        await conn.execute(
            insert(settings_versions)
            .values(document=document.model_dump(), changes={k: c.to_document() for k, c in changes.items()},
                    actor=actor, actor_note=actor_note)
            .returning(settings_versions)
        )
    ).mappings().one()
    return _version(row)


async def history(conn: AsyncConnection, *, limit: int, before_version: int | None = None) -> list[SettingsVersion]:
    """Newest first; `before_version` continues a page from where the last one ended."""
    query = select(settings_versions).order_by(settings_versions.c.version.desc()).limit(limit)
    if before_version is not None:
        query = query.where(settings_versions.c.version < before_version)
    return [_version(r) for r in (await conn.execute(query)).mappings()]
