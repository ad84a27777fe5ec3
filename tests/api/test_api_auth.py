"""Who gets in: 401 for missing/invalid/expired/revoked tokens, 403 for non-staff or missing
permissions, 405 for wrong methods, 429 over the rate limit, and every call audited."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backups_app.models import ApiToken, AuditEntry
from backups_app.services.tokens import api_token_revoke, token_hash

pytestmark = pytest.mark.django_db

# (method, path, body, permission the endpoint needs)
ENDPOINTS = [
    ("post", "/api/v1/backup/create", {"database": "default"}, "create_backup"),
    ("get", "/api/v1/backup/list", None, "view_backuprecord"),
    ("get", "/api/v1/backup/{name}", None, "view_backuprecord"),
    ("get", "/api/v1/backup/{name}/download", None, "download_backup"),
    ("post", "/api/v1/backup/restore", {"backup_name": "{name}"}, "restore_backup"),
    ("post", "/api/v1/backup/cleanup", {"dry_run": True}, "delete_backuprecord"),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _body, _permission in ENDPOINTS]


def call(client, method, path, body, name="default-20261129-010000.sqlite3.gz"):
    path = path.format(name=name)
    if body is not None:
        body = {key: value.format(name=name) if isinstance(value, str) else value for key, value in body.items()}
        return getattr(client, method)(path, body, format="json")
    return getattr(client, method)(path)


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"error", "detail"}
    if code:
        assert body["error"] == code
    assert "Traceback" not in response.content.decode()
    return body


@pytest.mark.parametrize("method, path, body, permission", ENDPOINTS, ids=ENDPOINT_IDS)
def test_no_token_is_401_with_a_bearer_challenge(api_client, stored_backup, method, path, body, permission):
    stored_backup()
    response = call(api_client, method, path, body)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer a b", "Bearer ops_invented", "Bearer \u00e9t\u00e9", "Token ops_x", "Basic b3BzOnB3"],
)
def test_malformed_or_invalid_credentials_are_401(api_client, staff_token, header):
    api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.get("/api/v1/backup/list")
    assert_error(response, 401)


def test_a_logged_in_admin_session_is_not_enough(client, admin_user):
    # Only Bearer tokens authenticate the API, so there is no cookie-based (CSRF) surface.
    client.force_login(admin_user)
    assert client.get("/api/v1/backup/list").status_code == 401


def test_revoked_token_is_401(api_client, staff_token):
    api_token_revoke(token=ApiToken.objects.get(token_hash=token_hash(staff_token)), source="cli")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")
    assert_error(api_client.get("/api/v1/backup/list"), 401, "authentication_failed")
    entry = AuditEntry.objects.filter(source="api").latest("id")
    assert entry.outcome == "refused" and "revoked" in entry.detail and staff_token[:12] in entry.actor


def test_expired_token_is_401(api_client, make_token):
    raw = make_token(expires_in_days=1)
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert_error(api_client.get("/api/v1/backup/list"), 401, "authentication_failed")
    assert "expired" in AuditEntry.objects.filter(source="api").latest("id").detail


def test_token_of_an_inactive_user_is_401(api_client, make_user, make_token):
    raw = make_token(user=make_user("gone", active=False))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert_error(api_client.get("/api/v1/backup/list"), 401)


@pytest.mark.parametrize("method, path, body, permission", ENDPOINTS, ids=ENDPOINT_IDS)
def test_non_staff_token_is_403(api_client, make_user, make_token, stored_backup, method, path, body, permission):
    stored_backup()
    raw = make_token(user=make_user("outsider", staff=False))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert_error(call(api_client, method, path, body), 403, "permission_denied")


@pytest.mark.parametrize("method, path, body, permission", ENDPOINTS, ids=ENDPOINT_IDS)
def test_staff_without_the_endpoint_permission_is_403(
    api_client, make_user, make_token, stored_backup, method, path, body, permission
):
    stored_backup()
    from tests.api.conftest import ALL_PERMISSIONS

    user = make_user("limited", permissions=[name for name in ALL_PERMISSIONS if name != permission])
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(user=user)}")
    body_json = assert_error(call(api_client, method, path, body), 403, "permission_denied")
    assert permission in body_json["detail"]
    entry = AuditEntry.objects.filter(source="api").latest("id")
    assert entry.outcome == "refused" and entry.user == user


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/v1/backup/create"),
        ("delete", "/api/v1/backup/list"),
        ("post", "/api/v1/backup/list"),
        ("put", "/api/v1/backup/restore"),
        ("get", "/api/v1/backup/cleanup"),
        ("delete", "/api/v1/backup/default-20261129-010000.sqlite3.gz"),
        ("post", "/api/v1/backup/default-20261129-010000.sqlite3.gz/download"),
        ("post", "/api/v1/schema"),
    ],
)
def test_wrong_method_is_405(api, stored_backup, method, path):
    stored_backup()
    assert_error(getattr(api, method)(path), 405, "method_not_allowed")


def test_unknown_endpoint_is_a_json_404(api):
    assert_error(api.get("/api/v1/nothing/here"), 404, "not_found")
    assert_error(api.post("/api/v1/backup/list/"), 404, "not_found")


def test_rate_limit_per_token_is_429_with_retry_after(settings, api, make_token, api_client):
    settings.BACKUP_API_RATE_LIMIT = 3
    settings.BACKUP_API_RATE_LIMIT_PERIOD = 60
    for _ in range(3):
        assert api.get("/api/v1/backup/list").status_code == 200
    response = api.get("/api/v1/backup/list")
    assert_error(response, 429, "throttled")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert AuditEntry.objects.filter(source="api").latest("id").outcome == "refused"

    # The limit is per token: another token still gets through.
    other = api_client.__class__()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token()}")
    assert other.get("/api/v1/backup/list").status_code == 200


def test_every_call_is_audited_with_token_prefix_and_ip(api, staff_token, stored_backup):
    backup = stored_backup()
    api.get("/api/v1/backup/list")
    api.get(f"/api/v1/backup/{backup.name}", REMOTE_ADDR="192.0.2.7")
    entries = list(AuditEntry.objects.filter(source="api").order_by("id"))
    assert [entry.action for entry in entries] == ["list", "view"]
    for entry in entries:
        assert entry.outcome == "success"
        assert staff_token[:12] in entry.actor
        assert staff_token not in entry.actor + entry.detail
    assert entries[1].ip_address == "192.0.2.7" and entries[1].target == backup.name


def test_unexpected_errors_are_a_bare_json_500(api, monkeypatch):
    def broken_selector(**kwargs):
        raise RuntimeError("password=hunter2 in some internal message")

    # Injects a failure no real input can cause, to prove nothing of it reaches the client.
    monkeypatch.setattr("backups_app.api.views.backup_list", broken_selector)
    response = api.get("/api/v1/backup/list")
    body = assert_error(response, 500, "server_error")
    assert "hunter2" not in response.content.decode() and "RuntimeError" not in body["detail"]
    assert AuditEntry.objects.filter(source="api").latest("id").outcome == "failure"
