"""Named tokens with roles: parsing, the legacy single token, constant-time look-up, X-Actor notes."""

from __future__ import annotations

import pytest

from app.service.auth import (
    ACTOR_NOTE_MAX_CHARS,
    ActorNoteTooLong,
    Principal,
    Role,
    TokenBook,
    TokenConfigError,
    actor_note,
    bearer_token,
)
from app.settings import Settings


def book(**values) -> TokenBook:
    return TokenBook.from_settings(Settings(_env_file=None, **values))


def test_named_tokens_with_roles():
    tokens = book(admin_api_tokens="ana:tok-ana-123:admin, bob:tok-bob-456:viewer")
    assert tokens.authenticate("tok-ana-123") == Principal("ana", Role.ADMIN)
    assert tokens.authenticate("tok-bob-456") == Principal("bob", Role.VIEWER)
    assert tokens.authenticate("tok-bob-45") is None
    assert tokens.authenticate("") is None and tokens.authenticate(None) is None
    assert tokens.authenticate("tok-ana-123").can_change and not tokens.authenticate("tok-bob-456").can_change


def test_the_single_token_variable_keeps_working_as_one_admin_token():
    tokens = book(admin_api_token="legacy-token")
    assert tokens.authenticate("legacy-token") == Principal("admin", Role.ADMIN)
    both = book(admin_api_token="legacy-token", admin_api_tokens="eve:eve-token:viewer")
    assert both.authenticate("legacy-token").role is Role.ADMIN
    assert both.authenticate("eve-token").name == "eve"


def test_no_token_configured_authenticates_nobody():
    tokens = book()
    assert not tokens.configured
    assert tokens.authenticate("anything") is None


def test_tokens_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# the on-call team\nops:ops-token-1:viewer\n\nlead:lead-token-2:admin\n")
    tokens = book(admin_api_tokens_file=str(path))
    assert tokens.authenticate("ops-token-1") == Principal("ops", Role.VIEWER)
    assert tokens.authenticate("lead-token-2") == Principal("lead", Role.ADMIN)
    with pytest.raises(TokenConfigError, match="ADMIN_API_TOKENS_FILE: cannot read"):
        book(admin_api_tokens_file=str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ana:s3cr3t", "entry 1 is not name:token:role"),
        ("ana:s3cr3t:root", "entry 1 \\(ana\\): the role must be admin or viewer"),
        ("ana::admin", "the token is empty"),
        ("<b>x</b>:s3cr3t:admin", "the name must be"),
        ("ana:s3cr3t:admin,ana:s3cr3t2:viewer", "used twice"),
        ("ana:s3cr3t:admin,bob:s3cr3t:viewer", "the same as another token"),
    ],
)
def test_a_bad_token_list_is_refused_naming_the_entry(spec, message):
    with pytest.raises(TokenConfigError, match=message) as raised:
        book(admin_api_tokens=spec)
    assert "s3cr3t" not in str(raised.value)  # the token itself is never part of the message


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None and bearer_token("Bearer ") is None


def test_actor_note_is_sanitized_and_bounded():
    assert actor_note(None) is None
    assert actor_note("  ana \t from   billing ") == "ana from billing"
    assert actor_note("a\x00b\x1bc\u200bd") == "abcd"
    assert actor_note("   ") is None
    assert actor_note("x" * ACTOR_NOTE_MAX_CHARS) == "x" * ACTOR_NOTE_MAX_CHARS
    with pytest.raises(ActorNoteTooLong):
        actor_note("x" * (ACTOR_NOTE_MAX_CHARS + 1))
