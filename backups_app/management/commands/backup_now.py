"""Back up one database now: `python manage.py backup_now [--database ALIAS] [--compression ...]`.

`--media [--storage NAME]` backs up the uploaded files instead (MEDIA_ROOT, or that STORAGES entry):
incremental after a full archive, `--full` to force a full one.
Prints the backup's name (`-v 2`: also its size, duration and SHA-256; `-v 0`: nothing); a progress
line while dumping when stdout is a terminal (backups_app/management/base.py).
"""
import json

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS
from django.utils.translation import gettext as _

from backups_app.conf import app_settings
from backups_app.exceptions import BackupError
from backups_app.management.base import BackupCommand
from backups_app.models import Compression, Trigger
from backups_app.services.backup import backup_create

from ._output import ProgressLine, backup_as_dict, human_bytes, terminate_cleanly


class Command(BackupCommand):
    help = _("Back up a database now; prints the backup's name. Exit status 0 only on success.")

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help=_("Database alias (default: default)."))
        parser.add_argument("--compression", choices=Compression.values, help=_("Default: BACKUP_COMPRESSION."))
        parser.add_argument("--media", action="store_true",
                            help=_("Back up the uploaded files (MEDIA_ROOT) instead of a database."))
        parser.add_argument("--storage", default="",
                            help=_("With --media: the STORAGES entry to back up (default: default)."))
        parser.add_argument("--full", action="store_true",
                            help=_("With --media: a full archive, even when an incremental one is due."))
        parser.add_argument("--json", action="store_true", dest="as_json", help=_("Print one JSON object."))
        parser.add_argument(
            "--scheduled", action="store_true",
            help=_("Run as a scheduled backup (cron, Task Scheduler): skipped while BACKUP_ENABLED is false."),
        )

    def handle(self, *args, database, compression, as_json: bool, scheduled: bool, media: bool, storage: str,
               full: bool = False, **options):
        if storage and not media:
            raise CommandError(_("--storage goes with --media."))
        if full and not media:
            raise CommandError(_("--full goes with --media."))
        if media:
            database = f"media:{storage}" if storage and storage != "default" else "media"
        if scheduled and not app_settings.BACKUP_ENABLED:
            message = _("BACKUP_ENABLED is false: scheduled backup skipped.")
            self._emit(as_json, {"name": None, "status": "skipped", "detail": message}, message)
            return
        progress = ProgressLine(self.stderr._out)
        try:
            with terminate_cleanly():
                record = backup_create(
                    database=database, trigger=Trigger.SCHEDULE if scheduled else Trigger.CLI,
                    compression=compression, progress=progress if self.progress_shown() and not as_json else None,
                    full=full,
                )
        except (BackupError, ImproperlyConfigured) as error:
            progress.close()
            failed = getattr(error, "record", None)
            if as_json:
                payload = backup_as_dict(failed) if failed is not None else {
                    "name": None, "database": database, "status": "refused",
                }
                payload["error"] = str(error)
                self.stdout.write(_json(payload))
            raise CommandError(str(error)) from None
        progress.close()
        self._emit(as_json, backup_as_dict(record), record.name)
        if not as_json:
            self.say(_("%(database)s: %(size)s in %(seconds).1f s, SHA-256 %(sha256)s") % {
                "database": record.database, "size": human_bytes(record.size_bytes or 0),
                "seconds": record.duration_seconds or 0, "sha256": record.sha256,
            }, level=2)

    def _emit(self, as_json: bool, payload: dict, text: str) -> None:
        # --json is asked for explicitly: written whatever the verbosity.
        if as_json:
            self.stdout.write(_json(payload))
        else:
            self.say(text)


def _json(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False)
