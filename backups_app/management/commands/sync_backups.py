"""Rebuild backup records from the manifests in the backup storage: `python manage.py sync_backups`.

`sync_backups --adopt NAME [--database ALIAS]` trusts one `untrusted` backup (a manifest opsdesk did
not sign) after its file was checked; run it as the operating-system account that runs opsdesk.
"""
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupError
from backups_app.management.base import BackupCommand
from backups_app.models import AuditEntry
from backups_app.selectors import backup_get
from backups_app.services.sync import backup_adopt, backups_sync
from backups_app.services.binlogs import binlog_segments_sync
from backups_app.services.orphans import backups_mark_interrupted


class Command(BackupCommand):
    help = _("Rebuild backup records from the JSON manifests stored beside the backup files.")

    def add_arguments(self, parser):
        parser.add_argument(
            "--adopt", metavar="NAME",
            help=_("Trust the untrusted backup NAME: its file is read and checked, a signed manifest written."),
        )
        parser.add_argument(
            "--database", help=_("With --adopt: the database alias the file belongs to (default: the one claimed)."),
        )

    def handle(self, *args, adopt=None, database=None, **options):
        if adopt:
            try:
                backup = backup_adopt(backup=backup_get(name=adopt), source=AuditEntry.Source.CLI, database=database)
            except BackupError as error:
                raise CommandError(str(error)) from error
            self.say(_("%(name)s adopted as a backup of %(database)s (sha256 %(sha256)s).") % {
                "name": backup.name, "database": backup.database, "sha256": backup.sha256})
            return
        if database:
            raise CommandError(_("--database goes with --adopt."))
        interrupted = backups_mark_interrupted()
        counts = backups_sync()
        self.say(
            _("%(created)d record(s) created, %(updated)d updated, %(skipped)d manifest(s) skipped, "
              "%(interrupted)d interrupted backup(s) marked.") % {**counts, "interrupted": interrupted}
        )
        if counts["untrusted"]:
            self.stderr.write(
                _("%(untrusted)d manifest(s) not signed by opsdesk: listed as untrusted; adopt them with "
                  "sync_backups --adopt NAME after checking where they came from.") % counts
            )
        segments = binlog_segments_sync()
        if segments:
            self.say(_("%(count)d binlog segment record(s) rebuilt.") % {"count": segments})
