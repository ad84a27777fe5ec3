"""Create or refresh the "Backup operators" group and optionally add staff users to it."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from backups_app.management.base import CommandOutput
from backups_app.services.operators import BACKUP_OPERATORS, operators_group_ensure


class Command(CommandOutput, BaseCommand):
    help = (
        "Create or refresh the 'Backup operators' group (view, create, download, restore and verify "
        "backups; read the restore history and the audit log) and add the given users to it."
    )

    def add_arguments(self, parser):
        parser.add_argument("usernames", nargs="*", help="Users to add; they are made staff.")
        parser.add_argument("--name", default=BACKUP_OPERATORS)
        parser.add_argument("--with-delete", action="store_true", help="Also allow deleting backups.")

    def handle(self, *args, usernames: list[str], name: str, with_delete: bool, **options):
        group = operators_group_ensure(name=name, include_delete=with_delete)
        User = get_user_model()
        users = list(User.objects.filter(**{f"{User.USERNAME_FIELD}__in": usernames}))
        missing = set(usernames) - {user.get_username() for user in users}
        if missing:
            raise CommandError(f"No such user: {', '.join(sorted(missing))}. Nothing was changed for users.")
        for user in users:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
            user.groups.add(group)
        self.say(f"Group '{group.name}' holds {group.permissions.count()} permissions.")
        for user in users:
            self.say(f"Added {user.get_username()} (staff).")
