"""Hostile or broken input that must end in a clear answer, never a 500 or a traceback.

docs/FAULTS.md: secret-in-errors, oversized-request, bad-setting.
"""
from __future__ import annotations

import subprocess
import sys as _sys
import uuid

import pytest
from django.test import RequestFactory
from django.views.debug import technical_500_response

from tests.backups.conftest import ManageRunner
from tests.test_project import PROJECT_ROOT, run_manage

pytestmark = pytest.mark.django_db


# --- the development 500 page ---------------------------------------------------------------------
def test_technical_500_page_masks_connection_urls_and_their_passwords(settings):
    # Made at run time: the page quotes this file's source lines, which must not hold them.
    secrets = {name: f"{name}-{uuid.uuid4().hex}" for name in ("chat", "redis", "broker", "webhook", "local")}
    settings.DEBUG = True
    settings.CELERY_BROKER_URL = f"redis://:{secrets['broker']}@redis.internal:6379/0"
    settings.SOME_WEBHOOK = f"https://hook:{secrets['webhook']}@hooks.example.com/x"
    request = RequestFactory().get(
        "/admin/", DATABASE_URL_CHAT=f"mysql://chat:{secrets['chat']}@db.internal:3306/chat",
        REDIS_URL=f"redis://:{secrets['redis']}@redis.internal:6379/0",
    )

    def connect(url: str) -> None:
        raise RuntimeError("could not connect")

    try:
        connect(f"postgresql://ops:{secrets['local']}@db.internal/ops")
    except RuntimeError:
        page = technical_500_response(request, *_sys.exc_info()).content.decode()
    assert "could not connect" in page and "DATABASE_URL_CHAT" in page and "db.internal" in page
    for name, secret in secrets.items():
        assert secret not in page, name


# --- request bodies over the limit ----------------------------------------------------------------
def test_a_body_over_the_limit_is_413_for_the_api_and_the_admin(api, client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = '{"database": "' + "x" * 20_000 + '"}'
    response = api.post("/api/v1/backup/create", body, content_type="application/json")
    # Before: 500 from the API (an unexpected exception), 400 from the admin.
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"
    response = client.post("/admin/login/", {"username": "x" * 20_000, "password": "y"})
    assert response.status_code == 413


@pytest.fixture
def api(django_user_model):
    from rest_framework.test import APIClient

    from backups_app.services.tokens import api_token_create

    user = django_user_model.objects.create_superuser("ops", password="unused-password-1234")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, source='cli').raw_token}")
    return client


# --- malformed settings ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, value", [
    ("DATABASE_URL", "not-a-url"),
    ("DATABASE_URL_CHAT", "mysql://chat:url-pw-53cr3t@db:notaport/chat"),
    ("DATABASE_URL_CHAT", "foo://db/chat"),
    ("REDIS_URL", "http://:url-pw-53cr3t@redis:6379/0"),
    ("BACKUP_COMPRESSION", "lz4"),
    ("BACKUP_RETENTION_DAYS", "thirty"),
    ("CACHE_SOCKET_TIMEOUT", "fast"),
])
def test_a_malformed_setting_stops_start_up_with_one_line_naming_it(tmp_path, name, value):
    environment = {"DATABASE_URL": f"sqlite:///{tmp_path / 'ops.sqlite3'}", name: value}
    result = run_manage("check", **environment)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "url-pw" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"opsdesk: {name}"), result.stderr


# --- a closed pipe --------------------------------------------------------------------------------
MANY_RECORDS = """
from django.utils import timezone
from backups_app.models import BackupRecord
now = timezone.now()
BackupRecord.objects.bulk_create([
    BackupRecord(name=f"backup_chat_{number:06d}.sql.gz", database="chat", engine="mysql", status="success",
                 trigger="cli", compression="gzip", created_at=now, size_bytes=1000)
    for number in range(3000)
])
"""


def test_list_backups_into_head_ends_quietly(tmp_path):
    manage = ManageRunner(tmp_path)
    assert manage.run("shell", "-c", MANY_RECORDS).returncode == 0
    process = subprocess.Popen(
        manage.command("list_backups"), cwd=PROJECT_ROOT, env=manage.environment(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdout.readline().startswith(b"backup_chat_")
    process.stdout.close()  # what `head -1` does once it has its line
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert stderr == "" and process.returncode == 141
