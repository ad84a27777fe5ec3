"""REST API views: thin callers of the backup selectors and services.

Authentication, permissions, throttling, error bodies and audit are DRF machinery named by the
views themselves (backups_app.api.policy, so that a host project's REST_FRAMEWORK does not change
them) and the audit mixin; each view only validates input, calls one service and
shapes the answer.
"""
from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import exceptions, generics, status
from rest_framework.fields import BooleanField
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from backups_app.access import CONTROL_DATABASE, backup_access_check, restore_target_check
from backups_app.api import permissions
from backups_app.api.audit import AuditedApiViewMixin
from backups_app.api.exceptions import Conflict
from backups_app.api.policy import ApiPolicyMixin, ApiSchemaGenerator, api_schema
from backups_app.api.serializers import (
    BackupCreateSerializer,
    BackupDownloadQuerySerializer,
    BackupListQuerySerializer,
    BackupQueuedSerializer,
    BackupRecordSerializer,
    BackupRestoreSerializer,
    CleanupRequestSerializer,
    CleanupResultSerializer,
    ErrorSerializer,
    RestoreQueuedSerializer,
    validate_backup_name,
)
from backups_app.api.streaming import DECRYPTED_DOWNLOAD, decrypted_download_response, download_response
from backups_app.conf import app_settings
from backups_app.encryption import EncryptionKeyMissing
from backups_app.engines import get_engine
from backups_app.engines.media import is_media_alias
from backups_app.exceptions import BackupError, BackupNotFound, RestoreRefused
from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, Trigger
from backups_app.selectors import backup_databases, backup_get, backup_list
from backups_app.services.backup import backup_queue
from backups_app.services.restore import restore_queue
from backups_app.services.pitr import pitr_restore_queue, recovery_target_parse
from backups_app.services.queued import backup_cancel, restore_cancel
from backups_app.services.retention import retention_apply


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer) for code in statuses}


# Every endpoint can answer these: no/invalid token, not allowed, too many calls.
COMMON_ERRORS = (401, 403, 429)


def _configured_database(alias: str) -> str:
    """Only a configured alias may be backed up or restored into; anything else is a 400."""
    if alias not in backup_databases():
        raise exceptions.ValidationError(
            {"database": [_("'%(alias)s' is not a configured database.") % {"alias": alias}]},
            code="unknown_database",
        )
    return alias


def _media_alias(storage: str) -> str:
    """The media alias of a STORAGES entry that holds uploads; anything else is a 400."""
    alias = f"media:{storage}" if storage and storage != "default" else "media"
    try:
        get_engine(alias)
    except ImproperlyConfigured as error:
        raise exceptions.ValidationError({"storage": [str(error)]}, code="unknown_storage") from None
    return alias


def _restore_target(alias: str) -> str:
    """A configured database, or a media alias whose storage exists."""
    if is_media_alias(alias):
        return _media_alias(alias.partition(":")[2])
    return _configured_database(alias)


def _backup_by_name(name: str) -> BackupRecord:
    """The record called `name`: validated as a name, then looked up (never used as a path)."""
    try:
        validate_backup_name(name)
    except exceptions.ValidationError as error:
        raise exceptions.ValidationError({"backup_name": error.detail}) from None
    try:
        backup = backup_get(name=name)
    except BackupNotFound:
        raise exceptions.NotFound(_("No backup named %(name)s.") % {"name": name}) from None
    return backup


def _require_restorable(backup: BackupRecord, verb: str) -> None:
    """Failed, running or interrupted backups are never offered (docs/FAULTS.md: killed-backup)."""
    if not backup.is_good:
        raise Conflict(
            _("Backup %(name)s is %(status)s; only successful backups can be %(verb)s.")
            % {"name": backup.name, "status": backup.get_status_display(), "verb": verb},
            code="backup_not_successful",
        )


class ApiView(ApiPolicyMixin, AuditedApiViewMixin, APIView):
    """Base of the API's views: DRF's APIView plus one audit entry per call."""


class BackupPagination(PageNumberPagination):
    page_size_query_param = "page_size"

    # Properties, so that settings overridden at run time (tests, reloads) are honoured.
    @property
    def page_size(self) -> int:
        return app_settings.BACKUP_API_PAGE_SIZE

    @property
    def max_page_size(self) -> int:
        return app_settings.BACKUP_API_MAX_PAGE_SIZE


class BackupCreateView(ApiView):
    """Queue a backup of `database` (default `default`); it runs as a Celery task, inline without a broker."""

    permission_classes = [permissions.CanCreateBackups]
    audit_action = "create"

    @api_schema(
        request=BackupCreateSerializer,
        responses={202: BackupQueuedSerializer, **_errors(400, 409, *COMMON_ERRORS)},
        summary=_("Queue a backup of one database"),
    )
    def post(self, request):
        serializer = BackupCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        database = _media_alias(data["storage"]) if data["media"] else _configured_database(data["database"])
        self.audit_target = database
        record = backup_queue(
            database=database,
            trigger=Trigger.API,
            user=request.user,
            compression=data["compression"],
            full=data["full"],
        )
        # Without a broker the task has already run inline: report where it stands now.
        record.refresh_from_db(fields=["status"])
        self.audit_target = record.name
        return Response(
            {"backup_name": record.name, "status": record.status, "id": record.pk},
            status=status.HTTP_202_ACCEPTED,
        )


@extend_schema(
    parameters=[BackupListQuerySerializer],
    responses={200: BackupRecordSerializer(many=True), **_errors(400, 404, *COMMON_ERRORS)},
    summary=_("List backups, newest first"),
)
class BackupListView(ApiPolicyMixin, AuditedApiViewMixin, generics.ListAPIView):
    """Backup records, newest first, filtered by `database` and `status`, paginated (`page`, `page_size`)."""

    permission_classes = [permissions.CanViewBackups]
    serializer_class = BackupRecordSerializer
    pagination_class = BackupPagination
    audit_action = "list"

    def get_queryset(self):
        query = BackupListQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return backup_list(
            database=query.validated_data.get("database"),
            status=query.validated_data.get("status"),
        )


@extend_schema(
    responses={200: BackupRecordSerializer, **_errors(400, 404, *COMMON_ERRORS)},
    summary=_("One backup record"),
)
class BackupDetailView(ApiPolicyMixin, AuditedApiViewMixin, generics.RetrieveAPIView):
    """One backup record, looked up by its name."""

    permission_classes = [permissions.CanViewBackups]
    serializer_class = BackupRecordSerializer
    audit_action = "view"

    def get_object(self) -> BackupRecord:
        return _backup_by_name(self.kwargs["name"])


class BackupDownloadView(ApiView):
    """The stored file of a successful backup, streamed and checked against its SHA-256 on the way."""

    permission_classes = [permissions.CanDownloadBackups]
    audit_action = "download"

    def initial(self, request, *args, **kwargs):
        # Decided before authentication and permissions run, so that a refused decrypted download
        # is audited as one too.
        if request.query_params.get("decrypted") in BooleanField.TRUE_VALUES:
            self.audit_action = DECRYPTED_DOWNLOAD
        super().initial(request, *args, **kwargs)

    @api_schema(
        parameters=[OpenApiParameter(
            "decrypted", OpenApiTypes.BOOL, OpenApiParameter.QUERY, required=False,
            description=_("Stream the age-decrypted (still compressed) file of an encrypted backup; needs "
                          "BACKUP_ENCRYPTION_IDENTITY on the server (409 encryption_key_missing otherwise)."),
        )],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            **_errors(400, 404, 409, *COMMON_ERRORS),
        },
        summary=_("Download the backup file (streamed), or with decrypted=true its decrypted content"),
    )
    def get(self, request, name: str):
        query = BackupDownloadQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        decrypted = query.validated_data["decrypted"]
        backup = _backup_by_name(name)
        backup_access_check(database=backup.database, user=request.user, action="download")
        _require_restorable(backup, _("downloaded"))
        actor = f"{request.user.get_username()} (token {request.auth.prefix})"
        if decrypted:
            # EncryptionKeyMissing (409 encryption_key_missing) when this server has no private key,
            # RestoreRefused (409) for a plain backup: all before the first byte.
            return decrypted_download_response(backup=backup, source=AuditEntry.Source.API, actor=actor)
        # BackupNotFound (404) when the file is gone; RestoreRefused (409) for no checksum or a symlink.
        return download_response(backup=backup, source=AuditEntry.Source.API, actor=actor)


class BackupRestoreView(ApiView):
    """Queue a restore of a successful backup into a configured database, after a safety backup of it."""

    permission_classes = [permissions.CanRestoreBackups]
    audit_action = "restore"

    @api_schema(
        request=BackupRestoreSerializer,
        responses={202: RestoreQueuedSerializer, **_errors(400, 404, 409, *COMMON_ERRORS)},
        summary=_("Queue a restore (a safety backup of the target is taken first)"),
    )
    def post(self, request):
        serializer = BackupRestoreSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if not serializer.validated_data.get("backup_name"):
            return self.point_in_time(request, serializer.validated_data)
        backup = _backup_by_name(serializer.validated_data["backup_name"])
        self.audit_target = backup.name
        backup_access_check(database=backup.database, user=request.user, action="restore")
        _require_restorable(backup, _("restored"))
        database = _restore_target(serializer.validated_data.get("database") or backup.database)
        restore_target_check(source=backup.database, target=database)
        # The service refuses this too, but only once the task runs; with a broker the client would
        # get a 202 for a restore that can never happen.
        vendor = get_engine(database).vendor
        if vendor != backup.engine:
            raise Conflict(
                _("Backup %(name)s is a %(engine)s dump; database %(database)s is %(vendor)s.")
                % {"name": backup.name, "engine": backup.engine, "database": database, "vendor": vendor},
                code="engine_mismatch",
            )
        restore = restore_queue(
            backup=backup, database=database, trigger=Trigger.API, user=request.user, safety_backup=True,
            media_path=serializer.validated_data["path"],
            delete_extraneous=serializer.validated_data["delete_extraneous"],
        )
        # Restored inline (no broker), the ops database may predate the caller's user and token.
        self.audit_user_may_be_gone = database == CONTROL_DATABASE
        restore.refresh_from_db()
        return Response(
            {
                "id": restore.pk,
                "backup_name": restore.backup_name,
                "database": restore.database,
                "status": restore.status,
                "safety_backup_name": restore.safety_backup.name if restore.safety_backup else None,
            },
            status=status.HTTP_202_ACCEPTED,
        )

    def point_in_time(self, request, data):
        database = _configured_database(data["database"])
        self.audit_target = database
        try:
            target = recovery_target_parse(to_time=data.get("to_time"), to_position=data.get("to_position"),
                                           to_gtid=data.get("to_gtid"))
        except RestoreRefused as error:
            raise exceptions.ValidationError({"to_time": [str(error)]}, code="invalid_target") from None
        try:
            restore = pitr_restore_queue(database=database, target=target, trigger=Trigger.API, user=request.user)
        except EncryptionKeyMissing as error:
            raise Conflict(str(error), code="encryption_key_missing") from None
        except RestoreRefused as error:
            raise Conflict(str(error), code="outside_recoverable_window") from None
        restore.refresh_from_db()
        return Response(
            {
                "id": restore.pk, "backup_name": restore.backup_name, "database": restore.database,
                "status": restore.status,
                "safety_backup_name": restore.safety_backup.name if restore.safety_backup else None,
            },
            status=status.HTTP_202_ACCEPTED,
        )


class BackupCancelView(ApiView):
    """Cancel a backup that still waits in the queue (409 once a worker or process has taken it)."""

    permission_classes = [permissions.CanCreateBackups]
    audit_action = "cancel"

    @api_schema(
        request=None,
        responses={200: BackupQueuedSerializer, **_errors(400, 404, 409, *COMMON_ERRORS)},
        summary=_("Cancel a queued backup"),
    )
    def post(self, request, name: str):
        backup = _backup_by_name(name)
        self.audit_target = backup.name
        try:
            backup = backup_cancel(backup=backup, user=request.user, source=AuditEntry.Source.API)
        except BackupError as error:
            raise Conflict(str(error), code="not_queued") from None
        return Response({"backup_name": backup.name, "status": backup.status, "id": backup.pk})


class RestoreCancelView(ApiView):
    """Cancel a restore that still waits in the queue (409 once it has started)."""

    permission_classes = [permissions.CanRestoreBackups]
    audit_action = "cancel"

    @api_schema(
        request=None,
        responses={200: RestoreQueuedSerializer, **_errors(404, 409, *COMMON_ERRORS)},
        summary=_("Cancel a queued restore"),
    )
    def post(self, request, restore_id: int):
        restore = RestoreRecord.objects.select_related("safety_backup").filter(pk=restore_id).first()
        if restore is None:
            raise exceptions.NotFound(_("No restore with id %(id)s.") % {"id": restore_id})
        self.audit_target = str(restore)
        try:
            restore = restore_cancel(restore=restore, user=request.user, source=AuditEntry.Source.API)
        except BackupError as error:
            raise Conflict(str(error), code="not_queued") from None
        return Response({
            "id": restore.pk, "backup_name": restore.backup_name, "database": restore.database,
            "status": restore.status, "safety_backup_name": None,
        })


class BackupCleanupView(ApiView):
    """Apply the retention policies now (`dry_run` only reports) and list what was or would be deleted."""

    permission_classes = [permissions.CanDeleteBackups]
    audit_action = "cleanup"

    @api_schema(
        request=CleanupRequestSerializer,
        responses={200: CleanupResultSerializer, **_errors(400, *COMMON_ERRORS)},
        summary=_("Apply the retention policy now (or show what it would delete)"),
    )
    def post(self, request):
        serializer = CleanupRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        database = serializer.validated_data["database"]
        # An alias no longer configured may still have backups for retention to prune.
        if database is not None and not backup_list(database=database).exists():
            _configured_database(database)
        self.audit_target = database or ""
        dry_run = serializer.validated_data["dry_run"]
        result = retention_apply(
            database=database, dry_run=dry_run, source=AuditEntry.Source.API, user=request.user
        )
        return Response(
            {**result.as_dict(), "database": database, "deleted": result.deleted},
            status=status.HTTP_200_OK,
        )


class SchemaView(ApiPolicyMixin, AuditedApiViewMixin, SpectacularAPIView):
    """The OpenAPI 3 description of this API (any staff token may read it)."""

    audit_action = "schema"
    generator_class = ApiSchemaGenerator
    # JSON first, so that errors (and the schema by default) are application/json like the rest;
    # `Accept: application/vnd.oai.openapi` still gets YAML.
    renderer_classes = [JSONRenderer, OpenApiJsonRenderer, OpenApiYamlRenderer]

    # SpectacularAPIView's own `get` is described on the host's DEFAULT_SCHEMA_CLASS (see api_schema);
    # the schema endpoint is not part of the schema it serves.
    @api_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema(exclude=True)
class UnknownEndpointView(ApiView):
    """Anything else under /api/v1/: a JSON 404 rather than Django's HTML page."""

    permission_classes = [AllowAny]
    audit_action = "api_call"

    def _not_found(self, request, *args, **kwargs):
        raise exceptions.NotFound(_("No such endpoint."))

    get = post = put = patch = delete = head = options = _not_found
