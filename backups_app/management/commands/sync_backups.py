"""Rebuild backup records from the manifests in the backup storage: `python manage.py sync_backups`."""
from django.utils.translation import gettext as _

from backups_app.management.base import BackupCommand
from backups_app.services.backup import backups_mark_interrupted, backups_sync


class Command(BackupCommand):
    help = _("Rebuild backup records from the JSON manifests stored beside the backup files.")

    def handle(self, *args, **options):
        interrupted = backups_mark_interrupted()
        counts = backups_sync()
        self.stdout.write(
            _("%(created)d record(s) created, %(updated)d updated, %(skipped)d manifest(s) skipped, "
              "%(interrupted)d interrupted backup(s) marked.") % {**counts, "interrupted": interrupted}
        )
