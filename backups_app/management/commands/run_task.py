"""Run one opsdesk Celery task in this process: what a background job or the broker-less scheduler starts.

    manage.py run_task backups_app.tasks.backup_run --args '[42]'
    manage.py run_task backups_app.tasks.backup_database --kwargs '{"database": "chat"}'

Only tasks registered with opsdesk's Celery app can be named. The task's outcome is on its record
(and in the audit log); the exit status is 1 only when the task raised.
"""
import json

from django.core.management.base import CommandError

from backups_app.management.base import BackupCommand


def _json(kind: type):
    def parse(value: str):
        try:
            parsed = json.loads(value)
        except ValueError as error:
            raise CommandError(f"not JSON: {error}") from None
        if not isinstance(parsed, kind):
            raise CommandError(f"expected a JSON {kind.__name__}")
        return parsed
    return parse


class Command(BackupCommand):
    help = "Run one registered Celery task (by name) in this process, without a broker."

    def add_arguments(self, parser):
        parser.add_argument("task", help="Task name, e.g. backups_app.tasks.backup_run")
        parser.add_argument("--args", dest="task_args", type=_json(list), default=[], help="Positional arguments (JSON list).")
        parser.add_argument("--kwargs", dest="task_kwargs", type=_json(dict), default={}, help="Keyword arguments (JSON object).")

    def handle(self, *args, task, **options):
        # The project's Celery app (ops_project's, or a host project's), loaded with its settings.
        from celery import current_app as app

        app.loader.import_default_modules()
        if task not in app.tasks or task.startswith("celery."):
            raise CommandError(f"Unknown task {task!r}.")
        try:
            result = app.tasks[task](*options["task_args"], **options["task_kwargs"])
        except Exception as error:  # noqa: BLE001 - one line for the log, details were logged by the task
            raise CommandError(f"{task} failed: {error.__class__.__name__}: {error}") from None
        if options["verbosity"] >= 2 and result is not None:
            self.stdout.write(json.dumps(result, default=str))
