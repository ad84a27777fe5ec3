"""The audit log in the admin: readable by whoever holds view permission, changeable by nobody.

Entries are appended by `backups_app.services.audit.audit_log` only. Superusers included, nobody can
add, edit or delete one here: an audit log that its readers can rewrite proves nothing.
"""
from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from backups_app.admin.backups import badge
from backups_app.admin.base import AppendOnlyAdmin
from backups_app.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(AppendOnlyAdmin):
    list_display = ("created_at", "actor", "action", "target", "source", "ip_address", "outcome_column")
    list_filter = ("action", "source", "outcome")
    search_fields = ("actor", "target", "detail", "ip_address")
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False
    fields = ("created_at", "user", "actor", "action", "target", "source", "ip_address", "outcome", "detail")
    readonly_fields = fields

    @admin.display(description=_("outcome"), ordering="outcome")
    def outcome_column(self, entry: AuditEntry) -> str:
        return badge(f"outcome-{entry.outcome}", entry.get_outcome_display())
