"""The project's own wiring: settings, deploy checks, routing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops_project.routers import OpsDatabaseRouter

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DATABASE_URL")}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_ROOT, env=environment,
        capture_output=True, text=True, timeout=120,
    )


def test_check_deploy_is_clean_for_production_settings(tmp_path):
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        OPSDESK_ENV="production",
        SECRET_KEY="x" * 20 + "production-only-test-key-with-enough-entropy-1234567890",
        ALLOWED_HOSTS="ops.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = run_manage("check", OPSDESK_ENV="production", SECRET_KEY="", DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_database_url_aliases_become_lower_case_databases(tmp_path):
    result = run_manage(
        "shell", "-c", "from django.conf import settings; print(sorted(settings.DATABASES))",
        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
        DATABASE_URL_CHAT=f"sqlite:///{tmp_path / 'chat.sqlite3'}",
    )
    assert result.returncode == 0, result.stderr
    assert "['chat', 'default']" in result.stdout


@pytest.mark.parametrize("alias, allowed", [("default", True), ("chat", False)])
def test_router_keeps_ops_tables_in_default(alias, allowed):
    assert OpsDatabaseRouter().allow_migrate(alias, "backups_app") is allowed
