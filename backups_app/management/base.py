"""The base of the backup commands that cron, Task Scheduler and Celery run unattended."""
from django.core.management.base import BaseCommand


class BackupCommand(BaseCommand):
    """A backup command that starts lean.

    Django runs every system check before a command by default: that imports the URLconf, the REST
    API, the schema generator and the admin's checks, adding about 25 MB and half a second to each
    run of a command whose job is to stream a dump. The checks still run where they belong:
    `manage.py check --deploy`, `migrate`, `runserver` and every web process start.
    """

    requires_system_checks: list[str] = []
