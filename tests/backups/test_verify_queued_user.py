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


@pytest.mark.parametrize("point_in_time", [False, True])
def test_a_restore_queued_by_a_user_deleted_meanwhile_ends_refused_and_restores_nothing(
        django_user_model, backup_dir, point_in_time):
    # The same rule for restores: RestoreRecord.user is SET_NULL, and a restore queued from the
    # admin or the API with no user left would run with the operator's rights.
    from unittest import mock

    from backups_app.models import RestoreRecord, Trigger
    from backups_app.tasks import pitr_restore_run, restore_run

    record = store_backup(database="default")
    staff = django_user_model.objects.create_user("restorer", "", "unused-password-1234", is_staff=True)
    restore = RestoreRecord.objects.create(backup=None if point_in_time else record, backup_name=record.name,
                                           database="default", trigger=Trigger.ADMIN, user=staff)
    user_id = staff.pk
    staff.delete()
    with mock.patch("backups_app.tasks.backup_restore") as backup_restore, \
            mock.patch("backups_app.tasks.pitr_restore") as pitr_restore:
        if point_in_time:
            pitr_restore_run(restore.pk, to_time="2026-11-30T00:00:00Z", user_id=user_id)
        else:
            restore_run(restore.pk, True, user_id)
    assert not backup_restore.called and not pitr_restore.called
    restore.refresh_from_db()
    assert restore.status == RestoreRecord.Status.REFUSED
    assert "was deleted before it started" in restore.error_message
