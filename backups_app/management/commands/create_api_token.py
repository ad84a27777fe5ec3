"""`manage.py create_api_token USERNAME [--expires-in-days N] [--name NAME]`: issue an API token."""
import getpass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from backups_app.models import AuditEntry
from backups_app.services.tokens import api_token_create


def _operating_system_account() -> str:
    """The audit log's actor for a command: the OS account that ran it ("cli:deploy")."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class Command(BaseCommand):
    help = _("Create an API token for a user and print it once (the last word of the last line).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--expires-in-days", type=int, default=None, help=_("Days until the token expires."))
        parser.add_argument("--name", default="", help=_("A label, e.g. the script that will use the token."))

    def handle(self, *args, username, expires_in_days, name, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(_("No user named %(username)r.") % {"username": username}) from None
        if not user.is_active:
            raise CommandError(
                _("User %(username)r is inactive; the API would refuse the token.") % {"username": username}
            )
        try:
            issued = api_token_create(
                user=user, name=name, expires_in_days=expires_in_days, source=AuditEntry.Source.CLI,
                actor=_operating_system_account(),
            )
        except ValueError as error:
            raise CommandError(str(error)) from None

        if not user.is_staff:
            self.stderr.write(
                _("Warning: %(username)s is not staff; the API answers 403 until they are.") % {"username": username}
            )
        if issued.token.expires_at:
            expiry = _("expires %(when)s UTC") % {"when": f"{issued.token.expires_at:%Y-%m-%d %H:%M}"}
        else:
            expiry = _("never expires")
        self.stdout.write(
            _("Created token %(prefix)s... for %(username)s (%(expiry)s).")
            % {"prefix": issued.token.prefix, "username": username, "expiry": expiry}
        )
        self.stdout.write(_("It is shown only once; opsdesk stores only its hash."))
        # The token is the last word of the last line, so scripts can take it with `tail -1 | awk`.
        self.stdout.write(_("Token: %(token)s") % {"token": issued.raw_token})
