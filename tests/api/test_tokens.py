"""API tokens: issued once, stored as a hash only, rejected when expired, revoked or inactive."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from backups_app.exceptions import ApiTokenRejected
from backups_app.models import ApiToken, AuditEntry
from backups_app.services.tokens import (
    api_token_authenticate,
    api_token_create,
    api_token_revoke,
    token_hash,
)

pytestmark = pytest.mark.django_db


def database_dump() -> str:
    """Every row of every table, as SQL text (the test database is SQLite)."""
    return "\n".join(connection.connection.iterdump())


def test_token_is_random_prefixed_and_stored_only_as_its_hash(make_user):
    user = make_user()
    issued = api_token_create(user=user, source="cli", name="nightly script")
    raw = issued.raw_token

    assert raw.startswith("ops_") and len(raw) >= 4 + 43
    token = ApiToken.objects.get()
    assert token.token_hash == token_hash(raw) and len(token.token_hash) == 64
    assert raw.startswith(token.prefix) and len(token.prefix) == 12
    assert raw not in repr(issued)
    # docs/FAULTS.md leaked-database: a leaked copy of the database holds no usable token, nor its
    # random part.
    dump = database_dump()
    assert raw not in dump
    assert raw[len(token.prefix):] not in dump
    assert token.token_hash in dump


def test_two_tokens_differ(make_user):
    user = make_user()
    first = api_token_create(user=user, source="cli").raw_token
    second = api_token_create(user=user, source="cli").raw_token
    assert first != second


def test_authenticate_returns_the_token_with_its_user(make_user):
    user = make_user()
    raw = api_token_create(user=user, source="cli").raw_token
    token = api_token_authenticate(raw_token=raw)
    assert token.user == user
    assert token.last_used_at is not None


@pytest.mark.parametrize("raw", ["", "ops_", "ops_notatoken", "x" * 5000, "ops_\x00"])
def test_unknown_tokens_are_rejected(make_user, raw):
    api_token_create(user=make_user(), source="cli")
    with pytest.raises(ApiTokenRejected, match="unknown"):
        api_token_authenticate(raw_token=raw)


def test_revoked_expired_and_inactive_tokens_are_rejected(make_user):
    revoked_raw = api_token_create(user=make_user("a"), source="cli").raw_token
    api_token_revoke(token=ApiToken.objects.get(token_hash=token_hash(revoked_raw)), source="cli")
    expired = api_token_create(user=make_user("b"), source="cli", expires_in_days=1)
    ApiToken.objects.filter(pk=expired.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    inactive_raw = api_token_create(user=make_user("c", active=False), source="cli").raw_token

    for raw, reason in [(revoked_raw, "revoked"), (expired.raw_token, "expired"), (inactive_raw, "inactive")]:
        with pytest.raises(ApiTokenRejected, match=reason) as rejection:
            api_token_authenticate(raw_token=raw)
        assert raw.startswith(rejection.value.prefix)


def test_last_used_is_written_at_most_once_a_minute(make_user):
    raw = api_token_create(user=make_user(), source="cli").raw_token
    token = ApiToken.objects.get()
    recent = timezone.now() - timedelta(seconds=30)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=recent)
    api_token_authenticate(raw_token=raw)
    token.refresh_from_db()
    assert token.last_used_at == recent

    old = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=old)
    api_token_authenticate(raw_token=raw)
    token.refresh_from_db()
    assert token.last_used_at > old + timedelta(minutes=1)


@pytest.mark.parametrize("days", [0, -3])
def test_expiry_must_be_in_the_future(make_user, days):
    with pytest.raises(ValueError):
        api_token_create(user=make_user(), source="cli", expires_in_days=days)
    assert not ApiToken.objects.exists()


def test_create_and_revoke_are_audited_without_the_token(make_user):
    owner = make_user("owner")
    admin_user = make_user("boss")
    # Only a superuser issues tokens for someone else (backups_app/access.py).
    admin_user.is_superuser = True
    admin_user.save()
    issued = api_token_create(user=owner, source="admin", created_by=admin_user)
    assert api_token_revoke(token=issued.token, source="admin", user=admin_user) is True
    assert api_token_revoke(token=issued.token, source="admin", user=admin_user) is False

    entries = list(AuditEntry.objects.order_by("id").values_list("action", "actor", "target", "detail"))
    assert [entry[:3] for entry in entries] == [
        ("token_create", "boss", issued.token.prefix),
        ("token_revoke", "boss", issued.token.prefix),
    ]
    assert all(issued.raw_token not in entry[3] for entry in entries)


# --- create_api_token command ------------------------------------------------------------------

def test_command_prints_the_token_once_as_the_last_word(make_user):
    make_user("alice")
    out = io.StringIO()
    call_command("create_api_token", "alice", "--expires-in-days", "30", stdout=out)
    lines = out.getvalue().strip().splitlines()
    raw = lines[-1].split()[-1]
    assert out.getvalue().count(raw) == 1
    token = api_token_authenticate(raw_token=raw)
    assert token.user.username == "alice"
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    entry = AuditEntry.objects.get(action="token_create")
    assert entry.source == "cli" and entry.actor.startswith("cli")


def test_command_token_without_expiry(make_user):
    make_user("alice")
    out = io.StringIO()
    call_command("create_api_token", "alice", stdout=out)
    assert api_token_authenticate(raw_token=out.getvalue().split()[-1]).expires_at is None


def test_command_warns_about_a_non_staff_user(make_user):
    make_user("bob", staff=False)
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "bob", stdout=out, stderr=err)
    assert "not staff" in err.getvalue()


@pytest.mark.parametrize(
    "args, message",
    [(["nobody"], "No user"), (["alice", "--expires-in-days", "0"], "at least 1"), (["sleepy"], "inactive")],
)
def test_command_errors(make_user, args, message):
    make_user("alice")
    make_user("sleepy", active=False)
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *args, stdout=io.StringIO())
    assert not ApiToken.objects.exists()
