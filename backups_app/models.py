"""What opsdesk knows about backups, restores, retention, API tokens and who did what.

All times are stored in UTC (USE_TZ). Retention decides by `BackupRecord.created_at`, never by file
times, so records are the source of truth; the JSON manifest stored beside each file lets
`sync_backups` rebuild them when the ops database itself is lost.
"""
from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Compression(models.TextChoices):
    GZIP = "gzip", "gzip"
    ZSTD = "zstd", "zstd"
    NONE = "none", _("none")


class Trigger(models.TextChoices):
    CLI = "cli", _("command line")
    ADMIN = "admin", _("admin")
    API = "api", _("API")
    SCHEDULE = "schedule", _("schedule")


class BackupRecordQuerySet(models.QuerySet):
    def good(self) -> "BackupRecordQuerySet":
        """Good backups: those that finished successfully, the only ones restored, verified,
        downloaded, copied offsite or counted as a database's last backup (`BackupRecord.is_good`
        says the same of one record). Callers that need more say so next to it: retention keeps
        only those whose verification did not fail, downloads need a stored file."""
        return self.filter(status=BackupRecord.Status.SUCCESS)


class BackupRecord(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        SUCCESS = "success", _("success")
        FAILED = "failed", _("failed")
        INTERRUPTED = "interrupted", _("interrupted")
        # Cancelled by staff while it waited in the queue: it never ran.
        CANCELLED = "cancelled", _("cancelled")
        # Found in storage by sync_backups without a valid signature: never restored, verified or
        # downloaded until a superuser adopts it (backup_adopt).
        UNTRUSTED = "untrusted", _("untrusted (unsigned manifest)")

    class Kind(models.TextChoices):
        REGULAR = "regular", _("regular")
        # Taken automatically right before a restore overwrites the database.
        SAFETY = "safety", _("safety (before a restore)")

    class OffsiteStatus(models.TextChoices):
        NOT_CONFIGURED = "not_configured", _("not configured")
        PENDING = "pending", _("pending")
        UPLOADED = "uploaded", _("uploaded")
        FAILED = "failed", _("failed")

    class MediaMode(models.TextChoices):
        # Media archives only (empty for a database dump): a full archive holds every file, an
        # incremental one only what changed since its parent (backups_app.media).
        FULL = "full", _("full")
        INCREMENTAL = "incremental", _("incremental")

    class VerificationStatus(models.TextChoices):
        UNVERIFIED = "unverified", _("not verified")
        VERIFIED = "verified", _("verified")
        FAILED = "failed", _("verification failed")

    name = models.CharField(_("name"), max_length=255, unique=True)
    database = models.CharField(_("database"), max_length=100, db_index=True)
    engine = models.CharField(_("engine"), max_length=50)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices, default=Kind.REGULAR)
    status = models.CharField(
        _("status"), max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    trigger = models.CharField(_("trigger"), max_length=20, choices=Trigger.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="backups",
    )
    created_at = models.DateTimeField(_("created at"), db_index=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    duration_seconds = models.FloatField(_("duration (seconds)"), null=True, blank=True)
    raw_size_bytes = models.BigIntegerField(_("raw size (bytes)"), null=True, blank=True)
    size_bytes = models.BigIntegerField(_("compressed size (bytes)"), null=True, blank=True)
    progress_bytes = models.BigIntegerField(_("bytes written so far"), default=0)
    compression = models.CharField(_("compression"), max_length=10, choices=Compression.choices)
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    # age encryption (backups_app.encryption): the file holds ciphertext, readable only by the
    # private keys of these recipients (fingerprints of their public keys, never the keys).
    encrypted = models.BooleanField(_("encrypted"), default=False)
    encryption_recipients = models.JSONField(_("encrypted for"), default=list, blank=True)
    storage_name = models.CharField(
        _("file in local storage"), max_length=500, blank=True,
        help_text=_("Name of the file inside the backups storage (BACKUP_DIR)."),
    )
    offsite_name = models.CharField(_("file in offsite storage"), max_length=500, blank=True)
    offsite_status = models.CharField(
        _("offsite status"), max_length=20, choices=OffsiteStatus.choices,
        default=OffsiteStatus.NOT_CONFIGURED,
    )
    offsite_attempts = models.PositiveIntegerField(_("offsite upload attempts"), default=0)
    offsite_uploaded_at = models.DateTimeField(_("uploaded offsite at"), null=True, blank=True)
    offsite_error = models.TextField(_("offsite error"), blank=True)
    verification_status = models.CharField(
        _("verification"), max_length=20, choices=VerificationStatus.choices,
        default=VerificationStatus.UNVERIFIED,
    )
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    verification_message = models.TextField(_("verification details"), blank=True)
    error_message = models.TextField(_("error"), blank=True)
    tool_versions = models.JSONField(_("tool versions"), default=dict, blank=True)
    table_row_counts = models.JSONField(
        _("row counts at backup time"), default=dict, blank=True,
        help_text=_("Used by verification to compare a test restore with the source."),
    )
    # Who runs it: lets the next run tell a live backup from one whose process was killed.
    owner_host = models.CharField(_("host"), max_length=255, blank=True)
    owner_pid = models.IntegerField(_("process id"), null=True, blank=True)
    # Where the dump's snapshot sits in the server's binary log (MySQL/MariaDB with log_bin on):
    # point-in-time recovery replays the archived binlog from exactly here.
    binlog_file = models.CharField(_("binlog file"), max_length=255, blank=True)
    binlog_position = models.BigIntegerField(_("binlog position"), null=True, blank=True)
    binlog_gtid = models.CharField(_("binlog GTID position"), max_length=1000, blank=True)
    media_mode = models.CharField(_("archive"), max_length=20, choices=MediaMode.choices, blank=True)
    # The archive an incremental builds on. SET_NULL, not CASCADE: a chain whose link vanished must
    # say so at restore, never lose its later members silently (retention deletes chains whole).
    parent = models.ForeignKey(
        "self", verbose_name=_("parent archive"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="incrementals",
    )
    # SHA-256 of the file list stored beside the archive, which the next incremental compares with.
    media_file_list_sha256 = models.CharField(_("file list SHA-256"), max_length=64, blank=True)

    objects = BackupRecordQuerySet.as_manager()

    class Meta:
        verbose_name = _("backup")
        verbose_name_plural = _("backups")
        ordering = ["-created_at", "-id"]
        get_latest_by = "created_at"
        permissions = [
            ("create_backup", _("Can create backups")),
            ("download_backup", _("Can download backups")),
            ("restore_backup", _("Can restore backups")),
            ("verify_backup", _("Can verify backups")),
        ]
        indexes = [models.Index(fields=["database", "status", "-created_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def is_good(self) -> bool:
        """What `BackupRecord.objects.good()` selects, for one record."""
        return self.status == self.Status.SUCCESS

    @property
    def compression_ratio(self) -> float | None:
        if not self.raw_size_bytes or self.size_bytes is None:
            return None
        return self.size_bytes / self.raw_size_bytes


class RestoreRecord(models.Model):
    """One restore of a backup into a database, with the safety backup taken before it."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        SUCCESS = "success", _("success")
        FAILED = "failed", _("failed")
        REFUSED = "refused", _("refused")
        # Cancelled by staff while it waited in the queue: it never ran.
        CANCELLED = "cancelled", _("cancelled")

    # SET_NULL: deleting a backup (retention, admin) keeps the restore history, by backup_name.
    backup = models.ForeignKey(
        BackupRecord, verbose_name=_("backup"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="restores",
    )
    # Denormalised so that the history survives when the backup record is deleted by retention.
    backup_name = models.CharField(_("backup name"), max_length=255)
    database = models.CharField(_("database"), max_length=100)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(_("trigger"), max_length=20, choices=Trigger.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="restores",
    )
    safety_backup = models.ForeignKey(
        BackupRecord, verbose_name=_("safety backup"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    duration_seconds = models.FloatField(_("duration (seconds)"), null=True, blank=True)
    error_message = models.TextField(_("error"), blank=True)
    # Who runs it: lets the next run tell a live restore from one whose process was killed.
    owner_host = models.CharField(_("host"), max_length=255, blank=True)
    owner_pid = models.IntegerField(_("process id"), null=True, blank=True)
    # Media only: restore the files under this path only, and delete what the archive does not hold.
    media_path = models.CharField(_("path restored"), max_length=1000, blank=True)
    delete_extraneous = models.BooleanField(_("delete files not in the backup"), default=False)

    class Meta:
        verbose_name = _("restore")
        verbose_name_plural = _("restores")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.backup_name} -> {self.database}"


class RetentionPolicy(models.Model):
    """How long the backups of one database are kept (restic-style keep rules)."""

    database = models.CharField(_("database"), max_length=100, unique=True)
    keep_days = models.PositiveIntegerField(
        _("keep days"), help_text=_("Good backups younger than this are kept.")
    )
    keep_last = models.PositiveIntegerField(
        _("keep last"), default=7, help_text=_("The newest N good backups are always kept.")
    )
    keep_daily = models.PositiveIntegerField(_("keep daily"), null=True, blank=True)
    keep_weekly = models.PositiveIntegerField(_("keep weekly"), null=True, blank=True)
    keep_monthly = models.PositiveIntegerField(_("keep monthly"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("retention policy")
        verbose_name_plural = _("retention policies")
        ordering = ["database"]

    def __str__(self) -> str:
        return self.database


class AuditEntry(models.Model):
    """Append-only log of every operation on backups, schedules, caches and tokens."""

    class Source(models.TextChoices):
        ADMIN = "admin", _("admin")
        CLI = "cli", _("command line")
        API = "api", _("API")
        SCHEDULE = "schedule", _("schedule")
        SYSTEM = "system", _("system")

    class Outcome(models.TextChoices):
        SUCCESS = "success", _("success")
        FAILURE = "failure", _("failure")
        REFUSED = "refused", _("refused")
        STARTED = "started", _("started")

    created_at = models.DateTimeField(_("when"), auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    # Kept as text too, so the entry still says who it was after the user is deleted.
    actor = models.CharField(_("who"), max_length=255)
    action = models.CharField(_("action"), max_length=50, db_index=True)
    target = models.CharField(_("target"), max_length=255, blank=True)
    source = models.CharField(_("source"), max_length=20, choices=Source.choices)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome.choices)
    detail = models.TextField(_("detail"), blank=True)

    class Meta:
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit log")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"


class ApiToken(models.Model):
    """A Bearer token for the REST API. Only a SHA-256 hash of the token is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("owner"), on_delete=models.CASCADE,
        related_name="api_tokens",
    )
    name = models.CharField(_("name"), max_length=100, blank=True)
    prefix = models.CharField(_("prefix"), max_length=16, db_index=True)
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class DirtyDatabase(models.Model):
    """A database that a restore began to change and did not finish: its content is neither the old
    one nor the backup's (docs/FAULTS.md, "restore killed at any byte").

    One row per alias, written before the restore's first non-atomic change to the target and deleted
    when a restore of it completes, or by a superuser (admin action or `manage.py clear_dirty_mark`,
    both audited). While it exists the database is red on the admin index and in /health, and every
    backup of it is refused and recorded as failed, so the half-restored data never becomes a "good"
    backup. Written only by backups_app.services.dirty.
    """

    database = models.CharField(_("database"), max_length=100, unique=True)
    restore = models.ForeignKey(
        "RestoreRecord", verbose_name=_("restore"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    backup_name = models.CharField(_("backup being restored"), max_length=255, blank=True)
    marked_at = models.DateTimeField(_("marked at"), auto_now_add=True)

    class Meta:
        verbose_name = _("dirty database")
        verbose_name_plural = _("dirty databases")
        default_permissions = ("view",)

    def __str__(self) -> str:
        return self.database


class ProcessHeartbeat(models.Model):
    """The last sign of life of one Celery worker or scheduler process (see backups_app.liveness).

    Written every BACKUP_HEARTBEAT_SECONDS by the process itself, deleted when it stops cleanly; a
    row that stops being refreshed is a process that died. In the database (not the cache) because
    the embedded default's cache is per process, and the admin must see every process.
    """

    class Component(models.TextChoices):
        WORKER = "worker", _("worker")
        SCHEDULER = "scheduler", _("scheduler")

    component = models.CharField(_("component"), max_length=20, choices=Component.choices)
    host = models.CharField(_("host"), max_length=255)
    pid = models.IntegerField(_("process id"))
    # Space-separated queue names a worker consumes; empty for the scheduler.
    queues = models.CharField(_("queues"), max_length=500, blank=True)
    started_at = models.DateTimeField(_("started at"))
    seen_at = models.DateTimeField(_("last seen at"), db_index=True)

    class Meta:
        verbose_name = _("process heartbeat")
        verbose_name_plural = _("process heartbeats")
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(fields=["component", "host", "pid"], name="heartbeat_one_per_process"),
        ]

    def __str__(self) -> str:
        return f"{self.component} {self.host}:{self.pid}"


class ScheduleRemoval(models.Model):
    """Staff deleted a default periodic task of one database on purpose: do not put it back.

    Written when a task named `opsdesk: <label> <database>` is deleted in the Periodic tasks admin;
    removed again when `setup_backup_schedule` installs that task explicitly.
    """

    database = models.CharField(_("database"), max_length=100)
    label = models.CharField(_("task"), max_length=50)
    task_name = models.CharField(_("periodic task"), max_length=200)
    removed_at = models.DateTimeField(_("removed at"), auto_now_add=True)
    removed_by = models.CharField(_("removed by"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("schedule removed on purpose")
        verbose_name_plural = _("schedules removed on purpose")
        default_permissions = ("view", "delete")
        constraints = [
            models.UniqueConstraint(fields=["database", "label"], name="schedule_removal_one_per_task"),
        ]

    def __str__(self) -> str:
        return self.task_name


class BinlogSegment(models.Model):
    """A closed, compressed, checksummed piece of a server's binary log, archived for one alias.

    A segment holds the raw bytes [start_position, end_position) of `binlog_file`; the segments of
    one file, in order, rebuild it byte for byte. `ends_file` says the file ends with it (rotation
    or server shutdown), so the next file follows without a hole.
    """

    class Status(models.TextChoices):
        OK = "ok", _("ok")
        MISSING = "missing", _("missing")
        CORRUPT = "corrupt", _("corrupt")

    database = models.CharField(_("database"), max_length=100, db_index=True)
    name = models.CharField(_("name"), max_length=255, unique=True)
    storage_name = models.CharField(_("file in local storage"), max_length=500)
    binlog_file = models.CharField(_("binlog file"), max_length=255)
    start_position = models.BigIntegerField(_("start position"))
    end_position = models.BigIntegerField(_("end position"))
    ends_file = models.BooleanField(_("ends the binlog file"), default=False)
    first_event_at = models.DateTimeField(_("first event at"), null=True, blank=True)
    last_event_at = models.DateTimeField(_("last event at"), null=True, blank=True, db_index=True)
    first_gtid = models.CharField(_("first GTID"), max_length=100, blank=True)
    last_gtid = models.CharField(_("last GTID"), max_length=100, blank=True)
    compression = models.CharField(_("compression"), max_length=10, choices=Compression.choices)
    raw_size_bytes = models.BigIntegerField(_("raw size (bytes)"))
    size_bytes = models.BigIntegerField(_("compressed size (bytes)"))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    # age encryption, as for backups: the stored file holds ciphertext for these recipients.
    encrypted = models.BooleanField(_("encrypted"), default=False)
    encryption_recipients = models.JSONField(_("encrypted for"), default=list, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.OK)
    status_message = models.TextField(_("status details"), blank=True)
    offsite_status = models.CharField(
        _("offsite status"), max_length=20, choices=BackupRecord.OffsiteStatus.choices,
        default=BackupRecord.OffsiteStatus.NOT_CONFIGURED,
    )
    offsite_name = models.CharField(_("file in offsite storage"), max_length=500, blank=True)
    offsite_error = models.TextField(_("offsite error"), blank=True)
    created_at = models.DateTimeField(_("archived at"), auto_now_add=True)

    class Meta:
        verbose_name = _("binlog segment")
        verbose_name_plural = _("binlog segments")
        ordering = ["database", "binlog_file", "start_position"]
        constraints = [
            models.UniqueConstraint(fields=["database", "binlog_file", "start_position"],
                                    name="binlog_segment_unique_start"),
        ]

    def __str__(self) -> str:
        return self.name


class BinlogArchiver(models.Model):
    """The heartbeat of the `archive_binlogs` process of one alias, and how far it got on disk."""

    database = models.CharField(_("database"), max_length=100, unique=True)
    owner_host = models.CharField(_("host"), max_length=255, blank=True)
    owner_pid = models.IntegerField(_("process id"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    # The live (not yet closed) part: the local recovery point.
    live_file = models.CharField(_("binlog file being written"), max_length=255, blank=True)
    live_position = models.BigIntegerField(_("bytes on disk"), null=True, blank=True)
    live_event_at = models.DateTimeField(_("newest event on disk"), null=True, blank=True)
    error_message = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("binlog archiver")
        verbose_name_plural = _("binlog archivers")
        default_permissions = ("view",)

    def __str__(self) -> str:
        return self.database
