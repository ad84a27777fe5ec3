"""Dirty databases in the admin: listed for whoever may view them, cleared by a superuser only.

A row is written by the restore service before a non-atomic change to a database and removed when a
restore of it completes. Clearing one by hand says "I repaired this database": audited, superuser only.
"""
from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from backups_app.admin.base import ServiceWrittenAdmin
from backups_app.exceptions import BackupError
from backups_app.models import DirtyDatabase
from backups_app.services.audit import audit_request
from backups_app.services.dirty import dirty_clear


@admin.register(DirtyDatabase)
class DirtyDatabaseAdmin(ServiceWrittenAdmin):
    list_display = ("database", "backup_name", "restore", "marked_at")
    fields = list_display
    readonly_fields = list_display
    actions = ["clear_dirty_mark"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # only through the audited action below

    def has_clear_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    @admin.action(description=_("Clear the dirty mark (the database was repaired)"), permissions=["clear"])
    def clear_dirty_mark(self, request: HttpRequest, queryset) -> None:
        cleared = []
        with audit_request(request):
            for mark in queryset:
                try:
                    if dirty_clear(database=mark.database, user=request.user, source="admin"):
                        cleared.append(mark.database)
                except BackupError as error:
                    self.message_user(request, str(error), messages.ERROR)
                    return
        self.message_user(request, _("Dirty mark cleared: %(databases)s.") % {"databases": ", ".join(cleared)},
                          messages.SUCCESS)
