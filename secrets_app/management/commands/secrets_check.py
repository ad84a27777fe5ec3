"""Resolve every secret opsdesk knows and say where each came from. Never prints a value.

`-v 0` prints only the error about missing required secrets (and exits non-zero); `-v 1` the table.
"""
import getpass

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from secrets_app.manager import secrets_actor
from secrets_app.selectors import provider_description
from secrets_app.services import secrets_check


class Command(BaseCommand):
    help = _("Resolve every known secret and print name, source and status (never values). "
             "Exits non-zero when a required secret is missing.")

    def handle(self, *args, **options):
        quiet = options["verbosity"] < 1
        description = provider_description()
        if not quiet:
            self.stdout.write(_("Provider: %(provider)s %(options)s") % description)
        with secrets_actor(f"cli:{getpass.getuser()}"):
            statuses = secrets_check()
        width = max([len(status.name) for status in statuses] + [6])
        if not quiet:
            self.stdout.write(f"{'SECRET':<{width}}  {'REQUIRED':<8}  {'SOURCE':<12}  {'STATUS':<9}  "
                              f"{'VERSION':<14}  FINGERPRINT")
        missing_required = []
        for status in statuses:
            resolved = status.status not in ("missing", "denied")
            if status.required and not resolved:
                missing_required.append(status.name)
            line = (f"{status.name:<{width}}  {'yes' if status.required else 'no':<8}  {status.source:<12}  "
                    f"{status.status:<9}  {(status.version or '-')[:14]:<14}  {status.fingerprint or '-'}")
            if status.detail:
                line += f"  ({status.detail})"
            if not quiet:
                self.stdout.write(self.style.ERROR(line) if status.required and not resolved else line)
        if missing_required:
            raise CommandError(_("Required secrets missing: %(names)s") % {"names": ", ".join(missing_required)})
        if not quiet:
            self.stdout.write(self.style.SUCCESS(_("%(count)d secrets checked.") % {"count": len(statuses)}))
