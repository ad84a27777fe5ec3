"""Restoring opsdesk's own database (`default`) through the API, in a process of its own.

docs/FAULTS.md: control-database-rewind. The ops database cannot be dumped from inside a test
transaction, so each test runs `manage.py shell -c` against a file database (tests/backups/conftest.py).
"""
from __future__ import annotations

import json

import pytest

from tests.backups.conftest import ManageRunner

pytestmark = pytest.mark.slow

RESTORE_THROUGH_THE_API = '''
import json
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from backups_app.models import AuditEntry, RestoreRecord, Trigger
from backups_app.services.audit import audit_log
from backups_app.services.backup import backup_create
from backups_app.services.tokens import api_token_create

backup = backup_create(database="default", trigger=Trigger.CLI)
# Everything below happens after the backup: the restore rewinds it, except the audit log.
root = get_user_model().objects.create_superuser("root-after", password="unused-password-1234")
raw = api_token_create(user=root, source="cli", created_by=root).raw_token
marker = audit_log(action="marker", source="system", outcome="success", target="written after the backup")
AuditEntry.objects.filter(pk=marker.pk).update(created_at=marker.created_at.replace(microsecond=123456))
marker.refresh_from_db()
client = APIClient(SERVER_NAME="localhost")
client.credentials(HTTP_AUTHORIZATION="Bearer " + raw)
response = client.post("/api/v1/backup/restore", {"backup_name": backup.name}, format="json")
print(json.dumps({
    "status_code": response.status_code,
    "body": response.json(),
    "users": list(get_user_model().objects.values_list("username", flat=True)),
    "restores": list(RestoreRecord.objects.values_list("pk", "status")),
    "audit": list(AuditEntry.objects.order_by("pk").values_list("pk", "action", "outcome", "target", "actor")),
    "marker_time_kept": AuditEntry.objects.get(pk=marker.pk).created_at == marker.created_at,
}))
'''


def run_json(manage: ManageRunner, script: str) -> dict:
    result = manage.run("shell", "-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_restoring_the_ops_database_through_the_api_answers_202_and_keeps_the_audit_log(manage):
    outcome = run_json(manage, RESTORE_THROUGH_THE_API)
    # Before: 500, the API's own audit entry pointed at a user the restore had just erased.
    assert outcome["status_code"] == 202, outcome
    assert outcome["body"]["status"] == "success" and outcome["body"]["database"] == "default"
    assert outcome["restores"] == [[outcome["body"]["id"], "success"]]
    # Users went back in time...
    assert "root-after" not in outcome["users"]
    # ...the audit log did not: what happened after the backup is still there, restore included.
    actions = [(action, outcome_, target) for _pk, action, outcome_, target, _actor in outcome["audit"]]
    assert ("token_create", "success") in {(a, o) for a, o, _t in actions}
    assert ("marker", "success", "written after the backup") in actions
    assert outcome["marker_time_kept"]  # put back with its own time, not the restore's
    restore_entries = [(o, t) for a, o, t in actions if a == "restore"]
    assert restore_entries[0][0] == "started" and restore_entries[-1][0] == "started"  # queued, then the API call
    assert any(o == "success" and "-> default" in t for o, t in restore_entries)
    pks = [pk for pk, *_rest in outcome["audit"]]
    assert pks == sorted(set(pks))  # no entry twice
    api_call = [entry for entry in outcome["audit"] if entry[4].startswith("root-after (token ")]
    assert api_call, "the API call's own entry names the caller even though the user is gone"


RESTORE_IN_THE_ADMIN = '''
import json
from django.contrib.auth import get_user_model
from django.test import Client
from backups_app.models import AuditEntry, RestoreRecord, Trigger
from backups_app.services.backup import backup_create

backup = backup_create(database="default", trigger=Trigger.CLI)
root = get_user_model().objects.create_superuser("root-after", password="unused-password-1234")
client = Client(SERVER_NAME="localhost")
client.force_login(root)
page = client.get(f"/admin/backups_app/backuprecord/{backup.pk}/restore/").content.decode()
response = client.post(f"/admin/backups_app/backuprecord/{backup.pk}/restore/", {"confirm_database": "default"})
print(json.dumps({
    "warned": "What goes back in time" in page,
    "status_code": response.status_code,
    "location": response.get("Location"),
    "restores": list(RestoreRecord.objects.values_list("pk", "status")),
    "audit": list(AuditEntry.objects.order_by("pk").values_list("action", "outcome", "actor")),
}))
'''


def test_restoring_the_ops_database_in_the_admin_warns_then_keeps_the_audit_log(manage):
    outcome = run_json(manage, RESTORE_IN_THE_ADMIN)
    assert outcome["warned"]
    assert outcome["status_code"] == 302
    (pk, status), = outcome["restores"]
    assert status == "success" and outcome["location"] == f"/admin/backups_app/restorerecord/{pk}/change/"
    assert ["restore", "started", "root-after"] in outcome["audit"]
    assert ["restore", "success", "root-after"] in outcome["audit"]
