"""The apps' database router: opsdesk's tables stay in `default`, a host project's models are its own."""
import pytest
from django.contrib.auth import get_user_model

from backups_app.models import BackupRecord
from backups_app.routers import OpsdeskRouter
from ops_project.routers import OpsDatabaseRouter


@pytest.mark.parametrize("app_label", ["backups_app", "secrets_app", "cache_app", "django_celery_beat", "axes"])
def test_opsdesk_tables_migrate_into_default_only(app_label):
    router = OpsdeskRouter()
    assert router.allow_migrate("default", app_label) is True
    assert router.allow_migrate("chat", app_label) is False


def test_a_host_projects_models_are_left_to_the_host():
    router = OpsdeskRouter()
    user_model = get_user_model()
    assert router.allow_migrate("chat", "shop") is None
    assert router.allow_migrate("chat", user_model._meta.app_label) is None
    assert router.db_for_read(user_model) is None
    assert router.db_for_write(user_model) is None
    assert router.allow_relation(BackupRecord(), user_model()) is None


def test_opsdesk_records_are_read_and_written_in_default():
    router = OpsdeskRouter()
    assert router.db_for_read(BackupRecord) == "default"
    assert router.db_for_write(BackupRecord) == "default"
    assert router.allow_relation(BackupRecord(), BackupRecord()) is True


def test_the_standalone_project_claims_every_table():
    router = OpsDatabaseRouter()
    assert router.allow_migrate("chat", "auth") is False
    assert router.db_for_read(get_user_model()) == "default"
