"""secrets_app and cache_app without backups_app in INSTALLED_APPS (a host project may install them alone).

Both write the audit log through its public entry point (backups_app.audit), which falls back to
the `opsdesk.audit` logger; /health reports cache_app's own checks only. Run in a subprocess: an
app cannot be taken out of a process whose models are already loaded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import REDIS_HOST, REDIS_PORT, require_service

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, logging, sys
import django
django.setup()
from django.apps import apps
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()

assert not apps.is_installed("backups_app")
call_command("migrate", verbosity=0)

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("opsdesk.audit").addHandler(Keep())
logging.getLogger("opsdesk.audit").setLevel(logging.INFO)

from secrets_app.manager import SecretManager
from secrets_app.providers.local import LocalProvider
from secrets_app.services import secret_rotate
manager = SecretManager(LocalProvider(env_file=sys.argv[1], environ={}, process_environment=()))
rotated = secret_rotate(name="SGP_TOKEN", value="rotated-without-backups-1", source="cli", manager=manager)

from django.core.cache import cache
from cache_app.services import cache_clear
cache.set("left-over", 1)
removed = cache_clear(source="cli")

anonymous = Client().get("/health")
staff = Client(HTTP_AUTHORIZATION="Bearer health-token-without-backups-0123456789").get("/health")
print(json.dumps({
    "version": rotated.version, "removed": removed, "audit": records,
    "anonymous": [anonymous.status_code, anonymous.json()],
    "details": sorted(staff.json()["details"]),
}))
"""


def test_secrets_and_cache_work_and_audit_without_backups_app(tmp_path):
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    env_file = tmp_path / ".env"
    env_file.write_text("SGP_TOKEN=before\n")
    prefix = f"opsdesk-test-{uuid.uuid4().hex[:8]}"
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_URL", "SECRETS_"))},
        "DJANGO_SETTINGS_MODULE": "tests.without_backups.settings",
        "OPSDESK_TEST_OPS_DB": str(tmp_path / "ops.sqlite3"),
        "OPSDESK_TEST_REDIS_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
        "OPSDESK_TEST_CACHE_PREFIX": prefix,
    }
    finished = subprocess.run([sys.executable, "-c", SCRIPT, str(env_file)], cwd=PROJECT_ROOT, env=environment,
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert "rotated-without-backups-1" in env_file.read_text()
    assert result["removed"] >= 1
    rotation, clearing = result["audit"]
    assert "cli cli rotate_secret SGP_TOKEN -> success" in rotation
    assert "cli cli cache_clear" in clearing and "-> success" in clearing
    status, body = result["anonymous"]
    assert status == 200 and body == {"status": "ok", "database": True, "redis": True}
    assert result["details"] == ["database", "redis"]
