"""Fixtures of the admin console tests: users with given permissions and stored backups."""
from __future__ import annotations

import gzip
import hashlib
import sqlite3
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone

from backups_app.models import BackupRecord, Trigger

from tests.conftest import register_alias, unregister_alias

APP_ALIAS = "app"

OPERATOR_PERMISSIONS = (
    "view_backuprecord", "delete_backuprecord", "create_backup", "download_backup", "restore_backup",
    "verify_backup", "view_restorerecord", "view_auditentry",
)


@pytest.fixture
def app_database(settings, tmp_path):
    """A product database to back up and restore: a SQLite file registered as the alias `app`.

    The ops database itself cannot be dumped from inside a test transaction (it holds its locks),
    and a product database is what staff back up anyway.
    """
    path = tmp_path / "app.sqlite3"
    connection = sqlite3.connect(path)
    connection.executescript(
        "CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        "INSERT INTO customer (name) VALUES ('Ana'), ('João'), ('Zoë');"
    )
    connection.commit()
    connection.close()
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}
    register_alias(APP_ALIAS, settings_dict)
    settings.DATABASES = {**settings.DATABASES, APP_ALIAS: settings_dict}
    try:
        yield path
    finally:
        unregister_alias(APP_ALIAS)


def app_rows(path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [name for (name,) in connection.execute("SELECT name FROM customer ORDER BY id")]
    finally:
        connection.close()


def make_user(username: str, *permissions: str, is_staff: bool = True, is_superuser: bool = False) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=is_staff,
                                    is_superuser=is_superuser)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="backups_app",
                                                        codename__in=permissions))
    return user


@pytest.fixture
def superuser(db) -> User:
    return make_user("root", is_superuser=True)


@pytest.fixture
def operator(db) -> User:
    return make_user("operator", *OPERATOR_PERMISSIONS)


@pytest.fixture
def viewer(db) -> User:
    return make_user("viewer", "view_backuprecord", "view_restorerecord", "view_auditentry")


@pytest.fixture
def outsider(db) -> User:
    return make_user("outsider", *OPERATOR_PERMISSIONS, is_staff=False)


def store_backup(*, database: str = "default", age: timedelta = timedelta(hours=1),
                 status: str = BackupRecord.Status.SUCCESS, payload: bytes | None = None,
                 name: str | None = None) -> BackupRecord:
    """A record and its gzip file in the `backups` storage, as the engine writes them."""
    created = timezone.now() - age
    name = name or f"{database}-{created:%Y%m%d-%H%M%S-%f}.sql.gz"
    plain = payload if payload is not None else b"CREATE TABLE t (id integer);\n-- Dump completed\n"
    compressed = gzip.compress(plain)
    storage_name = ""
    if status == BackupRecord.Status.SUCCESS:
        storage_name = storages["backups"].save(f"{database}/{name}", ContentFile(compressed))
    return BackupRecord.objects.create(
        name=name, database=database, engine="sqlite", trigger=Trigger.SCHEDULE, status=status,
        created_at=created, started_at=created, finished_at=created + timedelta(seconds=3),
        duration_seconds=3.0, compression="gzip", raw_size_bytes=len(plain), size_bytes=len(compressed),
        sha256=hashlib.sha256(compressed).hexdigest(), storage_name=storage_name,
        error_message="" if status == BackupRecord.Status.SUCCESS else "mysqldump: Got error 1045",
    )


@pytest.fixture
def stored_backup(db, app_database) -> BackupRecord:
    """A good backup of the product database `app` (backups of `default` are for superusers only)."""
    return store_backup(database=APP_ALIAS)
