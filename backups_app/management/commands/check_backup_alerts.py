"""Mail ADMINS about databases without a recent good backup, or still dirty after an interrupted
restore (for cron when no beat runs)."""
from django.core.management.base import BaseCommand

from backups_app.alerts import backup_alerts_check, binlog_alerts_check, dirty_alerts_check
from backups_app.management.base import CommandOutput


class Command(CommandOutput, BaseCommand):
    help = "E-mail ADMINS about every database whose newest good backup is older than BACKUP_ALERT_AFTER_HOURS."

    def handle(self, *args, **options):
        reported = backup_alerts_check() + dirty_alerts_check()
        reported += [f"{alias} (point-in-time recovery)" for alias in binlog_alerts_check()]
        if reported:
            self.say(f"Alerted ADMINS about: {', '.join(reported)}")
        else:
            self.say("No new alert.")
