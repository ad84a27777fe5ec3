"""`manage.py generate_backup_key`: a new age key pair for encrypted backups.

Prints what age-keygen prints: the public key as a comment, then the private key. The public key
goes into BACKUP_ENCRYPTION_RECIPIENTS on every host that writes backups; the private key goes into
the secret provider as BACKUP_ENCRYPTION_IDENTITY, only where backups are restored or verified, and
into an offline place (the break-glass copy). Nothing is stored by this command.
"""
from django.core.management.base import BaseCommand
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.encryption import generate_key_pair


class Command(BaseCommand):
    help = _("Print a new age key pair for encrypted backups (public key as a comment, then the private key).")
    requires_system_checks: list[str] = []

    def handle(self, *args, **options):
        identity, recipient = generate_key_pair()
        if options["verbosity"] >= 1 and self.stderr.isatty():
            self.stderr.write(_(
                "Put the public key in BACKUP_ENCRYPTION_RECIPIENTS and keep the private key in your "
                "secret provider (BACKUP_ENCRYPTION_IDENTITY) and offline."
            ))
        self.stdout.write(f"# created: {timezone.now().isoformat(timespec='seconds')}")
        self.stdout.write(f"# public key: {recipient}")
        self.stdout.write(identity)
