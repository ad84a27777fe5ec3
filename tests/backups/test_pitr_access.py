"""Point-in-time restores and verifications of opsdesk's own database: superusers only, in every language."""
from __future__ import annotations

import pytest
from django.utils import translation

from backups_app.exceptions import AccessRefused
from backups_app.models import RestoreRecord, Trigger
from backups_app.services.pitr import RecoveryTarget, pitr_restore_queue, pitr_verify

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("language", ["en", "pt-br"])
def test_a_staff_user_cannot_rewind_the_control_database_whatever_the_language(django_user_model, language):
    staff = django_user_model.objects.create_user("pitr-staff", password="unused-password-1234", is_staff=True)
    target = RecoveryTarget(to_position=("mysql-bin.000001", 4))
    with translation.override(language):
        with pytest.raises(AccessRefused):
            pitr_restore_queue(database="default", target=target, trigger=Trigger.API, user=staff)
        with pytest.raises(AccessRefused):
            pitr_verify(database="default", target=target, user=staff)
    assert not RestoreRecord.objects.exists()
