"""The "Backup operators" group: everything the backup console needs, nothing else."""
from __future__ import annotations

from django.contrib.auth.models import Group, Permission

BACKUP_OPERATORS = "Backup operators"

#: Codenames of backups_app permissions an operator holds. Deleting backups is left out on purpose:
#: give `delete_backuprecord` to the few people who may remove backups.
OPERATOR_PERMISSIONS = (
    "view_backuprecord", "create_backup", "download_backup", "restore_backup", "verify_backup",
    "view_restorerecord", "view_auditentry",
)


def operators_group_ensure(*, name: str = BACKUP_OPERATORS, include_delete: bool = False) -> Group:
    """Create or update the group so that it holds exactly the operator permissions.

    Members must also be staff (is_staff) to reach the admin.
    """
    codenames = list(OPERATOR_PERMISSIONS) + (["delete_backuprecord"] if include_delete else [])
    group, _created = Group.objects.get_or_create(name=name)
    group.permissions.set(
        Permission.objects.filter(content_type__app_label="backups_app", codename__in=codenames)
    )
    return group
