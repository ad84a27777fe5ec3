"""The console speaks Brazilian Portuguese out of the box (compiled .mo files ship in the repo)."""
from __future__ import annotations

import pytest
from django.test import Client
from django.utils import translation

from backups_app.models import BackupRecord

from .admin_fixtures import *  # noqa: F401,F403
from .admin_fixtures import store_backup

pytestmark = pytest.mark.django_db


def test_admin_pages_in_pt_br(superuser):
    record = store_backup()
    client = Client(HTTP_ACCEPT_LANGUAGE="pt-br")
    client.force_login(superuser)
    index = client.get("/admin/").content.decode()
    assert "Saúde dos backups" in index and "Último backup válido" in index
    listing = client.get("/admin/backups_app/backuprecord/").content.decode()
    assert "Fazer backup agora" in listing and "sucesso" in listing
    restore = client.get(f"/admin/backups_app/backuprecord/{record.pk}/restore/").content.decode()
    assert "O que será sobrescrito" in restore and "Backup de segurança" in restore
    wrong = client.post(f"/admin/backups_app/backuprecord/{record.pk}/restore/", {"confirm_database": "x"})
    assert "Nada foi restaurado" in wrong.content.decode()


def test_model_labels_in_pt_br():
    with translation.override("pt-br"):
        assert str(BackupRecord.Status.FAILED.label) == "falhou"
        assert str(BackupRecord._meta.verbose_name_plural) == "backups"
        assert str(BackupRecord._meta.get_field("created_at").verbose_name) == "criado em"


def test_language_code_from_settings_works(settings, superuser):
    settings.LANGUAGE_CODE = "pt-br"
    client = Client()
    client.force_login(superuser)
    assert "Saúde dos backups" in client.get("/admin/").content.decode()


def test_an_explicit_language_code_wins_over_the_browser(settings, superuser):
    # What an operator gets with LANGUAGE_CODE=pt-br set: every browser sends Accept-Language.
    settings.LANGUAGE_CODE = "pt-br"
    settings.LANGUAGE_FROM_BROWSER = False
    client = Client(HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    client.force_login(superuser)
    assert "Saúde dos backups" in client.get("/admin/").content.decode()


def test_the_browser_chooses_when_the_installation_did_not(settings, superuser):
    settings.LANGUAGE_CODE = "pt-br"
    settings.LANGUAGE_FROM_BROWSER = True
    client = Client(HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    client.force_login(superuser)
    assert "Backup health" in client.get("/admin/").content.decode()

