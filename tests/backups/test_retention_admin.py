"""The retention policy admin and its deletion preview."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from backups_app.models import AuditEntry, BackupRecord, RetentionPolicy

from .retention_helpers import make_backup

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client):
    user = User.objects.create_superuser("root", "", "pw")
    client.force_login(user)
    return client


def test_preview_shows_what_an_unsaved_edit_would_delete(superuser_client):
    now = timezone.now()
    newest = make_backup(created_at=now - timedelta(hours=1))
    old = make_backup(created_at=now - timedelta(days=40))
    policy = RetentionPolicy.objects.create(database="default", keep_days=60, keep_last=7)

    response = superuser_client.post(
        reverse("admin:backups_app_retentionpolicy_change", args=[policy.pk]),
        {"database": "default", "keep_days": "10", "keep_last": "1", "_preview": "1"},
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "1 backup would be deleted" in page
    assert old.name in page.split("would be deleted")[1].split("kept")[0]
    assert newest.name in page
    policy.refresh_from_db()
    assert (policy.keep_days, policy.keep_last) == (60, 7)  # nothing saved
    assert BackupRecord.objects.count() == 2  # nothing deleted


def test_preview_of_a_new_policy_with_an_unknown_database_shows_the_error(superuser_client):
    response = superuser_client.post(
        reverse("admin:backups_app_retentionpolicy_add"),
        {"database": "nope", "keep_days": "10", "keep_last": "1", "_preview": "1"},
    )
    assert response.status_code == 200
    page = response.content.decode()
    # The errors are shown in the form itself, beside the field, with the values as typed.
    assert 'class="errornote"' in page and "Unknown database alias" in page
    assert 'name="keep_days" value="10"' in page and "would be deleted" not in page
    assert not RetentionPolicy.objects.exists()


def test_the_form_offers_the_configured_databases_with_the_defaults_filled_in(superuser_client, settings):
    settings.BACKUP_RETENTION_DAYS = 21
    page = superuser_client.get(reverse("admin:backups_app_retentionpolicy_add")).content.decode()
    assert '<select name="database"' in page and '<option value="default">default</option>' in page
    assert 'name="keep_days" value="21"' in page and 'name="keep_last" value="7"' in page


def test_the_preview_speaks_in_sentences(superuser_client):
    make_backup(created_at=timezone.now() - timedelta(hours=1))
    page = superuser_client.post(
        reverse("admin:backups_app_retentionpolicy_add"),
        {"database": "default", "keep_days": "10", "keep_last": "1", "_preview": "1"},
    ).content.decode()
    assert "it is the newest good backup" in page
    assert "Good backups younger than 10 days are kept." in page
    assert "keep_days" not in page


def test_saving_a_policy_is_audited(superuser_client):
    response = superuser_client.post(
        reverse("admin:backups_app_retentionpolicy_add"),
        {"database": "default", "keep_days": "14", "keep_last": "3"},
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="schedule_change", target="retention default")
    assert entry.source == AuditEntry.Source.ADMIN and "keep_days=14" in entry.detail


def test_staff_without_change_permission_cannot_preview(client):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_retentionpolicy"))
    client.force_login(user)
    policy = RetentionPolicy.objects.create(database="default", keep_days=60, keep_last=7)

    response = client.post(
        reverse("admin:backups_app_retentionpolicy_change", args=[policy.pk]),
        {"database": "default", "keep_days": "1", "keep_last": "0", "_preview": "1"},
    )

    assert response.status_code == 403
