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
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from backups_app.conf import app_settings
from backups_app.models import AuditEntry, RetentionPolicy
from backups_app.services import retention
from backups_app.services.audit import audit_log
from backups_app.services.retention import DEFAULT_KEEP_LAST, retention_plan


class RetentionPolicyForm(forms.ModelForm):
    """A policy for one configured database, its fields pre-filled with what applies without one."""

    database = forms.ChoiceField(label=_("Database"))

    class Meta:
        model = RetentionPolicy
        fields = ["database", "keep_days", "keep_last", "keep_daily", "keep_weekly", "keep_monthly"]
        help_texts = {
            "keep_days": _("Good backups younger than this many days are kept. Without a policy: "
                           "BACKUP_RETENTION_DAYS."),
            "keep_last": _("The newest N good backups are kept, however old they are."),
            "keep_daily": _("For each of the last N days with a good backup, its newest one is kept. "
                            "Empty: not used."),
            "keep_weekly": _("The same per ISO week. Empty: not used."),
            "keep_monthly": _("The same per calendar month. Empty: not used."),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        aliases = sorted(connections.settings)
        current = self.instance.database if self.instance.pk else ""
        if current and current not in aliases:
            # A policy of a database that was removed from the settings stays editable (and deletable).
            aliases.append(current)
        taken = set(RetentionPolicy.objects.exclude(pk=self.instance.pk).values_list("database", flat=True))
        self.fields["database"].choices = [(alias, alias) for alias in aliases if alias not in taken]
        self.fields["database"].error_messages["invalid_choice"] = _(
            "Unknown database alias, or it already has a policy. Known: %(aliases)s."
        ) % {"aliases": ", ".join(aliases)}
        if not self.instance.pk:
            # What applies to a database without a policy, so that saving changes nothing by surprise.
            self.initial.setdefault("keep_days", app_settings.BACKUP_RETENTION_DAYS)
            self.initial.setdefault("keep_last", DEFAULT_KEEP_LAST)


def policy_sentences(policy: RetentionPolicy) -> list[str]:
    """The policy in words, one rule a sentence, in the order cleanup applies them."""
    sentences = [gettext("The newest good backup is always kept.")]
    if policy.keep_last > 1:  # keep_last 0 or 1 adds nothing to the sentence above
        sentences.append(ngettext(
            "The newest good backup is kept (keep last: %(count)d).",
            "The newest %(count)d good backups are kept.", policy.keep_last,
        ) % {"count": policy.keep_last})
    sentences.append(ngettext(
        "Good backups younger than %(count)d day are kept.",
        "Good backups younger than %(count)d days are kept.", policy.keep_days,
    ) % {"count": policy.keep_days})
    if policy.keep_daily:
        sentences.append(ngettext(
            "For the last day with a good backup, its newest one is kept.",
            "For each of the last %(count)d days with a good backup, its newest one is kept.", policy.keep_daily,
        ) % {"count": policy.keep_daily})
    if policy.keep_weekly:
        sentences.append(ngettext(
            "For the last week with a good backup, its newest one is kept.",
            "For each of the last %(count)d weeks with a good backup, its newest one is kept.", policy.keep_weekly,
        ) % {"count": policy.keep_weekly})
    if policy.keep_monthly:
        sentences.append(ngettext(
            "For the last month with a good backup, its newest one is kept.",
            "For each of the last %(count)d months with a good backup, its newest one is kept.",
            policy.keep_monthly,
        ) % {"count": policy.keep_monthly})
    sentences.append(gettext("Failed backups never count toward what is kept."))
    return sentences


def reason_sentences(reasons, policy: RetentionPolicy) -> list[str]:
    """Why one backup is kept, in words ("it is the newest good backup"), from cleanup's reason keys."""
    words = {
        str(retention.REASON_NEWEST): gettext("it is the newest good backup"),
        str(retention.REASON_LAST): ngettext(
            "it is the newest good backup (keep last: %(count)d)",
            "it is among the newest %(count)d good backups", policy.keep_last,
        ) % {"count": policy.keep_last},
        str(retention.REASON_DAYS): ngettext(
            "it is younger than %(count)d day", "it is younger than %(count)d days", policy.keep_days,
        ) % {"count": policy.keep_days},
        str(retention.REASON_DAILY): gettext("it is the newest of its day"),
        str(retention.REASON_WEEKLY): gettext("it is the newest of its week"),
        str(retention.REASON_MONTHLY): gettext("it is the newest of its month"),
        str(retention.REASON_ACTIVE): gettext("it is still queued or running"),
        str(retention.REASON_RECENT_FAILURE): ngettext(
            "it failed less than %(count)d day ago: the record stays, its file goes",
            "it failed less than %(count)d days ago: the record stays, its file goes", policy.keep_days,
        ) % {"count": policy.keep_days},
    }
    reasons = [str(reason) for reason in reasons]
    if str(retention.REASON_NEWEST) in reasons:
        # "the newest" already says "among the newest N".
        reasons = [reason for reason in reasons if reason != str(retention.REASON_LAST)]
    return [words.get(reason, reason) for reason in reasons]


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(admin.ModelAdmin):
    form = RetentionPolicyForm
    change_form_template = "admin/backups_app/retentionpolicy/change_form.html"
    list_display = ["database", "keep_days", "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "updated_at"]
    search_fields = ["database"]
    readonly_fields = ["updated_at"]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and "_preview" in request.POST:
            response = self.preview_view(request, object_id)
            if response is not None:
                return response
            # An invalid policy: Django's own form view shows the errors beside the fields (the same
            # data fails the same validation, so nothing is saved).
        extra_context = {**(extra_context or {}), "retention_defaults": {
            "keep_days": app_settings.BACKUP_RETENTION_DAYS, "keep_last": DEFAULT_KEEP_LAST,
        }}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def preview_view(self, request, object_id=None):
        """What the policy as typed would keep and delete now; nothing is saved or deleted.

        Returns None when the form is invalid: the caller shows the form with its errors.
        """
        obj = self.get_object(request, object_id) if object_id else None
        if object_id and obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        allowed = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        if not allowed:
            raise PermissionDenied
        form_class = self.get_form(request, obj, change=obj is not None)
        form = form_class(request.POST, instance=obj or RetentionPolicy())
        if not form.is_valid():
            return None
        policy = form.save(commit=False)
        plan = retention_plan(database=form.cleaned_data["database"], policy=policy)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Retention preview"),
            "form": form,
            "plan": plan,
            "policy_sentences": policy_sentences(policy),
            "kept": [(item.record, reason_sentences(item.keep_reasons, policy)) for item in plan.kept],
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
