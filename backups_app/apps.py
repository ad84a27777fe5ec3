from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class BackupsConfig(AppConfig):
    name = "backups_app"
    # The migrations were made with BigAutoField ids: a host project\'s DEFAULT_AUTO_FIELD must not change them.
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = _("Backups")
    # Contributed to /health (see cache_app.health): "database" adds the backup ages to cache_app's.
    health_checks = [
        "backups_app.health.DatabaseCheck", "backups_app.health.StorageCheck", "backups_app.health.BrokerCheck",
        "backups_app.health.WorkerCheck", "backups_app.health.SchedulerCheck",
        "backups_app.health.DirtyDatabasesCheck", "backups_app.health.BinlogArchiverCheck",
    ]
    health_authenticators = ["backups_app.health.api_token_of_staff"]

    def ready(self) -> None:
        from django.core import checks as django_checks

        from .checks import check_backup_dir, check_compression_and_encryption, check_offsite, check_setting_types
        from .conf import storages_setdefault

        django_checks.register(check_backup_dir, django_checks.Tags.security)
        django_checks.register(check_setting_types)
        django_checks.register(check_compression_and_encryption)
        django_checks.register(check_offsite)
        # STORAGES["backups"] (and "backups_offsite" with a bucket) for projects that name neither.
        storages_setdefault()

        # Admin area: dashboard cache invalidation and failure alerts react to finished backups.
        from django.db.models.signals import post_delete

        from . import alerts, dashboard
        from .models import BackupRecord
        from .services import offsite
        from .signals import backup_finished

        backup_finished.connect(dashboard.dashboard_invalidate, dispatch_uid="backups_dashboard_invalidate")
        backup_finished.connect(alerts.backup_finished_alert, dispatch_uid="backups_failure_alert")
        post_delete.connect(
            dashboard.dashboard_invalidate, sender=BackupRecord, dispatch_uid="backups_dashboard_deleted",
        )
        # Offsite upload of a good backup, and cleanup after a scheduled one.
        backup_finished.connect(offsite.after_backup, dispatch_uid="backups_app.offsite.after_backup")
        from backups_app.services.schedule import backup_schedule_install_if_absent

        # BACKUP_RESTORE_TARGETS: a malformed entry, or one aimed at `default`, stops `manage.py check`.
        from django.core import checks

        from backups_app.access import check_restore_targets

        checks.register(check_restore_targets)

        # A fresh installation gets the default backup schedule from `migrate` itself.
        post_migrate.connect(
            backup_schedule_install_if_absent, sender=self, dispatch_uid="backups_app.default_schedule"
        )
        self._connect_liveness()

    def _connect_liveness(self) -> None:
        """Every database scheduled, deletions of default tasks remembered, workers and beat seen."""
        from celery.signals import beat_init, worker_ready, worker_shutdown
        from django.core.signals import request_started
        from django.db.models.signals import post_delete
        from django_celery_beat.models import PeriodicTask

        from . import liveness
        from .services.schedule import backup_schedule_ensure_on_start, periodic_task_deleted

        post_delete.connect(periodic_task_deleted, sender=PeriodicTask, dispatch_uid="backups_schedule_removed")
        # Databases added to the configuration since the last start: web, worker and beat check.
        request_started.connect(backup_schedule_ensure_on_start, dispatch_uid="backups_schedule_on_start")
        worker_ready.connect(backup_schedule_ensure_on_start, dispatch_uid="backups_schedule_on_worker")
        beat_init.connect(backup_schedule_ensure_on_start, dispatch_uid="backups_schedule_on_beat")
        worker_ready.connect(liveness.worker_ready_receiver, dispatch_uid="backups_worker_heartbeat")
        worker_shutdown.connect(liveness.worker_shutdown_receiver, dispatch_uid="backups_worker_gone")
