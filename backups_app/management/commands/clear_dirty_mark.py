"""Clear the "dirty" mark of a database after repairing it by hand: `manage.py clear_dirty_mark chat`.

The mark is set when a restore began to change a database and did not finish; while it is set every
backup of the database is refused. Prefer restoring a backup (that clears it); clear it by hand only
once you know the database is sound. Only a superuser may: the command asks for one with --user
(the operating-system account that runs it is audited too).
"""
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupError
from backups_app.management.base import BackupCommand
from backups_app.services.dirty import dirty_clear


class Command(BackupCommand):
    help = _("Clear the dirty mark left on a database by an interrupted restore (superuser only).")

    def add_arguments(self, parser):
        parser.add_argument("database", help=_("Database alias."))
        parser.add_argument("--user", required=True, help=_("Username of the superuser who takes responsibility."))

    def handle(self, *args, **options):
        users = get_user_model()
        try:
            user = users.objects.get(**{users.USERNAME_FIELD: options["user"]})
        except users.DoesNotExist:
            raise CommandError(_("No user named %(user)s.") % {"user": options["user"]}) from None
        try:
            cleared = dirty_clear(database=options["database"], user=user, source="cli")
        except BackupError as error:
            raise CommandError(str(error)) from None
        if not cleared:
            raise CommandError(_("Database %(database)s is not marked dirty.") % {"database": options["database"]})
        if options["verbosity"]:
            self.stdout.write(_("Dirty mark of %(database)s cleared.") % {"database": options["database"]})
