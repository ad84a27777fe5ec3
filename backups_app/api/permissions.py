"""Who may call which endpoint: staff users holding the same permission the admin asks for."""
from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission


class IsStaffToken(BasePermission):
    """An authenticated, active staff user; subclasses add the model permission they need.

    A request without a valid token gets 401 (DRF turns a refusal without authentication into
    NotAuthenticated); a valid token of a non-staff user or one lacking `permission` gets 403.
    """

    permission: str = ""
    message = _("Your token's user is not staff.")

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if not user.is_staff:
            return False
        if self.permission and not user.has_perm(self.permission):
            self.message = _("Your token's user lacks the permission %(permission)s.") % {
                "permission": self.permission
            }
            return False
        return True


class CanViewBackups(IsStaffToken):
    permission = "backups_app.view_backuprecord"


class CanCreateBackups(IsStaffToken):
    permission = "backups_app.create_backup"


class CanDownloadBackups(IsStaffToken):
    permission = "backups_app.download_backup"


class CanRestoreBackups(IsStaffToken):
    permission = "backups_app.restore_backup"


class CanDeleteBackups(IsStaffToken):
    permission = "backups_app.delete_backuprecord"
