"""Fixtures of the API tests: users with chosen permissions, their tokens, stored backups."""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone
from rest_framework.test import APIClient

from backups_app.models import AuditEntry, BackupRecord
from backups_app.services.tokens import api_token_create
from tests.conftest import register_alias, unregister_alias

PRODUCT_ALIAS = "app"
ALL_PERMISSIONS = ("view_backuprecord", "create_backup", "download_backup", "restore_backup", "delete_backuprecord")


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings):
    """Tests settings use the in-process locmem cache: start every test with empty counters."""
    cache.clear()
    settings.BACKUP_API_RATE_LIMIT = 1000


@pytest.fixture
def make_user(django_user_model) -> Callable:
    def make(username: str | None = None, *, staff: bool = True, active: bool = True, permissions=ALL_PERMISSIONS):
        user = django_user_model.objects.create_user(
            username=username or f"ops-{uuid.uuid4().hex[:8]}", password="unused-password-1234", is_staff=staff, is_active=active
        )
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="backups_app", codename__in=permissions)
        )
        return user

    return make


@pytest.fixture
def make_token(make_user) -> Callable:
    """make_token(user=None, **kwargs) -> the raw token (a staff user with every permission by default)."""

    def make(user=None, **kwargs) -> str:
        return api_token_create(user=user or make_user(), source=AuditEntry.Source.CLI, **kwargs).raw_token

    return make


@pytest.fixture
def staff_token(make_token) -> str:
    return make_token()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def api(api_client, staff_token) -> APIClient:
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")
    return api_client


@pytest.fixture
def product_alias(settings, tmp_path):
    """The alias `app`, a SQLite product database: backups of `default` are for superusers only."""
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "product.sqlite3")}
    register_alias(PRODUCT_ALIAS, settings_dict)
    settings.DATABASES = {**settings.DATABASES, PRODUCT_ALIAS: settings_dict}
    yield PRODUCT_ALIAS
    unregister_alias(PRODUCT_ALIAS)


@pytest.fixture
def stored_backup(backup_dir, product_alias) -> Callable:
    """Make a BackupRecord and its file in the backups storage, as the engine would leave them.

    Of the product database `app` by default; `database="default"` for opsdesk's own.
    """

    def make(
        name: str = "default-20261129-010000.sqlite3.gz",
        *,
        content: bytes = b"backup bytes " * 1000,
        database: str = PRODUCT_ALIAS,
        status: str = BackupRecord.Status.SUCCESS,
        age: timedelta = timedelta(0),
        write_file: bool = True,
    ) -> BackupRecord:
        storage_name = ""
        if write_file:
            storage_name = storages["backups"].save(f"{database}/{name}", ContentFile(content))
        now = timezone.now() - age
        return BackupRecord.objects.create(
            name=name,
            database=database,
            engine="sqlite",
            status=status,
            trigger="cli",
            created_at=now,
            started_at=now,
            finished_at=now,
            compression="gzip",
            size_bytes=len(content),
            raw_size_bytes=len(content) * 3,
            sha256=hashlib.sha256(content).hexdigest(),
            storage_name=storage_name,
        )

    return make
