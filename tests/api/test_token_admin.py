"""The ApiToken admin: the token is shown once on creation, the hash never; revoke action."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from backups_app.models import ApiToken, AuditEntry
from backups_app.services.tokens import api_token_authenticate, api_token_create

pytestmark = pytest.mark.django_db


def test_adding_a_token_shows_it_once_and_stores_only_the_hash(admin_client, admin_user, make_user):
    owner = make_user("script-owner")
    response = admin_client.post(
        reverse("admin:backups_app_apitoken_add"), {"user": owner.pk, "name": "deploy script", "expires_at_0": "", "expires_at_1": ""}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = re.search(r'value="(ops_[A-Za-z0-9_-]+)"', response.content.decode()).group(1)

    token = api_token_authenticate(raw_token=raw)
    assert token.user == owner and token.name == "deploy script"
    assert ApiToken.objects.get().token_hash != raw
    assert AuditEntry.objects.get(action="token_create").source == "admin"

    # Never again: neither the change page nor the list shows the token or its hash.
    for url in (reverse("admin:backups_app_apitoken_change", args=[token.pk]), reverse("admin:backups_app_apitoken_changelist")):
        page = admin_client.get(url).content.decode()
        assert raw not in page
        assert token.token_hash not in page
        assert token.prefix in page


def test_an_expiry_in_the_past_is_refused(admin_client, make_user):
    owner = make_user("script-owner")
    response = admin_client.post(
        reverse("admin:backups_app_apitoken_add"),
        {"user": owner.pk, "name": "", "expires_at_0": "2001-01-01", "expires_at_1": "00:00:00"},
    )
    assert response.status_code == 200
    assert "must be in the future" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_changelist_columns_and_revoke_action(admin_client, make_user):
    issued = api_token_create(user=make_user("owner"), source="cli", name="ci")
    page = admin_client.get(reverse("admin:backups_app_apitoken_changelist")).content.decode()
    # Fewer columns so that the state is in view at 1400 px; created/revoked moments are on the record.
    for column in ("prefix", "name", "user", "state", "last_used_column", "expires_column"):
        assert f"column-{column}" in page
    assert "backup-badge--token-active" in page

    response = admin_client.post(
        reverse("admin:backups_app_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [issued.token.pk]},
        follow=True,
    )
    assert "1 token revoked" in response.content.decode()
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is not None
    assert AuditEntry.objects.filter(action="token_revoke", source="admin").count() == 1
