"""Tokens for other users: only a superuser mints them, in the admin, the command and the service.

docs/FAULTS.md: acting-as-someone-else.
"""
from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from backups_app.exceptions import AccessRefused
from backups_app.models import ApiToken, AuditEntry
from backups_app.services.tokens import api_token_create

pytestmark = pytest.mark.django_db

ADD = reverse("admin:backups_app_apitoken_add")


@pytest.fixture
def token_clerk(make_user):
    """Staff holding only add_apitoken (and view, to reach the page)."""
    user = make_user("clerk", permissions=())
    user.user_permissions.set(Permission.objects.filter(codename__in=["add_apitoken", "view_apitoken"]))
    return user


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password="unused-password-1234")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form(user) -> dict:
    return {"user": user.pk, "name": "", "expires_at_0": "", "expires_at_1": ""}


def test_admin_offers_a_non_superuser_only_themselves(token_clerk, root):
    page = logged_in(token_clerk).get(ADD).content.decode()
    assert f'value="{token_clerk.pk}"' in page
    assert f'value="{root.pk}"' not in page


def test_admin_refuses_a_forged_post_for_a_superuser(token_clerk, root):
    response = logged_in(token_clerk).post(ADD, form(root))
    assert response.status_code == 200  # the form again, with the error
    assert not ApiToken.objects.exists()
    # Itself is fine.
    response = logged_in(token_clerk).post(ADD, form(token_clerk))
    assert ApiToken.objects.get().user == token_clerk


def test_admin_save_refuses_even_when_the_form_is_bypassed(token_clerk, root, rf):
    from django.contrib.admin.sites import site

    from backups_app.admin.tokens import ApiTokenAdmin

    request = rf.post(ADD)
    request.user = token_clerk
    with pytest.raises(Exception) as refused:
        ApiTokenAdmin(ApiToken, site).save_model(request, ApiToken(user=root, name="x"), form=None, change=False)
    assert refused.type.__name__ == "PermissionDenied"
    assert not ApiToken.objects.exists()


def test_a_superuser_creates_tokens_for_anyone_in_the_admin(root, make_user):
    owner = make_user("script-owner")
    assert logged_in(root).post(ADD, form(owner)).status_code == 200
    assert ApiToken.objects.get().user == owner


def test_service_refuses_a_token_for_someone_else_and_audits_it(token_clerk, make_user):
    other = make_user("other")
    with pytest.raises(AccessRefused):
        api_token_create(user=other, source="admin", created_by=token_clerk)
    assert not ApiToken.objects.exists()
    assert AuditEntry.objects.get(action="token_create").outcome == "refused"


def test_command_acting_as_a_non_superuser_gets_tokens_for_themselves_only(token_clerk, root, make_user):
    with pytest.raises(CommandError, match="Only a superuser"):
        call_command("create_api_token", root.username, "--as-user", token_clerk.username, stdout=io.StringIO())
    with pytest.raises(CommandError, match="Only a superuser"):
        call_command("create_api_token", make_user("bob").username, "--as-user", token_clerk.username,
                     stdout=io.StringIO())
    assert not ApiToken.objects.exists()
    call_command("create_api_token", token_clerk.username, "--as-user", token_clerk.username, stdout=io.StringIO())
    assert ApiToken.objects.get().user == token_clerk
    entry = AuditEntry.objects.get(action="token_create", outcome="success")
    assert entry.user == token_clerk and entry.actor.startswith("clerk (cli")


def test_command_acting_user_needs_the_permission(make_user):
    viewer = make_user("viewer", permissions=("view_backuprecord",))
    with pytest.raises(CommandError, match="lacks the permission"):
        call_command("create_api_token", viewer.username, "--as-user", viewer.username, stdout=io.StringIO())


def test_command_token_for_a_superuser_needs_an_acting_superuser(root, make_user):
    with pytest.raises(CommandError, match="--as-user"):
        call_command("create_api_token", root.username, stdout=io.StringIO())
    assert not ApiToken.objects.exists()
    call_command("create_api_token", root.username, "--as-user", root.username, stdout=io.StringIO())
    # The host operator still issues tokens for ordinary staff without naming anyone.
    call_command("create_api_token", make_user("alice").username, stdout=io.StringIO())
    assert ApiToken.objects.count() == 2
