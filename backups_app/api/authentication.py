"""Bearer-token authentication for the REST API (DRF authentication class)."""
from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from backups_app.conf import app_settings
from backups_app.exceptions import ApiTokenRejected
from backups_app.services.audit import client_ip
from backups_app.services.tokens import api_token_authenticate
from cache_app.ratelimit import rate_limit_check

FAILED_AUTHENTICATION_SCOPE = "api-auth-failure"


def _count_failure(request) -> None:
    """Count one failed authentication of the caller's address; Throttled (429) once over budget.

    DRF throttles run after authentication, so they never see these calls: counting happens here.
    A valid token is never refused by this, even from an address that is over budget.
    """
    address = client_ip(request._request) or "unknown"
    retry_after = rate_limit_check(
        scope=FAILED_AUTHENTICATION_SCOPE, key=address,
        limit=app_settings.BACKUP_API_AUTH_FAILURE_LIMIT, period_seconds=app_settings.BACKUP_API_AUTH_FAILURE_PERIOD,
    )
    if retry_after is not None:
        # The audit log records the first of these per window only (backups_app/api/audit.py).
        request._request.api_auth_throttled = retry_after
        raise exceptions.Throttled(wait=retry_after)


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer ops_...` checked against the hashed ApiToken table.

    Returns (user, token), so views find the ApiToken in `request.auth`. Every failure is the same
    401 to the client; the reason (unknown, expired, revoked, inactive user) is kept on the request
    for the audit log only.
    """

    keyword = b"bearer"

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            # No token: an anonymous call, refused by the permission check unless over budget here.
            _count_failure(request)
            return None
        if len(parts) != 2:
            _count_failure(request)
            raise exceptions.AuthenticationFailed(
                _("Invalid Authorization header: expected 'Bearer <token>'.")
            )
        try:
            raw_token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            _count_failure(request)
            raise exceptions.AuthenticationFailed(_("Invalid or expired token.")) from None
        try:
            token = api_token_authenticate(raw_token=raw_token)
        except ApiTokenRejected as rejection:
            # request._request is the Django HttpRequest the audit log reads after the view.
            request._request.api_token_rejection = rejection
            _count_failure(request)
            raise exceptions.AuthenticationFailed(_("Invalid or expired token.")) from None
        return token.user, token

    def authenticate_header(self, request) -> str:
        # Having a WWW-Authenticate value is what makes DRF answer 401 rather than 403.
        return 'Bearer realm="api"'


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the Bearer scheme in the OpenAPI schema."""

    target_class = "backups_app.api.authentication.ApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An opsdesk API token (ops_...)."}
