"""docs/FAULTS.md path-in-name: names that look like paths never reach the file system (400 or 404)."""
from __future__ import annotations

import os

import pytest
from rest_framework.test import APIClient

from backups_app.models import RestoreRecord

from .test_api_auth import assert_error

pytestmark = pytest.mark.django_db

SECRET = b"outside the backup store"

# As they appear in the URL: the test client, like a WSGI server, decodes %XX before routing.
URL_NAMES = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "..%2f..%2fsecret.txt",
    "%2Fetc%2Fpasswd",
    "%2e%2e%2fsecret.txt",
    "%252e%252e%252fsecret.txt",
    "..",
    "..%5C..%5Csecret.txt",
    "..\\..\\secret.txt",
    "C:%5Cwindows%5Cwin.ini",
    "secret.txt%00.gz",
    "default-1.gz%00",
    "~root",
    "link-out",
]
BODY_NAMES = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "/etc/passwd",
    "/abs/secret.txt",
    "..",
    "..\\..\\secret.txt",
    "C:\\windows\\win.ini",
    "\\\\server\\share",
    "secret.txt\x00.gz",
    "link-out",
    "default-1.gz/../../secret.txt",
]


@pytest.fixture
def hostile_store(tmp_path, backup_dir, stored_backup):
    """A real backup, a secret file beside the store and a symlink inside it pointing out."""
    stored_backup("default-1.gz")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", backup_dir / "link-out")
    return tmp_path


@pytest.mark.parametrize("name", URL_NAMES)
@pytest.mark.parametrize("suffix", ["", "/download"])
def test_hostile_names_in_the_url(api: APIClient, hostile_store, name, suffix):
    response = api.get(f"/api/v1/backup/{name}{suffix}")
    assert response.status_code in (400, 404), (name, response.status_code)
    assert SECRET not in response.content
    assert response.json()["error"] in ("invalid", "not_found")


@pytest.mark.parametrize("name", BODY_NAMES)
def test_hostile_names_in_a_restore(api: APIClient, hostile_store, name):
    response = api.post("/api/v1/backup/restore", {"backup_name": name}, format="json")
    assert response.status_code in (400, 404), (name, response.status_code)
    assert not RestoreRecord.objects.exists()


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\x", "a\x00b", "%2e%2e", "/etc/passwd"])
def test_path_like_names_are_refused_before_any_lookup(api: APIClient, hostile_store, name):
    response = api.post("/api/v1/backup/restore", {"backup_name": name}, format="json")
    body = assert_error(response, 400, "invalid")
    assert "backup_name" in body["fields"]
