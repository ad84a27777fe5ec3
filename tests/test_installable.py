"""opsdesk installs into a project it has never seen, following docs/INSTALLING.md to the letter.

Builds the wheel from a copy of the source tree, creates a project with `django-admin startproject`
in a fresh virtualenv where only the wheel is installed, appends the documentation's `# settings.py`
and `# urls.py` blocks to the project's files, then runs migrate, backup_now, restore_backup, and
GETs /health and admin pages as a logged-in superuser. Everything it writes is under tmp_path
(the pip cache included); pip reaches the package index configured on the machine.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.installable, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTALLING = PROJECT_ROOT / "docs" / "INSTALLING.md"
# Not part of a source tree a wheel is built from: environments, state, build leftovers.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "var", "backups", "build", "dist", "*.egg-info", "__pycache__", "node_modules",
    ".pytest_cache", "work",
)

# A secret the host project reads through the documented secrets bootstrap (docs: "Secrets in settings.py").
HOST_SECRET_KEY = "host-project-key-from-dotenv-0123456789abcdef"

PROBE = """
import json, os, sys
import django

django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from backups_app.models import AuditEntry
from backups_app.services.tokens import api_token_create

result = {"secret_key_from_dotenv": settings.SECRET_KEY == os.environ["EXPECTED_SECRET_KEY"]}
root = get_user_model().objects.create_superuser("root", "", "a-long-enough-password-1")
client = Client(HTTP_HOST="localhost")
health = client.get("/health")
result["health"] = [health.status_code, json.loads(health.content)]
result["login"] = client.login(username="root", password="a-long-enough-password-1")
index = client.get("/admin/")
result["index"] = [index.status_code, 'id="ops-overview"' in index.content.decode()]
backups = client.get("/admin/backups_app/backuprecord/")
result["backups"] = [backups.status_code, backups.content.decode()]
# The REST API with opsdesk's policy although the host has no REST_FRAMEWORK setting: a logged-in
# session is not enough, a Bearer token is.
result["api_with_session"] = client.get("/api/v1/backup/list").status_code
raw_token = api_token_create(user=root, source=AuditEntry.Source.CLI).raw_token
listed = Client(HTTP_HOST="localhost").get("/api/v1/backup/list", HTTP_AUTHORIZATION=f"Bearer {raw_token}")
result["api_with_token"] = [listed.status_code, [backup["name"] for backup in json.loads(listed.content)["results"]]]
from django_celery_beat.models import PeriodicTask

result["schedule"] = sorted(PeriodicTask.objects.values_list("name", flat=True))
print(json.dumps(result))
"""


def documented_blocks(tag: str) -> list[str]:
    """The code blocks of docs/INSTALLING.md whose first line is exactly `# <tag>`, in order."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", INSTALLING.read_text(encoding="utf-8"), flags=re.M | re.S)
    found = []
    for _indent, body in blocks:
        body = textwrap.dedent(body)
        if body.splitlines()[0] == f"# {tag}":
            found.append(body)
    return found


def run(command: list, *, cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_documentation_has_the_blocks_this_test_applies():
    assert len(documented_blocks("settings.py")) >= 3  # the apps, SQLite's WAL, the secrets bootstrap
    assert len(documented_blocks("urls.py")) == 1


def test_opsdesk_installs_into_a_new_project(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "PYTHON", "VIRTUAL_ENV", "OPSDESK_"))}
    env.update(PIP_CACHE_DIR=str(tmp_path / "pip-cache"), PYTHONDONTWRITEBYTECODE="1")

    # 1. The wheel, built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = tmp_path / "source"
    shutil.copytree(PROJECT_ROOT, source, ignore=NOT_SOURCE, symlinks=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source], cwd=tmp_path, env=env)
    wheel = next((tmp_path / "dist").glob("opsdesk-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    for app in ("backups_app", "secrets_app", "cache_app"):  # each app's pages and their translations
        assert any(name.startswith(f"{app}/templates/admin/{app}/") for name in shipped), app
        assert f"{app}/locale/pt_BR/LC_MESSAGES/django.mo" in shipped, app
    assert "backups_app/templates/admin/backups_app/index.html" in shipped
    assert "backups_app/static/backups_app/admin.css" in shipped
    assert not any(name.startswith(("ops_project/", "tests/", "templates/")) for name in shipped)

    # 2. A fresh virtualenv with the wheel alone (the base install backs up SQLite).
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", wheel], cwd=tmp_path, env=env, timeout=600)

    # 3. A new project, and the documented lines appended to its settings and urls.
    run([venv / "bin" / "django-admin", "startproject", "host"], cwd=tmp_path, env=env)
    project = tmp_path / "host"
    settings_file, urls_file = project / "host" / "settings.py", project / "host" / "urls.py"
    with settings_file.open("a", encoding="utf-8") as handle:
        for block in documented_blocks("settings.py"):
            handle.write("\n" + block)
    with urls_file.open("a", encoding="utf-8") as handle:
        for block in documented_blocks("urls.py"):
            handle.write("\n" + block)
    (project / ".env").write_text(f"SECRET_KEY={HOST_SECRET_KEY}\n", encoding="utf-8")
    env.update(DJANGO_SETTINGS_MODULE="host.settings", PYTHONPATH=str(project), EXPECTED_SECRET_KEY=HOST_SECRET_KEY)
    manage = [python, project / "manage.py"]

    # 4. The commands an operator runs first.
    run([*manage, "check"], cwd=project, env=env)
    run([*manage, "migrate", "--noinput", "-v", "0"], cwd=project, env=env)
    backup_name = run([*manage, "backup_now"], cwd=project, env=env).stdout.strip().splitlines()[-1]
    assert backup_name.startswith("backup_"), backup_name
    assert (project / "backups" / backup_name).is_file()  # BACKUP_DIR's default: BASE_DIR / "backups"
    restored = run([*manage, "restore_backup", backup_name, "--noinput"], cwd=project, env=env)
    assert f"Restored {backup_name}" in restored.stdout

    # 5. /health and the admin, through Django's test client inside the host's virtualenv.
    probe = json.loads(run([python, "-c", PROBE], cwd=project, env=env).stdout.strip().splitlines()[-1])
    assert probe["secret_key_from_dotenv"] is True
    status, health = probe["health"]
    assert status == 200, health
    assert health["database"] is True and health["storage"] is True, health
    assert probe["login"] is True
    assert probe["index"] == [200, True]
    status, page = probe["backups"]
    assert status == 200
    assert backup_name in page
    assert probe["api_with_session"] == 401
    # migrate gave the project's database its default schedule (docs: "In five lines", step 5).
    assert "opsdesk: backup default" in probe["schedule"], probe["schedule"]
    status, names = probe["api_with_token"]
    assert status == 200 and backup_name in names
