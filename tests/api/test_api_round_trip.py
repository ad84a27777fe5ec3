"""The API end to end on the real engine: create, download and restore a SQLite database."""
from __future__ import annotations

import hashlib
import sqlite3

import pytest

from backups_app.models import AuditEntry, BackupRecord, RestoreRecord
from tests.conftest import register_alias, unregister_alias

from .test_api_auth import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")]


def rows(path) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT id, note FROM note ORDER BY id").fetchall()


@pytest.fixture
def app_database(tmp_path, settings):
    """A SQLite database configured as the alias `app` (as DATABASE_URL_APP would configure it)."""
    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, note TEXT)")
        connection.executemany("INSERT INTO note (note) VALUES (?)", [("first",), ("second ✓",)])
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}
    register_alias("app", settings_dict)
    settings.DATABASES = {**settings.DATABASES, "app": settings_dict}
    try:
        yield path
    finally:
        unregister_alias("app")


def test_create_download_restore(api, app_database, django_capture_on_commit_callbacks):
    original = rows(app_database)
    # Without a broker the task runs inline when the request's transaction commits.
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/backup/create", {"database": "app"}, format="json")
    assert response.status_code == 202, response.content
    backup = BackupRecord.objects.get(pk=response.json()["id"])
    assert backup.status == BackupRecord.Status.SUCCESS, backup.error_message
    assert backup.trigger == "api" and backup.database == "app"

    listed = api.get("/api/v1/backup/list", {"database": "app", "status": "success"}).json()
    assert [item["name"] for item in listed["results"]] == [backup.name]

    download = api.get(f"/api/v1/backup/{backup.name}/download")
    content = b"".join(download.streaming_content)
    assert hashlib.sha256(content).hexdigest() == backup.sha256 == download["X-Backup-SHA256"]

    with sqlite3.connect(app_database) as connection:
        connection.execute("DELETE FROM note")
        connection.execute("INSERT INTO note (note) VALUES ('written after the backup')")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/backup/restore", {"backup_name": backup.name, "database": "app"}, format="json")
    assert response.status_code == 202, response.content
    restore = RestoreRecord.objects.get(pk=response.json()["id"])
    assert restore.status == RestoreRecord.Status.SUCCESS, restore.error_message
    assert rows(app_database) == original
    # The same safety net as the admin: the state before the restore was backed up first.
    assert restore.safety_backup is not None and restore.safety_backup.kind == BackupRecord.Kind.SAFETY

    api_actions = list(AuditEntry.objects.filter(source="api").values_list("action", flat=True))
    assert {"create", "list", "download", "restore"} <= set(api_actions)


def test_restoring_a_dump_into_another_engine_is_409(api, stored_backup):
    backup = stored_backup()
    BackupRecord.objects.filter(pk=backup.pk).update(engine="postgresql")
    response = api.post("/api/v1/backup/restore", {"backup_name": backup.name, "database": "app"}, format="json")
    assert_error(response, 409, "engine_mismatch")
    assert not RestoreRecord.objects.exists()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_mariadb_backup_through_the_api_cannot_be_restored_into_postgresql(
    api, settings, mariadb_database, postgres_database
):
    import MySQLdb
    from django.db import connections

    from tests.conftest import MARIADB

    settings.DATABASES = {
        **settings.DATABASES,
        mariadb_database: connections.settings[mariadb_database],
        postgres_database: connections.settings[postgres_database],
    }
    server = MySQLdb.connect(
        host=MARIADB["HOST"], port=MARIADB["PORT"], user=MARIADB["USER"], passwd="",
        db=connections.settings[mariadb_database]["NAME"],
    )
    try:
        server.cursor().execute("CREATE TABLE note (id INT PRIMARY KEY, note VARCHAR(50))")
        server.cursor().execute("INSERT INTO note VALUES (1, 'kept')")
        server.commit()
    finally:
        server.close()
    # Outside a test transaction the queued task runs inline, within the request.
    response = api.post("/api/v1/backup/create", {"database": mariadb_database}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == BackupRecord.Status.SUCCESS
    backup = BackupRecord.objects.get(pk=response.json()["id"])
    assert backup.engine == "mysql" and backup.table_row_counts == {"note": 1}

    # Allowed as a target, so that the engine check is what refuses it.
    settings.BACKUP_RESTORE_TARGETS = [f"{mariadb_database}:{postgres_database}"]
    response = api.post(
        "/api/v1/backup/restore", {"backup_name": backup.name, "database": postgres_database}, format="json"
    )
    assert_error(response, 409, "engine_mismatch")
    assert not RestoreRecord.objects.exists()
