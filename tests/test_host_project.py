"""The three apps in a project that is not opsdesk's: none of opsdesk's settings, only Django's.

Every setting the apps read has its default in the app (backups_app/conf.py, secrets_app/conf.py,
cache_app/conf.py), so such a project passes `check`, migrates, backs up and answers /health.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

HOST_SETTINGS = """
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "host-project-test-key-0123456789-abcdefghijklmnopqrstuvwxyz"
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
    "django.contrib.messages", "django.contrib.staticfiles", "django_celery_beat", "rest_framework",
    "backups_app", "secrets_app", "cache_app",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "host_urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request", "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
# WAL: a SQLite database that is backed up while the backup's progress is written to it.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "host.sqlite3",
                         "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;"}}}
STATIC_URL = "static/"
USE_TZ = True
"""

HOST_URLS = """
from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls), path("", include("cache_app.urls"))]
"""


@pytest.fixture
def host_project(tmp_path):
    (tmp_path / "host_settings.py").write_text(HOST_SETTINGS)
    (tmp_path / "host_urls.py").write_text(HOST_URLS)
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("DATABASE_URL", "BACKUP_", "SECRETS_", "REDIS_URL", "CELERY_"))}
    environment.update(DJANGO_SETTINGS_MODULE="host_settings", PYTHONPATH=f"{tmp_path}{os.pathsep}{PROJECT_ROOT}")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "django", *args], cwd=tmp_path, env=environment,
                              capture_output=True, text=True, timeout=300)

    run.root = tmp_path
    return run


@pytest.mark.slow
def test_the_apps_check_migrate_back_up_and_answer_health_without_opsdesk_settings(host_project):
    result = host_project("check", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    result = host_project("migrate", "--no-input")
    assert result.returncode == 0, result.stderr
    result = host_project("backup_now")
    assert result.returncode == 0, result.stderr
    # The default folder: BASE_DIR/backups, owner-only, as in opsdesk's own project.
    backups = [path for path in (host_project.root / "backups").iterdir() if path.name.endswith(".sql.gz")]
    assert len(backups) == 1 and (backups[0].stat().st_mode & 0o777) == 0o600
    result = host_project("shell", "-c", "from django.test import Client; r = Client().get('/health'); "
                                         "print(r.status_code, r.json()['database'], r.json()['storage'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split()[1:] == ["True", "True"]
