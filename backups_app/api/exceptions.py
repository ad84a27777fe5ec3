"""Every API error as JSON `{"error": code, "detail": message}` (DRF EXCEPTION_HANDLER).

The app's own exceptions are mapped to HTTP statuses here, once, so that views stay thin. Anything
unexpected becomes a 500 with a fixed message: the traceback goes to the log, never to the client.
"""
from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from backups_app.encryption import EncryptionKeyMissing
from backups_app.exceptions import (
    AccessRefused,
    BackupError,
    BackupLocked,
    BackupNotFound,
    ChecksumMismatch,
    RestoreRefused,
    RestoreTargetRefused,
)

logger = logging.getLogger("backups_app.api")


class Conflict(exceptions.APIException):
    """The request is valid but the backup's state does not allow it now."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = _("The backup's current state does not allow this.")
    default_code = "conflict"


class RequestTooLarge(exceptions.APIException):
    """The body is over DATA_UPLOAD_MAX_MEMORY_SIZE (docs/FAULTS.md: oversized-request)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The request body is too large.")
    default_code = "request_too_large"


class BackupOperationFailed(exceptions.APIException):
    """A backup or restore started and failed; its message is the service's (never a secret)."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_detail = _("The operation failed.")
    default_code = "operation_failed"


def _as_api_exception(exc: Exception) -> Exception:
    """Translate backups_app's exceptions; their messages are written to be shown (no secrets)."""
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, AccessRefused):
        return exceptions.PermissionDenied(str(exc), code="superuser_required")
    if isinstance(exc, RestoreTargetRefused):
        return exceptions.PermissionDenied(str(exc), code="restore_target_not_allowed")
    if isinstance(exc, BackupNotFound):
        return exceptions.NotFound(str(exc) or None)
    if isinstance(exc, BackupLocked):
        return Conflict(str(exc) or _("Another backup or restore of this database is running."), code="locked")
    if isinstance(exc, ChecksumMismatch):
        return Conflict(str(exc), code="checksum_mismatch")
    if isinstance(exc, EncryptionKeyMissing):
        return Conflict(str(exc), code="encryption_key_missing")
    if isinstance(exc, RestoreRefused):
        return Conflict(str(exc), code="restore_refused")
    if isinstance(exc, BackupError):
        return BackupOperationFailed(str(exc) or None)
    return exc


def _first_message(detail) -> str:
    """The first human-readable message of a (possibly nested) ValidationError detail."""
    if isinstance(detail, dict):
        for field_name, value in detail.items():
            message = _first_message(value)
            return message if field_name == "non_field_errors" else f"{field_name}: {message}"
        return ""
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else ""
    return str(detail)


def api_exception_handler(exc: Exception, context: dict) -> Response:
    exc = _as_api_exception(exc)
    response = exception_handler(exc, context)
    if response is None:
        view = context.get("view")
        logger.error("Unhandled error in API view %s", type(view).__name__, exc_info=exc)
        return Response(
            {"error": "server_error", "detail": _("Internal server error.")},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "error": "invalid",
            "detail": _first_message(exc.detail),
            "fields": exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail},
        }
    else:
        detail = getattr(exc, "detail", "")
        response.data = {"error": getattr(detail, "code", None) or "error", "detail": str(detail)}
    return response
