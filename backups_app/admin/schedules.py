"""Schedule changes made in the admin are audited (action "schedule_change", source admin).

django-celery-beat's own admin classes are kept and wrapped: every save, delete and bulk action on
a periodic task or a schedule writes an audit entry with the user and the address. Changes made
outside the admin (a data migration, the retention area's default schedule) are not the admin's to
report. Deleting one of the default tasks (`opsdesk: backup chat`) is remembered as a choice
(ScheduleRemoval, listed under Backups), so that no start-up puts it back.
"""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from backups_app.admin.base import ServiceWrittenAdmin
from backups_app.models import AuditEntry, ScheduleRemoval
from backups_app.services.audit import audit_log

ACTION = "schedule_change"


def _audit(request: HttpRequest, *, target: str, detail: str) -> None:
    audit_log(
        action=ACTION, source=AuditEntry.Source.ADMIN, outcome=AuditEntry.Outcome.SUCCESS,
        user=request.user, request=request, target=target, detail=detail,
    )


def _removal_by(request: HttpRequest, names: list[str]) -> None:
    """Deleting a default task is remembered (post_delete receiver); the admin adds who did it."""
    ScheduleRemoval.objects.filter(task_name__in=names).update(removed_by=request.user.get_username())


class AuditedScheduleMixin:
    """Audit every write the wrapped ModelAdmin makes."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        label = obj._meta.verbose_name
        if change:
            changed = ", ".join(form.changed_data) if form is not None else ""
            detail = f"changed {label}: {changed or 'nothing'}"
        else:
            detail = f"created {label}"
        _audit(request, target=str(obj), detail=detail)

    def delete_model(self, request, obj):
        target, label = str(obj), obj._meta.verbose_name
        super().delete_model(request, obj)
        _audit(request, target=target, detail=f"deleted {label}")

    def delete_queryset(self, request, queryset):
        targets = [str(obj) for obj in queryset]
        label = queryset.model._meta.verbose_name
        super().delete_queryset(request, queryset)
        for target in targets:
            _audit(request, target=target, detail=f"deleted {label}")


class TaskNameFilter(admin.AllValuesFieldListFilter):
    """The "task" filter with a translated title (beat's field is named "Task Name" in code)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = _("task")


class AuditedPeriodicTaskAdmin(AuditedScheduleMixin, beat_admin.PeriodicTaskAdmin):
    # The list shows whether a worker and the scheduler run, and each database's next backup.
    change_list_template = "admin/backups_app/periodictask_change_list.html"

    def delete_model(self, request, obj):
        name = obj.name
        super().delete_model(request, obj)
        _removal_by(request, [name])

    def delete_queryset(self, request, queryset):
        names = list(queryset.values_list("name", flat=True))
        super().delete_queryset(request, queryset)
        _removal_by(request, names)

    def _audited_bulk(self, request, queryset, action_name: str, detail: str):
        names = list(queryset.values_list("name", flat=True))
        getattr(super(), action_name)(request, queryset)
        for name in names:
            _audit(request, target=name, detail=detail)

    @admin.action(description=beat_admin.PeriodicTaskAdmin.enable_tasks.short_description)
    def enable_tasks(self, request, queryset):
        self._audited_bulk(request, queryset, "enable_tasks", "enabled periodic task")

    @admin.action(description=beat_admin.PeriodicTaskAdmin.disable_tasks.short_description)
    def disable_tasks(self, request, queryset):
        self._audited_bulk(request, queryset, "disable_tasks", "disabled periodic task")

    @admin.action(description=beat_admin.PeriodicTaskAdmin.toggle_tasks.short_description)
    def toggle_tasks(self, request, queryset):
        self._audited_bulk(request, queryset, "toggle_tasks", "toggled periodic task")

    @admin.action(description=beat_admin.PeriodicTaskAdmin.run_tasks.short_description)
    def run_tasks(self, request, queryset):
        self._audited_bulk(request, queryset, "run_tasks", "ran periodic task now")

    # beat's own list names two columns from code, untranslated ("Scheduler", "Task Name") and shows
    # an "Interval schedule" column that repeats the schedule: the same facts, named in words.
    list_display = ("name", "enabled", "schedule_column", "start_time", "last_run_at", "one_off")
    list_filter = ["enabled", "one_off", ("task", TaskNameFilter), "start_time", "last_run_at"]

    @admin.display(description=_("Schedule"))
    def schedule_column(self, task: PeriodicTask) -> str:
        return str(task.scheduler) if task.scheduler is not None else "—"


class AuditedClockedScheduleAdmin(AuditedScheduleMixin, beat_admin.ClockedScheduleAdmin):
    pass


class AuditedCrontabScheduleAdmin(AuditedScheduleMixin, beat_admin.CrontabScheduleAdmin):
    pass


class AuditedSolarScheduleAdmin(AuditedScheduleMixin, beat_admin.SolarScheduleAdmin):
    pass


class AuditedIntervalScheduleAdmin(AuditedScheduleMixin, beat_admin.IntervalScheduleAdmin):
    pass


for _model, _model_admin in (
    (PeriodicTask, AuditedPeriodicTaskAdmin),
    (ClockedSchedule, AuditedClockedScheduleAdmin),
    (CrontabSchedule, AuditedCrontabScheduleAdmin),
    (SolarSchedule, AuditedSolarScheduleAdmin),
    (IntervalSchedule, AuditedIntervalScheduleAdmin),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)


@admin.register(ScheduleRemoval)
class ScheduleRemovalAdmin(ServiceWrittenAdmin):
    """Default tasks staff deleted on purpose; deleting a row here lets the next start put it back."""

    list_display = ("task_name", "database", "label", "removed_at", "removed_by")
    list_filter = ("database",)

    def delete_model(self, request, obj):
        target = obj.task_name
        super().delete_model(request, obj)
        _audit(request, target=target, detail="default task may be installed again")

    def delete_queryset(self, request, queryset):
        targets = list(queryset.values_list("task_name", flat=True))
        super().delete_queryset(request, queryset)
        for target in targets:
            _audit(request, target=target, detail="default task may be installed again")
