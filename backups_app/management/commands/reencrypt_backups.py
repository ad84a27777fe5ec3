"""Key rotation: `manage.py reencrypt_backups --to-recipients KEYS [--database ALIAS] [--name NAME ...] [--dry-run]`.

KEYS: age public keys, comma-separated, or `@config` for the current BACKUP_ENCRYPTION_RECIPIENTS.
Every good backup (of --database, or each --name) not already encrypted to exactly those keys is
re-encrypted (plain ones become encrypted), and so is every archived binlog segment (the
point-in-time archive); see backups_app/services/reencrypt.py. Runs as the host operator. Exit 1
when any file could not be re-encrypted (each of those is left as it was).
"""
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupError
from backups_app.management.base import BackupCommand
from backups_app.models import AuditEntry, BackupRecord
from backups_app.services.reencrypt import (
    backup_reencrypt,
    backups_to_reencrypt,
    reencrypt_recipients,
    segment_reencrypt,
    segments_to_reencrypt,
)


class Command(BackupCommand):
    help = _(
        "Re-encrypt existing good backups and archived binlog segments to other age public keys (plain ones "
        "become encrypted), so that a key can be retired. Streamed, checked against each file's SHA-256, atomic "
        "per file."
    )

    def add_arguments(self, parser):
        parser.add_argument("--to-recipients", required=True, metavar="KEYS",
                            help=_("age public keys, comma-separated, or @config (BACKUP_ENCRYPTION_RECIPIENTS)."))
        parser.add_argument("--database", default=None, help=_("Only the backups of this alias (default: all)."))
        parser.add_argument("--name", action="append", default=[], dest="names", metavar="NAME",
                            help=_("Only this backup or binlog segment (repeatable)."))
        parser.add_argument("--dry-run", action="store_true", help=_("List what would be re-encrypted; change nothing."))

    def handle(self, *args, to_recipients, database, names, dry_run, verbosity, **options):
        try:
            recipients = reencrypt_recipients(to_recipients)
        except BackupError as error:
            raise CommandError(str(error)) from error
        backups = backups_to_reencrypt(database=database, names=names, recipients=recipients)
        segments = segments_to_reencrypt(database=database, names=names, recipients=recipients)
        missing = set(names) - {backup.name for backup in backups} - {segment.name for segment in segments}
        for name in sorted(missing):
            self.stderr.write(_("%(name)s: not a good backup, or already encrypted to these keys; skipped.") % {"name": name})
        work = [(backup, lambda item: backup_reencrypt(backup=item, recipients=recipients, source=AuditEntry.Source.CLI))
                for backup in backups]
        work += [(segment, lambda item: segment_reencrypt(segment=item, recipients=recipients, source=AuditEntry.Source.CLI))
                 for segment in segments]
        failures = 0
        for item, reencrypt in work:
            if dry_run:
                self.stdout.write(_("%(name)s: would be re-encrypted (%(state)s)") % {
                    "name": item.name, "state": _("encrypted") if item.encrypted else _("plain")})
                continue
            try:
                updated = reencrypt(item)
            except BackupError as error:
                failures += 1
                self.stderr.write(self.style.ERROR(f"{item.name}: {error}"))
                continue
            if verbosity >= 1:
                self.stdout.write(self.style.SUCCESS(_("%(old)s: re-encrypted as %(new)s%(offsite)s") % {
                    "old": item.name, "new": updated.name, "offsite": _offsite_detail(updated)}))
        if failures:
            raise CommandError(_("%(count)d backup(s) could not be re-encrypted; each was left as it was.")
                               % {"count": failures})
        if not backups and not segments and verbosity >= 1:
            self.stdout.write(_("Nothing to re-encrypt."))


def _offsite_detail(updated) -> str:
    """", offsite copy <status>" for a backup with an offsite copy (binlog segments say nothing here)."""
    if not isinstance(updated, BackupRecord) or updated.offsite_status == updated.OffsiteStatus.NOT_CONFIGURED:
        return ""
    return _(", offsite copy %(status)s") % {"status": updated.get_offsite_status_display()}
