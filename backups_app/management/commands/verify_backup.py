"""Verify a backup by test restore: `manage.py verify_backup NAME | --latest [--database ALIAS] [--as-user NAME]`.

--as-user holds the command to that user's permissions (a backup of `default` needs a superuser);
without it the host operator verifies (backups_app/management/acting.py).

Output: the result (`-v 2`: also the backup's database and size; `-v 0`: nothing, the exit status
says it); "verifying..." before the test restore when stdout is a terminal.
"""
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupError
from backups_app.management.acting import acting_user, add_as_user_argument
from backups_app.management.base import BackupCommand
from backups_app.models import AuditEntry, BackupRecord
from backups_app.services.pitr import pitr_verify, recovery_target_parse
from backups_app.services.verify import backup_to_verify, backup_verify


class Command(BackupCommand):
    help = (
        "Check a backup's checksum and stream, restore it into a scratch database, compare the row "
        "counts with those recorded at backup time, and record the result. Exit 1 when it fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="The backup's name.")
        parser.add_argument("--latest", action="store_true", help="The newest good backup of --database.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias for --latest (default: default).")
        add_as_user_argument(parser)
        parser.add_argument("--to-time", help="Prove a point-in-time restore to this time in a scratch database.")
        parser.add_argument("--to-position", help="Same, stopping right before binlog FILE:POSITION.")
        parser.add_argument("--to-gtid", help="Same, stopping right after this GTID.")

    def handle(self, *args, name, latest, database, as_user, **options):
        targets = {key: options.get(key) for key in ("to_time", "to_position", "to_gtid")}
        if any(targets.values()):
            if name or latest:
                raise CommandError("A point-in-time verification takes --database and no NAME/--latest.")
            user = acting_user(as_user, permission="backups_app.verify_backup")
            self.progress(_("Verifying a point-in-time restore of %(database)s in a scratch database...")
                          % {"database": database})
            try:
                summary = pitr_verify(database=database, target=recovery_target_parse(**targets), user=user)
            except BackupError as error:
                raise CommandError(str(error)) from None
            self.say(self.style.SUCCESS(summary))
            return
        if bool(name) == bool(latest):
            raise CommandError("Give a backup NAME or --latest (not both).")
        user = acting_user(as_user, permission="backups_app.verify_backup")
        try:
            backup = backup_to_verify(database=database, name=name)
            if backup is None:
                raise CommandError(f"No good backup of {database!r} to verify.")
            self.progress(_("Verifying %(name)s (checksum, then a test restore into a scratch database)...")
                          % {"name": backup.name})
            backup = backup_verify(backup=backup, user=user, source=AuditEntry.Source.CLI)
        except BackupError as error:
            raise CommandError(str(error)) from error
        message = f"{backup.name}: {backup.get_verification_status_display()}: {backup.verification_message}"
        if backup.verification_status != BackupRecord.VerificationStatus.VERIFIED:
            raise CommandError(message)
        self.say(self.style.SUCCESS(message))
        self.say(_("%(name)s: database %(database)s, %(size)d bytes, verified at %(moment)s") % {
            "name": backup.name, "database": backup.database, "size": backup.size_bytes or 0,
            "moment": backup.verified_at.isoformat()}, level=2)
