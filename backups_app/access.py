"""Who may do what beyond Django's model permissions: the rules the admin, the API, the commands
and the services share, so that no face of opsdesk is more generous than another.

- A backup of `default`, opsdesk's own database (users, password hashes, token hashes, schedules,
  the audit log), is downloaded, restored and verified by superusers only.
- An API token is created for oneself; only a superuser creates one for someone else.
- A backup restores into the alias it was taken from, or into a target listed in
  BACKUP_RESTORE_TARGETS; `default` is never the target of another alias' backup.

`user=None` means the host operator: a management command run without `--as-user`, by an account
that can already read SECRET_KEY and every database password (docs/SECURITY.md explains why that
account is trusted like a superuser).
"""
from __future__ import annotations

from django.core import checks
from django.db import DEFAULT_DB_ALIAS
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

from backups_app.conf import app_settings
from backups_app.exceptions import AccessRefused, RestoreTargetRefused

#: The alias of opsdesk's own tables (backups_app/routers.py).
CONTROL_DATABASE = DEFAULT_DB_ALIAS

#: The verbs of the refusal message, with a context of their own: "restore" alone is also the noun
#: (the Restore model), which other languages do not spell like the verb.
ACTION_VERBS = {
    "download": pgettext_lazy("backup action", "download"),
    "restore": pgettext_lazy("backup action", "restore"),
    "verify": pgettext_lazy("backup action", "verify"),
}


def backup_needs_superuser(database: str) -> bool:
    """Whether backups of `database` hold opsdesk's own credentials and history."""
    return database == CONTROL_DATABASE


def backup_access_allowed(*, database: str, user) -> bool:
    """Whether `user` may download, restore or verify a backup of `database` (model permission aside)."""
    return user is None or user.is_superuser or not backup_needs_superuser(database)


def backup_access_check(*, database: str, user, action: str) -> None:
    """Raise AccessRefused unless `user` may `action` ("download", "restore", "verify") a backup of `database`."""
    if not backup_access_allowed(database=database, user=user):
        raise AccessRefused(
            _("Only a superuser may %(action)s a backup of %(database)s: it holds opsdesk's users, "
              "password hashes and token hashes.") % {"action": ACTION_VERBS[action], "database": database}
        )


def token_issue_check(*, owner, issued_by) -> None:
    """Raise AccessRefused unless `issued_by` may create an API token acting as `owner`.

    `issued_by=None` is the host operator, who may not mint a superuser's token without naming an
    acting superuser (`create_api_token --as-user`): the most powerful credential always has an
    accountable superuser in the audit log.
    """
    if issued_by is None:
        if owner.is_superuser:
            raise AccessRefused(
                _("A token for superuser %(owner)s needs an acting superuser: pass --as-user NAME.")
                % {"owner": owner.get_username()}
            )
        return
    if issued_by.pk != owner.pk and not issued_by.is_superuser:
        raise AccessRefused(
            _("Only a superuser may create a token for another user (%(owner)s).")
            % {"owner": owner.get_username()}
        )


# --- Restore targets ------------------------------------------------------------------------------
def restore_targets() -> set[tuple[str, str]]:
    """The (source alias, target alias) pairs of BACKUP_RESTORE_TARGETS that are well formed."""
    pairs = set()
    for entry in app_settings.BACKUP_RESTORE_TARGETS:
        source, separator, target = entry.strip().partition(":")
        if separator and source.strip() and target.strip():
            pairs.add((source.strip(), target.strip()))
    return pairs


def restore_target_check(*, source: str, target: str) -> None:
    """Raise RestoreTargetRefused unless a backup of `source` may be restored into `target`."""
    if source == target:
        return
    if target == CONTROL_DATABASE:
        raise RestoreTargetRefused(
            _("A backup of %(source)s can never be restored into %(target)s, opsdesk's own database.")
            % {"source": source, "target": target}
        )
    if (source, target) not in restore_targets():
        raise RestoreTargetRefused(
            _("A backup of %(source)s restores only into %(source)s; add %(pair)s to "
              "BACKUP_RESTORE_TARGETS to allow %(target)s.")
            % {"source": source, "target": target, "pair": f"{source}:{target}"}
        )


def check_restore_targets(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """System check: every BACKUP_RESTORE_TARGETS entry is `source:target`, never into `default`."""
    errors = []
    targets = app_settings.BACKUP_RESTORE_TARGETS
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)):
        return errors  # not a list: backups_app.E007 (checks.check_setting_types) says so
    for entry in targets:
        if not isinstance(entry, str):
            continue
        source, separator, target = (part.strip() for part in entry.partition(":"))
        if not (separator and source and target):
            errors.append(checks.Error(
                f"BACKUP_RESTORE_TARGETS entry {entry!r} is not SOURCE:TARGET.",
                hint="e.g. BACKUP_RESTORE_TARGETS=chat:chat_staging,chat:chat_dev", id="backups_app.E101",
            ))
        elif target == CONTROL_DATABASE and source != CONTROL_DATABASE:
            errors.append(checks.Error(
                f"BACKUP_RESTORE_TARGETS entry {entry!r} restores into {CONTROL_DATABASE}, opsdesk's own "
                "database; that is always refused.",
                hint="Remove the entry.", id="backups_app.E102",
            ))
    return errors
