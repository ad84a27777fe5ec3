"""Request validation and response shapes of the REST API (they also make the OpenAPI schema)."""
from __future__ import annotations

import re

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from backups_app.models import BackupRecord, Compression, RestoreRecord

# A Windows drive ("C:") or UNC start; POSIX absolute paths are caught by the "/" rule.
_ABSOLUTE_PATH = re.compile(r"^(?:[A-Za-z]:|\\\\)")


def validate_backup_name(name: str) -> str:
    """Refuse anything that looks like a path rather than a backup name.

    docs/FAULTS.md: path-in-name.

    Backups are always looked up by record, never by joining a name onto a folder, so this is a
    second wall: a name with a separator, a parent reference, a NUL or control character, an
    encoded separator or an absolute/drive path is refused with 400 before any lookup.
    """
    if not name or len(name) > 255:
        raise serializers.ValidationError(_("A backup name is 1 to 255 characters long."), code="invalid_name")
    if (
        "/" in name
        or "\\" in name
        or ".." in name
        or "%" in name
        or name.startswith("~")
        or _ABSOLUTE_PATH.match(name)
        or any(not character.isprintable() for character in name)
    ):
        raise serializers.ValidationError(_("This is not a valid backup name."), code="invalid_name")
    return name


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text=_("Machine-readable error code."))
    detail = serializers.CharField(help_text=_("Human-readable message."))
    fields = serializers.DictField(
        required=False, help_text=_("For `invalid` only: the messages of each field that was refused.")
    )


class BackupRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = BackupRecord
        fields = [
            "id", "name", "database", "engine", "kind", "status", "trigger", "compression",
            "created_at", "started_at", "finished_at", "duration_seconds",
            "raw_size_bytes", "size_bytes", "sha256", "encrypted", "encryption_recipients", "error_message",
            "offsite_status", "offsite_uploaded_at",
            "verification_status", "verified_at", "verification_message", "media_mode", "parent_name",
        ]
        read_only_fields = fields

    parent_name = serializers.SerializerMethodField(
        help_text=_("Media incremental archives: the archive it builds on (restored with it).")
    )

    def get_parent_name(self, record: BackupRecord) -> str | None:
        return record.parent.name if record.parent_id else None


class BackupListQuerySerializer(serializers.Serializer):
    database = serializers.CharField(required=False, max_length=100, help_text=_("Only this database alias."))
    status = serializers.ChoiceField(choices=BackupRecord.Status.choices, required=False)


class BackupDownloadQuerySerializer(serializers.Serializer):
    decrypted = serializers.BooleanField(
        required=False, default=False,
        help_text=_("Stream the age-decrypted (still compressed) file of an encrypted backup; needs "
                    "BACKUP_ENCRYPTION_IDENTITY on the server (409 encryption_key_missing otherwise)."),
    )


class BackupCreateSerializer(serializers.Serializer):
    database = serializers.CharField(
        required=False, default="default", max_length=100, help_text=_("A configured database alias.")
    )
    compression = serializers.ChoiceField(
        choices=Compression.choices, required=False, allow_null=True, default=None,
        help_text=_("Defaults to BACKUP_COMPRESSION."),
    )
    media = serializers.BooleanField(
        required=False, default=False,
        help_text=_("Back up the uploaded files (MEDIA_ROOT, or the `storage` entry) instead of a database."),
    )
    storage = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=100,
        help_text=_("With media: the STORAGES entry to back up (default: default)."),
    )
    full = serializers.BooleanField(
        required=False, default=False,
        help_text=_("With media: a full archive, even when an incremental one is due."),
    )

    def validate(self, attrs):
        if not attrs["media"] and (attrs["storage"] or attrs["full"]):
            raise serializers.ValidationError(_("`storage` and `full` go with `media: true`."), code="media_only")
        if attrs["media"] and "database" in self.initial_data:
            raise serializers.ValidationError(_("Give `database` or `media: true`, not both."), code="media_only")
        return attrs


def validate_media_path(path: str) -> str:
    """A path inside the media folder: relative, without `..`, NUL or control characters."""
    if (
        path.startswith(("/", "\\"))
        or _ABSOLUTE_PATH.match(path)
        or ".." in path.replace("\\", "/").split("/")
        or any(not character.isprintable() for character in path)
    ):
        raise serializers.ValidationError(_("A path inside the media folder, relative, without `..`."),
                                          code="invalid_path")
    return path


class BackupQueuedSerializer(serializers.Serializer):
    backup_name = serializers.CharField()
    status = serializers.ChoiceField(choices=BackupRecord.Status.choices)
    id = serializers.IntegerField()


class BackupRestoreSerializer(serializers.Serializer):
    backup_name = serializers.CharField(max_length=255, validators=[validate_backup_name], trim_whitespace=False,
                                        required=False)
    database = serializers.CharField(
        required=False, max_length=100,
        help_text=_("The configured alias to restore into; defaults to the backup's own database."),
    )
    to_time = serializers.CharField(
        required=False, max_length=64,
        help_text=_("Point-in-time restore of `database` (no backup_name): its state at the end of this second "
                    "(ISO 8601; TIME_ZONE when no offset is given)."),
    )
    to_position = serializers.CharField(required=False, max_length=300,
                                        help_text=_("Point-in-time restore: stop right before binlog FILE:POSITION."))
    to_gtid = serializers.CharField(required=False, max_length=100,
                                    help_text=_("Point-in-time restore: stop right after this GTID."))
    path = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=1000, trim_whitespace=False,
        validators=[validate_media_path],
        help_text=_("Media backups: restore only the files under this path (relative to the media folder)."),
    )
    delete_extraneous = serializers.BooleanField(
        required=False, default=False,
        help_text=_("Media backups: delete the files (under `path`) that the backup does not hold."),
    )

    def validate(self, attrs):
        point_in_time = [attrs.get(key) for key in ("to_time", "to_position", "to_gtid") if attrs.get(key)]
        if point_in_time:
            if attrs.get("backup_name") or not attrs.get("database") or len(point_in_time) > 1:
                raise serializers.ValidationError(
                    _("A point-in-time restore takes `database` and one of to_time, to_position, to_gtid, "
                      "and no backup_name."), code="invalid_target")
        elif not attrs.get("backup_name"):
            raise serializers.ValidationError({"backup_name": [_("This field is required.")]}, code="required")
        return attrs


class RestoreQueuedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    backup_name = serializers.CharField()
    database = serializers.CharField()
    status = serializers.ChoiceField(choices=RestoreRecord.Status.choices)
    safety_backup_name = serializers.CharField(allow_null=True)


class CleanupRequestSerializer(serializers.Serializer):
    database = serializers.CharField(required=False, allow_null=True, default=None, max_length=100)
    dry_run = serializers.BooleanField(required=False, default=False)


class DatabaseCleanupSerializer(serializers.Serializer):
    database = serializers.CharField()
    dry_run = serializers.BooleanField()
    deleted = serializers.ListField(child=serializers.CharField())
    files_removed = serializers.ListField(
        child=serializers.CharField(), help_text=_("Failed backups whose files were removed; their records stay.")
    )
    kept = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text=_("The backups kept, by the rule that keeps them."),
    )
    refused = serializers.CharField(help_text=_("Why this database was left untouched, if it was."))
    errors = serializers.ListField(child=serializers.CharField())


class CleanupResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    database = serializers.CharField(allow_null=True)
    ok = serializers.BooleanField()
    deleted = serializers.ListField(
        child=serializers.CharField(), help_text=_("Names deleted, or that would be deleted on a dry run.")
    )
    databases = DatabaseCleanupSerializer(many=True)
