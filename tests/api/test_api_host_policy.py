"""The API's policy holds whatever REST_FRAMEWORK the host project sets (backups_app/api/policy.py).

DRF binds APIView's defaults (authentication, permissions, renderers, versioning...) when
rest_framework.views is first imported, from the settings of that moment. In a host project that is
the host's REST_FRAMEWORK; in this suite it is opsdesk's own. The fixture below therefore puts back
what a host's import would have bound: DRF's own defaults (session and Basic authentication,
AllowAny), drf-spectacular's (a schema anyone may read), and a versioning scheme of the host's API.
"""
from __future__ import annotations

import base64

import pytest
from django.test import Client
from drf_spectacular.views import SpectacularAPIView
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.settings import api_settings
from rest_framework.versioning import BaseVersioning
from rest_framework.views import APIView

HOST_REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_THROTTLE_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser", "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
#: The host's own API versioned by the Accept header; opsdesk's is not.
HOST_VERSIONING = {
    "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.AcceptHeaderVersioning",
    "ALLOWED_VERSIONS": ["2"],
}
PASSWORD = "unused-password-1234"  # tests/api/conftest.py's make_user


@pytest.fixture
def host_rest_framework(request, settings, monkeypatch):
    # DRF reloads api_settings on setting_changed.
    settings.REST_FRAMEWORK = {**HOST_REST_FRAMEWORK, **getattr(request, "param", {})}
    for attribute, setting in (
        ("renderer_classes", "DEFAULT_RENDERER_CLASSES"),
        ("parser_classes", "DEFAULT_PARSER_CLASSES"),
        ("authentication_classes", "DEFAULT_AUTHENTICATION_CLASSES"),
        ("throttle_classes", "DEFAULT_THROTTLE_CLASSES"),
        ("permission_classes", "DEFAULT_PERMISSION_CLASSES"),
        ("content_negotiation_class", "DEFAULT_CONTENT_NEGOTIATION_CLASS"),
        ("metadata_class", "DEFAULT_METADATA_CLASS"),
        ("versioning_class", "DEFAULT_VERSIONING_CLASS"),
    ):
        monkeypatch.setattr(APIView, attribute, getattr(api_settings, setting))
    monkeypatch.setattr(BaseVersioning, "allowed_versions", api_settings.ALLOWED_VERSIONS)
    monkeypatch.setattr(GenericAPIView, "filter_backends", api_settings.DEFAULT_FILTER_BACKENDS)
    monkeypatch.setattr(GenericAPIView, "pagination_class", api_settings.DEFAULT_PAGINATION_CLASS)
    # drf-spectacular's defaults: SERVE_PERMISSIONS AllowAny, the project's authentication.
    monkeypatch.setattr(SpectacularAPIView, "permission_classes", [AllowAny])
    monkeypatch.setattr(SpectacularAPIView, "authentication_classes", api_settings.DEFAULT_AUTHENTICATION_CLASSES)


def _basic(user) -> str:
    return "Basic " + base64.b64encode(f"{user.get_username()}:{PASSWORD}".encode()).decode()


def _assert_json_error(response, status: int) -> None:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert set(response.json()) >= {"error", "detail"}  # opsdesk's error body, not DRF's {"detail": ...}


@pytest.mark.parametrize("path", [
    "/api/v1/backup/list",
    "/api/v1/backup/default-20261129-010000.sqlite3.gz",
    "/api/v1/backup/default-20261129-010000.sqlite3.gz/download",
    "/api/v1/backup/default-20261129-010000.sqlite3.gz/download?decrypted=1",
    "/api/v1/schema",
])
def test_a_logged_in_session_or_a_password_is_no_api_credential_in_a_host_project(
    host_rest_framework, make_user, stored_backup, path,
):
    stored_backup()
    superuser = make_user(staff=True)
    superuser.is_superuser = True
    superuser.save(update_fields=["is_superuser"])
    session = Client()
    session.force_login(superuser)
    _assert_json_error(session.get(path), 401)
    _assert_json_error(Client().get(path, HTTP_AUTHORIZATION=_basic(superuser)), 401)
    _assert_json_error(Client().get(path), 401)


def test_a_session_cannot_post_to_the_api_of_a_host_project(host_rest_framework, make_user, stored_backup):
    stored_backup()
    user = make_user()
    session = Client(enforce_csrf_checks=False)
    session.force_login(user)
    _assert_json_error(session.post("/api/v1/backup/create", {"database": "app"}), 401)
    _assert_json_error(session.post("/api/v1/backup/cleanup", {"dry_run": False}), 401)


@pytest.mark.parametrize("host_rest_framework", [{}, HOST_VERSIONING], indirect=True, ids=["plain", "versioned"])
def test_a_token_still_works_in_a_host_project(
    host_rest_framework, make_token, stored_backup,
):
    backup = stored_backup()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {make_token()}"}
    listed = Client().get("/api/v1/backup/list", **headers)
    assert listed.status_code == 200, listed.content
    assert [row["name"] for row in listed.json()["results"]] == [backup.name]
    assert Client().get("/api/v1/schema", **headers).status_code == 200
    downloaded = Client().get(f"/api/v1/backup/{backup.name}/download", **headers)
    assert downloaded.status_code == 200
    assert b"".join(downloaded.streaming_content) == b"backup bytes " * 1000


def test_a_token_without_the_permission_is_refused_in_a_host_project(
    host_rest_framework, make_user, make_token, stored_backup,
):
    backup = stored_backup()
    viewer = make_token(make_user(permissions=("view_backuprecord",)))
    refused = Client().get(f"/api/v1/backup/{backup.name}/download", HTTP_AUTHORIZATION=f"Bearer {viewer}")
    _assert_json_error(refused, 403)


def test_the_schema_describes_opsdesk_api_only_not_the_host_views(host_rest_framework, make_token, settings):
    settings.ROOT_URLCONF = "tests.api.host_urls"
    schema = Client().get("/api/v1/schema", HTTP_AUTHORIZATION=f"Bearer {make_token()}")
    assert schema.status_code == 200, schema.content[:300]
    paths = set(schema.json()["paths"])
    assert "/api/v1/backup/list" in paths
    assert not any(path.startswith("/host/") for path in paths), paths
