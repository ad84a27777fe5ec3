"""The backup console: list, read-only record page, Back up now, download, restore, verify, delete.

The admin is a thin caller: every operation goes through a service of backups_app.services. Each extra
view is wrapped in `admin_site.admin_view()` (login and is_staff) and checks its own permission on
the server, because a hidden button is not a permission check: a forged POST gets 403.

Auditing: the services audit what they do themselves (create, restore, verify, delete); the admin
runs them inside `audit_request(request)` so that those entries carry the staff member's address,
and audits itself only what no service sees: downloads and refused restore confirmations.
"""
from __future__ import annotations

import logging
import posixpath

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import connections
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
)
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from backups_app import liveness
from backups_app.access import backup_access_allowed, backup_needs_superuser
from backups_app.admin.base import AppendOnlyAdmin, ServiceWrittenAdmin
from backups_app.admin.display import human_size, moment, small_table
from backups_app.dashboard import dashboard_databases
from backups_app.api.streaming import DECRYPTED_DOWNLOAD, decrypted_download_response, download_response
from backups_app.encryption import decryption_available
from backups_app.engines.media import is_media_alias, media_root
from backups_app.exceptions import BackupError, BackupNotFound, ChecksumMismatch, RestoreRefused
from backups_app.models import AuditEntry, BackupRecord, BinlogSegment, RestoreRecord, Trigger
from backups_app.services.audit import audit_log, audit_request, client_ip
from backups_app.services.backup import backup_queue
from backups_app.services.sync import backup_adopt
from backups_app.services.restore import restore_queue
from backups_app.services.binlogs import (
    binlog_availability,
    binlog_databases,
    binlog_purged_needed,
    binlog_window,
)
from backups_app.services.delete import backup_delete
from backups_app.services.queued import backup_cancel, restore_cancel
from backups_app.services.pitr import pitr_restore_queue, recovery_target_parse
from backups_app.services.verify import backup_verify_queue

logger = logging.getLogger(__name__)

ADMIN = AuditEntry.Source.ADMIN


def human_duration(seconds: float | None) -> str:
    """`1 h 02 min`, `3 min 05 s`, `4.2 s`: short enough for a list column."""
    if seconds is None:
        return "—"
    if seconds < 60:
        # number_format: "4.2 s" in English, "4,2 s" in Portuguese.
        return gettext("%(seconds)s s") % {"seconds": number_format(seconds, 1)}
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return gettext("%(minutes)d min %(seconds)02d s") % {"minutes": minutes, "seconds": secs}
    hours, minutes = divmod(minutes, 60)
    return gettext("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}


def started_by(record) -> str:
    """`admin · alice`, `schedule`: how and by whom a backup or restore was started."""
    if record.user is None:
        return record.get_trigger_display()
    return format_html(
        '{} <span class="backup-quiet">· {}</span>', record.get_trigger_display(), record.user.get_username(),
    )


def badge(value: str, label: str, *, extra: str = "") -> str:
    return format_html('<span class="backup-badge backup-badge--{}">{}</span>{}', value, label, extra)


def waiting_reason() -> str:
    """Why queued jobs have not started (shown once they waited BACKUP_QUEUE_WAIT_SECONDS)."""
    values = {"queue": liveness.queue_name()}
    if not liveness.broker_configured():
        return gettext("waiting: its background process did not start it (see the server log)")
    if liveness.worker_alive():
        return gettext("waiting: the workers of queue %(queue)s are busy") % values
    return gettext("waiting: no worker is taking jobs from queue %(queue)s") % values


def waiting_note(record) -> str:
    """For a record queued longer than BACKUP_QUEUE_WAIT_SECONDS: why it has not started."""
    if not liveness.is_waiting(record):
        return ""
    return format_html(' <span class="backup-waiting">{}</span>', waiting_reason())


BACKUP_NOW_CHOICE = "backups_app:backup_now_database"


def backup_now_message(record: BackupRecord) -> tuple[int, str]:
    """What "Back up now" says: the truth about where the backup stands when the page comes back."""
    values = {"name": record.name, "database": record.database}
    if record.status == BackupRecord.Status.SUCCESS:
        values["size"] = filesizeformat(record.size_bytes or 0)
        return messages.SUCCESS, gettext("Backup %(name)s of %(database)s finished: %(size)s.") % values
    if record.status in (BackupRecord.Status.FAILED, BackupRecord.Status.INTERRUPTED):
        values["error"] = record.error_message
        return messages.ERROR, gettext("Backup %(name)s of %(database)s failed: %(error)s") % values
    if liveness.broker_configured() and not liveness.worker_alive():
        values["queue"] = liveness.queue_name()
        return messages.WARNING, gettext(
            "Backup %(name)s of %(database)s is queued, but no worker is taking jobs from queue "
            "%(queue)s: it will wait until one starts (or cancel it)."
        ) % values
    return messages.SUCCESS, gettext(
        "Backup %(name)s of %(database)s started; this list refreshes until it finishes."
    ) % values


class BackupNowForm(forms.Form):
    database = forms.ChoiceField(label=_("Database"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["database"].choices = [(alias, alias) for alias in dashboard_databases()]


class RestoreConfirmForm(forms.Form):
    confirm_database = forms.CharField(
        label=_("Type the database name to confirm"), max_length=100,
        widget=forms.TextInput(attrs={"autocomplete": "off", "autofocus": True}),
    )

    def __init__(self, *args, expected: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected

    def clean_confirm_database(self) -> str:
        typed = self.cleaned_data["confirm_database"].strip()
        if typed != self.expected:
            raise forms.ValidationError(
                _("That is not %(database)s. Nothing was restored."), params={"database": self.expected},
                code="mismatch",
            )
        return typed


class PointInTimeForm(RestoreConfirmForm):
    to_time = forms.CharField(
        label=_("Restore to (YYYY-MM-DD HH:MM:SS)"), max_length=64,
        help_text=_("The state at the end of this second, in the console's time zone unless you add +HH:MM."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "2026-11-29 14:32:05"}),
    )
    field_order = ["to_time", "confirm_database"]


def point_in_time_rows() -> list[dict]:
    """The point-in-time recovery state of every MySQL/MariaDB alias, for the backup list."""
    rows = []
    for database in binlog_databases():
        status = binlog_window(database=database)
        archived = status.archiver is not None or BinlogSegment.objects.filter(database=database).exists()
        if archived and not status.archiver_running:
            # Down: say now when the server already purged a binlog the archive still needs.
            try:
                purged = binlog_purged_needed(database=database)
            except BackupError:
                purged = []
            status.gaps += [gettext("binlog %(file)s was purged on the server before it was archived")
                            % {"file": name} for name in purged]
        rows.append({
            "database": database, "status": status,
            "unavailable": "" if archived else binlog_availability(database=database),
        })
    return rows


def _restore_target_facts(alias: str) -> dict | None:
    """What the restore page shows of the target: a configured database, or the folder of a media
    alias (its files restored, none deleted); None when this host has no such target."""
    if is_media_alias(alias):
        try:
            root = media_root(alias)
        except ImproperlyConfigured:
            return None
        return {"target_engine": "media", "target_name": str(root), "target_host": "", "target_is_media": True}
    if alias not in connections.settings:
        return None
    settings_dict = connections.settings[alias]
    return {
        "target_engine": settings_dict.get("ENGINE", "").rsplit(".", 1)[-1],
        "target_name": str(settings_dict.get("NAME", "")),
        "target_host": settings_dict.get("HOST", "") or "",
        "target_is_media": False,
    }


@admin.register(BackupRecord)
class BackupRecordAdmin(ServiceWrittenAdmin):
    # Seven columns fit beside the filters at 1400 px; who started a backup is on its record page
    # and in the "By trigger" filter.
    list_display = (
        "name", "database", "status_column", "size_column", "duration_column", "created_column", "checks_column",
    )
    list_filter = ("status", "database", "trigger", "kind", "offsite_status", "verification_status")
    search_fields = ("name", "database", "sha256", "user__username")
    date_hierarchy = "created_at"
    # The only relation shown per row; with it the list costs the same few queries at 10 or 10,000 rows.
    list_select_related = ("user",)
    list_per_page = 50
    # Django's "(N total)" needs a second unfiltered COUNT(*) on every filtered page.
    show_full_result_count = False
    actions = ["verify_selected", "cancel_selected", "adopt_selected", "delete_selected"]
    change_list_template = "admin/backups_app/backuprecord/change_list.html"
    change_form_template = "admin/backups_app/backuprecord/change_form.html"
    readonly_fields = (
        "status_column", "duration_column", "raw_size_display", "size_display", "progress_display",
        "tool_versions_table", "row_counts_table", "encryption_display",
    )

    def get_fieldsets(self, request: HttpRequest, obj=None):
        running = obj is not None and obj.status in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING)
        file_fields = ["storage_name", "compression", "encryption_display", "raw_size_display", "size_display", "sha256"]
        if running:
            # Only a running backup is still writing; afterwards the compressed size says it all.
            file_fields.insert(2, "progress_display")
        if obj is not None and obj.media_mode:
            # A media archive: full, or incremental on top of its parent (restored as a chain).
            file_fields += ["media_mode", "parent"]
        offsite = ()
        if obj is None or obj.offsite_status != BackupRecord.OffsiteStatus.NOT_CONFIGURED:
            offsite = ((_("Offsite copy"), {"fields": (
                "offsite_status", "offsite_name", "offsite_attempts", "offsite_uploaded_at", "offsite_error",
            )}),)
        # The error of a failed backup is shown above the record (change_form.html), not here.
        return (
            (None, {"fields": ("name", "database", "engine", "kind", "status_column", "trigger", "user")}),
            (_("Timing"), {"fields": ("created_at", "started_at", "finished_at", "duration_column")}),
            (_("File"), {"fields": file_fields}),
            *offsite,
            (_("Verification"), {"fields": ("verification_status", "verified_at", "verification_message")}),
            (_("Diagnostics"), {"fields": ("tool_versions_table", "row_counts_table", "owner_host", "owner_pid")}),
        )

    # --- record page fields -----------------------------------------------------------------------
    @admin.display(description=_("encryption"))
    def encryption_display(self, record: BackupRecord) -> str:
        if not record.encrypted:
            return gettext("none: the file holds the compressed dump in clear")
        fingerprints = ", ".join(record.encryption_recipients) or "?"
        return gettext("age, for the keys %(fingerprints)s") % {"fingerprints": fingerprints}

    @admin.display(description=_("uncompressed size"))
    def raw_size_display(self, record: BackupRecord) -> str:
        return human_size(record.raw_size_bytes)

    @admin.display(description=_("compressed size"))
    def size_display(self, record: BackupRecord) -> str:
        return human_size(record.size_bytes)

    @admin.display(description=_("written so far"))
    def progress_display(self, record: BackupRecord) -> str:
        return human_size(record.progress_bytes)

    @admin.display(description=_("tool versions"))
    def tool_versions_table(self, record: BackupRecord) -> str:
        return small_table(record.tool_versions, key_header=gettext("tool"), value_header=gettext("version"))

    @admin.display(description=_("row counts at backup time"))
    def row_counts_table(self, record: BackupRecord) -> str:
        return small_table(record.table_row_counts, key_header=gettext("table"), value_header=gettext("rows"),
                           numeric=True)

    # --- permissions ------------------------------------------------------------------------------
    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # A queued or running backup is still being written: the service refuses to delete it.
        if obj is not None and obj.status in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING):
            return False
        return super().has_delete_permission(request, obj)

    def has_create_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("backups_app.create_backup")

    def has_download_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("backups_app.download_backup")

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("backups_app.restore_backup")

    def has_verify_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("backups_app.verify_backup")

    def has_adopt_permission(self, request: HttpRequest) -> bool:
        # Trusting a file someone else may have written is a superuser's decision (issue 10, item 6).
        return request.user.is_superuser

    # --- list columns -----------------------------------------------------------------------------
    @admin.display(description=_("status"), ordering="status")
    def status_column(self, record: BackupRecord) -> str:
        extra = ""
        if record.status == BackupRecord.Status.RUNNING:
            extra = format_html(
                ' <span class="backup-progress">{}</span>',
                gettext("%(size)s so far") % {"size": filesizeformat(record.progress_bytes)},
            )
        elif record.status == BackupRecord.Status.QUEUED:
            extra = waiting_note(record)
        elif record.kind == BackupRecord.Kind.SAFETY:
            extra = format_html(' <span class="backup-kind">{}</span>', gettext("safety"))
        return badge(record.status, record.get_status_display(), extra=extra)

    @admin.display(description=_("size · ratio"), ordering="size_bytes")
    def size_column(self, record: BackupRecord) -> str:
        if record.size_bytes is None:
            return "—"
        ratio = record.compression_ratio
        if ratio is None:
            return human_size(record.size_bytes)
        # The uncompressed size goes in the tooltip: the list must fit a laptop screen.
        return format_html(
            '<span title="{}">{} <span class="backup-quiet">· {}</span></span>',
            gettext("%(size)s uncompressed, %(compressed)s compressed") % {
                "size": filesizeformat(record.raw_size_bytes), "compressed": filesizeformat(record.size_bytes),
            },
            filesizeformat(record.size_bytes), f"{ratio:.0%}",
        )

    @admin.display(description=_("duration"), ordering="duration_seconds")
    def duration_column(self, record: BackupRecord) -> str:
        return human_duration(record.duration_seconds)

    @admin.display(description=_("created at"), ordering="created_at")
    def created_column(self, record: BackupRecord) -> str:
        return moment(record.created_at)

    @admin.display(description=_("checks"))
    def checks_column(self, record: BackupRecord) -> str:
        offsite = ""
        # Without offsite storage configured the badge would repeat the same words on every row.
        if record.offsite_status != BackupRecord.OffsiteStatus.NOT_CONFIGURED:
            offsite = badge(f"offsite-{record.offsite_status}", record.get_offsite_status_display())
        return format_html(
            "{} {}", offsite,
            badge(f"verify-{record.verification_status}", record.get_verification_status_display()),
        )

    # --- list and record pages --------------------------------------------------------------------
    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra_context = extra_context or {}
        extra_context["backups_running"] = BackupRecord.objects.filter(
            status__in=[BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING]
        ).exists()
        if extra_context["backups_running"] and liveness.waiting_jobs():
            extra_context["backups_waiting_note"] = waiting_reason()
        extra_context["point_in_time"] = point_in_time_rows()
        extra_context["can_restore"] = self.has_restore_permission(request)
        if self.has_create_permission(request):
            # The database chosen last time stays selected (or the one the list is filtered on).
            chosen = request.GET.get("database") or request.session.get(BACKUP_NOW_CHOICE)
            extra_context["backup_now_form"] = BackupNowForm(initial={"database": chosen})
            extra_context["backup_now_url"] = reverse("admin:backups_app_backuprecord_backup_now")
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        record = self.get_object(request, object_id)
        if record is not None:
            good = record.is_good and bool(record.storage_name)
            # Backups of opsdesk's own database: superusers only (backups_app/access.py).
            good = good and backup_access_allowed(database=record.database, user=request.user)
            extra_context.update(
                can_download=good and self.has_download_permission(request),
                can_download_decrypted=good and record.encrypted and self.has_download_permission(request)
                and decryption_available(),
                can_restore=good and self.has_restore_permission(request),
                can_verify=good and self.has_verify_permission(request),
                backup_running=record.status in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING),
            )
            if liveness.is_waiting(record) and request.method == "GET":
                self.message_user(request, waiting_reason(), messages.WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("backup-now/", wrap(self.backup_now_view), name="backups_app_backuprecord_backup_now"),
            path("<int:pk>/download/", wrap(self.download_view), name="backups_app_backuprecord_download"),
            path("<int:pk>/restore/", wrap(self.restore_view), name="backups_app_backuprecord_restore"),
            path("<int:pk>/verify/", wrap(self.verify_view), name="backups_app_backuprecord_verify"),
            path("point-in-time/<str:database>/", wrap(self.point_in_time_view),
                 name="backups_app_backuprecord_point_in_time"),
            *super().get_urls(),
        ]

    def _changelist_url(self) -> str:
        return reverse("admin:backups_app_backuprecord_changelist")

    def _good_record(self, pk: int) -> BackupRecord:
        """A finished, stored backup, looked up by id: never a name joined onto a path."""
        record = get_object_or_404(BackupRecord, pk=pk)
        if not record.is_good or not record.storage_name:
            raise Http404(gettext("Only successful backups can be downloaded, restored or verified."))
        return record

    def _require_access(self, request: HttpRequest, record: BackupRecord, action: str) -> None:
        """403 (audited) unless the user may touch this backup at all: see backups_app/access.py."""
        if not backup_access_allowed(database=record.database, user=request.user):
            audit_log(action=action, source=ADMIN, outcome=AuditEntry.Outcome.REFUSED, user=request.user,
                      request=request, target=record.name, detail="superuser only: backup of the ops database")
            raise PermissionDenied

    # --- Back up now ------------------------------------------------------------------------------
    def backup_now_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_create_permission(request):
            raise PermissionDenied
        form = BackupNowForm(request.POST)
        if not form.is_valid():
            self.message_user(request, gettext("Choose one of the configured databases."), messages.ERROR)
            return redirect(self._changelist_url())
        database = form.cleaned_data["database"]
        request.session[BACKUP_NOW_CHOICE] = database
        try:
            with audit_request(request):
                record = backup_queue(database=database, trigger=Trigger.ADMIN, user=request.user)
        except BackupError as error:
            self.message_user(request, gettext("The backup could not start: %(error)s") % {"error": error},
                              messages.ERROR)
            return redirect(self._changelist_url())
        record.refresh_from_db()  # run inline (BACKUP_BACKGROUND_JOBS off), it may be over already
        level, message = backup_now_message(record)
        self.message_user(request, message, level)
        return redirect(self._changelist_url())

    # --- Download ---------------------------------------------------------------------------------
    def download_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        # GET only: a HEAD would be audited as a download that never happened.
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        if not self.has_download_permission(request):
            raise PermissionDenied
        # ?decrypted=1: the age-decrypted (still compressed) bytes of an encrypted backup, audited
        # under its own action; the same permission and checks as the stored file's download.
        decrypted = request.GET.get("decrypted") == "1"
        action = DECRYPTED_DOWNLOAD if decrypted else "download"
        record = self._good_record(pk)
        self._require_access(request, record, action)
        filename = posixpath.basename(record.storage_name) or record.name
        respond = decrypted_download_response if decrypted else download_response
        try:
            # The same streamed, checked download as the API's: a damaged or truncated file cuts
            # the response instead of ending it cleanly.
            response = respond(backup=record, source=ADMIN, user=request.user, request=request, filename=filename)
        except (BackupNotFound, FileNotFoundError) as error:
            audit_log(action=action, source=ADMIN, outcome=AuditEntry.Outcome.FAILURE, user=request.user,
                      request=request, target=record.name, detail=str(error))
            raise Http404(gettext("The file of this backup is gone.")) from None
        except ChecksumMismatch as error:
            # A stored file that is not what was recorded (seen in its first bytes): damaged or
            # replaced, a failure like the ones found mid-stream, not a refusal.
            audit_log(action=action, source=ADMIN, outcome=AuditEntry.Outcome.FAILURE, user=request.user,
                      request=request, target=record.name, detail=str(error))
            self.message_user(request, str(error), messages.ERROR)
            return redirect(self._changelist_url())
        except RestoreRefused as error:
            # No private key on this host, a plain backup, no checksum, a symlink: one line, no byte.
            audit_log(action=action, source=ADMIN, outcome=AuditEntry.Outcome.REFUSED, user=request.user,
                      request=request, target=record.name, detail=str(error))
            self.message_user(request, str(error), messages.ERROR)
            return redirect(self._changelist_url())
        audit_log(action=action, source=ADMIN, outcome=AuditEntry.Outcome.SUCCESS, user=request.user,
                  request=request, target=record.name)
        return response

    # --- Restore ----------------------------------------------------------------------------------
    def restore_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        if not self.has_restore_permission(request):
            raise PermissionDenied
        record = self._good_record(pk)
        self._require_access(request, record, "restore")
        database = record.database
        target = _restore_target_facts(database)
        if target is None:
            self.message_user(
                request,
                gettext("The database %(database)s is not configured here; it cannot be restored.")
                % {"database": database},
                messages.ERROR,
            )
            return redirect(reverse("admin:backups_app_backuprecord_change", args=[record.pk]))
        form = RestoreConfirmForm(request.POST or None, expected=database)
        if request.method == "POST":
            if form.is_valid():
                return self._restore_start(request, record)
            audit_log(action="restore", source=ADMIN, outcome=AuditEntry.Outcome.REFUSED, user=request.user,
                      request=request, target=record.name, detail="confirmation did not match the database name")
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Restore %(name)s?") % {"name": record.name},
            "opts": self.opts,
            "record": record,
            "form": form,
            "target_alias": database,
            **target,
            # Restoring opsdesk's own database rewinds its users, tokens and schedules too.
            "rewinds_ops_database": backup_needs_superuser(database),
            "newer_backups": BackupRecord.objects.good().filter(
                database=database, created_at__gt=record.created_at,
            ).count(),
        }
        return TemplateResponse(
            request, "admin/backups_app/backuprecord/restore_confirmation.html", context,
            status=400 if form.is_bound else 200,
        )

    def _restore_start(self, request: HttpRequest, record: BackupRecord) -> HttpResponse:
        try:
            with audit_request(request):
                restore = restore_queue(
                    backup=record, database=record.database, trigger=Trigger.ADMIN, user=request.user,
                    safety_backup=True,
                )
        except BackupError as error:
            self.message_user(request, gettext("The restore could not start: %(error)s") % {"error": error},
                              messages.ERROR)
            return redirect(reverse("admin:backups_app_backuprecord_change", args=[record.pk]))
        message = gettext("Restore of %(name)s into %(database)s started. Its outcome is shown below.") % {
            "name": record.name, "database": record.database}
        if record.database == "default":
            message += " " + gettext(
                "The audit log is kept, but users, API tokens and schedules go back to the time of the backup."
            )
        self.message_user(request, message, messages.SUCCESS)
        return redirect(reverse("admin:backups_app_restorerecord_change", args=[restore.pk]))

    # --- Restore to a point in time ----------------------------------------------------------------
    def point_in_time_view(self, request: HttpRequest, database: str) -> HttpResponse:
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        if not self.has_restore_permission(request):
            raise PermissionDenied
        if database not in binlog_databases():
            raise Http404(gettext("No MySQL/MariaDB database with that name is configured."))
        form = PointInTimeForm(request.POST or None, expected=database)
        error = ""
        if request.method == "POST":
            if form.is_valid():
                try:
                    with audit_request(request):
                        target = recovery_target_parse(to_time=form.cleaned_data["to_time"])
                        restore = pitr_restore_queue(database=database, target=target, trigger=Trigger.ADMIN,
                                                     user=request.user)
                except BackupError as refused:
                    error = str(refused)
                else:
                    self.message_user(request, gettext("Restore of %(database)s to %(target)s started.")
                                      % {"database": database, "target": target}, messages.SUCCESS)
                    return redirect(reverse("admin:backups_app_restorerecord_change", args=[restore.pk]))
            else:
                audit_log(action="restore", source=ADMIN, outcome=AuditEntry.Outcome.REFUSED, user=request.user,
                          request=request, target=database, detail="confirmation did not match the database name")
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Restore %(database)s to a point in time") % {"database": database},
            "opts": self.opts, "form": form, "database": database, "error": error,
            "status": binlog_window(database=database),
        }
        return TemplateResponse(request, "admin/backups_app/backuprecord/point_in_time.html", context,
                                status=400 if form.is_bound else 200)

    # --- Verify -----------------------------------------------------------------------------------
    def _verify(self, request: HttpRequest, records) -> None:
        # A test restore lasts as long as a restore: queued, never run inside the request.
        for record in records:
            try:
                with audit_request(request):
                    backup_verify_queue(backup=record, user=request.user, source=ADMIN, ip_address=client_ip(request))
            except BackupError as error:
                self.message_user(
                    request, gettext("%(name)s could not be verified: %(error)s") % {"name": record.name, "error": error},
                    messages.ERROR,
                )
                continue
            self.message_user(
                request,
                gettext("Verification of %(name)s queued: the result will be shown on the backup's page.")
                % {"name": record.name},
                messages.SUCCESS,
            )

    def verify_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_verify_permission(request):
            raise PermissionDenied
        record = self._good_record(pk)
        self._require_access(request, record, "verify")
        self._verify(request, [record])
        return redirect(reverse("admin:backups_app_backuprecord_change", args=[record.pk]))

    @admin.action(description=_("Verify selected backups (test restore)"), permissions=["verify"])
    def verify_selected(self, request: HttpRequest, queryset) -> None:
        good = list(queryset.good().exclude(storage_name=""))
        skipped = queryset.count() - len(good)
        if skipped:
            self.message_user(
                request,
                ngettext("%(count)d backup skipped: only successful backups can be verified.",
                         "%(count)d backups skipped: only successful backups can be verified.", skipped)
                % {"count": skipped},
                messages.WARNING,
            )
        self._verify(request, good)

    # --- Cancel a queued backup ------------------------------------------------------------------
    @admin.action(description=_("Cancel selected queued backups"), permissions=["create"])
    def cancel_selected(self, request: HttpRequest, queryset) -> None:
        cancel_queued(self, request, queryset, backup_cancel, "backup")

    # --- Adopt: trust an untrusted backup (a manifest opsdesk did not sign) --------------------------
    @admin.action(description=_("Adopt selected untrusted backups (superuser)"), permissions=["adopt"])
    def adopt_selected(self, request: HttpRequest, queryset):
        untrusted = list(queryset.filter(status=BackupRecord.Status.UNTRUSTED))
        if not untrusted:
            self.message_user(request, gettext("Only untrusted backups can be adopted."), messages.WARNING)
            return None
        if request.POST.get("confirm_adopt") != "yes":
            return TemplateResponse(request, "admin/backups_app/backuprecord/adopt_confirmation.html", {
                **self.admin_site.each_context(request), "opts": self.model._meta, "records": untrusted,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "title": gettext("Adopt untrusted backups"),
            })
        with audit_request(request):
            for record in untrusted:
                try:
                    backup_adopt(backup=record, source=ADMIN, user=request.user)
                except BackupError as error:
                    self.message_user(request, str(error), messages.ERROR)
                else:
                    self.message_user(
                        request, gettext("%(name)s adopted: its file was checked and a signed manifest "
                                         "written.") % {"name": record.name}, messages.SUCCESS,
                    )
        return None

    # --- Delete: through the service, which removes every copy and audits --------------------------
    def delete_model(self, request: HttpRequest, obj: BackupRecord) -> None:
        with audit_request(request):
            try:
                backup_delete(backup=obj, user=request.user, source=ADMIN)
            except BackupError as error:
                # A media archive an incremental builds on: said on its page, not as a server error.
                request.backup_delete_refused = True
                self.message_user(request, str(error), messages.ERROR)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id):
        if getattr(request, "backup_delete_refused", False):
            return redirect(reverse("admin:backups_app_backuprecord_change", args=[obj_id]))
        return super().response_delete(request, obj_display, obj_id)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        with audit_request(request):
            for record in queryset:
                try:
                    backup_delete(backup=record, user=request.user, source=ADMIN)
                except BackupError as error:
                    # A backup still running is skipped (and audited as refused by the service).
                    self.message_user(request, str(error), messages.WARNING)


def cancel_queued(model_admin, request: HttpRequest, queryset, cancel, keyword: str) -> None:
    """Cancel each selected record that still waits in the queue; report the others."""
    cancelled = 0
    with audit_request(request):
        for record in queryset:
            try:
                cancel(**{keyword: record}, user=request.user, source=ADMIN)
                cancelled += 1
            except BackupError as error:
                model_admin.message_user(request, str(error), messages.WARNING)
    if cancelled:
        model_admin.message_user(
            request, ngettext("%(count)d queued job cancelled.", "%(count)d queued jobs cancelled.", cancelled)
            % {"count": cancelled}, messages.SUCCESS,
        )


@admin.register(RestoreRecord)
class RestoreRecordAdmin(AppendOnlyAdmin):
    """Restore history, read-only: each restore's outcome and the safety backup taken before it."""

    list_display = (
        "backup_name", "database", "status_column", "created_column", "duration_column", "started_by_column",
        "safety_backup_column",
    )
    list_filter = ("status", "database", "trigger")
    search_fields = ("backup_name", "database", "user__username")
    date_hierarchy = "created_at"
    list_select_related = ("user", "safety_backup")
    show_full_result_count = False
    change_form_template = "admin/backups_app/restorerecord/change_form.html"
    # The status is the badge above the fields (change_form.html), the error too when there is one.
    fields = (
        "backup", "backup_name", "database", "trigger", "user", "safety_backup", "created_at",
        "finished_at", "duration_column",
    )
    readonly_fields = ("duration_column",)

    actions = ["cancel_selected"]

    @admin.display(description=_("status"), ordering="status")
    def status_column(self, restore: RestoreRecord) -> str:
        return badge(restore.status, restore.get_status_display(), extra=waiting_note(restore))

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("backups_app.restore_backup")

    @admin.action(description=_("Cancel selected queued restores"), permissions=["restore"])
    def cancel_selected(self, request: HttpRequest, queryset) -> None:
        cancel_queued(self, request, queryset, restore_cancel, "restore")

    @admin.display(description=_("started at"), ordering="created_at")
    def created_column(self, restore: RestoreRecord) -> str:
        return moment(restore.created_at)

    @admin.display(description=_("duration"), ordering="duration_seconds")
    def duration_column(self, restore: RestoreRecord) -> str:
        return human_duration(restore.duration_seconds)

    @admin.display(description=_("started by"), ordering="trigger")
    def started_by_column(self, restore: RestoreRecord) -> str:
        return started_by(restore)

    @admin.display(description=_("safety backup"))
    def safety_backup_column(self, restore: RestoreRecord) -> str:
        # The safety backup's full name would double the row's width; its record page has it.
        if restore.safety_backup is None:
            return "—"
        return format_html(
            '<a href="{}" title="{}">{}</a>',
            reverse("admin:backups_app_backuprecord_change", args=[restore.safety_backup.pk]),
            restore.safety_backup.name, gettext("open"),
        )

    def change_view(self, request: HttpRequest, object_id, form_url="", extra_context=None):
        restore = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "restore_running": restore is not None
            and restore.status in (RestoreRecord.Status.QUEUED, RestoreRecord.Status.RUNNING),
        }
        return super().change_view(request, object_id, form_url, extra_context)
