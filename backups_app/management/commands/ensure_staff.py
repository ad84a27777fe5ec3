"""Make sure someone can log in to a fresh install, without a password in the code or the logs."""
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from backups_app.conf import app_settings
from backups_app.management.base import CommandOutput


class Command(CommandOutput, BaseCommand):
    help = "Create a superuser 'admin' when no superuser exists; its password goes to a 0600 file."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        password_file = Path(app_settings.VAR_DIR) / "initial_admin_password"
        if User.objects.filter(is_superuser=True).exists():
            self.say("A superuser exists; log in with it at /admin/.")
            if password_file.exists():
                self.say(f"Its first password is in {password_file} until you change it.")
            return
        password = secrets.token_urlsafe(18)
        User.objects.create_superuser(username=username, email="", password=password)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
        self.say(self.style.SUCCESS(f"Created superuser '{username}'."))
        self.say(
            f"Its password is in {password_file} (readable by you only): `cat {password_file}`.\n"
            "Change it after logging in (top right, 'Change password'), then delete that file."
        )
