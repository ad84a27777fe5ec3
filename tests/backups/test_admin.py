"""The backup console in the Django admin: permissions, CSRF, download, restore, audit, speed."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.files.storage import storages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, Trigger

from .admin_fixtures import *  # noqa: F401,F403
from .admin_fixtures import APP_ALIAS, app_rows, store_backup

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/backups_app/backuprecord/"
BACKUP_NOW = "/admin/backups_app/backuprecord/backup-now/"


def download_url(record: BackupRecord) -> str:
    return f"/admin/backups_app/backuprecord/{record.pk}/download/"


def restore_url(record: BackupRecord) -> str:
    return f"/admin/backups_app/backuprecord/{record.pk}/restore/"


def verify_url(record: BackupRecord) -> str:
    return f"/admin/backups_app/backuprecord/{record.pk}/verify/"


def logged_in(user: User, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# --- who gets in -----------------------------------------------------------------------------------

def test_urls_are_the_documented_ones(stored_backup):
    assert reverse("admin:backups_app_backuprecord_backup_now") == BACKUP_NOW
    assert reverse("admin:backups_app_backuprecord_download", args=[stored_backup.pk]) == download_url(stored_backup)
    assert reverse("admin:backups_app_backuprecord_restore", args=[stored_backup.pk]) == restore_url(stored_backup)


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_anonymous_and_non_staff_go_to_the_login_page(who, outsider, stored_backup):
    client = Client() if who == "anonymous" else logged_in(outsider)
    for method, url in [
        ("get", CHANGELIST), ("post", BACKUP_NOW), ("get", download_url(stored_backup)),
        ("get", restore_url(stored_backup)), ("post", restore_url(stored_backup)),
        ("post", verify_url(stored_backup)), ("get", "/admin/"),
    ]:
        response = getattr(client, method)(url, {"database": "default", "confirm_database": "default"})
        assert response.status_code == 302, (method, url)
        assert response["Location"].startswith("/admin/login/"), (method, url)
    assert not RestoreRecord.objects.exists()
    assert BackupRecord.objects.count() == 1
    assert not AuditEntry.objects.filter(action__in=["download", "restore", "create"]).exists()


def test_view_only_staff_gets_403_on_every_operation(viewer, stored_backup):
    client = logged_in(viewer)
    assert client.get(download_url(stored_backup)).status_code == 403
    assert client.get(restore_url(stored_backup)).status_code == 403
    assert client.post(restore_url(stored_backup), {"confirm_database": "default"}).status_code == 403
    assert client.post(verify_url(stored_backup)).status_code == 403
    assert client.post(BACKUP_NOW, {"database": "default"}).status_code == 403
    # Forged bulk actions: Django refuses actions the user may not run, nothing changes.
    for action in ("delete_selected", "verify_selected"):
        client.post(CHANGELIST, {"action": action, "_selected_action": [stored_backup.pk], "post": "yes"})
    assert BackupRecord.objects.filter(pk=stored_backup.pk).exists()
    assert storages["backups"].exists(stored_backup.storage_name)
    assert not RestoreRecord.objects.exists()
    assert BackupRecord.objects.count() == 1


def test_view_only_staff_sees_no_buttons(viewer, stored_backup):
    client = logged_in(viewer)
    listing = client.get(CHANGELIST).content.decode()
    assert "backup-now" not in listing
    assert stored_backup.name in listing
    page = client.get(f"{CHANGELIST}{stored_backup.pk}/change/").content.decode()
    assert stored_backup.sha256 in page
    for marker in ("backup-download", "backup-restore", "backup-verify"):
        assert marker not in page


def test_operator_sees_the_buttons(operator, stored_backup):
    client = logged_in(operator)
    listing = client.get(CHANGELIST).content.decode()
    assert 'id="backup-now"' in listing and 'value="default"' in listing
    page = client.get(f"{CHANGELIST}{stored_backup.pk}/change/").content.decode()
    assert download_url(stored_backup) in page and restore_url(stored_backup) in page


def test_record_page_is_read_only_for_superusers_too(superuser, stored_backup):
    client = logged_in(superuser)
    page = client.get(f"{CHANGELIST}{stored_backup.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.get(f"{CHANGELIST}add/").status_code == 403
    response = client.post(f"{CHANGELIST}{stored_backup.pk}/change/", {"status": "failed", "sha256": "0" * 64})
    assert response.status_code == 403
    stored_backup.refresh_from_db()
    assert stored_backup.status == BackupRecord.Status.SUCCESS


# --- CSRF ----------------------------------------------------------------------------------------

def test_every_post_needs_a_csrf_token(superuser, stored_backup):
    client = logged_in(superuser, enforce_csrf_checks=True)
    posts = [
        (BACKUP_NOW, {"database": "default"}),
        (restore_url(stored_backup), {"confirm_database": "default"}),
        (verify_url(stored_backup), {}),
        (CHANGELIST, {"action": "delete_selected", "_selected_action": [stored_backup.pk], "post": "yes"}),
        (f"{CHANGELIST}{stored_backup.pk}/delete/", {"post": "yes"}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert BackupRecord.objects.count() == 1
    assert not RestoreRecord.objects.exists()


# --- Back up now ---------------------------------------------------------------------------------

def test_back_up_now_queues_a_backup_and_audits_it(operator, app_database, django_capture_on_commit_callbacks):
    client = logged_in(operator)
    # The task is queued on commit (inline without a broker): run the callbacks the test transaction holds.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(BACKUP_NOW, {"database": APP_ALIAS})
    assert response.status_code == 302 and response["Location"] == CHANGELIST
    record = BackupRecord.objects.get()
    assert record.database == APP_ALIAS and record.trigger == Trigger.ADMIN and record.user == operator
    assert record.status == BackupRecord.Status.SUCCESS, record.error_message
    # The service audits; the admin makes its entries carry the staff member's address.
    entries = AuditEntry.objects.filter(action="create", source="admin")
    assert {entry.outcome for entry in entries} >= {"started", "success"}
    for entry in entries:
        assert entry.user == operator and entry.target == record.name
    # The run itself happens in the worker (here: when the test's on-commit callbacks run), which
    # has no request; the entry written in the request carries its address.
    assert entries.get(outcome="started").ip_address == "127.0.0.1"


def test_back_up_now_refuses_an_unknown_database_and_get(operator):
    client = logged_in(operator)
    response = client.post(BACKUP_NOW, {"database": "../../etc"}, follow=True)
    assert b"Choose one of the configured databases" in response.content
    assert client.get(BACKUP_NOW).status_code == 405
    assert not BackupRecord.objects.exists()


def test_running_backup_shows_progress_and_refreshes(operator):
    store_backup()
    running = BackupRecord.objects.create(
        name="default-running.sql.gz", database="default", engine="sqlite", trigger=Trigger.ADMIN,
        status=BackupRecord.Status.RUNNING, created_at=timezone.now(), compression="gzip",
        progress_bytes=5 * 1024 * 1024,
    )
    page = logged_in(operator).get(CHANGELIST).content.decode()
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "5.0\xa0MB so far" in page
    running.status = BackupRecord.Status.SUCCESS
    running.save()
    assert b"http-equiv=\"refresh\"" not in logged_in(operator).get(CHANGELIST).content


# --- Download ------------------------------------------------------------------------------------

def test_download_streams_the_exact_bytes_and_is_audited(operator, stored_backup):
    response = logged_in(operator).get(download_url(stored_backup))
    assert response.status_code == 200
    assert response.streaming
    data = body(response)
    assert hashlib.sha256(data).hexdigest() == stored_backup.sha256
    assert response["Content-Disposition"].startswith("attachment;")
    assert stored_backup.name in response["Content-Disposition"]
    entry = AuditEntry.objects.get(action="download")
    assert (entry.outcome, entry.user, entry.target) == ("success", operator, stored_backup.name)


def test_download_of_a_vanished_file_is_404_and_audited(operator, stored_backup):
    storages["backups"].delete(stored_backup.storage_name)
    assert logged_in(operator).get(download_url(stored_backup)).status_code == 404
    assert AuditEntry.objects.get(action="download").outcome == "failure"


@pytest.mark.parametrize("status", [BackupRecord.Status.FAILED, BackupRecord.Status.INTERRUPTED])
def test_failed_or_interrupted_backups_are_never_offered(operator, status):
    record = store_backup(status=status)
    client = logged_in(operator)
    assert client.get(download_url(record)).status_code == 404
    assert client.get(restore_url(record)).status_code == 404
    page = client.get(f"{CHANGELIST}{record.pk}/change/").content.decode()
    assert "backup-download" not in page and "backup-restore" not in page


@pytest.mark.parametrize("suffix", [
    "..%2F..%2Fetc%2Fpasswd/download/", "../../etc/passwd/download/", "%2Fetc%2Fpasswd/download/",
    "1%00/download/", "..\\..\\x/download/", "999999/download/", "999999/restore/",
])
def test_hostile_names_never_reach_a_path(operator, stored_backup, suffix):
    response = logged_in(operator).get(CHANGELIST + suffix)
    assert response.status_code in (302, 404)
    if response.status_code == 302:  # Django's "object does not exist" redirect to the list
        assert not response["Location"].endswith("download/")
    assert not AuditEntry.objects.filter(action="download", outcome="success").exists()


# --- Restore -------------------------------------------------------------------------------------

def test_restore_page_says_what_will_be_overwritten(operator, stored_backup):
    page = logged_in(operator).get(restore_url(stored_backup))
    assert page.status_code == 200
    text = page.content.decode()
    assert "What will be overwritten" in text and "safety backup" in text
    assert stored_backup.sha256 in text
    assert 'name="confirm_database"' in text


@pytest.mark.parametrize("typed", ["", "Default", "default2", "chat", " "])
def test_a_wrong_confirmation_restores_nothing(operator, stored_backup, typed):
    response = logged_in(operator).post(restore_url(stored_backup), {"confirm_database": typed})
    assert response.status_code == 400
    assert not RestoreRecord.objects.exists()
    assert BackupRecord.objects.count() == 1  # no safety backup either
    assert not AuditEntry.objects.filter(action="restore", outcome="started").exists()


def test_the_typed_database_name_starts_the_restore(operator, app_database, django_capture_on_commit_callbacks):
    client = logged_in(operator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(BACKUP_NOW, {"database": APP_ALIAS})
    record = BackupRecord.objects.get(status=BackupRecord.Status.SUCCESS)
    import sqlite3

    with sqlite3.connect(app_database) as connection:
        connection.execute("DELETE FROM customer WHERE name = 'Ana'")
    connection.close()
    assert app_rows(app_database) == ["João", "Zoë"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(restore_url(record), {"confirm_database": APP_ALIAS})
    restore = RestoreRecord.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:backups_app_restorerecord_change", args=[restore.pk])
    assert restore.backup == record and restore.database == APP_ALIAS and restore.user == operator
    assert restore.trigger == Trigger.ADMIN
    assert restore.status == RestoreRecord.Status.SUCCESS, restore.error_message
    assert restore.safety_backup is not None
    assert app_rows(app_database) == ["Ana", "João", "Zoë"]
    outcome = client.get(response["Location"]).content.decode()
    assert 'id="restore-status"' in outcome
    started = AuditEntry.objects.get(action="restore", outcome="started", user=operator)
    assert started.source == "admin" and started.ip_address == "127.0.0.1"


# --- Delete, verify ------------------------------------------------------------------------------

def test_delete_goes_through_the_service_and_removes_the_file(operator, stored_backup):
    client = logged_in(operator)
    confirm = client.get(f"{CHANGELIST}{stored_backup.pk}/delete/")
    assert confirm.status_code == 200
    response = client.post(f"{CHANGELIST}{stored_backup.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not BackupRecord.objects.exists()
    assert not storages["backups"].exists(stored_backup.storage_name)
    deleted = AuditEntry.objects.get(action="delete", source="admin", user=operator)
    assert deleted.ip_address == "127.0.0.1" and deleted.target == stored_backup.name


def test_a_running_backup_cannot_be_deleted(operator):
    running = BackupRecord.objects.create(
        name="default-running.sql.gz", database="default", engine="sqlite", trigger=Trigger.ADMIN,
        status=BackupRecord.Status.RUNNING, created_at=timezone.now(), compression="gzip",
    )
    client = logged_in(operator)
    assert client.post(f"{CHANGELIST}{running.pk}/delete/", {"post": "yes"}).status_code == 403
    response = client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [running.pk], "post": "yes"},
    )
    assert response.status_code == 403  # Django's bulk delete checks each object's permission
    assert BackupRecord.objects.filter(pk=running.pk).exists()


def test_bulk_delete_removes_every_selected_copy(operator):
    records = [store_backup(age=timedelta(hours=hours)) for hours in (1, 2, 3)]
    response = logged_in(operator).post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [r.pk for r in records[:2]], "post": "yes"},
    )
    assert response.status_code == 302
    assert list(BackupRecord.objects.values_list("pk", flat=True)) == [records[2].pk]
    assert not storages["backups"].exists(records[0].storage_name)
    assert storages["backups"].exists(records[2].storage_name)


def test_verify_calls_the_retention_service(operator, app_database, django_capture_on_commit_callbacks):
    client = logged_in(operator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(BACKUP_NOW, {"database": APP_ALIAS})
    record = BackupRecord.objects.get(status=BackupRecord.Status.SUCCESS)
    # The test restore is queued (backup_verify_queue); the queue runs it once the request commits.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(CHANGELIST, {"action": "verify_selected", "_selected_action": [record.pk]}, follow=True)
    assert response.status_code == 200
    record.refresh_from_db()
    # Verified, failed, or unverified with the reason when the engine cannot test-restore here.
    assert record.verified_at is not None and record.verification_message
    assert record.name in response.content.decode()
    entry = AuditEntry.objects.get(action="verify")
    assert entry.source == "admin" and entry.user == operator and entry.ip_address == "127.0.0.1"
    # The record page's Verify button does the same, through a POST.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(verify_url(record))
    assert response.status_code == 302
    assert AuditEntry.objects.filter(action="verify").count() == 2


def test_verify_is_queued_and_the_job_records_the_result(operator, app_database, django_capture_on_commit_callbacks):
    client = logged_in(operator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(BACKUP_NOW, {"database": APP_ALIAS})
    record = BackupRecord.objects.get(status=BackupRecord.Status.SUCCESS)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(CHANGELIST, {"action": "verify_selected", "_selected_action": [record.pk]}, follow=True)
    # The request only queued the job: nothing verified yet, and the page says so.
    assert response.status_code == 200
    assert f"Verification of {record.name} queued" in response.content.decode()
    record.refresh_from_db()
    assert record.verified_at is None and not AuditEntry.objects.filter(action="verify").exists()
    assert len(queued) == 1
    queued[0]()  # what the worker (or background process) runs
    record.refresh_from_db()
    assert record.verified_at is not None and record.verification_message
    entry = AuditEntry.objects.get(action="verify")
    assert entry.source == "admin" and entry.user == operator and entry.ip_address == "127.0.0.1"


def test_the_queued_verification_runs_as_a_background_job(operator, stored_backup):
    """What a background process (BACKUP_BACKGROUND_JOBS, no broker) runs: manage.py run_task."""
    import json

    from django.core.management import call_command

    call_command("run_task", "backups_app.tasks.backup_verify_run",
                 "--args", json.dumps([stored_backup.pk, operator.pk, "admin", "127.0.0.1"]))
    stored_backup.refresh_from_db()
    assert stored_backup.verified_at is not None
    entry = AuditEntry.objects.get(action="verify")
    assert (entry.user, entry.source, entry.ip_address) == (operator, "admin", "127.0.0.1")


# --- Speed ---------------------------------------------------------------------------------------

def _bulk_records(count: int, user: User) -> None:
    now = timezone.now()
    BackupRecord.objects.bulk_create(
        [
            BackupRecord(
                name=f"bulk-{index:06d}.sql.gz", database=("default", "chat")[index % 2], engine="sqlite",
                trigger=Trigger.SCHEDULE, status=BackupRecord.Status.SUCCESS, user=user,
                created_at=now - timedelta(minutes=index), compression="gzip", size_bytes=1000 + index,
                raw_size_bytes=4000 + index, duration_seconds=1.5, sha256="a" * 64,
                storage_name=f"default/bulk-{index:06d}.sql.gz",
            )
            for index in range(count)
        ],
        batch_size=2000,
    )


def _changelist_queries(client: Client, query: str = "") -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("query", ["", "?status__exact=success", "?q=bulk-0001", "?created_at__year=2026"])
def test_changelist_query_count_does_not_grow_with_records(operator, query, django_assert_max_num_queries, settings):
    # The secrets access log is flushed on request_finished once a minute; loading 10,000 records
    # on a busy machine can take that long, and its writes are not the list's queries.
    settings.SECRETS_ACCESS_LOG_FLUSH_SECONDS = 24 * 3600
    client = logged_in(operator)
    _bulk_records(10, operator)
    client.get(CHANGELIST + query)  # first request of the process: warms per-process caches
    small = _changelist_queries(client, query)
    BackupRecord.objects.all().delete()
    _bulk_records(10_000, operator)
    large = _changelist_queries(client, query)
    assert large == small, (small, large)
    with django_assert_max_num_queries(small):
        client.get(CHANGELIST + query)


def test_restore_of_a_database_that_is_not_configured_here_is_refused(operator):
    record = store_backup(database="gone")
    response = logged_in(operator).get(restore_url(record), follow=True)
    assert b"is not configured here" in response.content
    assert not RestoreRecord.objects.exists()


@pytest.mark.services
@pytest.mark.parametrize("database_fixture", ["mariadb_database", "postgres_database"])
def test_back_up_now_and_download_on_real_servers(
    request, database_fixture, operator, settings, django_capture_on_commit_callbacks,
):
    """The same buttons work for the MariaDB and PostgreSQL databases of the machine."""
    from django.db import connections

    from tests.conftest import MARIADB, POSTGRES

    alias = request.getfixturevalue(database_fixture)
    settings_dict = connections.settings[alias]
    settings.DATABASES = {**settings.DATABASES, alias: settings_dict}
    # The driver directly: the test transaction does not cover these scratch databases.
    if alias == "mariadb":
        import MySQLdb

        connection = MySQLdb.connect(host=MARIADB["HOST"], port=MARIADB["PORT"], user=MARIADB["USER"],
                                     passwd="", db=settings_dict["NAME"])
    else:
        import psycopg

        connection = psycopg.connect(host=POSTGRES["HOST"], port=POSTGRES["PORT"], user=POSTGRES["USER"],
                                     dbname=settings_dict["NAME"])
    cursor = connection.cursor()
    cursor.execute("CREATE TABLE pet (id integer PRIMARY KEY, name varchar(20))")
    cursor.execute("INSERT INTO pet VALUES (1, 'Rex'), (2, 'Mimi')")
    connection.commit()
    connection.close()
    client = logged_in(operator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(BACKUP_NOW, {"database": alias})
    record = BackupRecord.objects.get(database=alias)
    assert record.status == BackupRecord.Status.SUCCESS, record.error_message
    data = body(client.get(download_url(record)))
    assert hashlib.sha256(data).hexdigest() == record.sha256
    assert alias in client.get("/admin/").content.decode()
