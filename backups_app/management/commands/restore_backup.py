"""Restore a backup: `python manage.py restore_backup NAME [--database ALIAS] [--noinput] [--as-user NAME]`.

Without --as-user the host operator restores (the disaster-recovery path: it must work when the ops
database has no usable user left); with it, the named user's permissions apply, and a backup of
`default` needs a superuser (backups_app/access.py).

Point in time (MariaDB/MySQL with archived binlogs): `restore_backup --database ALIAS --to-time
"2026-11-29 14:32:05"` (or `--to-position FILE:POS`, `--to-gtid D-S-N`), no NAME: the newest good
base backup before the target is chosen and the binlog replayed up to it.

Media backups (uploaded files): `--path PREFIX` restores only the files under it, and
`--delete-extraneous` removes what the archive does not hold (never done otherwise).

Output: what was restored (`-v 2`: also the safety backup and the duration; `-v 0`: nothing but
errors); "restoring..." before the long part when stdout is a terminal.
"""
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupError
from backups_app.management.acting import acting_user, add_as_user_argument
from backups_app.management.base import BackupCommand
from backups_app.models import Trigger
from backups_app.selectors import backup_get
from backups_app.services.restore import backup_restore
from backups_app.services.pitr import pitr_plan, pitr_restore, recovery_target_parse

from ._output import terminate_cleanly


class Command(BackupCommand):
    help = _(
        "Restore a backup into its database (or --database). The file is checked first, and a safety "
        "backup of the current state is taken unless --no-safety-backup."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help=_("Backup name, as shown by list_backups."))
        parser.add_argument("--to-time", help=_("Point-in-time restore: the state at the end of this second "
                                                "(\"YYYY-MM-DD HH:MM:SS\", in TIME_ZONE unless it carries +HH:MM)."))
        parser.add_argument("--to-position", help=_("Point-in-time restore: stop right before binlog FILE:POSITION."))
        parser.add_argument("--to-gtid", help=_("Point-in-time restore: stop right after the transaction with this GTID."))
        parser.add_argument("--database", help=_("Restore into this alias instead of the backup's own."))
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help=_("Do not ask for confirmation."))
        parser.add_argument("--no-safety-backup", action="store_false", dest="safety_backup",
                            help=_("Skip the safety backup of the current state."))
        parser.add_argument("--path", default="", dest="media_path",
                            help=_("Media backups: restore only the files under this path."))
        parser.add_argument("--delete-extraneous", action="store_true",
                            help=_("Media backups: delete files the archive does not hold (under --path)."))
        add_as_user_argument(parser)

    def handle(self, *args, name, database, interactive, safety_backup, as_user, media_path, delete_extraneous,
               **options):
        user = acting_user(as_user, permission="backups_app.restore_backup")
        targets = {key: options.get(key) for key in ("to_time", "to_position", "to_gtid")}
        if any(targets.values()):
            return self.point_in_time(name, database, interactive, safety_backup, targets, user)
        if not name:
            raise CommandError(_("Give a backup NAME, or --database with --to-time/--to-position/--to-gtid."))
        try:
            backup = backup_get(name=name)
        except BackupError as error:
            raise CommandError(str(error)) from None
        target = database or backup.database
        if interactive:
            confirm(_("This replaces ALL data in database '%(database)s' with backup %(name)s.\n")
                    % {"database": target, "name": name})
        self.progress(_("Restoring %(name)s into %(database)s: checking the file, then the safety backup "
                                "and the restore...") % {"name": name, "database": target})
        try:
            with terminate_cleanly():
                restore = backup_restore(
                    backup=backup, database=target, trigger=Trigger.CLI, user=user, safety_backup=safety_backup,
                    media_path=media_path, delete_extraneous=delete_extraneous,
                )
        except (BackupError, ImproperlyConfigured) as error:
            raise CommandError(str(error)) from None
        self._safety_backup_said(restore)
        self.say(self.style.SUCCESS(
            _("Restored %(name)s into %(database)s in %(seconds).1f s.")
            % {"name": name, "database": target, "seconds": restore.duration_seconds or 0}
        ))
        self.say(_("Backup %(name)s: %(engine)s, taken %(created)s, SHA-256 %(sha256)s.") % {
            "name": backup.name, "engine": backup.engine, "created": backup.created_at.isoformat(),
            "sha256": backup.sha256}, level=2)

    def _safety_backup_said(self, restore) -> None:
        if restore.safety_backup_id:
            self.say(_("Safety backup of the previous state: %(name)s") % {"name": restore.safety_backup.name})
        else:
            self.say(_("No safety backup was taken."), level=2)

    def point_in_time(self, name, database, interactive, safety_backup, targets, user):
        if name or not database:
            raise CommandError(_("A point-in-time restore takes --database and no backup NAME (the base is chosen)."))
        try:
            target = recovery_target_parse(**targets)
            plan = pitr_plan(database=database, target=target)
        except BackupError as error:
            raise CommandError(str(error)) from None
        if interactive:
            confirm(_("This replaces ALL data in database '%(database)s' with its state at %(target)s:\n%(plan)s.\n")
                    % {"database": database, "target": target, "plan": plan.describe()})
        self.progress(_("Restoring %(database)s to %(target)s...") % {"database": database, "target": target})
        try:
            with terminate_cleanly():
                restore = pitr_restore(database=database, target=target, trigger=Trigger.CLI, user=user,
                                       safety_backup=safety_backup)
        except (BackupError, ImproperlyConfigured) as error:
            raise CommandError(str(error)) from None
        self._safety_backup_said(restore)
        self.say(self.style.SUCCESS(
            _("Restored %(database)s to %(target)s (%(plan)s).") % {"database": database, "target": target,
                                                                     "plan": plan.describe()}
        ))


def confirm(warning: str) -> None:
    """Ask for a typed 'yes' after `warning`; anything else (or closed input) cancels."""
    try:
        answer = input(warning + _("Type 'yes' to continue, or anything else to cancel: "))
    except EOFError:
        raise CommandError(
            _("No answer (standard input is closed); pass --noinput to restore without asking.")
        ) from None
    if answer.strip().lower() != "yes":
        raise CommandError(_("Restore cancelled; nothing was changed."))
