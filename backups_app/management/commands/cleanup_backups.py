"""Apply the retention policies: `manage.py cleanup_backups [--database ALIAS] [--dry-run] [--json]`."""
import json

from django.core.management.base import CommandError

from backups_app.management.base import BackupCommand
from backups_app.models import AuditEntry
from backups_app.services.offsite import offsite_retry
from backups_app.services.retention import retention_apply


class Command(BackupCommand):
    help = (
        "Delete the backups the retention policy no longer keeps (local and offsite copies), and "
        "the files of failed backups. Decides by the records' creation time (UTC). Then retries "
        "the offsite uploads that failed and are due (not with --dry-run)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", help="Only this database alias (default: every database).")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be deleted; delete nothing.")
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, database, dry_run, json: bool, **options):
        result = retention_apply(database=database, dry_run=dry_run, source=AuditEntry.Source.CLI)
        # Without Celery (cron), this is what retries failed offsite uploads.
        retried = [] if dry_run else offsite_retry(database=database)
        if json:
            self.stdout.write(_dumps({  # asked for explicitly: whatever the verbosity
                **result.as_dict(),
                "offsite_retried": {backup.name: backup.offsite_status for backup in retried},
            }))
        else:
            self._print(result)
            for backup in retried:
                self.say(f"offsite upload of {backup.name}: {backup.get_offsite_status_display()}")
        if not result.ok:
            problems = [
                f"{cleanup.database}: {cleanup.refused or '; '.join(cleanup.errors)}"
                for cleanup in result.databases if not cleanup.ok
            ]
            raise CommandError("Cleanup incomplete: " + " | ".join(problems))

    def _print(self, result) -> None:
        verb = "would delete" if result.dry_run else "deleted"
        if not result.databases:
            self.say("No backups.")
        for cleanup in result.databases:
            self.say(self.style.MIGRATE_HEADING(f"{cleanup.database}:"))
            if cleanup.refused:
                self.say(self.style.ERROR(f"  nothing deleted: {cleanup.refused}"))
            for name in cleanup.deleted:
                self.say(f"  {verb} {name}")
            for name in cleanup.files_removed:
                self.say(f"  {verb} the files of failed backup {name}")
            for name, reasons in cleanup.kept.items():
                self.say(f"  keep {name} ({', '.join(reasons)})")
            for error in cleanup.errors:
                self.say(self.style.WARNING(f"  {error}"))


def _dumps(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
