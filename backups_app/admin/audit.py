"""The audit log in the admin: readable by whoever holds view permission, changeable by nobody.

Entries are appended by `backups_app.services.audit.audit_log` only. Superusers included, nobody can
add, edit or delete one here: an audit log that its readers can rewrite proves nothing.
"""
from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from backups_app.admin.backups import badge
from backups_app.admin.base import AppendOnlyAdmin
from backups_app.admin.display import moment
from backups_app.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(AppendOnlyAdmin):
    # Who and from where share a column so that the outcome stays in view at 1400 px.
    list_display = ("created_column", "who_column", "action", "target", "outcome_column")
    list_filter = ("action", "source", "outcome")
    search_fields = ("actor", "target", "detail", "ip_address")
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False
    fields = ("created_at", "user", "actor", "action", "target", "source", "ip_address", "outcome", "detail")
    readonly_fields = fields

    def result_count_label(self, count: int) -> str:
        return ngettext("%(count)d entry", "%(count)d entries", count) % {"count": count}

    @admin.display(description=_("when"), ordering="created_at")
    def created_column(self, entry: AuditEntry) -> str:
        return moment(entry.created_at)

    @admin.display(description=_("who · from"), ordering="actor")
    def who_column(self, entry: AuditEntry) -> str:
        origin = " · ".join(part for part in (entry.get_source_display(), entry.ip_address or "") if part)
        return format_html('{} <span class="backup-quiet">· {}</span>', entry.actor, origin)

    @admin.display(description=_("outcome"), ordering="outcome")
    def outcome_column(self, entry: AuditEntry) -> str:
        return badge(f"outcome-{entry.outcome}", entry.get_outcome_display())
