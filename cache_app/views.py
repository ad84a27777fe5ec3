"""/health: thin view over cache_app.services.health_check_run."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from cache_app.services import health_check_run


def _bearer(request: HttpRequest) -> str:
    scheme, _space, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def may_see_details(request: HttpRequest) -> bool:
    """Details (database aliases, backup times, free disk space) are for staff only.

    A staff session, an API token of an active staff user, or the HEALTH_TOKEN secret (for a
    monitoring system that has no user), as `Authorization: Bearer ...`.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    presented = _bearer(request)
    if not presented:
        return False
    expected = settings.HEALTH_TOKEN
    if expected and hmac.compare_digest(presented.encode(), expected.encode()):
        return True
    from backups_app.exceptions import ApiTokenRejected
    from backups_app.services.tokens import api_token_authenticate

    try:
        return api_token_authenticate(raw_token=presented).user.is_staff
    except ApiTokenRejected:
        return False


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Unauthenticated (load balancers call it): anonymous callers get the booleans only."""
    report = health_check_run(timeout_seconds=settings.HEALTH_CHECK_TIMEOUT)
    response = JsonResponse(report.as_dict(details=may_see_details(request)), status=200 if report.ok else 503)
    # health_check_run already logged the failure (once per interval); django.request would log
    # an ERROR for every probe of the load balancer, every few seconds, for the whole outage.
    response._has_been_logged = True
    return response
