"""The admin's provider page and test-connection action; secrets_check; import cost."""
from __future__ import annotations

import ast
import io
import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError

from secrets_app import get_secret
from secrets_app.models import KnownSecret, SecretAccess
from secrets_app.providers.local import LocalProvider
from secrets_app.services import secrets_access_flush
from tests.secrets.conftest import PROJECT_ROOT, ScriptedProvider

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/secrets_app/knownsecret/"
TEST_CONNECTION = "/admin/secrets_app/knownsecret/test-connection/"


@pytest.fixture
def scripted(use_default_manager):
    provider = ScriptedProvider({"SGP_TOKEN": "admin-visible-never-1"})
    use_default_manager(provider, fallback=LocalProvider(environ={}), ttl=60)
    return provider


def test_changelist_shows_the_provider_options_and_known_secrets(admin_client, scripted):
    get_secret("SGP_TOKEN")
    page = admin_client.get(CHANGELIST).content.decode()
    assert "Active provider" in page and "scripted" in page and "Test connection" in page
    secret = KnownSecret.objects.get(name="SGP_TOKEN")
    assert secret.source == "scripted" and secret.version == "1" and len(secret.fingerprint) == 8
    assert secret.fingerprint in page


def test_test_connection_reports_success_and_failure(admin_client, scripted):
    response = admin_client.post(TEST_CONNECTION, follow=True)
    # The message says which provider was tested and what the test did.
    assert "Connection test of the scripted provider succeeded: it reads a secret" in response.content.decode()
    scripted.mode = "unavailable"
    response = admin_client.post(TEST_CONNECTION, follow=True)
    assert "Connection test of the scripted provider failed" in response.content.decode()
    assert admin_client.get(TEST_CONNECTION).status_code == 405


def test_staff_without_the_permission_cannot_test_and_see_no_button(client, scripted):
    staff = User.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_knownsecret"))
    client.force_login(staff)
    assert "Test connection" not in client.get(CHANGELIST).content.decode()
    assert client.post(TEST_CONNECTION).status_code == 403


def test_test_connection_needs_a_csrf_token(scripted):
    from django.test import Client

    admin = User.objects.create_superuser("root", "root@example.com", "pw-root-1")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post(TEST_CONNECTION).status_code == 403


def test_access_log_aggregates_hits_and_is_read_only(admin_client, scripted):
    for _ in range(25):
        get_secret("SGP_TOKEN")
    secrets_access_flush()
    assert SecretAccess.objects.get(name="SGP_TOKEN", outcome="fetched").count == 1
    assert SecretAccess.objects.get(name="SGP_TOKEN", outcome="hit").count == 24
    row = SecretAccess.objects.first()
    assert admin_client.get(f"/admin/secrets_app/secretaccess/{row.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/secrets_app/secretaccess/add/").status_code == 403


def test_secrets_check_prints_sources_never_values_and_fails_on_a_missing_required_one(scripted, settings):
    settings.SECRETS_REQUIRED = ["SGP_TOKEN"]
    out = io.StringIO()
    call_command("secrets_check", stdout=out)
    output = out.getvalue()
    assert "SGP_TOKEN" in output and "scripted" in output and "admin-visible-never-1" not in output
    settings.SECRETS_REQUIRED = ["SGP_TOKEN", "OPSDESK_MISSING_REQUIRED"]
    out = io.StringIO()
    with pytest.raises(CommandError, match="OPSDESK_MISSING_REQUIRED"):
        call_command("secrets_check", stdout=out)
    assert "admin-visible-never-1" not in out.getvalue()


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DATABASE_URL", "SECRETS_", "AWS_", "VAULT_", "AZURE_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "ops_project.settings", **environment})
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_default_provider_imports_no_cloud_sdk():
    result = run_python(
        "import django, sys; django.setup()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'azure', 'hvac')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_settings_read_secrets_through_get_secret(tmp_path):
    secret_file = tmp_path / "db-password"
    secret_file.write_text("from-docker-secret-1\n")
    result = run_python(
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "print(settings.SGP_TOKEN == 'sgp-1', settings.GEMINI_API_KEY == 'gemini-1',"
        " settings.DATABASES['default']['PASSWORD'] == 'from-docker-secret-1')\n"
        "from secrets_app import default_manager\n"
        "print(sorted(default_manager.known))",
        SGP_TOKEN="sgp-1", GEMINI_API_KEY="gemini-1", DATABASE_PASSWORD_FILE=str(secret_file),
        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "True True True"
    assert {"SECRET_KEY", "SGP_TOKEN", "GEMINI_API_KEY", "DATABASE_PASSWORD"} <= set(ast.literal_eval(lines[1]))


def test_misconfigured_provider_stops_start_up_with_a_clear_message(tmp_path):
    result = run_python("import django; django.setup()", SECRETS_PROVIDER="vault",
                        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}")
    assert result.returncode != 0
    assert "VAULT_ADDR" in result.stderr


def test_resolve_now_action_refreshes_status_from_the_provider(admin_client, scripted):
    get_secret("SGP_TOKEN")
    secrets_access_flush()
    scripted.values["SGP_TOKEN"] = "admin-visible-never-2"
    scripted.versions["SGP_TOKEN"] = 7
    secret = KnownSecret.objects.get(name="SGP_TOKEN")
    old_fingerprint = secret.fingerprint
    response = admin_client.post(CHANGELIST, {"action": "resolve_now", "_selected_action": [secret.pk]}, follow=True)
    assert "1 secret resolved." in response.content.decode()
    secret.refresh_from_db()
    assert secret.version == "7" and secret.fingerprint != old_fingerprint
    assert "admin-visible-never-2" not in response.content.decode()


def test_the_page_speaks_plainly_and_forgets_removed_databases(admin_client, scripted):
    KnownSecret.objects.create(name="DATABASE_PASSWORD_GONE", required=False, status="missing")
    KnownSecret.objects.create(name="SGP_TOKEN", required=False, status="missing")
    page = admin_client.get(CHANGELIST).content.decode()
    # A password of an alias no longer in DATABASES is unused, not missing.
    assert "DATABASE_PASSWORD_GONE" not in page and "SGP_TOKEN" in page
    assert "icon-no.svg" not in page and "optional" in page
    assert ".0</td>" not in page  # durations in words ("5 minutes"), not "300.0"
    assert "Test connection to scripted" in page


def test_secret_commands_are_silent_at_verbosity_0_but_for_errors(scripted, settings, monkeypatch):
    settings.SECRETS_REQUIRED = ["SGP_TOKEN"]
    out = io.StringIO()
    call_command("secrets_check", "-v", "0", stdout=out)
    assert out.getvalue() == ""
    settings.SECRETS_REQUIRED = ["SGP_TOKEN", "OPSDESK_MISSING_REQUIRED"]
    with pytest.raises(CommandError, match="OPSDESK_MISSING_REQUIRED"):
        call_command("secrets_check", "-v", "0", stdout=out)
    assert out.getvalue() == ""
    monkeypatch.setattr(sys, "stdin", io.StringIO("rotated-quietly-value-1\n"))
    call_command("rotate_secret", "SGP_TOKEN", "-v", "0", stdout=out)
    assert out.getvalue() == "" and get_secret("SGP_TOKEN") == "rotated-quietly-value-1"
    monkeypatch.setattr(sys, "stdin", io.StringIO("rotated-loudly-value-2\n"))
    call_command("rotate_secret", "SGP_TOKEN", stdout=out)
    assert "SGP_TOKEN rotated" in out.getvalue()
