"""`--as-user NAME`: the opsdesk user on whose behalf a command acts.

Without it a command acts as the host operator, the account that runs manage.py and can therefore
read SECRET_KEY, every database password and the ops database itself: opsdesk cannot hold that
account to less than a superuser (docs/SECURITY.md, "A local user on the host"). With it, the
command is held to exactly what the named user may do in the admin or the API: a wrapper that
authenticated a person (a sudo rule, a chat bot, a CI job) can delegate without handing out the
host operator's powers, and the audit log names that person.
"""
from __future__ import annotations

import getpass

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils.translation import gettext as _


def add_as_user_argument(parser) -> None:
    parser.add_argument(
        "--as-user", dest="as_user", metavar="NAME", default=None,
        help=_("Act as this opsdesk user, with their permissions (default: the host operator, trusted "
               "like a superuser)."),
    )


def operating_system_account() -> str:
    """The audit log's actor for a command: the OS account that ran it ("cli:deploy")."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def acting_user(name: str | None, *, permission: str | None = None):
    """The active staff user called `name` holding `permission` (superusers hold every one), or
    None for the host operator when `name` is None. CommandError otherwise."""
    if name is None:
        return None
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: name}).first()
    if user is None or not user.is_active or not (user.is_staff or user.is_superuser):
        raise CommandError(_("--as-user: %(name)r is not an active staff user.") % {"name": name})
    if permission and not user.has_perm(permission):
        raise CommandError(
            _("--as-user: %(name)s lacks the permission %(permission)s.") % {"name": name, "permission": permission}
        )
    return user
