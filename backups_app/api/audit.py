"""One audit entry for every API call, whatever its outcome (docs/FAULTS.md: private-downloads)."""
from __future__ import annotations

from django.core.cache import cache
from django.utils.cache import patch_cache_control
from rest_framework import exceptions

from backups_app.models import ApiToken, AuditEntry
from backups_app.services.audit import audit_log, client_ip

# Client-chosen text kept in an entry: enough to recognise a probe, never a way to fill the disk.
MAX_AUDITED_PATH = 200


def _printable(text: str) -> str:
    """Client-chosen text as the audit log may store it: no NUL (PostgreSQL refuses it) or controls."""
    return "".join(character if character.isprintable() else "\ufffd" for character in text)


def _capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _first_throttled_failure(request) -> bool:
    """Whether this over-budget failed authentication is the first of its window from its address:
    only that one is audited, so a flood of bad tokens writes one row, not one per call."""
    retry_after = getattr(request._request, "api_auth_throttled", None)
    if retry_after is None:
        return True
    address = client_ip(request._request) or "unknown"
    return cache.add(f"api-auth-throttled-audited:{address}", 1, timeout=retry_after)


def _outcome(status_code: int) -> str:
    if status_code == 202:
        return AuditEntry.Outcome.STARTED  # queued: the task's own entries tell how it ended
    if status_code < 400:
        return AuditEntry.Outcome.SUCCESS
    if status_code in (401, 403, 429):
        return AuditEntry.Outcome.REFUSED
    return AuditEntry.Outcome.FAILURE


class AuditedApiViewMixin:
    """Appends one AuditEntry (source api) per call in `finalize_response`, which DRF runs for
    successful and failed calls alike, including refusals before the view body ran.

    The actor names the user and the token prefix (never the token); the entry records the method,
    path, status and error code. Views set `audit_action` and may set `self.audit_target`.
    """

    audit_action: str = "api_call"

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # Backup metadata and files are for the token's holder only: no shared cache keeps them.
        patch_cache_control(response, private=True, no_store=True)
        self._audit_call(request, response)
        return response

    def _audit_call(self, request, response) -> None:
        if not _first_throttled_failure(request):
            return
        try:
            user, token = request.user, request.auth
        except exceptions.APIException:
            # Authentication had not run yet (e.g. a malformed request refused earlier) and fails now.
            user, token = None, None
        if (
            getattr(self, "audit_user_may_be_gone", False) and user is not None
            and not type(user).objects.filter(pk=user.pk).exists()
        ):
            # The call restored the ops database to before this user existed: the actor text keeps the name.
            user = None
        rejection = getattr(request._request, "api_token_rejection", None)
        if isinstance(token, ApiToken):
            actor = f"{request.user.get_username()} (token {token.prefix})"
        elif rejection is not None and rejection.prefix:
            actor = f"anonymous (token {rejection.prefix})"
        else:
            actor = "anonymous"

        path = _capped(_printable(request.path), MAX_AUDITED_PATH)
        detail = f"{_capped(request.method, 16)} {path} -> {response.status_code}"
        data = getattr(response, "data", None)
        if response.status_code >= 400 and isinstance(data, dict) and data.get("error"):
            detail += f" {data['error']}"
        if rejection is not None:
            detail += f" ({rejection.reason})"
        if getattr(request._request, "api_auth_throttled", None) is not None:
            detail += " (too many failed authentications from this address; further ones are not logged)"
        audit_log(
            action=self.audit_action,
            source=AuditEntry.Source.API,
            outcome=_outcome(response.status_code),
            user=user if isinstance(token, ApiToken) and user is not None else None,
            actor=actor,
            target=_capped(_printable(getattr(self, "audit_target", "") or self.kwargs.get("name", "")), 255),
            request=request._request,
            detail=detail,
        )
