"""`manage.py create_api_token USERNAME [--as-user NAME] [--expires-in-days N] [--name NAME]`: issue an API token.

Who may issue what (backups_app/access.py, docs/SECURITY.md): with `--as-user`, the named user
needs `add_apitoken` and, unless a superuser, gets tokens for themselves only, as in the admin.
Without it the host operator acts, but a token for a superuser always needs `--as-user` naming a
superuser, so that the most powerful credential has an accountable superuser in the audit log.
"""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from backups_app.access import token_issue_check
from backups_app.exceptions import AccessRefused
from backups_app.management.acting import acting_user, add_as_user_argument, operating_system_account
from backups_app.management.base import CommandOutput
from backups_app.models import AuditEntry
from backups_app.services.tokens import api_token_create


class Command(CommandOutput, BaseCommand):
    help = _("Create an API token for a user and print it once (the last word of the last line).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--expires-in-days", type=int, default=None, help=_("Days until the token expires."))
        parser.add_argument("--name", default="", help=_("A label, e.g. the script that will use the token."))
        add_as_user_argument(parser)

    def handle(self, *args, username, expires_in_days, name, as_user, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(_("No user named %(username)r.") % {"username": username}) from None
        if not user.is_active:
            raise CommandError(
                _("User %(username)r is inactive; the API would refuse the token.") % {"username": username}
            )
        issued_by = acting_user(as_user, permission="backups_app.add_apitoken")
        actor = operating_system_account()
        if issued_by is not None:
            actor = f"{issued_by.get_username()} ({actor})"
        try:
            if issued_by is None:
                token_issue_check(owner=user, issued_by=None)
            issued = api_token_create(
                user=user, name=name, expires_in_days=expires_in_days, source=AuditEntry.Source.CLI,
                created_by=issued_by, actor=actor,
            )
        except (ValueError, AccessRefused) as error:
            raise CommandError(str(error)) from None

        if not user.is_staff:
            self.stderr.write(
                _("Warning: %(username)s is not staff; the API answers 403 until they are.") % {"username": username}
            )
        if issued.token.expires_at:
            expiry = _("expires %(when)s UTC") % {"when": f"{issued.token.expires_at:%Y-%m-%d %H:%M}"}
        else:
            expiry = _("never expires")
        self.say(
            _("Created token %(prefix)s... for %(username)s (%(expiry)s).")
            % {"prefix": issued.token.prefix, "username": username, "expiry": expiry}
        )
        self.say(_("It is shown only once; opsdesk stores only its hash."))
        # The token is the last word of the last line, so scripts can take it with `tail -1 | awk`.
        # Written whatever the verbosity: it cannot be shown again.
        self.stdout.write(_("Token: %(token)s") % {"token": issued.raw_token})
