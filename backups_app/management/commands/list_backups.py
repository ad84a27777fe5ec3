"""List backups: `python manage.py list_backups [--database ALIAS] [--json]`.

`-v 2` adds each backup's trigger, duration and SHA-256; `-v 0` prints nothing unless --json.
"""
import json

from django.utils.translation import gettext as _

from backups_app.management.base import BackupCommand
from backups_app.selectors import backup_list

from ._output import backup_as_dict, human_bytes


class Command(BackupCommand):
    help = _("List backups, newest first.")

    def add_arguments(self, parser):
        parser.add_argument("--database", help=_("Only this database alias."))
        parser.add_argument("--json", action="store_true", dest="as_json", help=_("Print a JSON list."))

    def handle(self, *args, database, as_json, **options):
        backups = list(backup_list(database=database))
        if as_json:
            self.stdout.write(json.dumps([backup_as_dict(record) for record in backups], ensure_ascii=False))
            return
        if not backups:
            self.say(_("No backups."))
            return
        for record in backups:
            size = human_bytes(record.size_bytes) if record.size_bytes is not None else "-"
            line = (f"{record.name:<48} {record.database:<12} {record.status:<12} "
                    f"{record.created_at:%Y-%m-%d %H:%M:%S}Z {size:>10}")
            if record.kind != "regular":
                line += f"  [{record.kind}]"
            if self.verbosity >= 2:
                duration = f"{record.duration_seconds:.1f}s" if record.duration_seconds is not None else "-"
                line += f"  {record.trigger} {duration} {record.sha256 or '-'}"
            self.say(line)
