"""A verification queued by a user runs as that user, never as the host operator."""
from __future__ import annotations

import pytest

from backups_app.models import BackupRecord
from backups_app.tasks import backup_verify_run

from .admin_fixtures import store_backup

pytestmark = pytest.mark.django_db


def test_a_verification_whose_user_was_deleted_meanwhile_does_not_run_as_the_operator(django_user_model, backup_dir):
    # `user=None` means the host operator (backups_app/access.py), who may verify opsdesk's own
    # database: a deleted user must not turn into it.
    record = store_backup(database="default")
    superuser = django_user_model.objects.create_superuser("verifier", "", "unused-password-1234")
    user_id = superuser.pk
    superuser.delete()
    backup_verify_run(record.pk, user_id, "admin")
    record.refresh_from_db()
    assert record.verification_status == BackupRecord.VerificationStatus.UNVERIFIED and record.verified_at is None
