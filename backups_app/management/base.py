"""The base of the backup commands that cron, Task Scheduler and Celery run unattended.

Output follows Django's own commands (compare dumpdata):
- `--verbosity 0`: nothing on stdout but what a flag explicitly asked for (`--json`) and one-time
  secrets that would otherwise be lost (a new API token, a new key); errors still go to stderr
  and the exit status. `1` (the default): the usual messages. `2` and more: details.
- progress (a line rewritten in place, or "restoring..." before a long step) only when stdout is a
  terminal, so never when the output goes to a pipe, a file or cron's mail. It is written to stderr,
  keeping stdout to the result alone.
"""
from django.core.management.base import BaseCommand


class CommandOutput:
    """Verbosity-aware writing for a management command (mix in before BaseCommand)."""

    verbosity = 1

    def execute(self, *args, **options):
        self.verbosity = options.get("verbosity", 1)
        return super().execute(*args, **options)

    def say(self, message: str, style_func=None, *, level: int = 1) -> None:
        """Write `message` to stdout when --verbosity is at least `level` (1: normal, 2: details)."""
        if self.verbosity >= level:
            self.stdout.write(message, style_func)

    def progress_shown(self) -> bool:
        """Whether to show progress: verbosity 1 or more, and stdout is a terminal."""
        return self.verbosity >= 1 and self.stdout.isatty()

    def progress(self, message: str) -> None:
        """Say what a long step is doing, on stderr (unstyled: it is not an error), on a terminal only."""
        if self.progress_shown():
            self.stderr.write(message, style_func=str)


class BackupCommand(CommandOutput, BaseCommand):
    """A backup command that starts lean.

    Django runs every system check before a command by default: that imports the URLconf, the REST
    API, the schema generator and the admin's checks, adding about 25 MB and half a second to each
    run of a command whose job is to stream a dump. The checks still run where they belong:
    `manage.py check --deploy`, `migrate`, `runserver` and every web process start.
    """

    requires_system_checks: list[str] = []
