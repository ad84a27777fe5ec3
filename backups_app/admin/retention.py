"""Retention policies in the admin, with a preview of what a policy would delete.

The preview runs the same decision as cleanup (`retention_plan`) on the policy as typed in the
form, before it is saved, so staff see the effect of an edit without deleting anything. Saving a
policy deletes nothing either: the next cleanup (after the nightly backup, or
`manage.py cleanup_backups`) applies it.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from backups_app.models import AuditEntry, BackupRecord, RetentionPolicy
from backups_app.services.audit import audit_log
from backups_app.services.retention import retention_plan


class RetentionPolicyForm(forms.ModelForm):
    class Meta:
        model = RetentionPolicy
        fields = ["database", "keep_days", "keep_last", "keep_daily", "keep_weekly", "keep_monthly"]

    def clean_database(self) -> str:
        database = self.cleaned_data["database"]
        known = set(connections.settings) | set(
            BackupRecord.objects.values_list("database", flat=True).distinct()
        )
        if database not in known:
            raise forms.ValidationError(
                _("Unknown database alias. Known: %(aliases)s.") % {"aliases": ", ".join(sorted(known))}
            )
        return database


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(admin.ModelAdmin):
    form = RetentionPolicyForm
    change_form_template = "admin/backups_app/retentionpolicy/change_form.html"
    list_display = ["database", "keep_days", "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "updated_at"]
    search_fields = ["database"]
    readonly_fields = ["updated_at"]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and "_preview" in request.POST:
            return self.preview_view(request, object_id)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def preview_view(self, request, object_id=None):
        """What the policy as typed would keep and delete now; nothing is saved or deleted."""
        obj = self.get_object(request, object_id) if object_id else None
        if object_id and obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        allowed = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        if not allowed:
            raise PermissionDenied
        form_class = self.get_form(request, obj, change=obj is not None)
        form = form_class(request.POST, instance=obj or RetentionPolicy())
        plan = None
        if form.is_valid():
            plan = retention_plan(database=form.cleaned_data["database"], policy=form.save(commit=False))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Retention preview"),
            "form": form,
            "plan": plan,
            "object": obj,
        }
        return TemplateResponse(request, "admin/backups_app/retentionpolicy/preview.html", context)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        audit_log(
            action="schedule_change", source=AuditEntry.Source.ADMIN, outcome=AuditEntry.Outcome.SUCCESS,
            user=request.user, request=request, target=f"retention {obj.database}",
            detail=", ".join(
                f"{field}={form.cleaned_data.get(field)}" for field in form.changed_data
            ) or "saved",
        )
