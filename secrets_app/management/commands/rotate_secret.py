"""Write a new version of one secret and make every opsdesk process drop the old one.

`-v 0` prints nothing but errors (the exit status says it worked); the value is never printed.
"""
import getpass
import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from secrets_app.exceptions import SecretsError
from secrets_app.services import secret_rotate


class Command(BaseCommand):
    help = _(
        "Rotate a secret: read the new value from stdin (never from the command line, where ps "
        "would show it) or generate one with --generate."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help=_("Secret name, e.g. SGP_TOKEN."))
        parser.add_argument("--generate", action="store_true", help=_("Generate a random URL-safe value."))
        parser.add_argument("--length", type=int, default=50, help=_("Length of a generated value (min 32)."))

    def handle(self, *args, name, generate, length, **options):
        value = None
        if not generate:
            if sys.stdin.isatty():
                value = getpass.getpass(_("New value for %(name)s: ") % {"name": name})
            else:
                # One line: the trailing newline of `echo`/`printf` is not part of the secret.
                value = sys.stdin.readline().rstrip("\r\n")
        try:
            result = secret_rotate(
                name=name, value=value, generate=generate, length=length, source="cli",
                actor=f"cli:{getpass.getuser()}",
            )
        except SecretsError as error:
            raise CommandError(str(error)) from None
        if options["verbosity"] < 1:
            return
        self.stdout.write(self.style.SUCCESS(
            _("%(name)s rotated in %(provider)s: version %(version)s, fingerprint %(fingerprint)s.") % {
                "name": result.name, "provider": result.provider, "version": result.version or "-",
                "fingerprint": result.fingerprint,
            }
        ))
        self.stdout.write(
            _("Every process was told through Redis; it drops the old value within seconds.")
            if result.broadcast else
            _("No Redis configured: other processes see the new value when their cache expires (SECRETS_CACHE_TTL).")
        )
