"""Make sure someone can log in to a fresh install, without a password in the code or the logs."""
import os
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from backups_app.conf import app_settings
from backups_app.management.base import CommandOutput


class Command(CommandOutput, BaseCommand):
    help = "Create a superuser 'admin' when no superuser exists; its password goes to a 0600 file."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--password-file", type=Path,
            help=_("Where the first password is written (default: initial_admin_password in VAR_DIR)."),
        )

    def handle(self, *args, username: str, password_file: Path | None, **options):
        User = get_user_model()
        if password_file is None:
            password_file = Path(app_settings.VAR_DIR) / "initial_admin_password"
        if User.objects.filter(is_superuser=True).exists():
            self.say("A superuser exists; log in with it at /admin/.")
            if password_file.exists():
                self.say(f"Its first password is in {password_file} until you change it.")
            return
        password = secrets.token_urlsafe(18)
        # The file first: a superuser whose password was never written down would lock everyone out.
        # 0600 even over an existing file, and never through a symlink (the path may be given now).
        password_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                os.fchmod(descriptor, 0o600)
                handle.write(password + "\n")
        except OSError as error:
            raise CommandError(
                _("Cannot write the password file %(path)s: %(reason)s") % {"path": password_file, "reason": error.strerror}
            ) from None
        User.objects.create_superuser(username=username, email="", password=password)
        self.say(self.style.SUCCESS(f"Created superuser '{username}'."))
        self.say(
            f"Its password is in {password_file} (readable by you only): `cat {password_file}`.\n"
            "Change it after logging in (top right, 'Change password'), then delete that file."
        )
