"""Install the default backup schedule: `manage.py setup_backup_schedule [--database ALIAS] [--reset]`."""
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from backups_app.management.base import CommandOutput
from backups_app.models import AuditEntry
from backups_app.services.schedule import backup_schedule_install


class Command(CommandOutput, BaseCommand):
    help = (
        "Create the default Celery beat tasks per database (backup daily at 02:00, cleanup at "
        "03:30, verification on Sundays at 04:00). Safe to run again: existing tasks are kept as "
        "edited unless --reset."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--database", action="append", dest="databases",
            help="Only this alias (repeatable; default: every configured database).",
        )
        parser.add_argument("--reset", action="store_true", help="Put the default timing back on existing tasks.")

    def handle(self, *args, databases, reset, **options):
        unknown = sorted(set(databases or []) - set(connections.settings))
        if unknown:
            raise CommandError(f"Unknown database alias: {', '.join(unknown)}.")
        result = backup_schedule_install(databases=databases, reset=reset, source=AuditEntry.Source.CLI)
        for name in result.created:
            self.say(self.style.SUCCESS(f"created {name}"))
        for name in result.reset:
            self.say(f"reset {name}")
        for name in result.unchanged:
            self.say(f"unchanged {name}")
