"""backups_app's settings: defaults (backups_app/conf.py) and system checks (backups_app/checks.py).

A bad value must be a `manage.py check` error naming the setting, not a traceback in a backup.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from django.core import checks

from backups_app.checks import check_compression_and_encryption, check_offsite, check_setting_types
from backups_app.conf import DEFAULTS, app_settings, offsite_storage_settings, storages_setdefault
from backups_app.encryption import generate_key_pair
from backups_app.storage import offsite_enabled
from secrets_app import default_manager
from secrets_app.providers.local import LocalProvider
from tests.test_project import run_manage

OLD_NAMES = ("AWS_S3_BUCKET", "AWS_S3_ENDPOINT_URL", "AWS_S3_REGION_NAME", "AWS_S3_PREFIX")


def ids(messages) -> list[str]:
    return [message.id for message in messages]


@pytest.fixture
def recipients_secret():
    """Serve BACKUP_ENCRYPTION_RECIPIENTS through get_secret; the test sets the value."""
    secrets: dict[str, str] = {}
    saved = dict(vars(default_manager))
    default_manager.configure(provider=LocalProvider(environ=secrets), ttl=0)
    yield secrets
    default_manager.__dict__.update(saved)


# --- Defaults -------------------------------------------------------------------------------------
def test_every_setting_has_the_default_of_the_embedded_project(settings):
    """A host project without any BACKUP_* setting gets what opsdesk's own settings.py would set."""
    import ops_project.settings as embedded

    compared = [name for name in DEFAULTS if hasattr(embedded, name) and name not in os.environ
                # Celery's own defaults apply in a host project, not opsdesk's queue name and options.
                and name not in ("BASE_DIR", "CELERY_TASK_DEFAULT_QUEUE", "CELERY_BROKER_TRANSPORT_OPTIONS")]
    assert "BACKUP_DIR" in compared and "BACKUP_OFFSITE_PREFIX" in compared
    for name in compared:
        if hasattr(settings, name):
            delattr(settings, name)
    for name in compared:
        assert getattr(app_settings, name) == getattr(embedded, name), name
    del settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_BROKER_TRANSPORT_OPTIONS
    assert app_settings.CELERY_TASK_DEFAULT_QUEUE == "celery" and app_settings.CELERY_BROKER_TRANSPORT_OPTIONS == {}


def test_settings_are_read_at_each_access(settings):
    settings.BACKUP_RETENTION_DAYS = 3
    assert app_settings.BACKUP_RETENTION_DAYS == 3
    del settings.BACKUP_RETENTION_DAYS
    assert app_settings.BACKUP_RETENTION_DAYS == 30
    with pytest.raises(AttributeError):
        app_settings.BACKUP_NO_SUCH_SETTING  # noqa: B018


def test_missing_storages_get_the_backup_folder_and_the_offsite_bucket(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.BACKUP_OFFSITE_BUCKET = "host-bucket"
    settings.STORAGES = {"default": settings.STORAGES["default"]}
    storages_setdefault()
    backups = settings.STORAGES["backups"]
    assert backups["OPTIONS"]["location"] == tmp_path / "backups"
    assert backups["OPTIONS"]["file_permissions_mode"] == 0o600 and backups["OPTIONS"]["base_url"] is None
    assert settings.STORAGES["backups_offsite"]["OPTIONS"]["bucket_name"] == "host-bucket"
    assert offsite_enabled()


def test_a_project_defined_storage_is_kept(settings):
    configured = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": "/srv/x"}}
    settings.STORAGES = {**settings.STORAGES, "backups": configured}
    storages_setdefault()
    assert settings.STORAGES["backups"] is configured


def test_the_offsite_storage_never_takes_django_storages_global_endpoint_or_region(settings):
    """A host project's AWS_S3_ENDPOINT_URL (for its own media bucket) must not redirect the backups."""
    from storages.backends.s3 import S3Storage

    settings.BACKUP_OFFSITE_BUCKET = "backups-bucket"
    settings.AWS_S3_ENDPOINT_URL = "https://media.example.com"
    settings.AWS_S3_REGION_NAME = "eu-west-3"
    options = offsite_storage_settings()["OPTIONS"]
    storage = S3Storage(**options)
    assert storage.endpoint_url is None and storage.region_name is None
    assert storage.bucket_name == "backups-bucket" and storage.location == "opsdesk-backups"


# --- The AWS_S3_* names of earlier versions -------------------------------------------------------
@pytest.fixture
def fresh_deprecation_warnings(monkeypatch):
    """A process that has not warned about the old names yet (each warns once per process)."""
    import backups_app.conf

    monkeypatch.setattr(backups_app.conf, "_warned_deprecated_names", set(), raising=False)


@pytest.mark.filterwarnings("ignore:The setting AWS_S3_:DeprecationWarning")
def test_the_old_offsite_names_still_work_with_a_deprecation_warning(settings, fresh_deprecation_warnings):
    del settings.BACKUP_OFFSITE_BUCKET
    settings.AWS_S3_BUCKET = "old-bucket"
    settings.AWS_S3_ENDPOINT_URL = "https://minio.internal:9000"
    settings.AWS_S3_PREFIX = "/old-prefix/"
    with pytest.warns(DeprecationWarning, match="AWS_S3_BUCKET is deprecated: rename it to BACKUP_OFFSITE_BUCKET"):
        assert app_settings.BACKUP_OFFSITE_BUCKET == "old-bucket"
    with pytest.warns(DeprecationWarning, match="BACKUP_OFFSITE_ENDPOINT_URL"):
        options = offsite_storage_settings()["OPTIONS"]
    assert options["endpoint_url"] == "https://minio.internal:9000" and options["location"] == "old-prefix"
    warning_ids = ids(check_offsite())
    assert warning_ids.count("backups_app.W001") == 3  # bucket, endpoint and prefix; no region was set
    messages = [message.msg for message in check_offsite()]
    assert any("rename it to BACKUP_OFFSITE_ENDPOINT_URL" in message for message in messages)
    assert all(message.level == checks.WARNING for message in check_offsite())


def test_the_old_names_warn_once_per_process_not_at_every_access(settings, fresh_deprecation_warnings):
    """The archiver, /metrics and reencrypt_backups read the offsite settings in loops."""
    del settings.BACKUP_OFFSITE_BUCKET
    settings.AWS_S3_BUCKET = "old-bucket"
    settings.AWS_S3_PREFIX = "old-prefix"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _segment in range(100):
            assert app_settings.BACKUP_OFFSITE_BUCKET == "old-bucket"
            offsite_enabled()
            offsite_storage_settings()
    assert sorted(str(warning.message) for warning in caught) == [
        "The setting AWS_S3_BUCKET is deprecated: rename it to BACKUP_OFFSITE_BUCKET.",
        "The setting AWS_S3_PREFIX is deprecated: rename it to BACKUP_OFFSITE_PREFIX.",
    ]


def test_with_the_new_bucket_the_old_names_are_neither_read_nor_reported(settings):
    settings.BACKUP_OFFSITE_BUCKET = "new-bucket"
    settings.AWS_S3_BUCKET = "old-bucket"
    settings.AWS_S3_ENDPOINT_URL = "https://media.example.com"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert app_settings.BACKUP_OFFSITE_BUCKET == "new-bucket"
        assert app_settings.BACKUP_OFFSITE_ENDPOINT_URL == ""
    assert "backups_app.W001" not in ids(check_offsite())


def test_the_old_environment_names_still_work_and_check_names_the_new_ones(tmp_path):
    result = run_manage(
        "check", DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
        AWS_S3_BUCKET="legacy-bucket", AWS_S3_REGION_NAME="eu-west-1",
    )
    assert result.returncode == 0, result.stderr
    assert "backups_app.W001" in result.stderr
    assert "AWS_S3_BUCKET is deprecated for opsdesk's offsite copies: rename it to BACKUP_OFFSITE_BUCKET" in result.stderr
    assert "rename it to BACKUP_OFFSITE_REGION_NAME" in result.stderr
    result = run_manage(
        "shell", "-c",
        "from django.conf import settings; o = settings.STORAGES['backups_offsite']['OPTIONS'];"
        "print(o['bucket_name'], o['region_name'], o['location'])",
        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
        AWS_S3_BUCKET="legacy-bucket", AWS_S3_REGION_NAME="eu-west-1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["legacy-bucket", "eu-west-1", "opsdesk-backups"]


def test_the_new_environment_names_configure_the_offsite_storage(tmp_path):
    result = run_manage(
        "shell", "-c",
        "from django.conf import settings; o = settings.STORAGES['backups_offsite']['OPTIONS'];"
        "print(o['bucket_name'], o['endpoint_url'], o['region_name'], o['location'])",
        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
        BACKUP_OFFSITE_BUCKET="new-bucket", BACKUP_OFFSITE_ENDPOINT_URL="https://minio.internal:9000",
        BACKUP_OFFSITE_REGION_NAME="eu-west-1", BACKUP_OFFSITE_PREFIX="/site-a/",
        AWS_S3_ENDPOINT_URL="https://media.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["new-bucket", "https://minio.internal:9000", "eu-west-1", "site-a"]
    assert "W001" not in result.stderr


def test_offsite_without_its_libraries_is_an_error(settings, monkeypatch):
    import backups_app.checks

    settings.BACKUP_OFFSITE_BUCKET = "bucket"
    settings.STORAGES = {**settings.STORAGES, "backups_offsite": offsite_storage_settings()}
    assert "backups_app.E010" not in ids(check_offsite())
    monkeypatch.setattr(backups_app.checks, "find_spec", lambda name: None if name == "boto3" else object())
    errors = check_offsite()
    assert ids(errors) == ["backups_app.E010"] and "boto3 is not installed" in errors[0].msg


# --- Types and ranges -----------------------------------------------------------------------------
def test_the_project_settings_pass_every_check():
    messages = [message for message in checks.run_checks() if message.id and message.id.startswith("backups_app.")]
    assert messages == []


@pytest.mark.parametrize("name, value, expected", [
    ("BACKUP_RETENTION_DAYS", "30", "backups_app.E007"),
    ("BACKUP_RETENTION_DAYS", -1, "backups_app.E008"),
    ("BACKUP_DUMP_TIMEOUT", 1.5, "backups_app.E007"),
    ("BACKUP_RESTORE_PARALLELISM", 0, "backups_app.E008"),
    ("BACKUP_HEARTBEAT_SECONDS", True, "backups_app.E007"),
    ("BACKUP_OFFSITE_MAX_ATTEMPTS", 0, "backups_app.E008"),
    ("BACKUP_API_RATE_LIMIT", None, "backups_app.E007"),
    ("BACKUP_ENABLED", "false", "backups_app.E007"),
    ("BACKUP_OFFSITE_BUCKET", None, "backups_app.E007"),
    ("BACKUP_LOCK_DIR", None, "backups_app.E007"),
    ("BACKUP_LOCK_DIR", "", "backups_app.E011"),
    ("BACKUP_RESTORE_TARGETS", "chat:chat_staging", "backups_app.E007"),
    ("BACKUP_RESTORE_TARGETS", [("chat", "staging")], "backups_app.E007"),
    ("BACKUP_API_PAGE_SIZE", 1000, "backups_app.E009"),
])
def test_a_bad_value_is_an_error_naming_the_setting(settings, name, value, expected):
    setattr(settings, name, value)
    errors = check_setting_types()
    assert ids(errors) == [expected]
    assert name in errors[0].msg and errors[0].hint
    # The restore-targets check does not trip over what E007 already reports.
    assert all(message.id in {expected} for message in checks.run_checks()
               if message.id and message.id.startswith("backups_app.E"))


def test_zero_is_allowed_where_it_means_something(settings):
    settings.BACKUP_RETENTION_DAYS = 0  # keep_last alone decides
    settings.BACKUP_DUMP_TIMEOUT = 0  # no time limit
    settings.BACKUP_DASHBOARD_CACHE_SECONDS = 0
    settings.BACKUP_LOCK_DIR = Path("/var/lib/opsdesk/locks")
    assert check_setting_types() == []


# --- Compression and encryption -------------------------------------------------------------------
@pytest.mark.parametrize("name, value, expected", [
    ("BACKUP_COMPRESSION", "lz4", "backups_app.E003"),
    ("BACKUP_COMPRESSION", None, "backups_app.E003"),
    ("BACKUP_ENCRYPTION", "gpg", "backups_app.E004"),
    ("BACKUP_ENCRYPTION", "AGE", "backups_app.E004"),
])
def test_an_unknown_choice_is_an_error(settings, name, value, expected):
    setattr(settings, name, value)
    assert ids(check_compression_and_encryption()) == [expected]


def test_zstd_without_its_library_is_an_error(settings, monkeypatch):
    import backups_app.checks

    settings.BACKUP_COMPRESSION = "zstd"
    assert check_compression_and_encryption() == []
    monkeypatch.setattr(backups_app.checks, "find_spec", lambda name: None)
    assert ids(check_compression_and_encryption()) == ["backups_app.E012"]


def test_age_without_recipients_is_an_error(settings, recipients_secret):
    settings.BACKUP_ENCRYPTION = "age"
    errors = check_compression_and_encryption()
    assert ids(errors) == ["backups_app.E005"]
    assert "generate_backup_key" in errors[0].hint


def test_age_with_a_malformed_recipient_is_an_error_without_the_key(settings, recipients_secret):
    settings.BACKUP_ENCRYPTION = "age"
    recipients_secret["BACKUP_ENCRYPTION_RECIPIENTS"] = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQ"
    errors = check_compression_and_encryption()
    assert ids(errors) == ["backups_app.E006"]
    assert "QQQQQQQQQQ" not in errors[0].msg  # a private key pasted by mistake is not printed


def test_age_with_a_public_key_passes(settings, recipients_secret):
    settings.BACKUP_ENCRYPTION = "age"
    _identity, recipient = generate_key_pair()
    recipients_secret["BACKUP_ENCRYPTION_RECIPIENTS"] = recipient
    assert check_compression_and_encryption() == []


def test_manage_py_check_reports_a_bad_value_without_a_traceback(tmp_path):
    result = run_manage(
        "check", DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}", BACKUP_ENCRYPTION="age",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "backups_app.E005" in result.stderr
